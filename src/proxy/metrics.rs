//! Prometheus metrics of the proxy (names are a contract with the Grafana
//! dashboard: see the README) and the tiny HTTP listener serving
//! `/metrics` and `/healthz`.
//!
//! The request path never looks a label up: per-command and per-node
//! handles are resolved once and cached.

use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Outcome of a command, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An error reply (from a node, or the proxy's own like CROSSSLOT).
    Error,
    /// Redirects or retries ran out, or the connection was lost.
    RedirectError,
    /// The request deadline passed.
    Timeout,
}

/// Handles for one command label.
pub struct CmdMetrics {
    by_outcome: [IntCounter; 4],
    pub duration: Histogram,
}

impl CmdMetrics {
    pub fn record(&self, outcome: Outcome, seconds: f64) {
        let i = match outcome {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::RedirectError => 2,
            Outcome::Timeout => 3,
        };
        if let Some(c) = self.by_outcome.get(i) {
            c.inc();
        }
        self.duration.observe(seconds);
    }
}

/// Handles for one backend node.
#[derive(Clone)]
pub struct NodeMetrics {
    pub connections: IntGauge,
    pub inflight: IntGauge,
    errors: IntCounterVec,
    addr: String,
}

impl NodeMetrics {
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[&self.addr, kind]).inc();
    }
}

/// Why a request was retried.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    TryAgain,
    ClusterDown,
    Loading,
    Connection,
}

