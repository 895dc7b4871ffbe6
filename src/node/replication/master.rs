//! The master's side of a replica link: a client connection that sent
//! PSYNC (or SYNC) is handed here. Partial resync from the backlog
//! (`+CONTINUE`) when the replica's history is ours, otherwise a full
//! resync: a snapshot taken at a stream position X (`+FULLRESYNC id X`),
//! written to `dbfilename` as Redis's disk-based sync does, sent as an RDB
//! bulk, then the stream from X. Acknowledgements (REPLCONF ACK) come back
//! on the same socket.

use crate::node::shared::Shared;
use crate::persist::snapshot::SnapshotKind;
use crate::replication::ReplicaState;
use crate::resp::{Limits, RequestParser};
use crate::runtime::clock::mono_ms;
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes of stream sent per write.
const CHUNK: usize = 256 * 1024;

/// What the replica asked for.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// PSYNC's (replid, offset); None for the old SYNC.
    pub psync: Option<(String, String)>,
    /// The replica's address and REPLCONF listening-port.
    pub ip: String,
    pub listening_port: u16,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Serves one replica until its link ends.
pub async fn serve(
    shared: Arc<Shared>,
    rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    rbuf: BytesMut,
    req: SyncRequest,
    handle: Arc<crate::node::client::ClientHandle>,
) {
    let repl = &shared.repl;
    let mut id = None;
    let res = async {
        let partial = req.psync.as_ref().and_then(|(replid, off)| {
            let next = off.parse::<u64>().ok()?;
            repl.try_continue(replid, next)
        });
        let pos = match partial {
            Some(pos) => {
                let i = repl.register_replica(&req.ip, req.listening_port, pos, ReplicaState::Online);
                id = Some(i);
                let replid = repl.position().0;
                wr.write_all(format!("+CONTINUE {replid}\r\n").as_bytes())
                    .await?;
                repl.stats.sync_partial_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(replica = %req.ip, port = req.listening_port, pos, "Partial resynchronization request accepted");
                pos
            }
            None => {
                if req.psync.as_ref().is_some_and(|(r, _)| r != "?") {
                    repl.stats.sync_partial_err.fetch_add(1, Ordering::Relaxed);
                }
                let (i, pos) = full_resync(&shared, &mut wr, &req).await?;
                id = Some(i);
                pos
            }
        };
        let Some(i) = id else {
            return Err(LinkError::Other("no replica id".into()));
        };
        stream(&shared, i, rd, wr, rbuf, pos, &handle).await
    }
    .await;
    if let Some(i) = id {
        repl.unregister_replica(i);
    }
    match res {
        Ok(()) => {}
        Err(e) => {
            tracing::info!(replica = %req.ip, port = req.listening_port, error = %e, "Connection with replica lost")
        }
    }
}

/// Takes the snapshot machinery, waiting for a running save to finish.
async fn claim(shared: &Shared, wr: &mut OwnedWriteHalf) -> Result<(), LinkError> {
    let mut last_keepalive = mono_ms();
    while !shared.persist.claim(SnapshotKind::Replication) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if mono_ms().saturating_sub(last_keepalive) > 1000 {
            // Newlines keep the replica's read timeout at bay (Redis does
            // the same while preparing the payload).
            wr.write_all(b"\n").await?;
            last_keepalive = mono_ms();
        }
    }
    Ok(())
}

