//! Replication: the propagation stream every write feeds, replication ids
//! and offsets, the backlog, and the master and replica sides of Redis's
//! replication protocol (PSYNC, full and partial resync, REPLCONF ACK).
//!
//! The protocol logic is sans-IO and testable without sockets
//! (`propagate`, `backlog`, `handshake`); the drivers that do the
//! networking over the server's state are `node::replication`'s.
//!
//! [`Repl`] is the node's replication handle. Besides what the drivers use,
//! it is the interface the cluster bus calls: `set_master`, `offset`,
//! `link_down_since_ms`, `is_replica` (all callable from any thread,
//! none blocks).
//!
//! Lock order: keyspace lock, then the feed lock. The stream is appended
//! under both, so a position read under the keyspace lock is the position
//! of the keyspace's current state.

pub mod backlog;
pub mod handshake;
pub mod propagate;

use backlog::Backlog;
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::watch;

/// `REPLCONF GETACK *`, as fed into the stream.
pub const GETACK: &[u8] = b"*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n";
/// `PING`, as fed into the stream every `repl-ping-replica-period`.
pub const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// A new random replication id (40 hex characters), as Redis makes one
/// at start and at each promotion.
pub fn new_replid() -> String {
    crate::util::random_hex_id()
}

const NO_ID: &str = "0000000000000000000000000000000000000000";

/// How far behind the stream a replica may fall before it stops pinning
/// the backlog, unless `client-output-buffer-limit replica` allows more
/// (Redis's default hard limit, 256 MB).
pub const MAX_LAG: u64 = 256 * 1024 * 1024;

/// Where a replica of ours is in its sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Waiting for the snapshot it will load.
    WaitBgsave,
    /// Receiving the snapshot.
    SendBulk,
    /// Receiving the command stream.
    Online,
}

impl ReplicaState {
    pub fn name(self) -> &'static str {
        match self {
            ReplicaState::WaitBgsave => "wait_bgsave",
            ReplicaState::SendBulk => "send_bulk",
            ReplicaState::Online => "online",
        }
    }
}

/// One replica of ours, as INFO and WAIT see it.
#[derive(Debug, Clone)]
pub struct ReplicaInfo {
    pub ip: String,
    /// The port it listens on (REPLCONF listening-port).
    pub port: u16,
    pub state: ReplicaState,
    /// Stream position sent so far (pins the backlog).
    pub pos: u64,
    /// Offset it acknowledged (REPLCONF ACK).
    pub ack: u64,
    pub last_ack_ms: u64,
}

/// The replication stream's identity and position, and who reads it.
#[derive(Debug)]
pub struct Feed {
    pub replid: String,
    /// The id we had before a promotion (PSYNC continuation for former
    /// siblings), valid up to `second_offset` (a PSYNC offset, 1-based).
    pub replid2: String,
    pub second_offset: Option<u64>,
    /// master_repl_offset: bytes of stream produced (or, on a replica,
    /// received from the master and applied) so far.
    pub offset: u64,
    pub backlog: Option<Backlog>,
    pub replicas: BTreeMap<u64, ReplicaInfo>,
    backlog_limit: usize,
    /// The replica hard output limit in force (0 = none): what a lagging
    /// replica may pin.
    pub max_lag: u64,
}

impl Feed {
    fn append(&mut self, b: &[u8]) {
        if let Some(bl) = self.backlog.as_mut() {
            bl.append(b);
            self.offset = bl.end();
        }
        self.trim();
    }

    /// Frees what no replica needs beyond repl-backlog-size. A replica
    /// more than MAX_LAG behind pins nothing: it will have to resync.
    fn trim(&mut self) {
        let lag = match self.max_lag {
            0 => u64::MAX,
            l => l.max(MAX_LAG),
        };
        let floor = self.offset.saturating_sub(lag);
        let keep = self
            .replicas
            .values()
            .map(|r| r.pos)
            .min()
            .unwrap_or(u64::MAX)
            .max(floor);
        if let Some(bl) = self.backlog.as_mut() {
            bl.trim(keep);
        }
    }

