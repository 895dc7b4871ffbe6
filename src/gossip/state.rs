//! The cluster bus as a sans-IO state machine: node discovery (MEET and
//! gossip-driven handshakes), PING/PONG liveness, PFAIL → FAIL agreement by
//! a majority of slot-owning masters, FAIL broadcast, and slot ownership by
//! config epoch.
//!
//! No sockets and no clock: messages come in with [`Bus::handle`], time with
//! [`Bus::tick`], and work goes out through [`Bus::poll_transmit`] and
//! [`Bus::poll_event`]. A thin driver maps [`Link`]s to TCP connections.
//! Tests run whole clusters in memory on a simulated clock.
//!
//! Elections, votes, manual failover, replica migration and the cluster
//! state live in the `failover` submodule.

mod admin;
mod claims;
mod detect;
mod failover;

use crate::cluster::topology::{random_node_id, ClusterNode, Flags, NodeId, SlotSet};
use crate::cluster::SLOTS;
use crate::gossip::wire::{msg_flags, node_flags, Body, Gossip, Header, Message, MsgType};
pub use failover::FailoverMode;
use std::collections::{BTreeMap, VecDeque};

/// How a message reaches a peer; the driver owns the sockets behind it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// Our outbound connection to a bus address.
    To { ip: String, cport: u16 },
    /// A connection a peer opened to us; replies go back on it.
    From(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub link: Link,
    pub msg: Message,
}

/// CLUSTER SETSLOT actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetSlot {
    Migrating(NodeId),
    Importing(NodeId),
    Stable,
    Node(NodeId),
}

/// Things the node around the bus must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The configuration changed: write nodes.conf.
    ConfigChanged,
    /// A node was flagged FAIL (by us or by a peer's broadcast).
    NodeFailed(NodeId),
    /// My role changed: `Some(master)` → replicate that node; `None` → I
    /// am a master now (promoted), keep the data and accept writes.
    RoleChanged(Option<NodeId>),
    /// Manual failover, master side: hold client writes until this unix ms
    /// (0: resume now) so the replica can catch up with the final offset.
    PauseWrites(u64),
    /// `cluster_state` flipped between ok and fail.
    StateChanged,
    /// A PUBLISH (or SPUBLISH when `shard`) from another node, for the
    /// local subscribers.
    Message {
        channel: bytes::Bytes,
        message: bytes::Bytes,
        shard: bool,
    },
}

/// The cluster directives the bus obeys; the node may change them at run
/// time (CONFIG SET) through [`Bus::set_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// `cluster-node-timeout` in ms.
    pub node_timeout: u64,
    /// `cluster-replica-no-failover`: never start an automatic election.
    pub replica_no_failover: bool,
    /// `cluster-replica-validity-factor`: a replica whose data is older than
    /// `repl-ping-replica-period + node_timeout × factor` does not run for
    /// election (0: always may).
    pub replica_validity_factor: u64,
    /// `cluster-migration-barrier`: replicas a master keeps before one of
    /// them may migrate to an orphaned master.
    pub migration_barrier: u64,
    /// `cluster-allow-replica-migration`.
    pub allow_replica_migration: bool,
    /// `cluster-require-full-coverage`: an uncovered slot makes the whole
    /// cluster state fail.
    pub require_full_coverage: bool,
}

