//! Per-connection client state (owned by its connection task) and the small
//! shared handle other clients see through `CLIENT LIST` / `CLIENT KILL`.

use crate::resp::{Proto, Reply};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

pub use crate::runtime::clock::wall_ms as unix_ms;

/// What other tasks may know and do about a client.
#[derive(Debug)]
pub struct ClientHandle {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub created_ms: u64,
    pub last_interaction_ms: AtomicU64,
    pub name: Mutex<Option<String>>,
    pub last_cmd: Mutex<&'static str>,
    /// Set by CLIENT KILL; the connection task closes when notified.
    pub killed: AtomicBool,
    pub kill: Notify,
    /// Extra info for CLIENT LIST: subscriptions and multi state.
    pub sub_count: AtomicU64,
    pub psub_count: AtomicU64,
    pub in_multi: AtomicBool,
    /// Waiting on keys (BLPOP ...) or for a CLIENT PAUSE to end.
    pub blocked: AtomicBool,
    pub resp: AtomicU64,
    /// Pub/sub messages queued for this client and not yet written, in
    /// bytes (what the pubsub output-buffer limit counts; CLIENT LIST omem).
    pub push_bytes: AtomicU64,
    /// Since when (monotonic ms; 0 = not) the queue has been at or over
    /// the pubsub soft limit.
    pub push_soft_since: AtomicU64,
    /// Bytes read and not yet consumed by a command (CLIENT LIST qbuf).
    pub qbuf: AtomicU64,
    /// Reply bytes produced and not yet taken by the socket.
    pub obuf: AtomicU64,
    /// CLIENT NO-EVICT on, or a replica link: never chosen by
    /// maxmemory-clients.
    pub no_evict: AtomicBool,
}

impl ClientHandle {
    /// The warning Redis logs when a client is dropped for its output
    /// buffer (`omem` bytes pending); one event for every place that
    /// enforces a limit.
    pub fn log_output_limit_close(&self, omem: u64) {
        tracing::warn!(
            client = self.id,
            addr = %self.addr,
            omem,
            "Client closed for overcoming of output buffer limits."
        );
    }

    /// A handle for a client that has no socket (tests, the AOF loader,
    /// a replica's link to its master).
    pub fn detached(id: u64, addr: &str) -> ClientHandle {
        let now = crate::runtime::clock::mono_ms();
        ClientHandle {
            id,
            addr: addr.to_string(),
            laddr: String::new(),
            created_ms: now,
            last_interaction_ms: AtomicU64::new(now),
            name: Mutex::new(None),
            last_cmd: Mutex::new("NULL"),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            sub_count: AtomicU64::new(0),
            psub_count: AtomicU64::new(0),
            in_multi: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            resp: AtomicU64::new(2),
            push_bytes: AtomicU64::new(0),
            push_soft_since: AtomicU64::new(0),
            qbuf: AtomicU64::new(0),
            obuf: AtomicU64::new(0),
            no_evict: AtomicBool::new(false),
        }
    }

    /// What the client holds in buffers now (CLIENT LIST tot-mem): its
    /// query buffer, unwritten replies and queued pub/sub messages.
    pub fn memory(&self) -> u64 {
        self.qbuf.load(Ordering::Relaxed)
            + self.obuf.load(Ordering::Relaxed)
            + self.push_bytes.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> Option<String> {
        self.name.lock().clone()
    }

    /// One line of CLIENT LIST / CLIENT INFO, in Redis's field order.
    pub fn info_line(&self, now_ms: u64) -> String {
        let age = now_ms.saturating_sub(self.created_ms) / 1000;
        let idle = now_ms.saturating_sub(self.last_interaction_ms.load(Ordering::Relaxed)) / 1000;
        let cmd = *self.last_cmd.lock();
        let flags = if self.blocked.load(Ordering::Relaxed) {
            "b"
        } else if self.in_multi.load(Ordering::Relaxed) {
            "x"
        } else if self.sub_count.load(Ordering::Relaxed) + self.psub_count.load(Ordering::Relaxed)
            > 0
        {
            "P"
        } else {
            "N"
        };
        format!(
            "id={} addr={} laddr={} fd=8 name={} age={} idle={} flags={} db=0 sub={} psub={} ssub=0 multi={} qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=0 obl=0 oll=0 omem={} tot-mem={} events=r cmd={} user=default redir=-1 resp={}",
            self.id,
            self.addr,
            self.laddr,
            self.name().unwrap_or_default(),
            age,
            idle,
            flags,
            self.sub_count.load(Ordering::Relaxed),
            self.psub_count.load(Ordering::Relaxed),
            if self.in_multi.load(Ordering::Relaxed) { 0 } else { -1 },
            self.qbuf.load(Ordering::Relaxed),
            self.obuf.load(Ordering::Relaxed) + self.push_bytes.load(Ordering::Relaxed),
            self.memory(),
            if cmd.is_empty() { "NULL" } else { cmd },
            self.resp.load(Ordering::Relaxed),
        )
    }
}

/// Capacity of a subscriber's message queue; a client that falls this far
/// behind is disconnected, like Redis's pubsub output buffer limit.
pub const PUSH_QUEUE: usize = 100_000;

pub struct Client {
    pub handle: Arc<ClientHandle>,
    pub proto: Proto,
    pub authenticated: bool,
    /// Commands queued by MULTI; None when not in a transaction.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A queued command failed to queue: EXEC must abort.
    pub multi_error: bool,
    /// Set when a WATCHed key changes.
    pub watch_dirty: Arc<AtomicBool>,
    pub watched: Vec<Bytes>,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    pub shard_channels: HashSet<Bytes>,
    /// Where publishers send this client's messages.
    pub push_tx: mpsc::Sender<Reply>,
    /// Cluster READONLY (reads from a replica).
    pub readonly: bool,
    /// Cluster ASKING (one command into an importing slot).
    pub asking: bool,
    /// `CLIENT REPLY OFF|SKIP`.
    pub reply_off: bool,
    /// Replies still to drop (CLIENT REPLY SKIP drops its own and the next).
    pub skip_replies: u8,
    /// Name of the last command run; published to `handle` once per batch
    /// so the hot path takes no lock.
    pub last_cmd: &'static str,
    /// Commands run since the connection last added them to the server's
    /// counter (one shared atomic add per batch, not per command).
    pub commands_unreported: u64,
    /// This is a replica's link to its master, applying the master's
    /// command stream: no auth, slot, read-only or memory checks, and keys
    /// are seen as the master sees them.
    pub is_master: bool,
    /// REPLCONF listening-port / ip-address of a replica, before PSYNC.
    pub repl_listening_port: u16,
    pub repl_ip: Option<String>,
}

impl Client {
    /// Whether the next reply reaches the client (CLIENT REPLY OFF / SKIP
    /// drop it).
    pub fn takes_reply(&self) -> bool {
        !self.reply_off && self.skip_replies == 0
    }

