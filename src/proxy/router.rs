//! The slot map and the registry of backend pools.
//!
//! The map is a flat 16384-entry table of indexes into a shard list, read
//! through `ArcSwap` on every request without a lock, and replaced whole
//! (never edited in place) by a map with a higher epoch. Writers — the
//! topology refresher and MOVED updates — serialize on a mutex that the
//! request path never takes.

use crate::cluster::SLOTS;
use crate::proxy::backend::{BackendCtx, Pool};
use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// No master known for a slot.
pub const NO_OWNER: u16 = u16::MAX;

/// A master and its replicas.
pub struct Shard {
    pub master: Arc<Pool>,
    pub replicas: Vec<Arc<Pool>>,
}

/// Who serves which slot.
pub struct SlotMap {
    pub epoch: u64,
    slots: Vec<u16>,
    pub shards: Vec<Shard>,
}

impl SlotMap {
    pub fn empty() -> SlotMap {
        SlotMap {
            epoch: 0,
            slots: vec![NO_OWNER; SLOTS],
            shards: Vec::new(),
        }
    }

    pub fn shard_of(&self, slot: u16) -> Option<&Shard> {
        let i = *self.slots.get(usize::from(slot))?;
        self.shards.get(usize::from(i))
    }

    pub fn master_of(&self, slot: u16) -> Option<&Arc<Pool>> {
        self.shard_of(slot).map(|s| &s.master)
    }

    /// Slots with a master.
    pub fn covered(&self) -> usize {
        self.slots.iter().filter(|s| **s != NO_OWNER).count()
    }

    /// The lowest slot of each shard that owns any, ascending: a stable
    /// name for "the master of that part of the keyspace" that survives a
    /// failover (SCAN cursors and fan-outs use it).
    pub fn shard_first_slots(&self) -> Vec<u16> {
        let mut seen = vec![false; self.shards.len()];
        let mut out = Vec::new();
        for (slot, owner) in self.slots.iter().enumerate() {
            if let Some(s) = seen.get_mut(usize::from(*owner)) {
                if !*s {
                    *s = true;
                    out.push(slot as u16);
                }
            }
        }
        out
    }

    /// Same owners and replicas for every slot?
    fn same_layout(&self, other: &SlotMap) -> bool {
        let key = |m: &SlotMap, i: u16| {
            m.shards.get(usize::from(i)).map(|s| {
                (
                    s.master.addr.clone(),
                    s.replicas
                        .iter()
                        .map(|r| r.addr.clone())
                        .collect::<Vec<_>>(),
                )
            })
        };
        let mut memo: HashMap<(u16, u16), bool> = HashMap::new();
        self.slots.iter().zip(other.slots.iter()).all(|(a, b)| {
            *memo
                .entry((*a, *b))
                .or_insert_with(|| key(self, *a) == key(other, *b))
        }) && self.shards.len() == other.shards.len()
    }
}

/// A layout read from the cluster: per slot range, master and replicas.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub ranges: Vec<(u16, u16, String, Vec<String>)>,
}