impl BusConfig {
    /// Redis's defaults for everything but the node timeout.
    pub fn new(node_timeout: u64) -> Self {
        BusConfig {
            node_timeout,
            replica_no_failover: false,
            replica_validity_factor: 10,
            migration_barrier: 1,
            allow_replica_migration: true,
            require_full_coverage: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Peer {
    node: ClusterNode,
    /// Masters that reported this node as PFAIL/FAIL → when.
    fail_reports: BTreeMap<NodeId, u64>,
    /// When the node entered the table (handshake expiry).
    created: u64,
    /// Send MEET rather than PING until the peer answers.
    meet: bool,
    fail_time: u64,
    /// The replication offset the node last advertised (election rank).
    repl_offset: u64,
    /// When we last voted for a replica of this master (one vote per
    /// master per 2 × node timeout).
    voted_time: u64,
    /// Has had replicas: a candidate target for replica migration when it
    /// loses them all (Redis's MIGRATE_TO flag).
    migrate_to: bool,
    /// Since when this master has slots but no working replica.
    orphaned_since: Option<u64>,
    /// When we last sent it a PING (`ping_sent` keeps the oldest
    /// unanswered one, for failure detection).
    last_ping: u64,
}

impl Peer {
    fn new(node: ClusterNode, created: u64, meet: bool) -> Peer {
        Peer {
            node,
            fail_reports: BTreeMap::new(),
            created,
            meet,
            fail_time: 0,
            repl_offset: 0,
            voted_time: 0,
            migrate_to: false,
            orphaned_since: None,
            last_ping: 0,
        }
    }
}

pub struct Bus {
    cfg: BusConfig,
    me: ClusterNode,
    peers: BTreeMap<NodeId, Peer>,
    /// Slots this node is migrating away / importing (CLUSTER SETSLOT).
    pub migrations: crate::cluster::topology::Migrations,
    /// Forgotten node ids → until when gossip about them is ignored.
    banned: BTreeMap<NodeId, u64>,
    /// Slot → owning node id.
    owners: Vec<Option<NodeId>>,
    pub current_epoch: u64,
    pub last_vote_epoch: u64,
    /// The last time seen by tick/handle, for commands that take no clock.
    now_hint: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Elections, votes and manual failover in progress.
    fo: failover::FailoverState,
    /// Replication facts the node feeds in ([`Bus::set_replication`]).
    repl_offset: u64,
    master_link_down_since: Option<u64>,
    /// `cluster_state:ok`, as last computed by the state update.
    state_ok: bool,
    /// Time of the first tick (a master waits before declaring itself ok).
    first_tick: Option<u64>,
    /// Started from a nodes.conf: the slots it lists may have moved on
    /// while this node was down, so it waits the writable delay.
    restored: bool,
    /// Last time this node found itself in a minority partition.
    among_minority_time: u64,
    /// Time of the previous tick (a long gap means we were frozen).
    last_tick: u64,
}

fn id_bytes(id: &str) -> [u8; 40] {
    let mut b = [b'0'; 40];
    for (d, s) in b.iter_mut().zip(id.bytes()) {
        *d = s;
    }
    b
}

fn id_string(b: &[u8; 40]) -> NodeId {
    String::from_utf8_lossy(b).into_owned()
}

fn to_wire_flags(f: &Flags) -> u16 {
    let mut w = 0;
    for (on, bit) in [
        (f.master, node_flags::MASTER),
        (f.slave, node_flags::SLAVE),
        (f.pfail, node_flags::PFAIL),
        (f.fail, node_flags::FAIL),
        (f.handshake, node_flags::HANDSHAKE),
        (f.noaddr, node_flags::NOADDR),
        (f.nofailover, node_flags::NOFAILOVER),
    ] {
        if on {
            w |= bit;
        }
    }
    w
}

impl Bus {
    /// A bus for `me` (its id, address and role already set).
    pub fn new(mut me: ClusterNode, cfg: BusConfig) -> Self {
        me.flags.myself = true;
        if !me.flags.slave {
            me.flags.master = true;
        }
        let mut owners = vec![None; SLOTS];
        for s in me.slots.iter() {
            if let Some(o) = owners.get_mut(usize::from(s)) {
                *o = Some(me.id.clone());
            }
        }
        Bus {
            cfg,
            me,
            peers: BTreeMap::new(),
            migrations: Default::default(),
            banned: BTreeMap::new(),
            owners,
            current_epoch: 0,
            last_vote_epoch: 0,
            now_hint: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            fo: failover::FailoverState::default(),
            repl_offset: 0,
            master_link_down_since: None,
            state_ok: false,
            first_tick: None,
            restored: false,
            among_minority_time: 0,
            last_tick: 0,
        }
    }

    pub fn myself(&self) -> &ClusterNode {
        &self.me
    }

    /// Every node, myself included, as CLUSTER NODES shows them.
    pub fn nodes(&self) -> Vec<&ClusterNode> {
        let mut v: Vec<&ClusterNode> = self.peers.values().map(|p| &p.node).collect();
        v.push(&self.me);
        v
    }

    pub fn node(&self, id: &str) -> Option<&ClusterNode> {
        if id == self.me.id {
            Some(&self.me)
        } else {
            self.peers.get(id).map(|p| &p.node)
        }
    }

    /// Owner id of every slot, indexed by slot.
    pub fn owner_ids(&self) -> &[Option<NodeId>] {
        &self.owners
    }

    pub fn slot_owner(&self, slot: u16) -> Option<&ClusterNode> {
        let id = self.owners.get(usize::from(slot))?.as_ref()?;
        self.node(id)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn changed(&mut self) {
        if self.events.back() != Some(&Event::ConfigChanged) {
            self.events.push_back(Event::ConfigChanged);
        }
    }

    /// Rebuilds the state saved in nodes.conf: same id, peers, slots and
    /// epochs; links start disconnected and are re-established by ticks.
    pub fn restore(conf: crate::cluster::topology::NodesConf, cfg: BusConfig) -> Option<Self> {
        let mut me = None;
        let mut peers = BTreeMap::new();
        for mut n in conf.nodes {
            n.ping_sent = 0;
            n.link_connected = false;
            if n.flags.myself {
                me = Some(n);
            } else {
                peers.insert(n.id.clone(), Peer::new(n, 0, false));
            }
        }
        let mut bus = Bus::new(me?, cfg);
        for p in peers.values() {
            for s in p.node.slots.iter() {
                if let Some(o) = bus.owners.get_mut(usize::from(s)) {
                    *o = Some(p.node.id.clone());
                }
            }
        }
        bus.peers = peers;
        bus.migrations = conf.migrations;
        bus.current_epoch = conf.current_epoch;
        bus.last_vote_epoch = conf.last_vote_epoch;
        bus.restored = true;
        Some(bus)
    }

    /// PUBLISH reaches every node of the cluster; SPUBLISH only the nodes
    /// of this shard (its master and replicas), as in Redis.
    pub fn publish(&mut self, channel: &bytes::Bytes, message: &bytes::Bytes, shard: bool) {
        let my_master = if self.me.flags.master {
            self.me.id.clone()
        } else {
            self.me.master_id.clone().unwrap_or_default()
        };
        let links: Vec<Link> = self
            .peers
            .values()
            .filter(|p| !p.node.flags.handshake && !p.node.flags.noaddr)
            .filter(|p| {
                !shard
                    || p.node.id == my_master
                    || p.node.master_id.as_deref() == Some(my_master.as_str())
            })
            .map(|p| Self::link_of(&p.node))
            .collect();
        let kind = if shard {
            MsgType::PublishShard
        } else {
            MsgType::Publish
        };
        for link in links {
            let msg = Message {
                kind,
                header: self.header(),
                body: Body::Publish {
                    channel: channel.clone(),
                    message: message.clone(),
                },
            };
            self.out.push_back(Transmit { link, msg });
        }
    }

    /// Our connection to a peer's bus address failed or closed: CLUSTER
    /// NODES shows it `disconnected` until its next PONG.
    pub fn link_lost(&mut self, link: &Link) {
        let Link::To { ip, cport } = link else {
            return;
        };
        for p in self.peers.values_mut() {
            if &p.node.ip == ip && p.node.cport == *cport {
                p.node.link_connected = false;
            }
        }
    }

    /// Replicas of `master`.
    pub fn replicas_of(&self, master: &str) -> Vec<&ClusterNode> {
        self.peers
            .values()
            .map(|p| &p.node)
            .filter(|n| n.master_id.as_deref() == Some(master))
            .collect()
    }

    /// What nodes.conf holds.
    pub fn nodes_conf(&self) -> crate::cluster::topology::NodesConf {
        crate::cluster::topology::NodesConf {
            nodes: self.nodes().into_iter().cloned().collect(),
            migrations: self.migrations.clone(),
            current_epoch: self.current_epoch,
            last_vote_epoch: self.last_vote_epoch,
        }
    }

    /// Tells every known node about a change of ours now, instead of at
    /// their next ping (Redis broadcasts a PONG the same way).
    pub fn broadcast_pong(&mut self) {
        let targets: Vec<(Link, NodeId)> = self
            .peers
            .values()
            .filter(|p| !p.node.flags.handshake)
            .map(|p| (Self::link_of(&p.node), p.node.id.clone()))
            .collect();
        for (link, id) in targets {
            self.send(link, MsgType::Pong, Some(&id));
        }
    }

    /// A replica advertises its master's config epoch, as in Redis.
    fn advertised_epoch(&self) -> u64 {
        self.me
            .master_id
            .as_deref()
            .and_then(|m| self.peers.get(m))
            .map_or(self.me.config_epoch, |m| m.node.config_epoch)
    }

    fn header(&self) -> Header {
        // A replica advertises its master's slots (as Redis does), so a
        // voter can tell whether the replica's view of them is current.
        let slots = self
            .me
            .master_id
            .as_deref()
            .and_then(|m| self.peers.get(m))
            .map_or_else(|| self.me.slots.clone(), |m| m.node.slots.clone());
        let paused = self.me.flags.master && self.fo.mf_end != 0;
        Header {
            sender: id_bytes(&self.me.id),
            current_epoch: self.current_epoch,
            config_epoch: self.advertised_epoch(),
            repl_offset: self.repl_offset,
            flags: to_wire_flags(&self.me.flags),
            msg_flags: if paused { msg_flags::PAUSED } else { 0 },
            state: u8::from(!self.state_ok),
            ip: self.me.ip.clone(),
            hostname: self.me.hostname.clone(),
            port: self.me.port,
            cport: self.me.cport,
            master: self.me.master_id.as_deref().map_or([0; 40], id_bytes),
            slots,
        }
    }

    /// Gossip about other nodes: a few random ones plus every suspect, so
    /// failure reports spread fast.
    fn gossip_for(&self, to: Option<&str>) -> Vec<Gossip> {
        use rand::seq::IteratorRandom;
        let candidates = self.peers.values().filter(|p| {
            !p.node.flags.handshake && !p.node.flags.noaddr && Some(p.node.id.as_str()) != to
        });
        let wanted = (self.peers.len() / 10).max(3);
        let mut chosen: Vec<&Peer> = candidates.clone().choose_multiple(&mut rand::rng(), wanted);
        for p in candidates.filter(|p| p.node.flags.pfail || p.node.flags.fail) {
            if !chosen.iter().any(|c| c.node.id == p.node.id) {
                chosen.push(p);
            }
        }
        chosen
            .into_iter()
            .map(|p| Gossip {
                id: id_bytes(&p.node.id),
                ping_sent: p.node.ping_sent,
                pong_received: p.node.pong_received,
                ip: p.node.ip.clone(),
                port: p.node.port,
                cport: p.node.cport,
                flags: to_wire_flags(&p.node.flags),
            })
            .collect()
    }

    fn send(&mut self, link: Link, kind: MsgType, to: Option<&str>) {
        let body = match kind {
            MsgType::Ping | MsgType::Pong | MsgType::Meet => Body::Gossip(self.gossip_for(to)),
            _ => Body::Empty,
        };
        let msg = Message {
            kind,
            header: self.header(),
            body,
        };
        self.out.push_back(Transmit { link, msg });
    }

    fn link_of(node: &ClusterNode) -> Link {
        Link::To {
            ip: node.ip.clone(),
            cport: node.cport,
        }
    }

    /// Masters that own at least one slot: the electorate for FAIL.
    fn cluster_size(&self) -> usize {
        let mut n = usize::from(self.me.flags.master && !self.me.slots.is_empty());
        n += self
            .peers
            .values()
            .filter(|p| p.node.flags.master && !p.node.slots.is_empty())
            .count();
        n
    }

    /// Housekeeping, about ten times a second.
    pub fn tick(&mut self, now: u64) {
        let timeout = self.cfg.node_timeout;
        // No tick for longer than the node timeout: this process (or its
        // host) was frozen, and the cluster may have replaced us meanwhile.
        // Refuse writes as if back from a minority partition until we have
        // heard from the others (the rejoin delay), instead of serving a
        // stale view the instant we wake up.
        if self.last_tick != 0 && now.saturating_sub(self.last_tick) > timeout {
            tracing::warn!(
                gap_ms = now - self.last_tick,
                "no bus activity for longer than the node timeout (paused?): refusing writes until the cluster is heard from"
            );
            self.among_minority_time = now;
            if self.state_ok {
                self.state_ok = false;
                self.events.push_back(Event::StateChanged);
            }
            // Our own PINGs went unanswered because we were not running,
            // not because the peers died: time them from now.
            for p in self.peers.values_mut() {
                if p.node.ping_sent != 0 {
                    p.node.ping_sent = now;
                }
            }
        }
        self.last_tick = now;
        // CLUSTER NODES shows "now" (to the second) as myself's pong time.
        self.me.pong_received = now / 1000 * 1000;
        self.now_hint = now;
        self.banned.retain(|_, until| *until > now);
        // Handshakes that never completed are dropped.
        let expired: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| p.node.flags.handshake && now.saturating_sub(p.created) > timeout.max(1000))
            .map(|p| p.node.id.clone())
            .collect();
        for id in expired {
            self.peers.remove(&id);
        }
        let ids: Vec<NodeId> = self.peers.keys().cloned().collect();
        for id in ids {
            let Some(p) = self.peers.get(&id) else {
                continue;
            };
            let node = &p.node;
            let waiting = node.ping_sent != 0;
            let due = !waiting
                && (node.flags.handshake || now.saturating_sub(node.pong_received) > timeout / 2);
            // An unanswered PING is repeated every half timeout (Redis
            // reconnects the link and pings again), or a healed partition
            // would never be noticed; `ping_sent` keeps the first one.
            let retry = waiting && now.saturating_sub(p.last_ping) > (timeout / 2).max(500);
            if due || retry {
                let kind = if p.meet { MsgType::Meet } else { MsgType::Ping };
                let link = Self::link_of(node);
                self.send(link, kind, Some(&id));
                if let Some(p) = self.peers.get_mut(&id) {
                    if p.node.ping_sent == 0 {
                        p.node.ping_sent = now;
                    }
                    p.last_ping = now;
                }
            }
            let Some(p) = self.peers.get(&id) else {
                continue;
            };
            let node = &p.node;
            if waiting
                && now.saturating_sub(node.ping_sent) > timeout
                && !node.flags.pfail
                && !node.flags.fail
                && !node.flags.handshake
            {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.node.flags.pfail = true;
                }
                tracing::debug!(node_id = %id, "node is not reachable (PFAIL)");
                self.mark_failing_if_needed(&id, now);
                self.spread_suspicion(&id, now);
            }
        }
        self.failover_tick(now);
    }

    /// Takes the sender's view of itself: role, epochs, slots.
    fn update_from_header(&mut self, h: &Header, now: u64) {
        let sender = id_string(&h.sender);
        self.current_epoch = self.current_epoch.max(h.current_epoch);
        let is_master = h.flags & node_flags::MASTER != 0;
        let Some(p) = self.peers.get_mut(&sender) else {
            return;
        };
        p.repl_offset = h.repl_offset;
        let undo_after = self.cfg.node_timeout * failover::FAIL_UNDO_TIME_MULT;
        let n = &mut p.node;
        // What a header can change that nodes.conf records.
        let role = |n: &ClusterNode| {
            (
                n.flags.master,
                n.flags.slave,
                n.config_epoch,
                n.master_id.clone(),
                n.port,
            )
        };
        let before = role(n);
        let demoted = n.flags.master && !is_master;
        n.flags.master = is_master;
        n.flags.slave = !is_master;
        n.config_epoch = h.config_epoch;
        n.master_id = (h.master != [0; 40]).then(|| id_string(&h.master));
        n.port = h.port;
        n.flags.nofailover = h.flags & node_flags::NOFAILOVER != 0;
        // Hearing from a node clears our own suspicion.
        if n.flags.pfail {
            n.flags.pfail = false;
        }
        // A reachable replica or slot-less master is not failed; nor is a
        // master nobody replaced long after it was failed (Redis's undo).
        let unfailed = n.flags.fail
            && (!is_master
                || h.slots.is_empty()
                || n.slots.is_empty()
                || now.saturating_sub(p.fail_time) > undo_after);
        if unfailed {
            n.flags.fail = false;
            tracing::info!(node_id = %sender, "clear FAIL state for node: it is reachable again");
        }
        let after = role(n);
        // A master that turned into a replica serves no slot any more;
        // its former slots wait for their new owner's claim.
        if demoted {
            let gone: Vec<u16> = n.slots.iter().collect();
            n.slots = SlotSet::default();
            for s in gone {
                if let Some(o) = self.owners.get_mut(usize::from(s)) {
                    if o.as_deref() == Some(sender.as_str()) {
                        *o = None;
                    }
                }
            }
        }
        if unfailed || before != after {
            self.changed();
        }
        // A replica shows (CLUSTER NODES, nodes.conf) its master's config
        // epoch, as Redis does.
        if self.me.flags.slave
            && self.me.master_id.as_deref() == Some(sender.as_str())
            && self.me.config_epoch != h.config_epoch
        {
            self.me.config_epoch = h.config_epoch;
            self.changed();
        }
        self.handle_epoch_collision(&sender, is_master, h.config_epoch);
        if is_master {
            self.claim_slots(&sender, &h.slots, h.config_epoch);
        }
    }

    fn process_gossip(&mut self, sender: &str, entries: &[Gossip], now: u64) {
        let sender_is_master = self.peers.get(sender).is_some_and(|p| p.node.flags.master);
        for g in entries {
            let gid = id_string(&g.id);
            if gid == self.me.id {
                continue;
            }
            if self.banned.contains_key(&gid) {
                continue;
            }
            if self.peers.contains_key(&gid) {
                if sender_is_master {
                    let suspect = g.flags & (node_flags::PFAIL | node_flags::FAIL) != 0;
                    if let Some(p) = self.peers.get_mut(&gid) {
                        if suspect {
                            p.fail_reports.insert(sender.to_string(), now);
                        } else {
                            p.fail_reports.remove(sender);
                        }
                    }
                    if suspect {
                        self.mark_failing_if_needed(&gid, now);
                    }
                }
            } else if g.flags & (node_flags::NOADDR | node_flags::HANDSHAKE) == 0 {
                // Someone we trust knows a node we do not: meet it.
                self.meet(&g.ip, g.port, g.cport, now);
            }
        }
    }

    /// A message arrived on `link`.
    pub fn handle(&mut self, link: Link, msg: Message, now: u64) {
        let sender = id_string(&msg.header.sender);
        self.now_hint = now;
        if sender == self.me.id || self.banned.contains_key(&sender) {
            return;
        }
        let known = self.peers.contains_key(&sender);
        if known {
            // Every message carries the sender's epoch and offset (Redis
            // updates both before looking at the type).
            self.current_epoch = self.current_epoch.max(msg.header.current_epoch);
            if let Some(p) = self.peers.get_mut(&sender) {
                p.repl_offset = msg.header.repl_offset;
            }
            if matches!(msg.kind, MsgType::Ping | MsgType::Pong) {
                self.note_paused_master(&sender, &msg.header);
            }
        }
        match msg.kind {
            MsgType::Meet | MsgType::Ping => {
                if !known && msg.kind == MsgType::Meet {
                    let h = &msg.header;
                    let mut node = ClusterNode::new(sender.clone(), &h.ip, h.port, h.cport);
                    node.flags.master = h.flags & node_flags::MASTER != 0;
                    node.flags.slave = !node.flags.master;
                    node.pong_received = now;
                    // Drop a handshake entry for the same address, if any.
                    self.peers.retain(|_, p| {
                        !(p.node.flags.handshake && p.node.ip == h.ip && p.node.cport == h.cport)
                    });
                    self.peers
                        .insert(sender.clone(), Peer::new(node, now, false));
                    self.changed();
                }
                if self.peers.contains_key(&sender) {
                    self.update_from_header(&msg.header, now);
                    self.maybe_update(&link, &sender, &msg.header);
                    if let Body::Gossip(g) = &msg.body {
                        self.process_gossip(&sender, g, now);
                    }
                }
                self.send(link, MsgType::Pong, Some(&sender));
            }
            MsgType::Pong => {
                if !known {
                    // The answer to our MEET/PING of a handshake node: it now
                    // has a real id.
                    let Link::To { ip, cport } = &link else {
                        return;
                    };
                    let hs = self
                        .peers
                        .values()
                        .find(|p| {
                            p.node.flags.handshake && &p.node.ip == ip && p.node.cport == *cport
                        })
                        .map(|p| p.node.id.clone());
                    let Some(hs) = hs else { return };
                    let Some(mut p) = self.peers.remove(&hs) else {
                        return;
                    };
                    p.node.id = sender.clone();
                    p.node.flags.handshake = false;
                    p.meet = false;
                    self.peers.insert(sender.clone(), p);
                    self.changed();
                }
                if let Some(p) = self.peers.get_mut(&sender) {
                    p.node.pong_received = now;
                    p.node.ping_sent = 0;
                    p.node.link_connected = true;
                    p.meet = false;
                }
                self.update_from_header(&msg.header, now);
                self.maybe_update(&link, &sender, &msg.header);
                if let Body::Gossip(g) = &msg.body {
                    self.process_gossip(&sender, g, now);
                }
            }
            MsgType::Update => {
                if let Body::Update {
                    id,
                    config_epoch,
                    slots,
                } = &msg.body
                {
                    let owner = id_string(id);
                    if owner == self.me.id {
                        return;
                    }
                    if let Some(p) = self.peers.get_mut(&owner) {
                        if p.node.config_epoch < *config_epoch {
                            p.node.config_epoch = *config_epoch;
                        }
                    }
                    if self.peers.contains_key(&owner) {
                        self.claim_slots(&owner, slots, *config_epoch);
                    }
                }
            }
            MsgType::Fail => {
                if let Body::Fail { id } = &msg.body {
                    let failed = id_string(id);
                    if known && failed != self.me.id {
                        if let Some(p) = self.peers.get_mut(&failed) {
                            if !p.node.flags.fail {
                                p.node.flags.fail = true;
                                p.node.flags.pfail = false;
                                p.fail_time = now;
                                self.events.push_back(Event::NodeFailed(failed));
                                self.changed();
                            }
                        }
                    }
                }
            }
            MsgType::Publish | MsgType::PublishShard if known => {
                if let Body::Publish { channel, message } = msg.body {
                    self.events.push_back(Event::Message {
                        channel,
                        message,
                        shard: msg.kind == MsgType::PublishShard,
                    });
                }
            }
            MsgType::AuthRequest if known => self.on_auth_request(link, &sender, &msg.header, now),
            MsgType::AuthAck if known => self.on_auth_ack(&sender, &msg.header, now),
            MsgType::MfStart if known => self.on_mfstart(&sender, now),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// N buses in memory, wired by their bus addresses, on a simulated clock.
    pub(super) struct Sim {
        pub(super) buses: Vec<Bus>,
        pub(super) down: Vec<bool>,
        /// Pairs of nodes (lower index first) that cannot talk (partitions).
        pub(super) cut: std::collections::BTreeSet<(usize, usize)>,
        pub(super) now: u64,
    }

    impl Sim {
        pub(super) fn new(n: usize) -> Sim {
            let buses = (0..n)
                .map(|i| {
                    let port = 7000 + i as u16;
                    Bus::new(
                        ClusterNode::new(random_node_id(), "127.0.0.1", port, port + 10000),
                        BusConfig::new(5000),
                    )
                })
                .collect();
            Sim {
                buses,
                down: vec![false; n],
                cut: Default::default(),
                now: 1_000_000,
            }
        }

        fn index_of(&self, cport: u16) -> Option<usize> {
            self.buses.iter().position(|b| b.me.cport == cport)
        }

        /// Separates `group` from every other node.
        pub(super) fn partition(&mut self, group: &[usize]) {
            for &a in group {
                for b in 0..self.buses.len() {
                    if !group.contains(&b) {
                        self.cut.insert((a.min(b), a.max(b)));
                    }
                }
            }
        }

        /// Advances time until `cond` holds (true) or `ms` pass (false).
        pub(super) fn run_until(&mut self, ms: u64, mut cond: impl FnMut(&Sim) -> bool) -> bool {
            for _ in 0..ms / 100 {
                if cond(self) {
                    return true;
                }
                self.run(100);
            }
            cond(self)
        }

        /// Advances `ms` of simulated time in 100 ms steps, delivering all
        /// messages between live nodes.
        pub(super) fn run(&mut self, ms: u64) {
            for _ in 0..ms / 100 {
                self.now += 100;
                for (i, b) in self.buses.iter_mut().enumerate() {
                    if !self.down[i] {
                        b.tick(self.now);
                    }
                }
                for _round in 0..10 {
                    let mut inflight = Vec::new();
                    for (i, b) in self.buses.iter_mut().enumerate() {
                        while let Some(t) = b.poll_transmit() {
                            inflight.push((i, t));
                        }
                    }
                    if inflight.is_empty() {
                        break;
                    }
                    for (from, t) in inflight {
                        // From(i) on the receiving side means "node i's connection";
                        // replies on From(i) go back to node i as arriving on
                        // its To{receiver address} link.
                        let (to, arrival) = match &t.link {
                            Link::To { cport, .. } => match self.index_of(*cport) {
                                Some(to) => (to, Link::From(from as u64)),
                                None => continue,
                            },
                            Link::From(i) => {
                                let me = &self.buses[from].me;
                                (
                                    *i as usize,
                                    Link::To {
                                        ip: me.ip.clone(),
                                        cport: me.cport,
                                    },
                                )
                            }
                        };
                        if self.down[from]
                            || self.down[to]
                            || self.cut.contains(&(from.min(to), from.max(to)))
                        {
                            continue;
                        }
                        let now = self.now;
                        self.buses[to].handle(arrival, t.msg, now);
                    }
                }
            }
        }

        pub(super) fn everyone_knows_everyone(&self) -> bool {
            self.buses.iter().all(|b| {
                b.peers.len() == self.buses.len() - 1
                    && b.peers.values().all(|p| !p.node.flags.handshake)
            })
        }
    }

    /// `n` nodes; nodes 0, 1 and 2 are masters with the slots split in
    /// three and config epochs 1..3, and node 0 meets all the others, as
    /// redis-cli does. Nothing has run yet.
    pub(super) fn three_masters_of(n: usize) -> Sim {
        let mut sim = Sim::new(n);
        let per = SLOTS / 3;
        for i in 0..3 {
            let lo = i * per;
            let hi = if i == 2 { SLOTS } else { lo + per };
            let slots: Vec<u16> = (lo as u16..hi as u16).collect();
            sim.buses[i].add_slots(&slots);
            sim.buses[i].set_config_epoch(i as u64 + 1);
        }
        let now = sim.now;
        for i in 1..n {
            let (port, cport) = (sim.buses[i].me.port, sim.buses[i].me.cport);
            sim.buses[0].meet("127.0.0.1", port, cport, now);
        }
        sim
    }

    /// Node `by` becomes a master claiming every slot of `from` with config
    /// epoch `epoch`, as an election winner would.
    fn take_over(sim: &mut Sim, by: usize, from: usize, epoch: u64) {
        let slots: Vec<u16> = sim.buses[from].me.slots.iter().collect();
        let b = &mut sim.buses[by];
        b.me.flags.master = true;
        b.me.flags.slave = false;
        b.me.master_id = None;
        b.add_slots(&slots);
        b.set_config_epoch(epoch);
    }

    pub(super) fn three_masters_three_replicas() -> Sim {
        let mut sim = three_masters_of(6);
        for i in 3..6 {
            sim.buses[i].me.flags.master = false;
            sim.buses[i].me.flags.slave = true;
        }
        sim
    }

    #[test]
    fn meet_then_gossip_forms_a_full_mesh() {
        let mut sim = three_masters_three_replicas();
        sim.run(10_000);
        assert!(sim.everyone_knows_everyone(), "mesh incomplete");
        // Everyone agrees on who owns every slot.
        for b in &sim.buses {
            assert!(b.state_ok());
            for slot in [0u16, 5461, 16383] {
                let owner = b.slot_owner(slot).map(|n| n.port);
                assert_eq!(owner, sim.buses[0].slot_owner(slot).map(|n| n.port));
            }
        }
    }

    #[test]
    fn a_dead_master_is_failed_by_majority_within_two_timeouts() {
        let mut sim = three_masters_three_replicas();
        sim.run(10_000);
        assert!(sim.everyone_knows_everyone());
        let dead = sim.buses[2].me.id.clone();
        sim.down[2] = true;
        // Not before node-timeout...
        sim.run(4_000);
        assert!(sim.buses[0].node(&dead).is_some_and(|n| !n.flags.fail));
        // ...and by everyone after it (PFAIL, reports, quorum, broadcast).
        sim.run(8_000);
        for (i, b) in sim.buses.iter().enumerate() {
            if i != 2 {
                let n = b.node(&dead).unwrap();
                assert!(
                    n.flags.fail,
                    "node {i} does not see the dead master as failed: {}",
                    n.flags.render()
                );
                assert!(!b.state_ok(), "its slots are uncovered");
            }
        }
    }

    #[test]
    fn a_ping_lost_while_a_peer_was_briefly_away_is_retried() {
        // As when a whole cluster restarts from nodes.conf: the first PING
        // can reach a peer that is not listening yet. Nobody may wait
        // forever for that PONG and then declare a live node failed.
        let mut sim = three_masters_three_replicas();
        sim.run(10_000);
        assert!(sim.everyone_knows_everyone());
        sim.down[1] = true;
        sim.run(2_000);
        sim.down[1] = false;
        sim.run(15_000);
        for (i, b) in sim.buses.iter().enumerate() {
            for p in b.peers.values() {
                assert!(
                    !p.node.flags.pfail && !p.node.flags.fail,
                    "node {i} sees {} as {}",
                    p.node.port,
                    p.node.flags.render()
                );
            }
            assert!(b.state_ok(), "node {i}");
        }
    }

    #[test]
    fn a_failed_master_that_nobody_replaced_is_unfailed_when_it_returns() {
        // The founding walkthrough with failover disabled (or no replica
        // able to take over): the master comes back with its slots.
        let mut sim = three_masters_three_replicas();
        sim.run(10_000);
        let dead = sim.buses[1].me.id.clone();
        sim.down[1] = true;
        sim.run(15_000);
        assert!(sim.buses[0].node(&dead).is_some_and(|n| n.flags.fail));
        assert!(!sim.buses[0].state_ok());
        sim.down[1] = false;
        sim.run(15_000);
        for (i, b) in sim.buses.iter().enumerate() {
            if i != 1 {
                let n = b.node(&dead).unwrap();
                assert!(!n.flags.fail, "node {i} still sees {}", n.flags.render());
                assert!(b.state_ok(), "node {i}");
            }
        }
    }

    #[test]
    fn a_lost_link_shows_disconnected_until_the_next_pong() {
        let mut sim = three_masters_three_replicas();
        sim.run(10_000);
        let peer = sim.buses[1].me.clone();
        let link = Link::To {
            ip: peer.ip.clone(),
            cport: peer.cport,
        };
        let shown = |sim: &Sim| {
            crate::cluster::topology::render_node_line(sim.buses[0].node(&peer.id).unwrap(), None)
        };
        assert!(shown(&sim).contains(" connected"));
        sim.buses[0].link_lost(&link);
        assert!(shown(&sim).contains(" disconnected"), "{}", shown(&sim));
        sim.run(5_000);
        assert!(shown(&sim).contains(" connected"), "{}", shown(&sim));
    }

    #[test]
    fn publish_reaches_every_node_and_spublish_only_the_shard() {
        let mut sim = three_masters_three_replicas();
        // Node 3 replicates node 0: they form one shard.
        sim.run(10_000);
        let m0 = sim.buses[0].me.id.clone();
        sim.buses[3].set_master(&m0);
        sim.run(3_000);
        for b in &mut sim.buses {
            while b.poll_event().is_some() {}
        }
        let got = |sim: &mut Sim, shard: bool| -> Vec<usize> {
            let mut who = Vec::new();
            for (i, b) in sim.buses.iter_mut().enumerate() {
                while let Some(e) = b.poll_event() {
                    if let Event::Message {
                        channel,
                        message,
                        shard: s,
                    } = e
                    {
                        assert_eq!(
                            (&channel[..], &message[..], s),
                            (&b"ch"[..], &b"hi"[..], shard)
                        );
                        who.push(i);
                    }
                }
            }
            who
        };
        let (ch, msg) = (bytes::Bytes::from("ch"), bytes::Bytes::from("hi"));
        sim.buses[1].publish(&ch, &msg, false);
        sim.run(100);
        assert_eq!(got(&mut sim, false), vec![0, 2, 3, 4, 5]);
        sim.buses[0].publish(&ch, &msg, true);
        sim.run(100);
        assert_eq!(got(&mut sim, true), vec![3]);
    }

    #[test]
    fn equal_config_epochs_are_made_unique() {
        let mut sim = three_masters_three_replicas();
        // Masters 0 and 1 collide on epoch 2.
        sim.buses[0].me.config_epoch = 2;
        sim.run(10_000);
        let e0 = sim.buses[0].me.config_epoch;
        let e1 = sim.buses[1].me.config_epoch;
        assert_ne!(e0, e1, "collision resolved");
    }

    #[test]
    fn a_returning_stale_master_gives_up_its_slots() {
        let mut sim = three_masters_three_replicas();
        sim.run(10_000);
        // Node 0 is cut off while node 3 takes its slots with a newer epoch.
        sim.down[0] = true;
        take_over(&mut sim, 3, 0, 20);
        sim.run(6_000);
        // Node 0 comes back still claiming them; newer claims (PING headers
        // or an UPDATE) correct it.
        sim.down[0] = false;
        sim.run(6_000);
        assert!(
            sim.buses[0].me.slots.is_empty(),
            "stale master gave up its slots"
        );
        assert_eq!(
            sim.buses[0].slot_owner(0).map(|n| n.port),
            Some(sim.buses[3].me.port)
        );
    }

    #[test]
    fn newer_config_epoch_takes_over_slots() {
        let mut sim = three_masters_three_replicas();
        sim.run(10_000);
        // Node 3 (a replica) is promoted: it claims node 0's slots with a
        // higher epoch, as an election winner would.
        take_over(&mut sim, 3, 0, 10);
        sim.run(6_000);
        let new_owner = sim.buses[3].me.port;
        for b in &sim.buses {
            assert_eq!(b.slot_owner(0).map(|n| n.port), Some(new_owner));
        }
        assert!(
            sim.buses[0].me.slots.is_empty(),
            "the old master gave its slots up"
        );
    }
}