/// Full resync: snapshot at X, `+FULLRESYNC id X`, the RDB bulk. Returns
/// the replica's registry id and X.
async fn full_resync(
    shared: &Arc<Shared>,
    wr: &mut OwnedWriteHalf,
    req: &SyncRequest,
) -> Result<(u64, u64), LinkError> {
    claim(shared, wr).await?;
    let result = async {
        // Under the keyspace lock: the stream up to here, a backlog from
        // here, the image, and the replica registered at its position so
        // the backlog keeps everything it will need.
        let (begun, id) = {
            let mut st = shared.lock();
            let st = &mut *st;
            if shared.repl.ensure_backlog() {
                tracing::info!("Replication backlog created");
            }
            shared.propagated(&mut st.prop);
            st.set_propagation(shared.repl.prop_wanted());
            let begun = crate::node::snapshot::begin_locked(shared, &mut st.db)
                .ok_or_else(|| LinkError::Other("a snapshot is already running".into()))?;
            let id = shared.repl.register_replica(
                &req.ip,
                req.listening_port,
                begun.offset,
                ReplicaState::WaitBgsave,
            );
            (begun, id)
        };
        let res = send_snapshot(shared, wr, &begun, id, req.psync.is_some()).await;
        if res.is_err() {
            shared.repl.unregister_replica(id);
        }
        res.map(|()| (id, begun.offset))
    }
    .await;
    shared.persist.release();
    result
}

async fn send_snapshot(
    shared: &Arc<Shared>,
    wr: &mut OwnedWriteHalf,
    begun: &crate::node::snapshot::Begun,
    id: u64,
    psync: bool,
) -> Result<(), LinkError> {
    tracing::info!(
        offset = begun.offset,
        "Starting BGSAVE for SYNC with target: disk"
    );
    // The old SYNC gets the payload with no +FULLRESYNC line before it.
    if psync {
        wr.write_all(format!("+FULLRESYNC {} {}\r\n", begun.replid, begun.offset).as_bytes())
            .await?;
    }
    let s = shared.clone();
    let b = begun.clone();
    let mut job =
        tokio::task::spawn_blocking(move || crate::node::snapshot::bgsave_blocking(&s, &b));
    let saved = loop {
        tokio::select! {
            r = &mut job => break r,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                wr.write_all(b"\n").await?;
            }
        }
    };
    match saved {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(LinkError::Other(e.to_string())),
        Err(e) => return Err(LinkError::Other(e.to_string())),
    }
    shared
        .repl
        .update_replica(id, |r| r.state = ReplicaState::SendBulk);
    let path = crate::node::snapshot::rdb_path(shared);
    let mut f = tokio::fs::File::open(&path).await?;
    let len = f.metadata().await?.len();
    wr.write_all(format!("${len}\r\n").as_bytes()).await?;
    let sent = tokio::io::copy(&mut f, wr).await?;
    if sent != len {
        return Err(LinkError::Other(format!(
            "snapshot file changed while sending ({sent} of {len} bytes)"
        )));
    }
    shared.repl.update_replica(id, |r| {
        r.state = ReplicaState::Online;
        r.last_ack_ms = mono_ms();
    });
    shared.repl.stats.sync_full.fetch_add(1, Ordering::Relaxed);
    tracing::info!(bytes = len, "Synchronization with replica succeeded");
    Ok(())
}