    /// Shifts to a new replication id, keeping the old one as replid2 for
    /// PSYNC continuation up to here (a promotion).
    fn shift_replid(&mut self) {
        self.replid2 = std::mem::replace(&mut self.replid, new_replid());
        self.second_offset = Some(self.offset + 1);
    }
}

/// The link to our master, as INFO and ROLE show it.
#[derive(Debug, Clone, Default)]
pub struct LinkInfo {
    pub up: bool,
    /// connect, connecting, handshake, sync, connected (ROLE's words).
    pub state: &'static str,
    /// Unix ms since when the link is down (None when up, or never
    /// connected since we became a replica: then `since_role_ms`).
    pub down_since_ms: Option<u64>,
    pub last_io_ms: u64,
    pub sync_in_progress: bool,
    pub sync_total_bytes: i64,
    pub sync_read_bytes: u64,
}

/// Counters for INFO stats.
#[derive(Debug, Default)]
pub struct ReplStats {
    pub sync_full: AtomicU64,
    pub sync_partial_ok: AtomicU64,
    pub sync_partial_err: AtomicU64,
}

/// Replication state of a node.
pub struct Repl {
    feed: Mutex<Feed>,
    /// The stream's end offset, for replica senders to wait on.
    end_tx: watch::Sender<u64>,
    /// Bumped when a replica acknowledges (WAIT waits on it).
    acks_tx: watch::Sender<u64>,
    /// Bumped to drop every replica connection (role and id changes).
    kick_tx: watch::Sender<u64>,
    /// Bumped to drop our link to the master (CLIENT KILL TYPE master).
    relink_tx: watch::Sender<u64>,
    /// Bumped when a master becomes a replica: clients blocked on its keys
    /// are released with Redis's UNBLOCKED error.
    demoted_tx: watch::Sender<u64>,
    replica: AtomicBool,
    /// The master we should replicate from (the replica driver follows it).
    target: watch::Sender<Option<(String, u16)>>,
    pub link: Mutex<LinkInfo>,
    pub stats: ReplStats,
    /// Whether the append-only log consumes the stream.
    aof_on: AtomicBool,
    /// Whether the feed has a backlog (read on every batch: no lock).
    backlog_on: AtomicBool,
    next_replica_id: AtomicU64,
}

impl Default for Repl {
    fn default() -> Self {
        Self::new()
    }
}

impl Repl {
    pub fn new() -> Self {
        Repl {
            feed: Mutex::new(Feed {
                replid: new_replid(),
                replid2: NO_ID.to_string(),
                second_offset: None,
                offset: 0,
                backlog: None,
                replicas: BTreeMap::new(),
                backlog_limit: 1 << 20,
                max_lag: MAX_LAG,
            }),
            end_tx: watch::channel(0).0,
            acks_tx: watch::channel(0).0,
            kick_tx: watch::channel(0).0,
            relink_tx: watch::channel(0).0,
            demoted_tx: watch::channel(0).0,
            replica: AtomicBool::new(false),
            target: watch::channel(None).0,
            link: Mutex::new(LinkInfo::default()),
            stats: ReplStats::default(),
            aof_on: AtomicBool::new(false),
            backlog_on: AtomicBool::new(false),
            next_replica_id: AtomicU64::new(1),
        }
    }

