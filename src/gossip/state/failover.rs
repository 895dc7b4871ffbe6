//! Failover on the bus, after the Redis Cluster specification: replica
//! elections (rank-delayed, a vote per epoch from a majority of the
//! slot-owning masters), voting, manual `CLUSTER FAILOVER` (default, FORCE,
//! TAKEOVER), replica migration to orphaned masters, and the cluster state
//! (slot coverage plus "am I in the majority partition").
//!
//! Like the rest of the bus it does no I/O and reads no clock: `now` comes
//! in, messages and [`Event`]s go out.

use super::{id_string, Bus, Event, Link, NodeId, Transmit};
use crate::cluster::topology::SlotSet;
use crate::gossip::wire::{msg_flags, Body, Header, Message, MsgType};
use std::collections::BTreeSet;

/// How long a manual failover may take (Redis `CLUSTER_MF_TIMEOUT`).
const MF_TIMEOUT: u64 = 5000;
/// The master pauses writes for this many manual-failover timeouts.
const MF_PAUSE_MULT: u64 = 2;
/// A master restarted from its nodes.conf waits this long after start
/// before declaring the state ok, so it learns of a newer owner of its
/// slots before it takes writes (Redis `CLUSTER_WRITABLE_DELAY`; Redis
/// applies it to fresh nodes too, where it protects nothing).
const WRITABLE_DELAY: u64 = 2000;
/// A FAIL master that nobody replaced is cleared after this many node
/// timeouts once it is reachable again (Redis `CLUSTER_FAIL_UNDO_TIME_MULT`).
pub(super) const FAIL_UNDO_TIME_MULT: u64 = 2;
/// An orphaned master must stay orphaned this long before a replica
/// migrates to it (Redis `CLUSTER_SLAVE_MIGRATION_DELAY`).
const REPLICA_MIGRATION_DELAY: u64 = 5000;
/// `repl-ping-replica-period` (s → ms), part of the data-age limit.
const REPL_PING_PERIOD: u64 = 10_000;

/// `CLUSTER FAILOVER [FORCE|TAKEOVER]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverMode {
    /// Coordinated: the master stops writes, the replica catches up to its
    /// final offset, then wins a (forced) election. Loses nothing.
    Default,
    /// Election without waiting for the master (it may be unreachable).
    Force,
    /// No election: take the slots with a new epoch, now.
    Takeover,
}

/// Election and manual-failover state of this node.
#[derive(Debug, Default)]
pub(super) struct FailoverState {
    /// When the current/next election starts (unix ms; 0: none scheduled).
    auth_time: u64,
    /// Masters that voted for us in `auth_epoch`.
    auth_votes: BTreeSet<NodeId>,
    auth_sent: bool,
    auth_rank: usize,
    auth_epoch: u64,
    /// Why the last election could not start, logged once per change.
    cant_reason: Option<&'static str>,
    /// A manual failover runs until this time (0: none). On the master it
    /// also means "writes are paused".
    pub(super) mf_end: u64,
    /// Master side: the replica taking over.
    mf_replica: Option<NodeId>,
    /// Replica side: the offset the paused master reported.
    mf_master_offset: Option<u64>,
    /// Replica side: caught up (or FORCE): the election may start.
    mf_can_start: bool,
}

impl Bus {
    /// What the node's replication layer knows: our offset (master: the
    /// stream offset; replica: what it processed) and, on a replica, since
    /// when the link to the master is down.
    pub fn set_replication(&mut self, offset: u64, master_link_down_since: Option<u64>) {
        self.repl_offset = offset;
        self.master_link_down_since = master_link_down_since;
    }

    /// Applies (possibly changed) cluster directives.
    pub fn set_config(&mut self, cfg: super::BusConfig) {
        if self.me.flags.nofailover != cfg.replica_no_failover {
            self.me.flags.nofailover = cfg.replica_no_failover;
            self.changed();
        }
        self.cfg = cfg;
    }

    /// The replication offset `id` last advertised (ours for myself).
    pub fn repl_offset_of(&self, id: &str) -> u64 {
        if id == self.me.id {
            self.repl_offset
        } else {
            self.peers.get(id).map_or(0, |p| p.repl_offset)
        }
    }

    /// `cluster_state:ok`: slots covered (when required) and this node
    /// reaches a majority of the slot-owning masters.
    pub fn state_ok(&self) -> bool {
        self.state_ok
    }

