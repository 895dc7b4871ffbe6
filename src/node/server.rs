//! Starting and stopping a node: config → (daemonize) → logging → runtime →
//! listeners, accept loop, housekeeping cron, signals, shutdown.

use crate::node::client::{unix_ms, ClientHandle};
use crate::node::connection;
use crate::node::shared::Shared;
use crate::runtime::config::{ConfigError, ConfigTable, NodeConfig};
use crate::runtime::{daemon, logging};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    #[error("cannot set up logging: {0}")]
    Log(std::io::Error),
    /// Redis's wording: it refuses the file while loading the config.
    #[error("*** FATAL CONFIG FILE ERROR ***\nCan't open the log file: {0}")]
    LogFile(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("could not create server TCP listening socket {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::node::cluster::ClusterError),
    #[error("cannot use dir {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load the dataset: {0}")]
    Load(String),
    #[error("Redis port number too high. Cluster communication port is 10,000 port numbers higher than your Redis port. Your Redis port number must be 55535 or less.")]
    PortTooHigh,
}

/// `slotway node CONF [--directive value]...`: runs in the foreground (or
/// detached with `daemonize yes`) until SHUTDOWN or a signal.
pub fn start(conf: Option<&Path>, overrides: &[String]) -> Result<(), NodeError> {
    let table = ConfigTable::from_args(conf, overrides)?;
    let mut cfg = NodeConfig::from_table(&table)?;
    if let Some(path) = &cfg.logfile {
        // Checked before detaching: a daemon that cannot log would exit
        // where nobody sees why.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                // strerror's text alone, as Redis prints it.
                NodeError::LogFile(e.raw_os_error().map_or_else(
                    || e.to_string(),
                    |code| nix::errno::Errno::from_raw(code).desc().to_string(),
                ))
            })?;
    }
    if cfg.daemonize {
        daemon::daemonize()?;
    }
    logging::init(&cfg.loglevel, cfg.logfile.as_deref()).map_err(NodeError::Log)?;
    std::fs::create_dir_all(&cfg.dir)
        .and_then(|()| std::fs::canonicalize(&cfg.dir))
        .and_then(|abs| {
            // Absolute, so files in `dir` stay where they are after the chdir.
            cfg.dir = abs;
            std::env::set_current_dir(&cfg.dir)
        })
        .map_err(|source| NodeError::Dir {
            path: cfg.dir.display().to_string(),
            source,
        })?;
    let pidfile = match (&cfg.pidfile, cfg.daemonize) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some("/var/run/redis.pid".into()),
        (None, false) => None,
    };
    if let Some(p) = &pidfile {
        if let Err(e) = daemon::write_pidfile(p) {
            tracing::warn!(error = %e, "pidfile not written");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.io_threads)
        .enable_all()
        .build()
        .map_err(NodeError::Runtime)?;
    let res = rt.block_on(run(table, cfg));
    if let Some(p) = &pidfile {
        daemon::remove_pidfile(p);
    }
    // Connection tasks may still hold sockets; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(200));
    res
}

/// Turns `bind` entries into listen addresses: `*` is every IPv4 address,
/// `::*` every IPv6 one, a leading `-` makes the address optional.
fn bind_addrs(bind: &[String], port: u16) -> Vec<(SocketAddr, bool)> {
    let mut out = Vec::new();
    for b in bind {
        let (optional, addr) = match b.strip_prefix('-') {
            Some(a) => (true, a),
            None => (false, b.as_str()),
        };
        let ip = match addr {
            "*" => "0.0.0.0",
            "::*" => "::",
            other => other,
        };
        match ip.parse::<std::net::IpAddr>() {
            Ok(ip) => out.push((SocketAddr::new(ip, port), optional)),
            Err(_) => tracing::warn!(addr = b, "ignoring unparsable bind address"),
        }
    }
    if out.is_empty() {
        out.push((SocketAddr::from(([0, 0, 0, 0], port)), false));
    }
    out
}

