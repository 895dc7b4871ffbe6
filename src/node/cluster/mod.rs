//! Cluster mode on a node: the bus driver (TCP on the cluster port around
//! the sans-IO [`Bus`]) and nodes.conf persistence; the slot checks every
//! keyed command passes (MOVED, CROSSSLOT, CLUSTERDOWN) are in `slots`.
//!
//! The request path reads a [`SlotView`] snapshot through `ArcSwap` and
//! never locks the bus. Lock order: keyspace lock, then bus lock; the driver
//! only ever takes the bus lock.

use crate::cluster::topology::{random_node_id, ClusterNode, NodesConf};
use crate::gossip::state::{Bus, BusConfig, Event, Link};
use crate::gossip::wire::Message;
use crate::runtime::clock::mono_ms;
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

mod slots;
pub use slots::{blocked_redirect, check, command_keys, Redirect, SlotView};

/// The part of the configuration that must be on disk before this node
/// tells anyone about it: a vote or an epoch must survive a crash, or the
/// node could vote twice in one epoch or reuse an epoch after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Durable {
    current_epoch: u64,
    last_vote_epoch: u64,
    config_epoch: u64,
    master: Option<String>,
}

impl Durable {
    fn of(bus: &Bus) -> Durable {
        Durable {
            current_epoch: bus.current_epoch,
            last_vote_epoch: bus.last_vote_epoch,
            config_epoch: bus.myself().config_epoch,
            master: bus.myself().master_id.clone(),
        }
    }
}

/// What the bus asks of the rest of the node besides its role (which
/// reaches replication through the role hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// Hold client writes until this `mono_ms` time (0: resume now).
    PauseWrites(u64),
    /// Deliver a message published on another node to local subscribers.
    Deliver {
        channel: Bytes,
        message: Bytes,
        shard: bool,
    },
}

/// The bus settings a node's configuration asks for.
pub fn bus_config(cfg: &crate::runtime::config::NodeConfig) -> BusConfig {
    BusConfig {
        node_timeout: cfg.cluster_node_timeout,
        replica_no_failover: cfg.cluster_replica_no_failover,
        replica_validity_factor: cfg.cluster_replica_validity_factor,
        migration_barrier: cfg.cluster_migration_barrier,
        allow_replica_migration: cfg.cluster_allow_replica_migration,
        require_full_coverage: cfg.cluster_require_full_coverage,
    }
}

/// Called with our master's address when the bus makes us a replica, or
/// None when it makes us a master.
pub type RoleHook = Box<dyn Fn(Option<(String, u16)>) + Send + Sync>;