/// `host:port` split, for validation and connecting.
pub fn parse_addr(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

pub struct Router {
    map: ArcSwap<SlotMap>,
    write: Mutex<()>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    ctx: Arc<BackendCtx>,
    epochs: watch::Sender<u64>,
    /// Wakes the refresher early (MOVED, lost connection, CLUSTERDOWN).
    pub refresh_now: Arc<Notify>,
    next_epoch: AtomicU64,
}

impl Router {
    pub fn new(ctx: Arc<BackendCtx>) -> Router {
        let (epochs, _) = watch::channel(0);
        Router {
            map: ArcSwap::from_pointee(SlotMap::empty()),
            write: Mutex::new(()),
            pools: Mutex::new(HashMap::new()),
            refresh_now: ctx.on_failure.clone(),
            ctx,
            epochs,
            next_epoch: AtomicU64::new(1),
        }
    }

    pub fn metrics(&self) -> Arc<crate::proxy::metrics::Metrics> {
        self.ctx.metrics.clone()
    }

    /// The map in use (lock-free).
    pub fn load(&self) -> arc_swap::Guard<Arc<SlotMap>> {
        self.map.load()
    }

    pub fn load_full(&self) -> Arc<SlotMap> {
        self.map.load_full()
    }

    /// Fires whenever a new map is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.write.lock()
    }

    /// The pool of a node, created on first use.
    pub fn pool(&self, addr: &str) -> Arc<Pool> {
        let mut pools = self.pools.lock();
        pools
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(Pool::new(addr.to_string(), self.ctx.clone())))
            .clone()
    }

    fn install(&self, map: SlotMap) {
        let epoch = map.epoch;
        let covered = map.covered();
        self.map.store(Arc::new(map));
        self.ctx.metrics.epoch.set(epoch as i64);
        self.ctx.metrics.slots_covered.set(covered as i64);
        self.epochs.send_replace(epoch);
    }

    /// Installs the layout read from the cluster if it differs from the
    /// map in use. Returns whether the map changed.
    pub fn apply_layout(&self, layout: &Layout) -> bool {
        let _w = self.writer();
        let mut shards: Vec<Shard> = Vec::new();
        let mut index: HashMap<&str, u16> = HashMap::new();
        let mut slots = vec![NO_OWNER; SLOTS];
        for (lo, hi, master, replicas) in &layout.ranges {
            let i = match index.get(master.as_str()) {
                Some(i) => *i,
                None => {
                    shards.push(Shard {
                        master: self.pool(master),
                        replicas: replicas.iter().map(|r| self.pool(r)).collect(),
                    });
                    let i = (shards.len() - 1) as u16;
                    index.insert(master.as_str(), i);
                    i
                }
            };
            for s in *lo..=*hi {
                if let Some(e) = slots.get_mut(usize::from(s)) {
                    *e = i;
                }
            }
        }
        let mut map = SlotMap {
            epoch: 0,
            slots,
            shards,
        };
        let current = self.map.load();
        if current.epoch > 0 && current.same_layout(&map) {
            return false;
        }
        map.epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            epoch = map.epoch,
            masters = map.shards.len(),
            covered = map.covered(),
            "new slot map"
        );
        self.install(map);
        self.forget_unused();
        true
    }

    /// MOVED: `slot` is served by `addr` now. The map changes at once for
    /// that slot (the refresher fills in the rest).
    pub fn moved(&self, slot: u16, addr: &str) {
        let _w = self.writer();
        let current = self.map.load_full();
        if current.master_of(slot).is_some_and(|p| p.addr == addr) {
            return;
        }
        let mut shards: Vec<Shard> = current
            .shards
            .iter()
            .map(|s| Shard {
                master: s.master.clone(),
                replicas: s.replicas.clone(),
            })
            .collect();
        let i = match shards.iter().position(|s| s.master.addr == addr) {
            Some(i) => i,
            None => {
                shards.push(Shard {
                    master: self.pool(addr),
                    replicas: Vec::new(),
                });
                shards.len() - 1
            }
        };
        let mut slots = current.slots.clone();
        if let Some(e) = slots.get_mut(usize::from(slot)) {
            *e = i as u16;
        }
        let map = SlotMap {
            epoch: self.next_epoch.fetch_add(1, Ordering::Relaxed),
            slots,
            shards,
        };
        self.install(map);
    }

    /// Drops pools no shard refers to any more (their connections close).
    fn forget_unused(&self) {
        let map = self.map.load();
        let mut used: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for s in &map.shards {
            used.insert(&s.master.addr);
            for r in &s.replicas {
                used.insert(&r.addr);
            }
        }
        let mut pools = self.pools.lock();
        pools.retain(|addr, _| used.contains(addr.as_str()));
    }

    /// Every node address known: shards' masters and replicas.
    pub fn known_nodes(&self) -> Vec<String> {
        let map = self.map.load();
        let mut out = Vec::new();
        for s in &map.shards {
            out.push(s.master.addr.clone());
            out.extend(s.replicas.iter().map(|r| r.addr.clone()));
        }
        out
    }

    /// Is some master unreachable (so a failover may be under way)?
    pub fn degraded(&self) -> bool {
        let map = self.map.load();
        map.covered() < SLOTS || map.shards.iter().any(|s| s.master.is_down())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::metrics::Metrics;

    fn router() -> Router {
        let ctx = Arc::new(BackendCtx {
            user: String::new(),
            password: String::new(),
            connect_timeout: std::time::Duration::from_millis(100),
            conns_per_node: 1,
            max_reply_bytes: 1 << 20,
            metrics: Arc::new(Metrics::new(&["other".into()]).unwrap()),
            on_failure: Arc::new(Notify::new()),
            memnet: None,
        });
        Router::new(ctx)
    }

    fn three() -> Layout {
        Layout {
            ranges: vec![
                (0, 5460, "127.0.0.1:1".into(), vec!["127.0.0.1:4".into()]),
                (5461, 10922, "127.0.0.1:2".into(), vec![]),
                (10923, 16383, "127.0.0.1:3".into(), vec![]),
            ],
        }
    }

    #[test]
    fn every_slot_maps_to_its_range_owner() {
        let r = router();
        assert_eq!(r.load().covered(), 0);
        assert!(r.apply_layout(&three()));
        let m = r.load();
        for slot in 0..SLOTS as u16 {
            let want = match slot {
                0..=5460 => "127.0.0.1:1",
                5461..=10922 => "127.0.0.1:2",
                _ => "127.0.0.1:3",
            };
            assert_eq!(m.master_of(slot).unwrap().addr, want, "slot {slot}");
        }
        assert_eq!(m.covered(), SLOTS);
        assert_eq!(m.shard_first_slots(), vec![0, 5461, 10923]);
        assert_eq!(m.shard_of(0).unwrap().replicas[0].addr, "127.0.0.1:4");
    }

    #[test]
    fn the_same_layout_keeps_the_epoch_and_a_new_one_bumps_it() {
        let r = router();
        r.apply_layout(&three());
        let e1 = r.load().epoch;
        assert!(!r.apply_layout(&three()));
        assert_eq!(r.load().epoch, e1);
        let mut l = three();
        l.ranges[0].2 = "127.0.0.1:4".into();
        l.ranges[0].3 = vec![];
        assert!(r.apply_layout(&l));
        assert!(r.load().epoch > e1);
        assert_eq!(r.load().master_of(7).unwrap().addr, "127.0.0.1:4");
    }

    #[test]
    fn moved_changes_one_slot_and_bumps_the_epoch() {
        let r = router();
        r.apply_layout(&three());
        let e1 = r.load().epoch;
        let rx = r.subscribe();
        r.moved(100, "127.0.0.1:9");
        let m = r.load();
        assert!(m.epoch > e1);
        assert_eq!(m.master_of(100).unwrap().addr, "127.0.0.1:9");
        assert_eq!(m.master_of(101).unwrap().addr, "127.0.0.1:1");
        assert!(rx.has_changed().unwrap());
        // A second MOVED to the same place is a no-op.
        r.moved(100, "127.0.0.1:9");
        assert_eq!(r.load().epoch, m.epoch);
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(parse_addr("::1:7000"), Some(("::1", 7000)));
        assert_eq!(parse_addr("x"), None);
        assert_eq!(parse_addr(":1"), None);
    }
}
