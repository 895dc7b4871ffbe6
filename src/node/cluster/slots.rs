//! The request-time slot checks every keyed command passes in cluster
//! mode: MOVED, ASK, TRYAGAIN, CROSSSLOT and CLUSTERDOWN, decided from a
//! [`SlotView`] snapshot of the bus (read through `ArcSwap`, never locking
//! the bus), with the keys found by `cluster::keyspec`.

use crate::cluster::{key_hash_slot, keyspec, SLOTS};
use crate::gossip::state::Bus;
use crate::node::cmd::{flags, CommandSpec};
use crate::resp::Reply;
use bytes::Bytes;
use std::collections::HashMap;

const NO_OWNER: u16 = u16::MAX;

/// Who serves which slot, as the request path needs it.
pub struct SlotView {
    /// slot → index into `addrs`, or NO_OWNER.
    owners: Vec<u16>,
    /// (ip, port) of each owner; `mine[i]` tells if it is this node.
    addrs: Vec<(String, u16)>,
    mine: Vec<bool>,
    /// My master's index when I am a replica (reads after READONLY).
    my_master: Option<u16>,
    /// Slots I am migrating away → where their keys go.
    migrating: HashMap<u16, (String, u16)>,
    /// Slots I am importing (served to clients that sent ASKING).
    importing: std::collections::HashSet<u16>,
    pub ok: bool,
}

impl SlotView {
    /// Index of the slot's owner in `addrs`, or NO_OWNER.
    fn owner(&self, slot: u16) -> u16 {
        self.owners
            .get(usize::from(slot))
            .copied()
            .unwrap_or(NO_OWNER)
    }

    fn is_mine(&self, owner: u16) -> bool {
        self.mine.get(usize::from(owner)).copied().unwrap_or(false)
    }

    /// The MOVED redirect to `owner` for `slot`.
    fn moved(&self, slot: u16, owner: u16) -> Redirect {
        let (ip, port) = self
            .addrs
            .get(usize::from(owner))
            .cloned()
            .unwrap_or_default();
        Redirect::Moved(slot, ip, port)
    }

    pub(super) fn from_bus(bus: &Bus) -> SlotView {
        let mut index: HashMap<String, u16> = HashMap::new();
        let mut addrs = Vec::new();
        let mut mine = Vec::new();
        let mut owners = vec![NO_OWNER; SLOTS];
        let me = bus.myself().id.clone();
        // Runs of slots share an owner: look the id up once per run.
        let mut last: Option<(&str, u16)> = None;
        for (o, id) in owners.iter_mut().zip(bus.owner_ids()) {
            let Some(id) = id.as_deref() else { continue };
            let i = match last {
                Some((lid, li)) if lid == id => li,
                _ => {
                    let i = match index.get(id) {
                        Some(i) => *i,
                        None => {
                            let Some(n) = bus.node(id) else { continue };
                            addrs.push((n.ip.clone(), n.port));
                            mine.push(n.id == me);
                            let i = (addrs.len() - 1) as u16;
                            index.insert(id.to_string(), i);
                            i
                        }
                    };
                    last = Some((id, i));
                    i
                }
            };
            *o = i;
        }
        let my_master = bus
            .myself()
            .master_id
            .as_ref()
            .and_then(|m| index.get(m).copied());
        let migrating = bus
            .migrations
            .migrating
            .iter()
            .filter_map(|(slot, to)| bus.node(to).map(|n| (*slot, (n.ip.clone(), n.port))))
            .collect();
        let importing = bus.migrations.importing.keys().copied().collect();
        SlotView {
            owners,
            addrs,
            mine,
            my_master,
            migrating,
            importing,
            ok: bus.state_ok(),
        }
    }
}

/// Why a command may not run here.
pub enum Redirect {
    Moved(u16, String, u16),
    Ask(u16, String, u16),
    TryAgain,
    CrossSlot,
    Unbound,
    Down,
}