/// Reads REPLCONF ACK from the replica until it hangs up.
async fn read_acks(shared: Arc<Shared>, id: u64, mut rd: OwnedReadHalf, mut buf: BytesMut) {
    let mut parser = RequestParser::new();
    let limits = Limits::default();
    loop {
        loop {
            match parser.parse(&mut buf, &limits) {
                Ok(Some(args)) => {
                    let is = |i: usize, w: &str| {
                        args.get(i)
                            .is_some_and(|a| a.eq_ignore_ascii_case(w.as_bytes()))
                    };
                    if is(0, "replconf") && is(1, "ack") {
                        if let Some(off) = args
                            .get(2)
                            .and_then(|o| std::str::from_utf8(o).ok())
                            .and_then(|o| o.parse::<u64>().ok())
                        {
                            shared.repl.ack(id, off);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Sends the stream from `pos` on, for as long as the replica keeps up.
async fn stream(
    shared: &Arc<Shared>,
    id: u64,
    rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    rbuf: BytesMut,
    mut pos: u64,
    handle: &crate::node::client::ClientHandle,
) -> Result<(), LinkError> {
    let repl = &shared.repl;
    let mut end_rx = repl.end_rx();
    let mut kick_rx = repl.kick_rx();
    let mut shutdown = shared.shutdown.subscribe();
    let mut acks = tokio::spawn(read_acks(shared.clone(), id, rd, rbuf));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut soft_since = None;
    let result = loop {
        if kick_rx.has_changed().unwrap_or(true) {
            break Ok(());
        }
        let chunks = match repl.read(pos, CHUNK) {
            Some(c) => c,
            None => break Err(LinkError::Other("replica fell out of the backlog".into())),
        };
        if chunks.is_empty() {
            tokio::select! {
                _ = end_rx.changed() => {
                    // Let the connections that are ready append their
                    // batches too: one write to the replica for many of
                    // them, as Redis writes once per event-loop turn.
                    tokio::task::yield_now().await;
                }
                _ = kick_rx.changed() => break Ok(()),
                _ = handle.kill.notified() => break Ok(()),
                _ = shutdown.changed() => break Ok(()),
                _ = &mut acks => break Err(LinkError::Other("replica closed the link".into())),
                _ = tick.tick() => {
                    if let Some(e) = link_check(shared, id, pos, &replica_limit(shared), &mut soft_since) {
                        break Err(e);
                    }
                }
            }
            continue;
        }
        let limit = replica_limit(shared);
        repl.feed().max_lag = limit.hard;
        let mut failed = None;
        'write: for c in &chunks {
            let mut off = 0;
            while off < c.len() {
                // A replica that stops reading is still watched: its lag
                // (Redis: the replica client's output buffer) against the
                // limit, and its ACKs against repl-timeout.
                tokio::select! {
                    biased;
                    r = wr.write(c.get(off..).unwrap_or_default()) => match r {
                        Ok(0) => { failed = Some(LinkError::Other("replica closed the link".into())); break 'write; }
                        Ok(n) => { off += n; pos += n as u64; }
                        Err(e) => { failed = Some(e.into()); break 'write; }
                    },
                    _ = tick.tick() => {
                        if let Some(e) = link_check(shared, id, pos, &limit, &mut soft_since) {
                            failed = Some(e);
                            break 'write;
                        }
                    }
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if let Some(e) = link_check(shared, id, pos, &limit, &mut soft_since) {
            break Err(e);
        }
        repl.update_replica(id, |r| r.pos = pos);
    };
    acks.abort();
    result
}

/// The replica class's output-buffer limit; as in Redis, a hard limit
/// below the backlog size counts as the backlog size (a partial resync
/// would succeed and the replica be dropped at once).
fn replica_limit(shared: &Shared) -> crate::runtime::config::OutputLimit {
    let cfg = shared.config.load();
    let mut l = cfg.output_limits.replica;
    if l.hard > 0 {
        l.hard = l.hard.max(cfg.repl_backlog_size as u64);
    }
    l
}

/// Why a replica link must close now, if it must: its lag broke the
/// output-buffer limit, or it sent no ACK within repl-timeout.
fn link_check(
    shared: &Shared,
    id: u64,
    pos: u64,
    limit: &crate::runtime::config::OutputLimit,
    soft_since: &mut Option<u64>,
) -> Option<LinkError> {
    let now = mono_ms();
    let lag = shared.repl.offset().saturating_sub(pos);
    if limit.exceeded(lag, soft_since, now) {
        tracing::warn!(
            replica = id,
            lag,
            "Client closed for overcoming of output buffer limits."
        );
        return Some(LinkError::Other("replica too far behind".into()));
    }
    let timeout = shared.config.load().repl_timeout * 1000;
    let last = shared
        .repl
        .feed()
        .replicas
        .get(&id)
        .map_or(0, |r| r.last_ack_ms);
    (now.saturating_sub(last) > timeout)
        .then(|| LinkError::Other("timeout: no ACK from replica".into()))
}