/// Protected mode (Redis): with the default bind and no password, only
/// loopback clients are served.
fn protected(cfg: &NodeConfig, peer: &SocketAddr) -> bool {
    let default_bind = cfg.bind.is_empty() || cfg.bind == ["*", "-::*"];
    cfg.protected_mode && default_bind && cfg.requirepass.is_none() && !peer.ip().is_loopback()
}

const DENIED: &[u8] = b"-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Redis you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Set up an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

/// Serves until shutdown. Public so tests and `slotway up` can run a node
/// inside an existing runtime.
pub async fn run(table: ConfigTable, cfg: NodeConfig) -> Result<(), NodeError> {
    let mut listeners = Vec::new();
    for (addr, optional) in bind_addrs(&cfg.bind, cfg.port) {
        match TcpListener::bind(addr).await {
            Ok(l) => listeners.push(l),
            Err(e) if optional => {
                tracing::debug!(%addr, error = %e, "optional bind address skipped");
            }
            Err(source) => {
                return Err(NodeError::Bind {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
    let mut cfg = cfg;
    if let Some(port) = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port())
    {
        cfg.port = port;
    }
    let port = cfg.port;
    let hz = cfg.hz;
    let policy = cfg.maxmemory_policy;
    let cluster = if cfg.cluster_enabled {
        // The address peers and clients are told: the first concrete bind
        // address, loopback when bound to everything.
        let ip = cfg
            .bind
            .iter()
            .map(|b| b.trim_start_matches('-'))
            .find(|b| {
                *b != "*"
                    && *b != "::*"
                    && b.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| !ip.is_unspecified())
            })
            .unwrap_or("127.0.0.1")
            .to_string();
        let cport = if cfg.cluster_port != 0 {
            cfg.cluster_port
        } else {
            // Two such nodes would otherwise share one bus port; Redis
            // refuses to start with the same words.
            port.checked_add(10000).ok_or(NodeError::PortTooHigh)?
        };
        // start() already changed into `dir`, as redis-server does.
        let path = std::path::PathBuf::from(&cfg.cluster_config_file);
        let handle = Arc::new(crate::node::cluster::ClusterHandle::open(
            path,
            &ip,
            port,
            cport,
            crate::node::cluster::bus_config(&cfg),
        )?);
        let bind_ip = if ip == "127.0.0.1" && cfg.bind.iter().any(|b| b == "*") {
            "0.0.0.0".to_string()
        } else {
            ip.clone()
        };
        let listener = crate::node::cluster::bind(&bind_ip, cport).await?;
        Some((handle, listener))
    } else {
        None
    };
    let shared = Shared::new(table, cfg, cluster.as_ref().map(|(h, _)| h.clone())).into_arc();
    if let Some((h, listener)) = cluster {
        if let Some(rx) = h.take_actions() {
            tokio::spawn(cluster_actions(shared.clone(), rx));
        }
        tokio::spawn(crate::node::cluster::run(
            h,
            listener,
            shared.shutdown.subscribe(),
        ));
    }
    shared.lock().db.set_policy(policy);
    load_dataset(&shared)?;
    tracing::info!(
        port,
        pid = std::process::id(),
        "Ready to accept connections"
    );

    {
        let cfg = shared.config.load();
        shared.repl.set_backlog_limit(cfg.repl_backlog_size);
        if let (Some(master), None) = (&cfg.replicaof, &shared.cluster) {
            shared.repl.set_master(Some(master.clone()));
        }
    }
    if let Some(cl) = &shared.cluster {
        // The bus says who our master is (CLUSTER REPLICATE, failover);
        // the replication driver follows it.
        let s = Arc::downgrade(&shared);
        cl.on_role_change(Box::new(move |master| {
            if let Some(s) = s.upgrade() {
                s.repl.set_master(master);
            }
        }));
    }
    tokio::spawn(signals(shared.clone()));
    tokio::spawn(crate::node::replication::replica::run(shared.clone()));
    tokio::spawn(replication_cron(shared.clone()));
    for l in listeners {
        tokio::spawn(accept_loop(l, shared.clone()));
    }
    tokio::spawn(cron(shared.clone(), hz));

    let mut rx = shared.shutdown.subscribe();
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            break;
        }
    }
    tracing::info!(port, "Redis is now ready to exit, bye bye...");
    Ok(())
}

/// Loads the dataset from `dir` before serving: with `appendonly yes` the
/// append-only log (it wins over the RDB file, as in Redis); else, or when
/// no log exists yet, the RDB file, and then a log is created from it (so
/// turning AOF on never starts from an empty dataset). A file that does not
/// load completely stops the start, with its name and what is wrong, rather
/// than serving partial data.
fn load_dataset(shared: &Arc<Shared>) -> Result<(), NodeError> {
    let appendonly = shared.config.load().appendonly;
    if appendonly {
        shared.persist.loading.store(true, Ordering::Relaxed);
        let loaded = crate::node::aof::load_at_start(shared);
        shared.persist.loading.store(false, Ordering::Relaxed);
        if loaded.map_err(|e| NodeError::Load(e.to_string()))? {
            return Ok(());
        }
    }
    load_rdb(shared)?;
    if appendonly {
        crate::node::aof::enable(shared, true).map_err(NodeError::Load)?;
    }
    Ok(())
}

fn load_rdb(shared: &Arc<Shared>) -> Result<(), NodeError> {
    let path = crate::node::snapshot::rdb_path(shared);
    if !path.exists() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    shared.persist.loading.store(true, Ordering::Relaxed);
    let loaded = crate::persist::snapshot::load_file(&path, Some(unix_ms()));
    shared.persist.loading.store(false, Ordering::Relaxed);
    let (db, meta) = loaded.map_err(|e| NodeError::Load(e.to_string()))?;
    let ps = &shared.persist;
    ps.last_load_keys.store(meta.keys, Ordering::Relaxed);
    ps.last_load_expired.store(meta.expired, Ordering::Relaxed);
    if meta.skipped_other_db > 0 {
        tracing::warn!(
            keys = meta.skipped_other_db,
            "keys of databases other than 0 ignored"
        );
    }
    if let (Some(id), Some(off)) = (
        meta.aux("repl-id"),
        meta.aux("repl-offset").and_then(|o| o.parse::<u64>().ok()),
    ) {
        shared.repl.restore_position(id, off);
    }
    let mut st = shared.lock();
    let policy = st.db.policy();
    st.db = db;
    st.db.set_policy(policy);
    tracing::info!(
        keys = meta.keys,
        expired = meta.expired,
        secs = started.elapsed().as_secs_f64(),
        "DB loaded from disk"
    );
    Ok(())
}

/// What SHUTDOWN and SIGTERM do before the process exits (Redis 7): wait
/// (bounded) for replicas to catch up, save if asked or if save points
/// exist, then stop. Err(reply text) when the save failed and FORCE was
/// not given: the node keeps running.
pub async fn shutdown_sequence(
    shared: &Arc<Shared>,
    opts: crate::node::cmd::ShutdownOpts,
) -> Result<(), String> {
    let cfg = shared.config.load();
    if !opts.now {
        wait_for_replicas(shared, cfg.shutdown_timeout).await;
    }
    {
        let aof = shared.aof.clone();
        let _ = tokio::task::spawn_blocking(move || aof.flush_and_sync()).await;
    }
    let save = opts.save.unwrap_or(!cfg.save.is_empty());
    if save {
        let s = shared.clone();
        let res = tokio::task::spawn_blocking(move || {
            s.persist.shutting_down.store(true, Ordering::Relaxed);
            let st = s.lock();
            let (replid, offset) = s.repl.position();
            let path = crate::node::snapshot::rdb_path(&s);
            let r = crate::persist::snapshot::save_locked(&st.db, &path, &replid, offset);
            if r.is_ok() {
                crate::node::snapshot::saved(&s, crate::persist::snapshot::total_changes(&st.db));
            }
            r
        })
        .await;
        match res {
            Ok(Ok(())) => tracing::info!("DB saved on disk"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Error trying to save the DB, can't exit.");
                if !opts.force {
                    shared.persist.shutting_down.store(false, Ordering::Relaxed);
                    shared.pause_writes_until(0);
                    return Err("ERR Errors trying to SHUTDOWN. Check logs.".into());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "save task failed");
                if !opts.force {
                    shared.persist.shutting_down.store(false, Ordering::Relaxed);
                    shared.pause_writes_until(0);
                    return Err("ERR Errors trying to SHUTDOWN. Check logs.".into());
                }
            }
        }
    }
    shared.request_shutdown();
    Ok(())
}

/// Redis 7's graceful shutdown of a master: writes are paused and the node
/// waits (at most `timeout_secs`) until every online replica acknowledged
/// the whole stream, so stopping a master loses nothing its replicas could
/// have had.
async fn wait_for_replicas(shared: &Arc<Shared>, timeout_secs: u64) {
    let repl = &shared.repl;
    if repl.is_replica() || repl.replicas().is_empty() || timeout_secs == 0 {
        return;
    }
    let deadline = crate::runtime::clock::mono_ms() + timeout_secs * 1000;
    shared.pause_writes_until(deadline);
    // Let batches already running hand their writes to the stream.
    drop(shared.lock());
    let target = repl.offset();
    let mut acks = repl.acks_rx();
    repl.request_ack();
    let lagging = || {
        repl.replicas()
            .iter()
            .filter(|r| r.state == crate::replication::ReplicaState::Online && r.ack < target)
            .count()
    };
    tracing::info!(offset = target, "Waiting for replicas before shutting down");
    loop {
        let n = lagging();
        if n == 0 {
            tracing::info!("Replicas are in sync, shutting down");
            return;
        }
        let now = crate::runtime::clock::mono_ms();
        if now >= deadline {
            tracing::warn!(lagging = n, "Lagging replicas remain, shutting down anyway");
            return;
        }
        tokio::select! {
            _ = acks.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis((deadline - now).min(1000))) => {
                repl.request_ack();
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        shared
            .stats
            .total_connections_received
            .fetch_add(1, Ordering::Relaxed);
        let cfg = shared.config.load();
        if protected(&cfg, &peer) {
            reject(stream, DENIED).await;
            continue;
        }
        if shared.connected_clients() >= cfg.maxclients {
            shared
                .stats
                .rejected_connections
                .fetch_add(1, Ordering::Relaxed);
            reject(stream, b"-ERR max number of clients reached\r\n").await;
            continue;
        }
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        let laddr = stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let handle = Arc::new(ClientHandle {
            laddr,
            ..ClientHandle::detached(id, &peer.to_string())
        });
        shared.clients.lock().insert(id, handle.clone());
        tokio::spawn(connection::serve(stream, shared.clone(), handle));
    }
}

async fn reject(mut stream: TcpStream, msg: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(msg)).await;
}

/// Periodic housekeeping, `hz` times a second: LRU clock, active expiry.
async fn cron(shared: Arc<Shared>, hz: u32) {
    let period = Duration::from_millis(u64::from(1000 / hz.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.subscribe();
    let mut last_sample = (std::time::Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let total = shared
            .stats
            .total_commands_processed
            .load(Ordering::Relaxed);
        let elapsed = last_sample.0.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let rate = (total.saturating_sub(last_sample.1)) as f64 / elapsed.as_secs_f64();
            shared
                .stats
                .ops_per_sec
                .store(rate as u64, Ordering::Relaxed);
            last_sample = (std::time::Instant::now(), total);
        }
        evict_clients(&shared);
        crate::runtime::alloc::flush_local();
        shared
            .peak_memory
            .fetch_max(crate::runtime::alloc::allocated() as u64, Ordering::Relaxed);
        if let Some(cl) = &shared.cluster {
            cl.sync(
                crate::node::cluster::bus_config(&shared.config.load()),
                0,
                None,
            );
        }
        let secs = shared.started.elapsed().as_secs() as u32;
        let changes = {
            let mut st = shared.lock();
            shared.sync_state(&mut st);
            st.db.set_clock(secs);
            // Bounded work per tick keeps the lock hold short.
            st.db.active_expire(unix_ms(), 2000);
            if st.db.log_deletions_pending() {
                st.propagate_server_deletions();
                shared.propagated(&mut st.prop);
            }
            crate::persist::snapshot::total_changes(&st.db)
        };
        shared.aof.write_pending();
        crate::node::snapshot::cron(&shared, changes);
        crate::node::aof::cron(&shared);
    }
}

/// maxmemory-clients, checked each cron tick: closes the largest clients
/// until the rest hold less than the limit.
fn evict_clients(shared: &Shared) {
    let limit = shared.config.load().maxmemory_clients;
    if limit == 0 {
        return;
    }
    let victims = crate::node::client::clients_to_evict(&shared.clients.lock(), limit);
    for (h, mem) in victims {
        tracing::info!(client = h.id, addr = %h.addr, tot_mem = mem, limit, "Evicting client");
        h.killed.store(true, Ordering::Release);
        h.kill.notify_one();
        shared.stats.evicted_clients.fetch_add(1, Ordering::Relaxed);
    }
}

/// Carries out what the cluster bus asks of the node besides its role.
async fn cluster_actions(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::node::cluster::NodeAction>,
) {
    use crate::node::cluster::NodeAction;
    while let Some(action) = rx.recv().await {
        match action {
            NodeAction::PauseWrites(until) => {
                // 0 (or any past time) lifts the pause.
                tracing::info!(
                    until_ms = until,
                    "client writes paused for a manual failover"
                );
                shared.pause_writes_until(until);
            }
            NodeAction::Deliver {
                channel,
                message,
                shard,
            } => {
                let limit = shared.config.load().output_limits.pubsub;
                {
                    let mut ps = shared.pubsub.lock();
                    if shard {
                        ps.publish_shard(&channel, &message, &limit);
                    } else {
                        ps.publish(&channel, &message, &limit);
                    }
                }
            }
        }
    }
}

/// Once a second: PING into the stream every `repl-ping-replica-period`
/// (replicas judge the link by it), and the backlog size from the config.
async fn replication_cron(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = shared.shutdown.subscribe();
    let mut last_ping = std::time::Instant::now();
    let mut lonely_since = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let cfg = shared.config.load();
        shared.repl.set_backlog_limit(cfg.repl_backlog_size);
        if !shared.repl.replicas().is_empty() || shared.repl.is_replica() {
            lonely_since = std::time::Instant::now();
        } else if cfg.repl_backlog_ttl > 0
            && lonely_since.elapsed() >= Duration::from_secs(cfg.repl_backlog_ttl)
            && shared.repl.free_backlog()
        {
            tracing::info!(
                secs = cfg.repl_backlog_ttl,
                "Replication backlog freed after a while without replicas"
            );
        }
        if last_ping.elapsed() >= Duration::from_secs(cfg.repl_ping_replica_period)
            && !shared.repl.is_replica()
            && shared.paused().is_none()
        {
            shared.repl.ping_replicas();
            last_ping = std::time::Instant::now();
        }
    }
}

/// Installs the SIGTERM/SIGINT handlers now (before any client can see the
/// node, so a signal never meets the default action and exits without the
/// shutdown save) and returns the task that acts on them.
fn signals(shared: Arc<Shared>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(term), Ok(int)) = handlers else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        on_signals(shared, term, int).await;
    }
}

async fn on_signals(
    shared: Arc<Shared>,
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    loop {
        tokio::select! {
            _ = term.recv() => tracing::info!("Received SIGTERM scheduling shutdown..."),
            _ = int.recv() => tracing::info!("Received SIGINT scheduling shutdown..."),
        }
        // As Redis: a failed save keeps the node running.
        if shutdown_sequence(&shared, Default::default()).await.is_ok() {
            return;
        }
    }
}