impl Redirect {
    pub fn reply(&self) -> Reply {
        match self {
            Redirect::Moved(slot, ip, port) => Reply::Error(format!("MOVED {slot} {ip}:{port}")),
            Redirect::Ask(slot, ip, port) => Reply::Error(format!("ASK {slot} {ip}:{port}")),
            Redirect::TryAgain => {
                Reply::error("TRYAGAIN Multiple keys request during rehashing of slot")
            }
            Redirect::CrossSlot => {
                Reply::error("CROSSSLOT Keys in request don't hash to the same slot")
            }
            Redirect::Unbound => Reply::error("CLUSTERDOWN Hash slot not served"),
            Redirect::Down => Reply::error("CLUSTERDOWN The cluster is down"),
        }
    }
}

/// For a client blocked on `key` when the slot map changes: the error it
/// is released with, if this node no longer serves the slot (Redis's
/// `clusterRedirectBlockedClientIfNeeded`). Importing and migrating slots
/// keep their waiters, unlike a fresh command's check: the key is still
/// served here while the move is under way.
pub fn blocked_redirect(view: &SlotView, key: &[u8], readonly_read: bool) -> Option<Redirect> {
    if !view.ok {
        return Some(Redirect::Down);
    }
    let slot = key_hash_slot(key);
    let owner = view.owner(slot);
    if view.is_mine(owner)
        || view.importing.contains(&slot)
        || (readonly_read && view.my_master == Some(owner) && owner != NO_OWNER)
    {
        return None;
    }
    if owner == NO_OWNER {
        return Some(Redirect::Unbound);
    }
    Some(view.moved(slot, owner))
}

/// Keys of a call, found by Redis 7's key specs (the table the proxy
/// routes by), so numkeys, keyword and SORT/MIGRATE forms are covered.
pub fn command_keys(args: &[Bytes]) -> Vec<&Bytes> {
    let Some(finder) = keyspec::catalog().ok().and_then(|c| c.keys_of(args)) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    finder.for_each_key(args, |i| keys.extend(args.get(i)));
    keys
}

/// The slot check Redis makes before running a keyed command. `exists`
/// tells whether a key is here (needed only for slots being migrated).
pub fn check(
    view: &SlotView,
    spec: &CommandSpec,
    args: &[Bytes],
    client: (bool, bool),
    exists: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), Redirect> {
    let (readonly_client, asking) = client;
    let keys = command_keys(args);
    let Some(first) = keys.first() else {
        return Ok(());
    };
    let slot = key_hash_slot(first);
    if keys.iter().skip(1).any(|k| key_hash_slot(k) != slot) {
        return Err(Redirect::CrossSlot);
    }
    let importing = view.importing.contains(&slot);
    let migrating = view.migrating.get(&slot);
    // MIGRATE itself must run whatever state its keys are in.
    if spec.name == "migrate" && (importing || migrating.is_some()) {
        return Ok(());
    }
    // The state already accounts for cluster-require-full-coverage; a
    // node cut off from the majority refuses everything.
    if !view.ok {
        return Err(Redirect::Down);
    }
    let asking = asking || spec.name == "restore-asking";
    let missing = if importing || migrating.is_some() {
        keys.iter().filter(|k| !exists(k)).count()
    } else {
        0
    };
    if let Some((ip, port)) = migrating {
        if missing > 0 {
            if keys.len() > 1 && missing < keys.len() {
                return Err(Redirect::TryAgain);
            }
            return Err(Redirect::Ask(slot, ip.clone(), *port));
        }
        return Ok(());
    }
    if importing && asking {
        if keys.len() > 1 && missing > 0 {
            return Err(Redirect::TryAgain);
        }
        return Ok(());
    }
    let owner = view.owner(slot);
    if owner == NO_OWNER {
        return Err(Redirect::Unbound);
    }
    if view.is_mine(owner) {
        return Ok(());
    }
    if readonly_client && spec.has(flags::READONLY) && view.my_master == Some(owner) {
        return Ok(());
    }
    Err(view.moved(slot, owner))
}