/// Cluster state of a node, shared with its connections.
pub struct ClusterHandle {
    bus: Mutex<Bus>,
    /// Bus requests for the node (client pause, pub/sub delivery); the
    /// receiver is taken once at start.
    actions: mpsc::UnboundedSender<NodeAction>,
    actions_rx: Mutex<Option<mpsc::UnboundedReceiver<NodeAction>>>,
    role_hook: std::sync::OnceLock<RoleHook>,
    /// The role last reported to `role_hook`.
    last_role: Mutex<Option<Option<(String, u16)>>>,
    pub view: ArcSwap<SlotView>,
    /// Bumped after each new `view`, so blocked clients can check that
    /// their key's slot is still served here.
    view_tx: tokio::sync::watch::Sender<u64>,
    conf_path: PathBuf,
    links: Mutex<HashMap<Link, mpsc::Sender<Bytes>>>,
    /// Serialises nodes.conf writes and remembers the epochs/role last
    /// made durable (see [`ClusterHandle::pump`]).
    saved: Mutex<Durable>,
    /// Wakes the background writer: a slot-only change is waiting.
    save_wanted: tokio::sync::Notify,
    next_conn: AtomicU64,
    pub stats_sent: AtomicU64,
    pub stats_received: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot listen on the cluster bus port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// Writes nodes.conf atomically: temp file, fsync, rename, fsync of the dir.
pub fn save_nodes_conf(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-save");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl ClusterHandle {
    /// Loads nodes.conf if present (rejoining with the same id), else
    /// starts as a new lone master.
    pub fn open(
        conf_path: PathBuf,
        ip: &str,
        port: u16,
        cport: u16,
        cfg: BusConfig,
    ) -> Result<Self, ClusterError> {
        let bus = if conf_path.exists() {
            let text =
                std::fs::read_to_string(&conf_path).map_err(|source| ClusterError::Read {
                    path: conf_path.display().to_string(),
                    source,
                })?;
            let conf = NodesConf::parse(&text).map_err(|e| ClusterError::Corrupt {
                path: conf_path.display().to_string(),
                reason: e.to_string(),
            })?;
            let mut bus = Bus::restore(conf, cfg).ok_or_else(|| ClusterError::Corrupt {
                path: conf_path.display().to_string(),
                reason: "no myself line".into(),
            })?;
            bus.set_address(ip, port, cport);
            tracing::info!(node_id = %bus.myself().id, "Node configuration loaded, I'm {}", bus.myself().id);
            bus
        } else {
            let me = ClusterNode::new(random_node_id(), ip, port, cport);
            let bus = Bus::new(me, cfg);
            tracing::info!(node_id = %bus.myself().id, "No cluster configuration found, I'm {}", bus.myself().id);
            bus
        };
        let view = ArcSwap::from_pointee(SlotView::from_bus(&bus));
        let (actions, rx) = mpsc::unbounded_channel();
        let h = ClusterHandle {
            bus: Mutex::new(bus),
            actions,
            actions_rx: Mutex::new(Some(rx)),
            role_hook: std::sync::OnceLock::new(),
            last_role: Mutex::new(None),
            view,
            view_tx: tokio::sync::watch::channel(0).0,
            conf_path,
            links: Mutex::new(HashMap::new()),
            saved: Mutex::new(Durable::default()),
            save_wanted: tokio::sync::Notify::new(),
            next_conn: AtomicU64::new(1),
            stats_sent: AtomicU64::new(0),
            stats_received: AtomicU64::new(0),
        };
        h.save();
        Ok(h)
    }

    /// Sets who is told when our role changes (the replication handle),
    /// and tells it the current role.
    pub fn on_role_change(&self, hook: RoleHook) {
        let _ = self.role_hook.set(hook);
        let role = Self::role_of(&self.bus());
        self.report_role(role);
    }

    /// Some(None) as a master, Some(Some(addr)) as a replica of a master
    /// whose address we know, None while that address is unknown.
    fn role_of(bus: &Bus) -> Option<Option<(String, u16)>> {
        let me = bus.myself();
        match me.master_id.as_deref() {
            None if !me.flags.slave => Some(None),
            None => None,
            Some(id) => bus
                .node(id)
                .filter(|n| !n.ip.is_empty() && n.port != 0)
                .map(|n| Some((n.ip.clone(), n.port))),
        }
    }

    fn report_role(&self, role: Option<Option<(String, u16)>>) {
        let Some(role) = role else { return };
        let mut last = self.last_role.lock();
        if last.as_ref() == Some(&role) {
            return;
        }
        *last = Some(role.clone());
        drop(last);
        if let Some(hook) = self.role_hook.get() {
            hook(role);
        }
    }

    pub fn bus(&self) -> MutexGuard<'_, Bus> {
        self.bus.lock()
    }

    /// The stream of [`NodeAction`]s; the first caller gets it.
    pub fn take_actions(&self) -> Option<mpsc::UnboundedReceiver<NodeAction>> {
        self.actions_rx.lock().take()
    }

    /// Feeds the bus what it needs from the rest of the node: the current
    /// directives and the replication offset / master-link state.
    pub fn sync(&self, cfg: BusConfig, repl_offset: u64, link_down_since: Option<u64>) {
        let mut bus = self.bus();
        bus.set_config(cfg);
        bus.set_replication(repl_offset, link_down_since);
    }

    /// Writes nodes.conf now (temp, fsync, rename, fsync dir) with the
    /// bus's current state.
    pub fn save(&self) {
        let mut saved = self.saved.lock();
        let (text, durable) = {
            let bus = self.bus();
            (bus.nodes_conf().render(), Durable::of(&bus))
        };
        match save_nodes_conf(&self.conf_path, &text) {
            Ok(()) => *saved = durable,
            Err(e) => {
                tracing::warn!(path = %self.conf_path.display(), error = %e, "cannot save nodes.conf")
            }
        }
    }

    /// Saves nodes.conf in the background whenever asked, coalescing
    /// bursts (a reshard changes a slot every few milliseconds; one fsync
    /// per change would make it 10× slower than Redis).
    async fn background_saver(self: Arc<Self>) {
        loop {
            self.save_wanted.notified().await;
            let h = self.clone();
            if tokio::task::spawn_blocking(move || h.save()).await.is_err() {
                return;
            }
        }
    }

    /// Changes each time a new slot view is published.
    pub fn view_rx(&self) -> tokio::sync::watch::Receiver<u64> {
        self.view_tx.subscribe()
    }

