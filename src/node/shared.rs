//! State shared by every connection of a node: the keyspace lock, config,
//! counters, the client registry, the pub/sub registry, shutdown.

use crate::node::client::ClientHandle;
use crate::node::cmd::State;
use crate::node::pubsub::PubSub;
use crate::runtime::config::{ConfigTable, NodeConfig};
use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counters for `INFO stats`. Relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct Stats {
    pub total_connections_received: AtomicU64,
    pub total_commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub error_replies: AtomicU64,
    /// Commands per second over the last cron second.
    pub ops_per_sec: AtomicU64,
    /// Clients closed by maxmemory-clients (INFO `evicted_clients`).
    pub evicted_clients: AtomicU64,
}

impl Stats {
    pub fn count_command(&self) {
        self.total_commands_processed
            .fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Shared {
    /// The keyspace and everything that must change atomically with it.
    /// A std Mutex: held only for a batch of commands, never across .await.
    state: Mutex<State>,
    /// Typed config, read on hot paths without locking.
    pub config: ArcSwap<NodeConfig>,
    /// All directives (CONFIG GET/SET/REWRITE).
    pub table: Mutex<ConfigTable>,
    pub stats: Stats,
    pub clients: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    pub next_client_id: AtomicU64,
    pub pubsub: Mutex<PubSub>,
    pub slowlog: Mutex<crate::node::slowlog::SlowLog>,
    /// 40 hex chars, new each start (INFO `run_id`).
    pub run_id: String,
    pub started: Instant,
    /// TCP port actually listened on.
    pub port: u16,
    /// Unix seconds of the last successful save (LASTSAVE).
    pub lastsave: AtomicU64,
    /// Highest `used_memory` seen (INFO used_memory_peak).
    pub peak_memory: AtomicU64,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Cluster mode state; None when `cluster-enabled no`.
    pub cluster: Option<Arc<crate::node::cluster::ClusterHandle>>,
    /// Snapshot and append-only log state.
    pub persist: crate::persist::snapshot::PersistState,
    /// Replication: stream identity and position, replicas, the link to
    /// our master.
    pub repl: crate::replication::Repl,
    /// The append-only log.
    pub aof: Arc<crate::persist::aof::Aof>,
    /// Ourselves, for handlers that start background work.
    me: std::sync::OnceLock<std::sync::Weak<Shared>>,
    /// Unix ms until which clients are paused (CLIENT PAUSE, a coordinated
    /// failover); `pause_all` pauses every command, not only writes.
    pause_until: AtomicU64,
    pause_all: std::sync::atomic::AtomicBool,
    /// Woken when a pause is lifted early.
    pub unpaused: tokio::sync::Notify,
    /// Clients holding a command until the pause ends.
    pub paused_clients: AtomicU64,
}

impl Shared {
    pub fn new(
        table: ConfigTable,
        config: NodeConfig,
        cluster: Option<Arc<crate::node::cluster::ClusterHandle>>,
    ) -> Self {
        let port = config.port;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let run_id = crate::util::random_hex_id();
        Shared {
            state: Mutex::new(State::new()),
            config: ArcSwap::from_pointee(config),
            table: Mutex::new(table),
            stats: Stats::default(),
            clients: Mutex::new(HashMap::new()),
            next_client_id: AtomicU64::new(1),
            pubsub: Mutex::new(PubSub::default()),
            slowlog: Mutex::new(crate::node::slowlog::SlowLog::default()),
            run_id,
            started: Instant::now(),
            port,
            lastsave: AtomicU64::new(crate::node::client::unix_ms() / 1000),
            peak_memory: AtomicU64::new(0),
            shutdown,
            cluster,
            persist: Default::default(),
            repl: crate::replication::Repl::new(),
            aof: Arc::new(crate::persist::aof::Aof::default()),
            me: std::sync::OnceLock::new(),
            pause_until: AtomicU64::new(0),
            pause_all: std::sync::atomic::AtomicBool::new(false),
            unpaused: tokio::sync::Notify::new(),
            paused_clients: AtomicU64::new(0),
        }
    }

    /// Pauses write commands of normal clients until `until` on the
    /// monotonic clock (`runtime::clock::mono_ms`; they wait,
    /// they do not fail); the replication stream keeps flowing, and keys do
    /// not expire meanwhile, so replicas can reach a stable offset (a
    /// coordinated CLUSTER FAILOVER). Replaces any earlier pause; a time in
    /// the past lifts it. Callable from any thread; never blocks.
    pub fn pause_writes_until(&self, until: u64) {
        self.pause(until, false);
    }

    /// CLIENT PAUSE: writes only, or every command (`all`).
    pub fn pause(&self, until: u64, all: bool) {
        self.pause_all.store(all, Ordering::Relaxed);
        self.pause_until.store(until, Ordering::Release);
        self.unpaused.notify_waiters();
    }

    /// The pause in force now: None, or Some(all).
    #[inline]
    pub fn paused(&self) -> Option<bool> {
        let until = self.pause_until.load(Ordering::Acquire);
        // Most batches run unpaused: skip the clock read.
        if until != 0 && until > crate::runtime::clock::mono_ms() {
            Some(self.pause_all.load(Ordering::Relaxed))
        } else {
            None
        }
    }

    pub fn pause_until(&self) -> u64 {
        self.pause_until.load(Ordering::Acquire)
    }

    /// How lazy expiry treats keys for normal clients now: hidden on a
    /// replica (only the master's DEL removes them) and during a pause (no
    /// DEL may enter the stream), deleted otherwise.
    pub fn expiry_mode(&self) -> crate::store::ExpiryMode {
        if self.repl.is_replica() || self.paused().is_some() {
            crate::store::ExpiryMode::Hide
        } else {
            crate::store::ExpiryMode::Delete
        }
    }

    /// Brings the keyspace's propagation and expiry settings in line with
    /// the node's role; called under the lock at the start of each batch.
    #[inline]
    pub fn sync_state(&self, st: &mut State) {
        let want = self.repl.prop_wanted();
        if want != st.prop.is_on() {
            st.set_propagation(want);
        }
        st.db.expiry = self.expiry_mode();
    }

    /// Wraps in an Arc that handlers can get back with `self_arc`.
    pub fn into_arc(self) -> Arc<Shared> {
        let arc = Arc::new(self);
        let _ = arc.me.set(Arc::downgrade(&arc));
        arc
    }

    pub fn self_arc(&self) -> Option<Arc<Shared>> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    /// Locks the keyspace. A panic while holding the lock cannot leave the
    /// data half-written in a way later commands could not read, so a
    /// poisoned lock is taken over rather than killing every client.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn connected_clients(&self) -> usize {
        self.clients.lock().len()
    }

    /// Hands the propagation stream built under the keyspace lock to its
    /// consumers, keeping the execution order. Call with the lock held.
    pub fn propagated(&self, prop: &mut crate::replication::propagate::Propagator) {
        if !prop.has_output() {
            return;
        }
        let stream = prop.take();
        self.repl.append_local(&stream);
        crate::node::aof::append(self, &stream);
    }

    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}