    pub fn new(handle: Arc<ClientHandle>, authenticated: bool) -> (Self, mpsc::Receiver<Reply>) {
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
        (
            Client {
                handle,
                proto: Proto::Resp2,
                authenticated,
                multi: None,
                multi_error: false,
                watch_dirty: Arc::new(AtomicBool::new(false)),
                watched: Vec::new(),
                channels: HashSet::new(),
                patterns: HashSet::new(),
                shard_channels: HashSet::new(),
                push_tx,
                readonly: false,
                asking: false,
                reply_off: false,
                skip_replies: 0,
                last_cmd: "NULL",
                commands_unreported: 0,
                is_master: false,
                repl_listening_port: 0,
                repl_ip: None,
            },
            push_rx,
        )
    }

    pub fn id(&self) -> u64 {
        self.handle.id
    }

    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Inside MULTI, a command that fails before queueing makes EXEC abort.
    pub fn flag_multi_error(&mut self) {
        if self.multi.is_some() {
            self.multi_error = true;
        }
    }

    pub fn queue(&mut self, args: Vec<Bytes>) {
        if let Some(q) = self.multi.as_mut() {
            q.push(args);
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }

    /// RESP2 clients with subscriptions may only run (un)subscribe/ping/quit.
    pub fn in_pubsub_context(&self) -> bool {
        self.proto == Proto::Resp2 && self.subscription_count() > 0
    }

    /// Shows `name` as this client's current command right away (CLIENT
    /// LIST lists the caller mid-command).
    pub fn publish_name_now(&mut self, name: &'static str) {
        self.last_cmd = name;
        *self.handle.last_cmd.lock() = name;
    }

    /// Publishes per-batch bookkeeping to the shared handle and counters.
    pub fn publish_batch(&mut self, stats: &crate::node::shared::Stats, now_ms: u64) {
        *self.handle.last_cmd.lock() = self.last_cmd;
        self.handle
            .last_interaction_ms
            .store(now_ms, std::sync::atomic::Ordering::Relaxed);
        stats.total_commands_processed.fetch_add(
            self.commands_unreported,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.commands_unreported = 0;
    }
}

/// maxmemory-clients: while the evictable clients together hold `limit`
/// bytes or more, the largest goes first (Redis evicts from its largest
/// memory bucket down). Returns the clients to close, largest first.
pub fn clients_to_evict(
    clients: &std::collections::HashMap<u64, Arc<ClientHandle>>,
    limit: u64,
) -> Vec<(Arc<ClientHandle>, u64)> {
    if limit == 0 {
        return Vec::new();
    }
    let mut held: Vec<(Arc<ClientHandle>, u64)> = clients
        .values()
        .filter(|h| !h.no_evict.load(Ordering::Relaxed) && !h.killed.load(Ordering::Relaxed))
        .map(|h| (h.clone(), h.memory()))
        .collect();
    let mut total: u64 = held.iter().map(|(_, m)| m).sum();
    if total < limit {
        return Vec::new();
    }
    held.sort_unstable_by_key(|(_, m)| std::cmp::Reverse(*m));
    let mut out = Vec::new();
    for (h, m) in held {
        if total < limit {
            break;
        }
        total -= m;
        out.push((h, m));
    }
    out
}