    /// Sends what the bus queued and acts on its events. Call after any
    /// change to the bus.
    pub fn pump(self: &Arc<Self>) {
        let (transmits, events, view, role) = {
            let mut bus = self.bus();
            let mut t = Vec::new();
            while let Some(x) = bus.poll_transmit() {
                t.push(x);
            }
            let mut e = Vec::new();
            while let Some(x) = bus.poll_event() {
                e.push(x);
            }
            let view = (!e.is_empty()).then(|| SlotView::from_bus(&bus));
            let role = Self::role_of(&bus);
            (t, e, view, role)
        };
        self.report_role(role);
        if let Some(v) = view {
            self.view.store(Arc::new(v));
            self.view_tx.send_modify(|n| *n += 1);
        }
        if events.contains(&Event::ConfigChanged) {
            // Epochs, votes and role are saved before anything is sent
            // (transmits below); slot-only changes go to the background.
            let must_sync = {
                let now = Durable::of(&self.bus());
                *self.saved.lock() != now
            };
            if must_sync {
                self.save();
            } else {
                self.save_wanted.notify_one();
            }
        }
        for e in events {
            let action = match e {
                Event::PauseWrites(until) => Some(NodeAction::PauseWrites(until)),
                Event::Message {
                    channel,
                    message,
                    shard,
                } => Some(NodeAction::Deliver {
                    channel,
                    message,
                    shard,
                }),
                _ => None,
            };
            if let Some(a) = action {
                // The receiver lives as long as the node; a send error
                // only happens during shutdown.
                let _ = self.actions.send(a);
            }
        }
        for t in transmits {
            let mut buf = BytesMut::new();
            t.msg.encode(&mut buf);
            self.send(t.link, buf.freeze());
        }
    }

    fn send(self: &Arc<Self>, link: Link, frame: Bytes) {
        let mut links = self.links.lock();
        if let Some(tx) = links.get(&link) {
            if tx.try_send(frame.clone()).is_ok() {
                self.stats_sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            links.remove(&link);
        }
        let Link::To { ip, cport } = &link else {
            return; // the peer's inbound connection is gone; it will reconnect
        };
        let (tx, rx) = mpsc::channel(1024);
        let _ = tx.try_send(frame);
        links.insert(link.clone(), tx);
        tokio::spawn(outbound(self.clone(), link.clone(), ip.clone(), *cport, rx));
    }

    fn drop_link(&self, link: &Link) {
        self.links.lock().remove(link);
        self.bus().link_lost(link);
    }

    fn deliver(self: &Arc<Self>, link: Link, msg: Message) {
        self.stats_received.fetch_add(1, Ordering::Relaxed);
        self.bus().handle(link, msg, mono_ms());
        self.pump();
    }
}

/// Reads bus frames from a socket and feeds them to the bus.
async fn read_frames(h: Arc<ClusterHandle>, link: Link, mut rd: tokio::net::tcp::OwnedReadHalf) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match Message::decode(&mut buf) {
                Ok(Some(m)) => h.deliver(link.clone(), m),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "bad bus frame, closing link");
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn write_frames(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(f) = rx.recv().await {
        if wr.write_all(&f).await.is_err() {
            return;
        }
    }
}

async fn outbound(
    h: Arc<ClusterHandle>,
    link: Link,
    ip: String,
    cport: u16,
    rx: mpsc::Receiver<Bytes>,
) {
    let conn = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect((ip.as_str(), cport)),
    )
    .await;
    let Ok(Ok(stream)) = conn else {
        h.drop_link(&link);
        return;
    };
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let writer = tokio::spawn(write_frames(wr, rx));
    read_frames(h.clone(), link.clone(), rd).await;
    writer.abort();
    h.drop_link(&link);
}

/// Runs the bus: accepts peers on the cluster port and ticks the state
/// machine ten times a second until shutdown.
pub async fn run(
    h: Arc<ClusterHandle>,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = {
        let h = h.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let id = h.next_conn.fetch_add(1, Ordering::Relaxed);
                let link = Link::From(id);
                let (rd, wr) = stream.into_split();
                let (tx, rx) = mpsc::channel(1024);
                h.links.lock().insert(link.clone(), tx);
                let h2 = h.clone();
                tokio::spawn(async move {
                    let writer = tokio::spawn(write_frames(wr, rx));
                    read_frames(h2.clone(), link.clone(), rd).await;
                    writer.abort();
                    h2.drop_link(&link);
                });
            }
        })
    };
    let saver = tokio::spawn(h.clone().background_saver());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                h.bus().tick(mono_ms());
                h.pump();
            }
            _ = shutdown.changed() => break,
        }
    }
    acceptor.abort();
    saver.abort();
    h.save();
}

/// Binds the cluster port (port + 10000 unless `cluster-port` is set).
pub async fn bind(addr_ip: &str, cport: u16) -> Result<TcpListener, ClusterError> {
    let ip = if addr_ip.is_empty() {
        "0.0.0.0"
    } else {
        addr_ip
    };
    TcpListener::bind((ip, cport))
        .await
        .map_err(|source| ClusterError::Bind {
            port: cport,
            source,
        })
}
