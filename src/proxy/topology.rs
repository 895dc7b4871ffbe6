//! The topology refresher: reads `CLUSTER SLOTS` from any reachable node
//! and installs the result in the router when it differs from the map in
//! use. It runs periodically, at once when something suggests the map is
//! stale (MOVED, a lost backend, CLUSTERDOWN), and quickly while a master is
//! unreachable so a promoted replica is picked up right after the election.
//! Seeds that are down at start are simply retried: the proxy never refuses
//! to start for lack of a cluster.

use crate::proxy::backend::{connect, Kind};
use crate::proxy::config::ProxyConfig;
use crate::proxy::router::{Layout, Router};
use crate::resp::encode_command;
use crate::resp::scan::FrameScanner;
use bytes::BytesMut;
use redis_protocol::resp2::types::OwnedFrame;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Smallest gap between two refreshes, however many triggers arrive.
const MIN_GAP: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Connect(#[from] crate::proxy::backend::ConnectError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("bad CLUSTER SLOTS reply: {0}")]
    Reply(String),
}

/// Parses a `CLUSTER SLOTS` reply. Empty addresses (a node that does not
/// know its own IP) mean "the node that answered".
pub fn parse_cluster_slots(frame: &OwnedFrame, asked: &str) -> Result<Layout, String> {
    let asked_host = crate::proxy::router::parse_addr(asked)
        .map(|(h, _)| h.to_string())
        .unwrap_or_default();
    let OwnedFrame::Array(ranges) = frame else {
        return Err(match frame {
            OwnedFrame::Error(e) => e.clone(),
            other => format!("not an array: {other:?}"),
        });
    };
    let node_addr = |n: &OwnedFrame| -> Option<String> {
        let OwnedFrame::Array(parts) = n else {
            return None;
        };
        let host = match parts.first()? {
            OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
                String::from_utf8_lossy(b).into_owned()
            }
            _ => return None,
        };
        let port = match parts.get(1)? {
            OwnedFrame::Integer(p) => u16::try_from(*p).ok()?,
            _ => return None,
        };
        let host = if host.is_empty() || host == "?" {
            asked_host.clone()
        } else {
            host
        };
        if host.contains(':') {
            Some(format!("[{host}]:{port}"))
        } else {
            Some(format!("{host}:{port}"))
        }
    };
    let mut layout = Layout::default();
    for r in ranges {
        let OwnedFrame::Array(parts) = r else {
            return Err("range is not an array".into());
        };
        let slot = |f: Option<&OwnedFrame>| match f {
            Some(OwnedFrame::Integer(n)) if (0..16384).contains(n) => Some(*n as u16),
            _ => None,
        };
        let (Some(lo), Some(hi)) = (slot(parts.first()), slot(parts.get(1))) else {
            return Err("bad slot range".into());
        };
        let master = parts
            .get(2)
            .and_then(node_addr)
            .ok_or("range without a master")?;
        let replicas = parts.iter().skip(3).filter_map(node_addr).collect();
        if lo <= hi {
            layout.ranges.push((lo, hi, master, replicas));
        }
    }
    Ok(layout)
}

/// Asks one node for `CLUSTER SLOTS`.
pub async fn fetch(addr: &str, cfg: &ProxyConfig) -> Result<Layout, FetchError> {
    let kind = Kind {
        resp3: false,
        replica_reads: false,
    };
    let timeout = cfg.connect_timeout();
    let (mut stream, mut buf) = connect(
        addr,
        kind,
        &cfg.backend_user,
        &cfg.backend_password,
        timeout,
    )
    .await?;
    let mut req = BytesMut::new();
    encode_command(&mut req, &[&b"CLUSTER"[..], b"SLOTS"]);
    let read = async {
        stream.write_all(&req).await?;
        let mut scanner = FrameScanner::new();
        loop {
            match scanner.scan(&buf) {
                Ok(Some(n)) => return Ok::<_, FetchError>(buf.split_to(n)),
                Ok(None) => {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(FetchError::Reply("connection closed".into()));
                    }
                }
                Err(e) => return Err(FetchError::Reply(e.to_string())),
            }
        }
    };
    let raw = tokio::time::timeout(timeout.max(Duration::from_secs(2)), read)
        .await
        .map_err(|_| FetchError::Timeout)??;
    let frame = match redis_protocol::resp2::decode::decode(&raw) {
        Ok(Some((f, _))) => f,
        _ => return Err(FetchError::Reply("undecodable".into())),
    };
    parse_cluster_slots(&frame, addr).map_err(FetchError::Reply)
}