    /// The manual failover state for `INFO` (`master_failover_state`-like).
    pub fn manual_failover_in_progress(&self) -> bool {
        self.fo.mf_end != 0
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]`, sent to a replica.
    pub fn failover(&mut self, mode: FailoverMode, now: u64) -> Result<(), &'static str> {
        if !self.me.flags.slave {
            return Err("ERR You should send CLUSTER FAILOVER to a replica");
        }
        let master = self
            .me
            .master_id
            .clone()
            .and_then(|m| self.peers.get(&m).map(|p| (m, p.node.flags)));
        let Some((master, mflags)) = master else {
            return Err("ERR I'm a replica but my master is unknown to me");
        };
        if mode == FailoverMode::Default && (mflags.fail || mflags.pfail) {
            return Err("ERR Master is down or failed, please use CLUSTER FAILOVER FORCE");
        }
        self.reset_manual_failover();
        self.fo.mf_end = now + MF_TIMEOUT;
        // A manual failover starts its own election now, whatever an
        // automatic attempt scheduled.
        self.fo.auth_time = 0;
        match mode {
            FailoverMode::Takeover => {
                tracing::info!("taking over the master (CLUSTER FAILOVER TAKEOVER)");
                self.current_epoch += 1;
                self.me.config_epoch = self.current_epoch;
                self.promote(now);
            }
            FailoverMode::Force => {
                tracing::info!("forced failover user request accepted");
                self.fo.mf_can_start = true;
            }
            FailoverMode::Default => {
                tracing::info!("manual failover user request accepted");
                if let Some(p) = self.peers.get(&master) {
                    let link = Self::link_of(&p.node);
                    self.send(link, MsgType::MfStart, Some(&master));
                }
            }
        }
        Ok(())
    }

    /// Failover housekeeping, from every tick.
    pub(super) fn failover_tick(&mut self, now: u64) {
        self.track_orphans(now);
        self.manual_failover_tick(now);
        self.handle_replica_failover(now);
        self.replica_migration(now);
        self.update_state(now);
    }

    /// Becomes a replica of `master` (Redis `clusterSetMaster`).
    pub(super) fn set_master(&mut self, master: &str) {
        if self.me.flags.slave && self.me.master_id.as_deref() == Some(master) {
            return;
        }
        // Before the role flips: a paused master must resume its clients.
        self.reset_manual_failover();
        if self.me.flags.master {
            // A replica serves no slot and migrates none.
            self.migrations = Default::default();
        }
        self.me.flags.master = false;
        self.me.flags.slave = true;
        self.me.master_id = Some(master.to_string());
        if let Some(m) = self.peers.get(master) {
            self.me.config_epoch = m.node.config_epoch;
        }
        self.fo.auth_time = 0;
        self.fo.auth_sent = false;
        self.fo.auth_votes.clear();
        tracing::info!(master = %master, "now a replica");
        self.events
            .push_back(Event::RoleChanged(Some(master.to_string())));
        self.changed();
        self.broadcast_pong();
    }

    fn reset_manual_failover(&mut self) {
        if self.fo.mf_end != 0 && self.me.flags.master {
            self.events.push_back(Event::PauseWrites(0));
        }
        self.fo.mf_end = 0;
        self.fo.mf_replica = None;
        self.fo.mf_master_offset = None;
        self.fo.mf_can_start = false;
    }

    fn manual_failover_tick(&mut self, now: u64) {
        if self.fo.mf_end == 0 {
            return;
        }
        if self.fo.mf_end < now {
            tracing::warn!("manual failover timed out");
            self.reset_manual_failover();
            return;
        }
        if self.me.flags.master {
            // Keep telling the replica our (paused) offset.
            if let Some(r) = self.fo.mf_replica.clone() {
                if let Some(p) = self.peers.get(&r) {
                    let link = Self::link_of(&p.node);
                    self.send(link, MsgType::Ping, Some(&r));
                }
            }
            return;
        }
        if self.fo.mf_can_start {
            return;
        }
        if let Some(off) = self.fo.mf_master_offset {
            if self.repl_offset >= off {
                tracing::info!(
                    offset = off,
                    "all master replication stream processed, manual failover can start"
                );
                self.fo.mf_can_start = true;
            }
        }
    }

    /// A PING/PONG from my master while it is paused for my manual
    /// failover carries the offset I must reach.
    pub(super) fn note_paused_master(&mut self, sender: &str, h: &Header) {
        if self.me.flags.slave
            && self.me.master_id.as_deref() == Some(sender)
            && h.msg_flags & msg_flags::PAUSED != 0
            && self.fo.mf_end != 0
            && self.fo.mf_master_offset.is_none()
        {
            tracing::info!(
                offset = h.repl_offset,
                "received replication offset for paused master manual failover"
            );
            self.fo.mf_master_offset = Some(h.repl_offset);
        }
    }

    /// MFSTART from one of my replicas: pause writes and report the offset.
    pub(super) fn on_mfstart(&mut self, sender: &str, now: u64) {
        let mine = self
            .peers
            .get(sender)
            .is_some_and(|p| p.node.master_id.as_deref() == Some(self.me.id.as_str()));
        if !mine || !self.me.flags.master {
            return;
        }
        self.reset_manual_failover();
        self.fo.mf_end = now + MF_TIMEOUT;
        self.fo.mf_replica = Some(sender.to_string());
        tracing::info!(replica = %sender, "manual failover requested by replica");
        self.events
            .push_back(Event::PauseWrites(now + MF_TIMEOUT * MF_PAUSE_MULT));
        if let Some(p) = self.peers.get(sender) {
            let link = Self::link_of(&p.node);
            self.send(link, MsgType::Ping, Some(sender));
        }
    }

    /// How many replicas of my master have a better offset than mine.
    fn rank(&self) -> usize {
        let Some(m) = self.me.master_id.as_deref() else {
            return 0;
        };
        self.peers
            .values()
            .filter(|p| {
                p.node.master_id.as_deref() == Some(m)
                    && !p.node.flags.nofailover
                    && p.repl_offset > self.repl_offset
            })
            .count()
    }

    fn log_cant_failover(&mut self, reason: &'static str) {
        if self.fo.cant_reason != Some(reason) {
            self.fo.cant_reason = Some(reason);
            tracing::info!(reason, "currently unable to failover");
        }
    }

    /// The replica side of an election (Redis `clusterHandleSlaveFailover`).
    fn handle_replica_failover(&mut self, now: u64) {
        let timeout = self.cfg.node_timeout;
        let manual = self.fo.mf_end != 0 && self.fo.mf_can_start;
        if !self.me.flags.slave {
            return;
        }
        let Some(master) = self.me.master_id.as_deref().and_then(|m| self.peers.get(m)) else {
            return;
        };
        if !(master.node.flags.fail || manual) || master.node.slots.is_empty() {
            return;
        }
        if self.cfg.replica_no_failover && !manual {
            self.log_cant_failover("cluster-replica-no-failover is set");
            return;
        }
        // How stale our copy is: time since the master link went down,
        // beyond the node timeout every failover waits anyway.
        let mut data_age = self
            .master_link_down_since
            .map_or(0, |since| now.saturating_sub(since));
        if data_age > timeout {
            data_age -= timeout;
        }
        let factor = self.cfg.replica_validity_factor;
        if factor > 0 && !manual && data_age > REPL_PING_PERIOD + timeout * factor {
            self.log_cant_failover("my data is too old to replace a failed master");
            return;
        }
        let auth_timeout = (timeout * 2).max(2000);
        let auth_retry = auth_timeout * 2;
        if now.saturating_sub(self.fo.auth_time) > auth_retry {
            // Schedule an election: a random delay lets the FAIL spread,
            // the rank lets the most up-to-date replica go first.
            let rank = if manual { 0 } else { self.rank() };
            let jitter = if manual {
                0
            } else {
                500 + rand::random::<u64>() % 500
            };
            self.fo.auth_time = now + jitter + rank as u64 * 1000;
            self.fo.auth_rank = rank;
            self.fo.auth_votes.clear();
            self.fo.auth_sent = false;
            self.fo.cant_reason = None;
            tracing::info!(
                rank,
                delay_ms = self.fo.auth_time - now,
                offset = self.repl_offset,
                "start of election delayed"
            );
            // Siblings learn our offset now, so their ranks are right.
            self.broadcast_to_siblings();
            return;
        }
        if !self.fo.auth_sent && !manual {
            let rank = self.rank();
            if rank > self.fo.auth_rank {
                let extra = (rank - self.fo.auth_rank) as u64 * 1000;
                self.fo.auth_time += extra;
                self.fo.auth_rank = rank;
                tracing::info!(rank, "replica rank updated, election delayed further");
            }
        }
        if now < self.fo.auth_time {
            return;
        }
        if now - self.fo.auth_time > auth_timeout {
            self.log_cant_failover("failover attempt expired");
            return;
        }
        if !self.fo.auth_sent {
            self.current_epoch += 1;
            self.fo.auth_epoch = self.current_epoch;
            self.fo.auth_sent = true;
            tracing::info!(epoch = self.current_epoch, "starting a failover election");
            self.request_votes(manual);
            self.changed();
            return;
        }
        let needed = self.cluster_size() / 2 + 1;
        if self.fo.auth_votes.len() >= needed {
            tracing::info!(
                votes = self.fo.auth_votes.len(),
                epoch = self.fo.auth_epoch,
                "failover election won"
            );
            if self.me.config_epoch < self.fo.auth_epoch {
                self.me.config_epoch = self.fo.auth_epoch;
            }
            self.promote(now);
        } else {
            self.log_cant_failover("waiting for votes");
        }
    }

    fn request_votes(&mut self, force: bool) {
        let masters: Vec<(Link, NodeId)> = self
            .peers
            .values()
            .filter(|p| p.node.flags.master && !p.node.flags.handshake)
            .map(|p| (Self::link_of(&p.node), p.node.id.clone()))
            .collect();
        for (link, _) in masters {
            let mut header = self.header();
            if force {
                header.msg_flags |= msg_flags::FORCEACK;
            }
            self.out.push_back(Transmit {
                link,
                msg: Message {
                    kind: MsgType::AuthRequest,
                    header,
                    body: Body::Empty,
                },
            });
        }
    }

    fn broadcast_to_siblings(&mut self) {
        let Some(m) = self.me.master_id.clone() else {
            return;
        };
        let siblings: Vec<(Link, NodeId)> = self
            .peers
            .values()
            .filter(|p| p.node.master_id.as_deref() == Some(m.as_str()))
            .map(|p| (Self::link_of(&p.node), p.node.id.clone()))
            .collect();
        for (link, id) in siblings {
            self.send(link, MsgType::Pong, Some(&id));
        }
    }

    /// Takes over my master's slots as a master (Redis
    /// `clusterFailoverReplaceYourMaster`).
    fn promote(&mut self, now: u64) {
        // Replica-side manual failover state goes (no writer to resume).
        self.reset_manual_failover();
        let Some(old) = self.me.master_id.take() else {
            return;
        };
        self.me.flags.slave = false;
        self.me.flags.master = true;
        let slots: Vec<u16> = self
            .peers
            .get(&old)
            .map(|p| p.node.slots.iter().collect())
            .unwrap_or_default();
        if let Some(p) = self.peers.get_mut(&old) {
            p.node.slots = SlotSet::default();
        }
        for s in slots {
            self.me.slots.insert(s);
            if let Some(o) = self.owners.get_mut(usize::from(s)) {
                *o = Some(self.me.id.clone());
            }
        }
        self.fo.auth_votes.clear();
        self.fo.auth_sent = false;
        tracing::info!(
            old_master = %old,
            config_epoch = self.me.config_epoch,
            slots = self.me.slots.count(),
            "failover: I am the new master"
        );
        self.events.push_back(Event::RoleChanged(None));
        self.changed();
        // Everyone must learn the new owner now, not at their next ping.
        self.broadcast_pong();
        self.update_state(now);
    }

    /// A replica asks for my vote (Redis `clusterSendFailoverAuthIfNeeded`).
    pub(super) fn on_auth_request(&mut self, link: Link, sender: &str, h: &Header, now: u64) {
        if !self.me.flags.master || self.me.slots.is_empty() {
            return;
        }
        if h.current_epoch < self.current_epoch {
            return;
        }
        if self.last_vote_epoch == self.current_epoch {
            tracing::debug!(replica = %sender, epoch = self.current_epoch, "vote refused: already voted in this epoch");
            return;
        }
        let master = self
            .peers
            .get(sender)
            .and_then(|p| p.node.master_id.clone())
            .or_else(|| (h.master != [0; 40]).then(|| id_string(&h.master)));
        let Some(master) = master else {
            return;
        };
        let force = h.msg_flags & msg_flags::FORCEACK != 0;
        let Some(mp) = self.peers.get(&master) else {
            return;
        };
        if !mp.node.flags.fail && !force {
            tracing::debug!(replica = %sender, "vote refused: its master is not failed");
            return;
        }
        let timeout2 = self.cfg.node_timeout * 2;
        if mp.voted_time != 0 && now.saturating_sub(mp.voted_time) < timeout2 {
            tracing::debug!(replica = %sender, "vote refused: voted for a replica of this master recently");
            return;
        }
        // The replica's view of the slots it would take must not be older
        // than ours: no slot it claims may have a newer owner.
        let stale = h.slots.iter().any(|s| {
            self.owners
                .get(usize::from(s))
                .and_then(|o| o.as_deref())
                .and_then(|id| self.node(id))
                .is_some_and(|n| n.config_epoch > h.config_epoch)
        });
        if stale {
            tracing::debug!(replica = %sender, "vote refused: its slot configuration is stale");
            return;
        }
        self.last_vote_epoch = self.current_epoch;
        if let Some(mp) = self.peers.get_mut(&master) {
            mp.voted_time = now;
        }
        tracing::info!(replica = %sender, epoch = self.current_epoch, "failover auth granted");
        self.changed();
        self.send(link, MsgType::AuthAck, None);
    }

    /// A master voted for us.
    pub(super) fn on_auth_ack(&mut self, sender: &str, h: &Header, now: u64) {
        let voter = self
            .peers
            .get(sender)
            .is_some_and(|p| p.node.flags.master && !p.node.slots.is_empty());
        if voter && self.fo.auth_sent && h.current_epoch >= self.fo.auth_epoch {
            self.fo.auth_votes.insert(sender.to_string());
            // Counting happens in the election step: run it now rather
            // than at the next tick.
            self.handle_replica_failover(now);
        }
    }

    /// Replicas of `master` that are not FAIL (myself included).
    fn working_replicas(&self, master: &str) -> usize {
        let mine = usize::from(self.me.master_id.as_deref() == Some(master));
        mine + self
            .peers
            .values()
            .filter(|p| p.node.master_id.as_deref() == Some(master) && !p.node.flags.fail)
            .count()
    }

    /// Marks masters that had replicas, and since when they have none.
    fn track_orphans(&mut self, now: u64) {
        let with_replicas: BTreeSet<NodeId> = self
            .peers
            .values()
            .filter_map(|p| p.node.master_id.clone())
            .chain(self.me.master_id.clone())
            .collect();
        let working: Vec<(NodeId, usize)> = self
            .peers
            .values()
            .filter(|p| p.node.flags.master)
            .map(|p| (p.node.id.clone(), self.working_replicas(&p.node.id)))
            .collect();
        for (id, ok) in working {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if with_replicas.contains(&id) {
                p.migrate_to = true;
            }
            let orphaned = ok == 0 && p.migrate_to && !p.node.slots.is_empty();
            if !orphaned {
                p.orphaned_since = None;
            } else if p.orphaned_since.is_none() {
                p.orphaned_since = Some(now);
            }
        }
    }

    /// Replica migration (Redis `clusterHandleSlaveMigration`): when my
    /// master keeps more than `migration_barrier` working replicas and some
    /// master has none left, the replica with the smallest id moves there.
    fn replica_migration(&mut self, now: u64) {
        if !self.cfg.allow_replica_migration
            || !self.state_ok
            || !self.me.flags.slave
            || self.fo.mf_end != 0
        {
            return;
        }
        let Some(my_master) = self.me.master_id.clone() else {
            return;
        };
        let master_ok = self
            .peers
            .get(&my_master)
            .is_some_and(|p| !p.node.flags.fail && !p.node.flags.pfail);
        if !master_ok || (self.working_replicas(&my_master) as u64) <= self.cfg.migration_barrier {
            return;
        }
        let smallest = self
            .peers
            .values()
            .filter(|p| {
                p.node.master_id.as_deref() == Some(my_master.as_str()) && !p.node.flags.fail
            })
            .map(|p| p.node.id.as_str())
            .chain(std::iter::once(self.me.id.as_str()))
            .min();
        if smallest != Some(self.me.id.as_str()) {
            return;
        }
        let target = self
            .peers
            .values()
            .filter(|p| p.node.flags.master && !p.node.flags.fail && !p.node.flags.pfail)
            .filter_map(|p| p.orphaned_since.map(|t| (t, p.node.id.clone())))
            .filter(|(t, _)| now.saturating_sub(*t) > REPLICA_MIGRATION_DELAY)
            .min();
        if let Some((_, target)) = target {
            tracing::info!(target = %target, "migrating to orphaned master");
            self.set_master(&target);
        }
    }

    /// Every slot has an owner that is not FAIL.
    fn coverage_ok(&self) -> bool {
        // Owners come in long runs: look each run's owner up once.
        let mut last: Option<&str> = None;
        for o in &self.owners {
            let Some(id) = o.as_deref() else {
                return false;
            };
            if last == Some(id) {
                continue;
            }
            if self.node(id).is_none_or(|n| n.flags.fail) {
                return false;
            }
            last = Some(id);
        }
        true
    }

    /// Recomputes `cluster_state` (Redis `clusterUpdateState`).
    pub(super) fn update_state(&mut self, now: u64) {
        let first = *self.first_tick.get_or_insert(now);
        let master = self.me.flags.master;
        // Only a restart can bring back a stale slot table. A fresh node
        // learns its slots now (ADDSLOTS, gossip): making it wait too left
        // a freshly created cluster refusing keys for up to two seconds
        // after `--cluster create` returned and the first node said ok,
        // each node turning ok on its own tick.
        if self.restored && master && !self.state_ok && now.saturating_sub(first) < WRITABLE_DELAY {
            return;
        }
        let mut ok = !self.cfg.require_full_coverage || self.coverage_ok();
        let size = self.cluster_size();
        let reachable = usize::from(self.me.flags.master && !self.me.slots.is_empty())
            + self
                .peers
                .values()
                .filter(|p| {
                    p.node.flags.master
                        && !p.node.slots.is_empty()
                        && !p.node.flags.pfail
                        && !p.node.flags.fail
                })
                .count();
        if reachable < size / 2 + 1 {
            ok = false;
            // Only a node that knows slot owners can be cut off from them;
            // a fresh, empty node (size 0) has no stale slots to protect
            // and must not wait out a rejoin delay once it joins.
            if size > 0 {
                self.among_minority_time = now;
            }
        }
        if ok == self.state_ok {
            return;
        }
        // A master back from the minority waits a little before taking
        // writes again, so the majority's reconfiguration reaches it first.
        let rejoin_delay = self.cfg.node_timeout.clamp(500, 5000);
        if ok && master && now.saturating_sub(self.among_minority_time) < rejoin_delay {
            return;
        }
        self.state_ok = ok;
        tracing::info!(
            state = if ok { "ok" } else { "fail" },
            reachable_masters = reachable,
            size,
            "cluster state changed"
        );
        self.events.push_back(Event::StateChanged);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{three_masters_of, Sim};
    use super::*;
    use crate::cluster::SLOTS;

    /// Three masters (0, 1, 2) with the redis-cli slot split, then each
    /// `(replica, master)` pair attached with CLUSTER REPLICATE.
    fn cluster(n: usize, pairs: &[(usize, usize)]) -> Sim {
        let mut sim = three_masters_of(n);
        assert!(sim.run_until(15_000, Sim::everyone_knows_everyone));
        for &(r, m) in pairs {
            let id = sim.buses[m].me.id.clone();
            sim.buses[r].replicate(&id).unwrap();
        }
        assert!(
            sim.run_until(10_000, |s| s.buses.iter().all(|b| b.state_ok())
                && pairs.iter().all(|&(r, m)| s.buses.iter().enumerate().all(
                    |(i, b)| i == r
                        || b.node(&s.buses[r].me.id).unwrap().master_id.as_deref()
                            == Some(s.buses[m].me.id.as_str())
                ))),
            "cluster formed"
        );
        for b in &mut sim.buses {
            while b.poll_event().is_some() {}
        }
        sim
    }

    /// A node owning every slot, alone: ticks it from `start` in 100 ms
    /// steps and returns the first time it says ok.
    fn first_ok(mut b: Bus, start: u64) -> Option<u64> {
        (0..50).map(|i| start + i * 100).find(|&t| {
            b.tick(t);
            b.state_ok()
        })
    }

    fn lone_master() -> Bus {
        let me =
            crate::cluster::topology::ClusterNode::new("a".repeat(40), "127.0.0.1", 7000, 17000);
        let mut b = Bus::new(me, super::super::BusConfig::new(15_000));
        let all: Vec<u16> = (0..SLOTS as u16).collect();
        b.add_slots(&all);
        b
    }

    /// `redis-cli --cluster create` right after the nodes start: a fresh
    /// node is ok as soon as its slots are covered, a restarted one waits
    /// the writable delay for news of its slots.
    #[test]
    fn only_a_restarted_master_waits_the_writable_delay() {
        let fresh = lone_master();
        let conf = fresh.nodes_conf();
        assert_eq!(first_ok(fresh, 10_000), Some(10_000));
        let Some(restored) = Bus::restore(conf, super::super::BusConfig::new(15_000)) else {
            panic!("nodes.conf of a lone master restores");
        };
        let ok_at = first_ok(restored, 10_000);
        assert!(
            ok_at.is_some_and(|t| t >= 10_000 + WRITABLE_DELAY),
            "restored master ok at {ok_at:?}"
        );
    }

    fn owner_port(b: &Bus, slot: u16) -> Option<u16> {
        b.slot_owner(slot).map(|n| n.port)
    }

    fn events(b: &mut Bus) -> Vec<Event> {
        std::iter::from_fn(|| b.poll_event()).collect()
    }

    /// Every live node sees `node` as the owner of slot 0 and state ok.
    fn serves_slot_zero(sim: &Sim, node: usize) -> bool {
        let port = sim.buses[node].me.port;
        sim.buses
            .iter()
            .enumerate()
            .filter(|(i, _)| !sim.down[*i])
            .all(|(_, b)| owner_port(b, 0) == Some(port) && b.state_ok())
    }

    #[test]
    fn a_failed_master_is_replaced_by_its_replica() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        let old_epoch = sim.buses[0].me.config_epoch;
        sim.down[0] = true;
        let start = sim.now;
        assert!(
            sim.run_until(30_000, |s| serves_slot_zero(s, 3)),
            "replica 3 took over slot 0 everywhere"
        );
        // node-timeout 5 s: detection, FAIL quorum, a rank-0 election.
        let took = sim.now - start;
        assert!(
            took <= 5_000 + 2_500 + 1_000 + 1_500,
            "failover took {took} ms"
        );
        let new = &sim.buses[3];
        assert!(new.me.flags.master && new.me.master_id.is_none());
        assert!(new.me.config_epoch > old_epoch, "election bumped the epoch");
        assert_eq!(new.me.slots.count(), SLOTS / 3);
        assert!(events(&mut sim.buses[3]).contains(&Event::RoleChanged(None)));
        // The other replicas keep their masters.
        assert_eq!(
            sim.buses[4].me.master_id.as_deref(),
            Some(sim.buses[1].me.id.as_str())
        );
    }

    #[test]
    fn a_returning_old_master_becomes_a_replica_of_its_replacement() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        sim.down[0] = true;
        assert!(sim.run_until(30_000, |s| serves_slot_zero(s, 3)));
        events(&mut sim.buses[0]);
        sim.down[0] = false;
        let new_id = sim.buses[3].me.id.clone();
        assert!(
            sim.run_until(10_000, |s| s.buses[0].me.master_id.as_deref()
                == Some(new_id.as_str())),
            "old master follows the new one"
        );
        assert!(sim.buses[0].me.slots.is_empty() && sim.buses[0].me.flags.slave);
        // As in Redis, a replica shows its master's config epoch.
        let line = crate::cluster::topology::render_node_line(&sim.buses[0].me, None);
        let epoch: u64 = line.split(' ').nth(6).unwrap().parse().unwrap();
        assert_eq!(epoch, sim.buses[3].me.config_epoch, "{line}");
        assert!(events(&mut sim.buses[0]).contains(&Event::RoleChanged(Some(new_id.clone()))));
        // Everyone sees it as a healthy replica of the new master.
        assert!(sim.run_until(10_000, |s| s.buses.iter().all(|b| {
            let n = b.node(&s.buses[0].me.id).unwrap();
            b.state_ok() && !n.flags.fail && n.master_id.as_deref() == Some(new_id.as_str())
        })));
    }

    #[test]
    fn the_most_up_to_date_replica_wins() {
        // Master 0 has two replicas: 3 is behind, 6 is ahead.
        let mut sim = cluster(7, &[(3, 0), (6, 0), (4, 1), (5, 2)]);
        sim.buses[3].set_replication(500, None);
        sim.buses[6].set_replication(900, None);
        // Offsets travel in headers: let everyone hear them.
        sim.run(3_000);
        sim.down[0] = true;
        assert!(sim.run_until(30_000, |s| serves_slot_zero(s, 6)));
        let winner = sim.buses[6].me.id.clone();
        assert!(
            sim.run_until(5_000, |s| s.buses[3].me.master_id.as_deref()
                == Some(winner.as_str())),
            "the other replica follows the winner"
        );
    }

    #[test]
    fn no_failover_stops_promotion_but_a_forced_manual_one_works() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        let mut cfg = sim.buses[3].cfg.clone();
        cfg.replica_no_failover = true;
        sim.buses[3].set_config(cfg);
        sim.down[0] = true;
        sim.run(20_000);
        assert!(sim.buses[3].me.flags.slave, "no automatic promotion");
        assert!(!sim.buses[1].state_ok(), "slot range 0 is down");
        let now = sim.now;
        assert_eq!(
            sim.buses[3].failover(FailoverMode::Default, now),
            Err("ERR Master is down or failed, please use CLUSTER FAILOVER FORCE")
        );
        sim.buses[3].failover(FailoverMode::Force, now).unwrap();
        assert!(sim.run_until(5_000, |s| serves_slot_zero(s, 3)));
    }

    #[test]
    fn a_replica_with_stale_data_does_not_run_unless_forced() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        // Its link to the master has been down far longer than
        // repl-ping-replica-period + node_timeout x validity factor (10 s +
        // 50 s): its data is too old to replace the master.
        let long_ago = sim.now - 120_000;
        sim.buses[3].set_replication(100, Some(long_ago));
        sim.down[0] = true;
        sim.run(25_000);
        assert!(sim.buses[3].me.flags.slave, "stale replica promoted itself");
        // With the factor at 0 it may always run.
        let mut cfg = sim.buses[3].cfg.clone();
        cfg.replica_validity_factor = 0;
        sim.buses[3].set_config(cfg);
        assert!(sim.run_until(30_000, |s| serves_slot_zero(s, 3)));
    }

    #[test]
    fn a_manual_failover_waits_for_the_replica_to_catch_up() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        sim.buses[0].set_replication(1000, None);
        sim.buses[3].set_replication(900, None);
        let now = sim.now;
        sim.buses[3].failover(FailoverMode::Default, now).unwrap();
        sim.run(1_000);
        // The master paused its writers and told the replica where to get.
        let ev = events(&mut sim.buses[0]);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::PauseWrites(t) if *t > now)),
            "{ev:?}"
        );
        assert!(sim.buses[3].me.flags.slave, "not before catching up");
        sim.buses[3].set_replication(1000, None);
        assert!(sim.run_until(3_000, |s| serves_slot_zero(s, 3)));
        let new_id = sim.buses[3].me.id.clone();
        assert!(sim.run_until(3_000, |s| s.buses[0].me.master_id.as_deref()
            == Some(new_id.as_str())));
        // Demoted, the old master lets its clients go on (to be redirected).
        assert!(events(&mut sim.buses[0]).contains(&Event::PauseWrites(0)));
        assert!(sim
            .buses
            .iter()
            .all(|b| b.node(&b.me.id).is_some_and(|n| !n.flags.fail)));
    }

    #[test]
    fn a_manual_failover_that_cannot_finish_times_out_and_resumes_writes() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        sim.buses[0].set_replication(1000, None);
        sim.buses[3].set_replication(10, None);
        let now = sim.now;
        sim.buses[3].failover(FailoverMode::Default, now).unwrap();
        sim.run(7_000);
        assert!(sim.buses[3].me.flags.slave && sim.buses[0].me.flags.master);
        assert!(events(&mut sim.buses[0]).contains(&Event::PauseWrites(0)));
        assert!(!sim.buses[3].manual_failover_in_progress());
    }

    #[test]
    fn takeover_needs_no_majority() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        sim.down[1] = true;
        sim.down[2] = true;
        let now = sim.now;
        sim.buses[3].failover(FailoverMode::Takeover, now).unwrap();
        assert!(sim.buses[3].me.flags.master);
        assert_eq!(owner_port(&sim.buses[3], 0), Some(sim.buses[3].me.port));
        let new_id = sim.buses[3].me.id.clone();
        assert!(sim.run_until(3_000, |s| s.buses[0].me.master_id.as_deref()
            == Some(new_id.as_str())));
    }

    #[test]
    fn a_master_cut_off_from_the_majority_stops_and_rejoins_as_a_replica() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        sim.partition(&[0]);
        // The minority side notices it cannot reach a majority...
        assert!(sim.run_until(8_000, |s| !s.buses[0].state_ok()));
        // ...while the majority fails it over.
        assert!(sim.run_until(30_000, |s| {
            (1..6).all(|i| owner_port(&s.buses[i], 0) == Some(s.buses[3].me.port))
                && (1..6).all(|i| s.buses[i].state_ok())
        }));
        assert!(!sim.buses[0].state_ok(), "minority master still refuses");
        sim.cut.clear();
        let new_id = sim.buses[3].me.id.clone();
        assert!(
            sim.run_until(10_000, |s| s.buses[0].me.master_id.as_deref()
                == Some(new_id.as_str())
                && s.buses[0].state_ok()),
            "after the partition heals the old master follows the new one"
        );
    }

    #[test]
    fn a_master_frozen_past_the_node_timeout_distrusts_its_view_on_waking() {
        let mut sim = cluster(6, &[(3, 0), (4, 1), (5, 2)]);
        // Node 0 is frozen (no ticks, no messages) past the node timeout:
        // the others may be failing it over right now.
        sim.down[0] = true;
        sim.run(5_200);
        sim.down[0] = false;
        sim.run(100);
        // Awake, it does not trust its stale view: no writes yet...
        assert!(!sim.buses[0].state_ok(), "stale view trusted at once");
        // ...nor its unanswered pings: it was asleep, the peers were not.
        assert!(
            sim.buses[0].peers.values().all(|p| !p.node.flags.pfail),
            "false failure suspicion after waking"
        );
        // ...until the cluster converges on one owner of its slots
        // (itself, or its replica if the failover went through).
        assert!(sim.run_until(15_000, |s| {
            let owner = owner_port(&s.buses[1], 0);
            s.buses
                .iter()
                .all(|b| b.state_ok() && owner_port(b, 0) == owner)
        }));
    }

    #[test]
    fn a_replica_migrates_to_an_orphaned_master() {
        // Master 0 has replicas 3 and 6; master 1's only replica (4) dies.
        let mut sim = cluster(7, &[(3, 0), (6, 0), (4, 1), (5, 2)]);
        sim.down[4] = true;
        let master1 = sim.buses[1].me.id.clone();
        let mover = if sim.buses[3].me.id < sim.buses[6].me.id {
            3
        } else {
            6
        };
        assert!(
            sim.run_until(30_000, |s| s.buses[mover].me.master_id.as_deref()
                == Some(master1.as_str())),
            "the smallest-id replica of master 0 moved to master 1"
        );
        let stayer = 9 - mover;
        assert_eq!(
            sim.buses[stayer].me.master_id.as_deref(),
            Some(sim.buses[0].me.id.as_str())
        );
    }

    #[test]
    fn a_master_votes_once_per_epoch_and_only_for_a_failed_master() {
        let mut sim = cluster(7, &[(3, 0), (6, 0), (4, 1), (5, 2)]);
        let now = sim.now;
        let ask = |sim: &mut Sim, from: usize, force: bool| -> bool {
            let mut h = sim.buses[from].header();
            h.current_epoch = sim.buses[1].current_epoch + 1;
            if force {
                h.msg_flags |= msg_flags::FORCEACK;
            }
            let msg = Message {
                kind: MsgType::AuthRequest,
                header: h,
                body: Body::Empty,
            };
            while sim.buses[1].poll_transmit().is_some() {}
            sim.buses[1].handle(Link::From(from as u64), msg, now);
            std::iter::from_fn(|| sim.buses[1].poll_transmit())
                .any(|t| t.msg.kind == MsgType::AuthAck)
        };
        assert!(!ask(&mut sim, 3, false), "master 0 is healthy: no vote");
        assert!(
            ask(&mut sim, 3, true),
            "a forced (manual) request is granted"
        );
        sim.buses[1].current_epoch -= 1;
        assert!(
            !ask(&mut sim, 6, true),
            "one vote per master per 2 x timeout"
        );
    }
}