    pub fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock()
    }

    pub fn link(&self) -> MutexGuard<'_, LinkInfo> {
        self.link.lock()
    }

    // ---- the interface the cluster bus uses --------------------------------

    /// Become (or stay) a replica of `ip:port` (`Some`), or a master
    /// (`None`: a promotion keeps the data and the old id as replid2 so
    /// former siblings can continue partially). Only signals the replica
    /// driver; returns at once.
    pub fn set_master(&self, master: Option<(String, u16)>) {
        match &master {
            Some(_) => {
                if !self.replica.swap(true, Ordering::SeqCst) {
                    // Our own replicas must follow the new history.
                    self.kick_replicas();
                    self.demoted_tx.send_modify(|n| *n += 1);
                    let mut l = self.link();
                    l.up = false;
                    l.state = "connect";
                    l.down_since_ms = Some(crate::runtime::clock::mono_ms());
                }
            }
            None => {
                if self.replica.swap(false, Ordering::SeqCst) {
                    let mut f = self.feed();
                    f.shift_replid();
                    if f.backlog.is_none() {
                        let (at, limit) = (f.offset, f.backlog_limit);
                        f.backlog = Some(Backlog::new(at, limit));
                    }
                    drop(f);
                    self.backlog_on.store(true, Ordering::Relaxed);
                    // Replicas reconnect and continue under the new id.
                    self.kick_replicas();
                    *self.link() = LinkInfo::default();
                }
            }
        }
        self.target.send_if_modified(|t| {
            let changed = *t != master;
            *t = master;
            changed
        });
    }

    /// master_repl_offset on a master; on a replica the offset it has
    /// processed.
    pub fn offset(&self) -> u64 {
        self.feed().offset
    }

    /// On a replica, unix ms since when the master link is down; None when
    /// up, or on a master.
    pub fn link_down_since_ms(&self) -> Option<u64> {
        if !self.is_replica() {
            return None;
        }
        let l = self.link();
        if l.up {
            None
        } else {
            l.down_since_ms
        }
    }

    pub fn is_replica(&self) -> bool {
        self.replica.load(Ordering::Relaxed)
    }

    /// The master we follow (None when master).
    pub fn master(&self) -> Option<(String, u16)> {
        self.target.borrow().clone()
    }

    /// Changes each time this node goes from master to replica.
    pub fn demoted_rx(&self) -> watch::Receiver<u64> {
        self.demoted_tx.subscribe()
    }

    pub fn target_rx(&self) -> watch::Receiver<Option<(String, u16)>> {
        self.target.subscribe()
    }

    // ---- the stream ----------------------------------------------------------

    /// (replication id, offset) of the stream now.
    pub fn position(&self) -> (String, u64) {
        let f = self.feed();
        (f.replid.clone(), f.offset)
    }

    /// Whether the propagation hook must run: a master with a backlog
    /// (replicas, now or to come back), or the append-only log.
    pub fn prop_wanted(&self) -> bool {
        self.aof_on.load(Ordering::Relaxed) || (!self.is_replica() && self.has_backlog())
    }

    fn has_backlog(&self) -> bool {
        self.backlog_on.load(Ordering::Relaxed)
    }

    pub fn set_aof_on(&self, on: bool) {
        self.aof_on.store(on, Ordering::Relaxed);
    }

    pub fn set_backlog_limit(&self, limit: usize) {
        let mut f = self.feed();
        f.backlog_limit = limit;
        if let Some(b) = f.backlog.as_mut() {
            b.set_limit(limit);
        }
    }

    /// Our own writes (a master): appended to the backlog, if any.
    pub fn append_local(&self, b: &[u8]) {
        if b.is_empty() || self.is_replica() {
            return;
        }
        let end = {
            let mut f = self.feed();
            if f.backlog.is_none() {
                return;
            }
            f.append(b);
            f.offset
        };
        self.end_tx.send_replace(end);
    }

    /// Bytes of our master's stream we applied (a replica): they keep our
    /// offset equal to the master's and feed our own replicas unchanged.
    pub fn append_from_master(&self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        let end = {
            let mut f = self.feed();
            if f.backlog.is_none() {
                let (at, limit) = (f.offset, f.backlog_limit);
                f.backlog = Some(Backlog::new(at, limit));
                self.backlog_on.store(true, Ordering::Relaxed);
            }
            f.append(b);
            f.offset
        };
        self.end_tx.send_replace(end);
    }

    /// A master's first replica: creates the backlog, under a new id
    /// (there is no history before it). Returns true if it was created, so
    /// the caller turns the propagation hook on.
    pub fn ensure_backlog(&self) -> bool {
        let mut f = self.feed();
        if f.backlog.is_some() {
            return false;
        }
        f.replid = new_replid();
        f.replid2 = NO_ID.to_string();
        f.second_offset = None;
        let (at, limit) = (f.offset, f.backlog_limit);
        f.backlog = Some(Backlog::new(at, limit));
        self.backlog_on.store(true, Ordering::Relaxed);
        true
    }

    /// After a full resync from a master: its id, its offset, an empty
    /// backlog from there.
    pub fn reset_to_master(&self, replid: &str, offset: u64) {
        {
            let mut f = self.feed();
            f.replid = replid.to_string();
            f.replid2 = NO_ID.to_string();
            f.second_offset = None;
            f.offset = offset;
            let limit = f.backlog_limit;
            f.backlog = Some(Backlog::new(offset, limit));
        }
        self.backlog_on.store(true, Ordering::Relaxed);
        self.kick_replicas();
        self.end_tx.send_replace(offset);
    }

    /// After +CONTINUE with a new id: the master was promoted, our history
    /// up to here stays valid under the old id.
    pub fn continue_with(&self, new_replid: &str) {
        let mut f = self.feed();
        f.replid2 = std::mem::replace(&mut f.replid, new_replid.to_string());
        f.second_offset = Some(f.offset + 1);
        drop(f);
        // Sub-replicas learn the new id when they reconnect.
        self.kick_replicas();
    }

    /// Asks every replica for an acknowledgement (WAIT).
    pub fn request_ack(&self) {
        self.append_local(GETACK);
    }

    /// The periodic PING of the stream, so replicas see a live master.
    pub fn ping_replicas(&self) {
        let any = !self.feed().replicas.is_empty();
        if any {
            self.append_local(PING);
        }
    }

    /// Can a replica that asks for `PSYNC replid next` continue? Returns the
    /// stream position to send from.
    pub fn try_continue(&self, replid: &str, next: u64) -> Option<u64> {
        if self.is_replica() && !self.link().up {
            return None;
        }
        let f = self.feed();
        let known = replid == f.replid
            || (replid == f.replid2 && f.second_offset.is_some_and(|s| next <= s));
        let pos = next.checked_sub(1)?;
        let bl = f.backlog.as_ref()?;
        (known && bl.has(pos)).then_some(pos)
    }

    /// Up to `max` bytes of stream from `pos`; None when `pos` is gone.
    pub fn read(&self, pos: u64, max: usize) -> Option<Vec<Bytes>> {
        self.feed().backlog.as_ref()?.read(pos, max)
    }

    pub fn end_rx(&self) -> watch::Receiver<u64> {
        self.end_tx.subscribe()
    }

    // ---- replicas of ours ----------------------------------------------------

    pub fn register_replica(&self, ip: &str, port: u16, pos: u64, state: ReplicaState) -> u64 {
        let id = self.next_replica_id.fetch_add(1, Ordering::Relaxed);
        self.feed().replicas.insert(
            id,
            ReplicaInfo {
                ip: ip.to_string(),
                port,
                state,
                pos,
                ack: 0,
                last_ack_ms: crate::runtime::clock::mono_ms(),
            },
        );
        id
    }

    pub fn unregister_replica(&self, id: u64) {
        {
            let mut f = self.feed();
            f.replicas.remove(&id);
            // What only this replica pinned may go now.
            f.trim();
        }
        self.acks_tx.send_modify(|g| *g += 1);
    }

    pub fn update_replica(&self, id: u64, f: impl FnOnce(&mut ReplicaInfo)) {
        if let Some(r) = self.feed().replicas.get_mut(&id) {
            f(r);
        }
    }

    pub fn ack(&self, id: u64, offset: u64) {
        self.update_replica(id, |r| {
            r.ack = r.ack.max(offset);
            r.last_ack_ms = crate::runtime::clock::mono_ms();
        });
        self.acks_tx.send_modify(|g| *g += 1);
    }

    /// Replicas that acknowledged at least `offset`.
    pub fn count_acked(&self, offset: u64) -> usize {
        self.feed()
            .replicas
            .values()
            .filter(|r| r.state == ReplicaState::Online && r.ack >= offset)
            .count()
    }

    pub fn acks_rx(&self) -> watch::Receiver<u64> {
        self.acks_tx.subscribe()
    }

    pub fn kick_rx(&self) -> watch::Receiver<u64> {
        self.kick_tx.subscribe()
    }

    /// Drops every replica connection; they reconnect and PSYNC.
    pub fn kick_replicas(&self) {
        self.kick_tx.send_modify(|g| *g += 1);
    }

    /// A master without replicas for `repl-backlog-ttl` frees its backlog
    /// (and the propagation hook turns off), under a new id since the
    /// history is gone (Redis does the same). Returns true if freed.
    pub fn free_backlog(&self) -> bool {
        if self.is_replica() {
            return false;
        }
        let mut f = self.feed();
        if f.backlog.is_none() || !f.replicas.is_empty() {
            return false;
        }
        f.backlog = None;
        f.replid = new_replid();
        f.replid2 = NO_ID.to_string();
        f.second_offset = None;
        self.backlog_on.store(false, Ordering::Relaxed);
        true
    }

    /// Drops the link to our master; the driver reconnects (and PSYNCs).
    pub fn drop_master_link(&self) {
        self.relink_tx.send_modify(|g| *g += 1);
    }

    pub fn relink_rx(&self) -> watch::Receiver<u64> {
        self.relink_tx.subscribe()
    }

    /// At start, from our own snapshot's aux fields: the stream position
    /// the data corresponds to, so replicas of ours (or our master, if we
    /// are one) can continue partially after a restart, as Redis 7 does.
    pub fn restore_position(&self, replid: &str, offset: u64) {
        if replid.len() != 40 {
            return;
        }
        let mut f = self.feed();
        f.replid = replid.to_string();
        f.offset = offset;
        let limit = f.backlog_limit;
        f.backlog = Some(Backlog::new(offset, limit));
        self.backlog_on.store(true, Ordering::Relaxed);
    }

    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        self.feed().replicas.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_resync_rules() {
        let r = Repl::new();
        r.append_local(b"lost");
        assert_eq!(r.offset(), 0, "no backlog, no stream");
        assert!(r.ensure_backlog());
        let id = r.position().0;
        r.append_local(b"0123456789");
        assert_eq!(r.offset(), 10);
        assert_eq!(r.try_continue(&id, 1), Some(0));
        assert_eq!(r.try_continue(&id, 11), Some(10));
        assert_eq!(r.try_continue(&id, 12), None, "beyond the stream");
        assert_eq!(r.try_continue("other", 1), None);
        // Promotion of a replica keeps the old id valid up to here.
        r.set_master(Some(("127.0.0.1".into(), 1)));
        assert!(r.is_replica());
        r.append_from_master(b"abc");
        assert_eq!(r.offset(), 13);
        r.set_master(None);
        let (new_id, off) = r.position();
        assert_ne!(new_id, id);
        assert_eq!(off, 13);
        assert_eq!(r.try_continue(&id, 14), Some(13));
        assert_eq!(r.try_continue(&id, 5), Some(4));
        r.append_local(b"xyz");
        assert_eq!(
            r.try_continue(&id, 17),
            None,
            "old id only up to the promotion"
        );
        assert_eq!(r.try_continue(&new_id, 17), Some(16));
        assert_eq!(r.link_down_since_ms(), None);
    }

    #[test]
    fn acks_count_online_replicas_at_or_past_an_offset() {
        let r = Repl::new();
        r.ensure_backlog();
        let a = r.register_replica("127.0.0.1", 1, 0, ReplicaState::Online);
        let b = r.register_replica("127.0.0.1", 2, 0, ReplicaState::WaitBgsave);
        r.ack(a, 10);
        r.ack(b, 10);
        assert_eq!(r.count_acked(10), 1);
        assert_eq!(r.count_acked(11), 0);
        r.ack(a, 5);
        assert_eq!(r.count_acked(10), 1, "acks never go back");
        r.unregister_replica(a);
        assert_eq!(r.count_acked(0), 0);
    }
}
