//! Process plumbing of the proxy: runtime, listener, `maxclients`, the
//! metrics endpoint, the topology refresher, and shutdown (SIGTERM drains
//! in-flight requests, SIGINT exits at once).

use crate::proxy::backend::BackendCtx;
use crate::proxy::config::{ConfigError, ProxyArgs, ProxyConfig};
use crate::proxy::metrics::{Metrics, MetricsError};
use crate::proxy::router::Router;
use crate::proxy::{commands, session, topology, Proxy};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("command table: {0}")]
    Table(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// `slotway proxy ...`: loads the configuration and serves until a signal.
pub fn main(args: ProxyArgs) -> Result<(), ProxyError> {
    let cfg = ProxyConfig::load(&args)?;
    // Logging to stderr cannot fail to open.
    let _ = crate::runtime::logging::init_filter(&cfg.log_level, None);
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(ProxyError::Runtime)?;
    let res = rt.block_on(run(cfg, None));
    rt.shutdown_timeout(Duration::from_millis(200));
    res
}

/// Decrements the client count however a session ends.
struct ClientGuard {
    active: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.metrics.clients.dec();
    }
}

/// Serves until SIGTERM (drain) or SIGINT. `ready` receives the bound
/// client address once the proxy accepts connections.
pub async fn run(
    cfg: ProxyConfig,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), ProxyError> {
    let cfg = Arc::new(cfg);
    let table = commands::table().map_err(ProxyError::Table)?;
    let metrics = Arc::new(Metrics::new(&table.metric_names)?);
    let ctx = Arc::new(BackendCtx {
        user: cfg.backend_user.clone(),
        password: cfg.backend_password.clone(),
        connect_timeout: cfg.connect_timeout(),
        conns_per_node: cfg.connections_per_node,
        max_reply_bytes: cfg.max_reply_bytes,
        metrics: metrics.clone(),
        on_failure: Arc::new(Notify::new()),
        memnet: None,
    });
    let router = Arc::new(Router::new(ctx));
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ProxyError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let listen = listener.local_addr().map_err(|source| ProxyError::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    if !cfg.metrics.is_empty() {
        let ml = TcpListener::bind(&cfg.metrics)
            .await
            .map_err(|source| ProxyError::Listen {
                addr: cfg.metrics.clone(),
                source,
            })?;
        let r = router.clone();
        let healthy = Arc::new(move || r.load().covered() == crate::cluster::SLOTS);
        tokio::spawn(crate::proxy::metrics::serve(ml, metrics.clone(), healthy));
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let proxy = Arc::new(Proxy {
        cfg: cfg.clone(),
        router: router.clone(),
        metrics: metrics.clone(),
        table,
        node_id: crate::cluster::topology::random_node_id(),
        listen,
        started: Instant::now(),
        next_client: AtomicU64::new(1),
        commands_processed: AtomicU64::new(0),
        rotate: AtomicU64::new(0),
        shutdown: shutdown_rx,
    });
    // A first map before the first client, if the cluster answers soon;
    // if not, the refresher keeps trying and clients get CLUSTERDOWN.
    let rotate = Arc::new(AtomicUsize::new(0));
    let first = topology::refresh_once(&router, &cfg, &rotate);
    if tokio::time::timeout(Duration::from_secs(3), first)
        .await
        .is_err()
        || router.load().epoch == 0
    {
        tracing::warn!(seeds = ?cfg.nodes, "cluster not reachable yet; serving and retrying");
    }
    tokio::spawn(topology::run(router.clone(), cfg.clone(), rotate));
    tracing::info!(listen = %listen, metrics = %cfg.metrics, seeds = ?cfg.nodes, "proxy ready");
    if let Some(tx) = ready {
        let _ = tx.send(listen);
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ProxyError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ProxyError::Runtime)?;
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((mut sock, peer)) => {
                    if active.load(Ordering::Relaxed) >= cfg.maxclients {
                        metrics.clients_rejected.inc();
                        tokio::spawn(async move {
                            let _ = sock.write_all(b"-ERR max number of clients reached\r\n").await;
                        });
                        continue;
                    }
                    active.fetch_add(1, Ordering::Relaxed);
                    metrics.clients.inc();
                    metrics.clients_total.inc();
                    let guard = ClientGuard { active: active.clone(), metrics: metrics.clone() };
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        session::run(proxy, sock, peer).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep going.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = term.recv() => {
                tracing::info!(clients = active.load(Ordering::Relaxed), "SIGTERM: draining in-flight requests");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting");
                return Ok(());
            }
        }
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.drain_timeout_ms);
    while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = int.recv() => break,
        }
    }
    let left = active.load(Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(
            clients = left,
            "drain timeout: closing the remaining clients"
        );
    } else {
        tracing::info!("drained");
    }
    Ok(())
}