pub struct Metrics {
    pub registry: Registry,
    pub clients: IntGauge,
    pub clients_total: IntCounter,
    pub clients_rejected: IntCounter,
    pub clients_output_limit: IntCounter,
    commands: IntCounterVec,
    duration: HistogramVec,
    cmd_cache: Vec<OnceLock<CmdMetrics>>,
    cmd_names: Vec<String>,
    backend_conns: IntGaugeVec,
    backend_inflight: IntGaugeVec,
    backend_errors: IntCounterVec,
    node_cache: Mutex<std::collections::HashMap<String, NodeMetrics>>,
    pub moved: IntCounter,
    pub ask: IntCounter,
    retries: [IntCounter; 4],
    pub refresh_ok: IntCounter,
    pub refresh_error: IntCounter,
    pub epoch: IntGauge,
    pub slots_covered: IntGauge,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// `command_names` are the bounded label values of `command`.
    pub fn new(command_names: &[String]) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c);
        let clients = IntGauge::new(
            "slotway_proxy_client_connections",
            "Client connections open now",
        )?;
        let clients_total = IntCounter::new(
            "slotway_proxy_client_connections_total",
            "Client connections accepted",
        )?;
        let clients_rejected = IntCounter::new(
            "slotway_proxy_client_connections_rejected_total",
            "Client connections refused because maxclients was reached",
        )?;
        let clients_output_limit = IntCounter::new(
            "slotway_proxy_client_output_limit_closed_total",
            "Client connections closed for passing client_output_limit_bytes",
        )?;
        let commands = IntCounterVec::new(
            Opts::new(
                "slotway_proxy_commands_total",
                "Commands by name and result (ok, error, redirect_error, timeout)",
            ),
            &["command", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "slotway_proxy_command_duration_seconds",
                "Time from reading a command to its reply being ready",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["command"],
        )?;
        let backend_conns = IntGaugeVec::new(
            Opts::new(
                "slotway_proxy_backend_connections",
                "Open backend connections per node",
            ),
            &["node"],
        )?;
        let backend_inflight = IntGaugeVec::new(
            Opts::new(
                "slotway_proxy_backend_inflight",
                "Requests sent to a node and not yet answered",
            ),
            &["node"],
        )?;
        let backend_errors = IntCounterVec::new(
            Opts::new(
                "slotway_proxy_backend_errors_total",
                "Backend connection errors per node (connect, io, timeout, protocol)",
            ),
            &["node", "kind"],
        )?;
        let redirects = IntCounterVec::new(
            Opts::new(
                "slotway_proxy_redirects_total",
                "MOVED and ASK redirects followed",
            ),
            &["kind"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("slotway_proxy_retries_total", "Requests retried, by reason"),
            &["reason"],
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new(
                "slotway_proxy_topology_refreshes_total",
                "Topology refreshes by result",
            ),
            &["result"],
        )?;
        let epoch = IntGauge::new(
            "slotway_proxy_slot_map_epoch",
            "Epoch of the slot map in use (bumps on every new map)",
        )?;
        let slots_covered = IntGauge::new(
            "slotway_proxy_slots_covered",
            "Slots with a known master (16384 when healthy)",
        )?;
        reg(Box::new(clients.clone()))?;
        reg(Box::new(clients_total.clone()))?;
        reg(Box::new(clients_rejected.clone()))?;
        reg(Box::new(clients_output_limit.clone()))?;
        reg(Box::new(commands.clone()))?;
        reg(Box::new(duration.clone()))?;
        reg(Box::new(backend_conns.clone()))?;
        reg(Box::new(backend_inflight.clone()))?;
        reg(Box::new(backend_errors.clone()))?;
        reg(Box::new(redirects.clone()))?;
        reg(Box::new(retries.clone()))?;
        reg(Box::new(refreshes.clone()))?;
        reg(Box::new(epoch.clone()))?;
        reg(Box::new(slots_covered.clone()))?;
        let retries = [
            retries.get_metric_with_label_values(&["tryagain"])?,
            retries.get_metric_with_label_values(&["clusterdown"])?,
            retries.get_metric_with_label_values(&["loading"])?,
            retries.get_metric_with_label_values(&["connection"])?,
        ];
        Ok(Metrics {
            moved: redirects.get_metric_with_label_values(&["moved"])?,
            ask: redirects.get_metric_with_label_values(&["ask"])?,
            refresh_ok: refreshes.get_metric_with_label_values(&["ok"])?,
            refresh_error: refreshes.get_metric_with_label_values(&["error"])?,
            registry,
            clients,
            clients_total,
            clients_rejected,
            clients_output_limit,
            commands,
            duration,
            cmd_cache: (0..command_names.len()).map(|_| OnceLock::new()).collect(),
            cmd_names: command_names.to_vec(),
            backend_conns,
            backend_inflight,
            backend_errors,
            node_cache: Mutex::new(Default::default()),
            retries,
            epoch,
            slots_covered,
        })
    }

    /// Handles of the command with label index `i` (the last index is
    /// "other").
    pub fn command(&self, i: usize) -> Option<&CmdMetrics> {
        let slot = self.cmd_cache.get(i)?;
        let name = self.cmd_names.get(i)?;
        Some(slot.get_or_init(|| {
            CmdMetrics {
                by_outcome: ["ok", "error", "redirect_error", "timeout"]
                    .map(|r| self.commands.with_label_values(&[name.as_str(), r])),
                duration: self.duration.with_label_values(&[name.as_str()]),
            }
        }))
    }

    pub fn node(&self, addr: &str) -> NodeMetrics {
        let mut cache = self.node_cache.lock();
        cache
            .entry(addr.to_string())
            .or_insert_with(|| NodeMetrics {
                connections: self.backend_conns.with_label_values(&[addr]),
                inflight: self.backend_inflight.with_label_values(&[addr]),
                errors: self.backend_errors.clone(),
                addr: addr.to_string(),
            })
            .clone()
    }

    pub fn retry(&self, why: Retry) {
        let i = match why {
            Retry::TryAgain => 0,
            Retry::ClusterDown => 1,
            Retry::Loading => 2,
            Retry::Connection => 3,
        };
        if let Some(c) = self.retries.get(i) {
            c.inc();
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Serves `GET /metrics` and `GET /healthz` until the process ends.
/// `healthy` says whether every slot has a master.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    healthy: Arc<dyn Fn() -> bool + Send + Sync>,
) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        let healthy = healthy.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = async {
                loop {
                    let mut chunk = [0u8; 1024];
                    let n = sock.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok::<bool, std::io::Error>(false);
                    }
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 8192 {
                        return Ok(true);
                    }
                }
            };
            let complete = matches!(
                tokio::time::timeout(std::time::Duration::from_secs(5), read).await,
                Ok(Ok(true))
            );
            if !complete {
                return;
            }
            let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
            let mut parts = line.split(|&b| b == b' ');
            let method = parts.next().unwrap_or_default();
            let path = parts.next().unwrap_or_default();
            let path = path.split(|&b| b == b'?').next().unwrap_or_default();
            let (status, ctype, body) = match (method, path) {
                (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                (b"GET", b"/healthz") if healthy() => ("200 OK", "text/plain", b"ok\n".to_vec()),
                (b"GET", b"/healthz") => (
                    "503 Service Unavailable",
                    "text/plain",
                    b"no slot map covering all slots\n".to_vec(),
                ),
                (b"GET", _) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    b"method not allowed\n".to_vec(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&body).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_name_is_exported() {
        let m = Metrics::new(&["get".to_string(), "other".to_string()]).unwrap();
        m.command(0).unwrap().record(Outcome::Ok, 0.001);
        m.node("127.0.0.1:1").connections.inc();
        m.node("127.0.0.1:1").error("connect");
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "slotway_proxy_client_connections ",
            "slotway_proxy_client_connections_total ",
            "slotway_proxy_client_connections_rejected_total ",
            "slotway_proxy_commands_total{command=\"get\",result=\"ok\"} 1",
            "slotway_proxy_command_duration_seconds_bucket{command=\"get\"",
            "slotway_proxy_backend_connections{node=\"127.0.0.1:1\"} 1",
            "slotway_proxy_backend_inflight{node=\"127.0.0.1:1\"} 0",
            "slotway_proxy_backend_errors_total{kind=\"connect\",node=\"127.0.0.1:1\"} 1",
            "slotway_proxy_redirects_total{kind=\"moved\"}",
            "slotway_proxy_retries_total{reason=\"connection\"}",
            "slotway_proxy_topology_refreshes_total{result=\"ok\"}",
            "slotway_proxy_slot_map_epoch ",
            "slotway_proxy_slots_covered ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