/// Tries known nodes (masters first), then the seeds, until one answers;
/// installs its layout. Returns whether any node answered.
pub async fn refresh_once(router: &Router, cfg: &ProxyConfig, rotate: &AtomicUsize) -> bool {
    let mut candidates: Vec<String> = Vec::new();
    let mut push = |a: &str| {
        if !candidates.iter().any(|c| c == a) {
            candidates.push(a.to_string());
        }
    };
    // Healthy known nodes first (rotating, to spread the load), then
    // the seeds, then nodes that looked down (they may be back).
    let known = router.known_nodes();
    let map = router.load_full();
    let down = |a: &str| {
        map.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.master).chain(s.replicas.iter()))
            .any(|p| p.addr == a && p.is_down())
    };
    let start = rotate.fetch_add(1, Ordering::Relaxed);
    let n = known.len().max(1);
    for i in 0..known.len() {
        if let Some(a) = known.get((start + i) % n) {
            if !down(a) {
                push(a);
            }
        }
    }
    for s in &cfg.nodes {
        push(s);
    }
    for a in &known {
        push(a);
    }
    let metrics = &router_metrics(router);
    for addr in &candidates {
        match fetch(addr, cfg).await {
            Ok(layout) if !layout.ranges.is_empty() => {
                router.apply_layout(&layout);
                metrics.refresh_ok.inc();
                return true;
            }
            Ok(_) => {
                tracing::debug!(node = %addr, "CLUSTER SLOTS is empty; trying another node");
            }
            Err(e) => {
                tracing::debug!(node = %addr, error = %e, "topology fetch failed");
            }
        }
    }
    metrics.refresh_error.inc();
    false
}

fn router_metrics(router: &Router) -> Arc<crate::proxy::metrics::Metrics> {
    router.metrics()
}

/// Runs forever: periodic refresh, early refresh on demand, fast refresh
/// while degraded.
pub async fn run(router: Arc<Router>, cfg: Arc<ProxyConfig>, rotate: Arc<AtomicUsize>) {
    let normal = Duration::from_millis(cfg.refresh_interval_ms);
    let fast = Duration::from_millis(cfg.degraded_refresh_interval_ms);
    let mut failures = 0u32;
    loop {
        let period = if router.degraded() || failures > 0 {
            fast
        } else {
            normal
        };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = router.refresh_now.notified() => {}
        }
        if refresh_once(&router, &cfg, &rotate).await {
            if failures > 0 {
                tracing::info!("cluster topology readable again");
            }
            failures = 0;
        } else {
            if failures == 0 {
                tracing::warn!(seeds = ?cfg.nodes, "no node answered CLUSTER SLOTS; retrying");
            }
            failures = failures.saturating_add(1);
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_reply_to_layout() {
        let node = |ip: &str, port: i64| {
            OwnedFrame::Array(vec![
                bulk(ip),
                OwnedFrame::Integer(port),
                bulk("id"),
                OwnedFrame::Array(vec![]),
            ])
        };
        let reply = OwnedFrame::Array(vec![
            OwnedFrame::Array(vec![
                OwnedFrame::Integer(0),
                OwnedFrame::Integer(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            OwnedFrame::Array(vec![
                OwnedFrame::Integer(5461),
                OwnedFrame::Integer(16383),
                node("", 7001),
            ]),
        ]);
        let l = parse_cluster_slots(&reply, "10.0.0.9:7001").unwrap();
        assert_eq!(
            l.ranges,
            vec![
                (
                    0,
                    5460,
                    "127.0.0.1:7000".into(),
                    vec!["127.0.0.1:7003".into()]
                ),
                (5461, 16383, "10.0.0.9:7001".into(), vec![]),
            ]
        );
        assert!(parse_cluster_slots(
            &OwnedFrame::Error("ERR cluster support disabled".into()),
            "a:1"
        )
        .is_err());
    }
}
