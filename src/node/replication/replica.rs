//! The replica's side: a driver task that follows the master the node is
//! told to replicate (`Repl::set_master`), with Redis's protocol so the
//! master may be a slotway node or a real redis-server.
//!
//! Connect, handshake (see `handshake`), then either load the master's RDB
//! (full resync; the old data keeps being served until the new image is
//! complete and valid) or continue from our offset, then apply the command
//! stream with a "master client" that bypasses auth, slot, read-only and
//! memory checks and sees keys as the master does. The stream bytes are
//! fed on unchanged to our own replicas, so our offset is the master's.
//! On any failure the link is dropped and retried with backoff.

use crate::node::client::{unix_ms, Client, ClientHandle};
use crate::node::cmd::execute;
use crate::node::shared::Shared;
use crate::persist::snapshot;
use crate::replication::handshake::{Handshake, HandshakeError, MasterAuth, Next};
use crate::resp::{Limits, RequestParser};
use crate::runtime::clock::mono_ms;
use crate::store::ExpiryMode;
use bytes::{Bytes, BytesMut};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("timeout: {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Other(String),
}

/// Follows the replication target until shutdown.
pub async fn run(shared: Arc<Shared>) {
    let mut target_rx = shared.repl.target_rx();
    let mut relink = shared.repl.relink_rx();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let target = target_rx.borrow_and_update().clone();
        let Some((host, port)) = target else {
            tokio::select! {
                r = target_rx.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            continue;
        };
        tracing::info!(master = %host, port, "Connecting to MASTER");
        relink.borrow_and_update();
        let outcome = tokio::select! {
            r = link(&shared, &host, port) => Some(r),
            _ = target_rx.changed() => None,
            _ = relink.changed() => Some(Err(LinkError::Other("link killed (CLIENT KILL)".into()))),
            _ = shutdown.changed() => return,
        };
        link_down(&shared);
        let Some(res) = outcome else {
            continue; // new target: connect at once
        };
        if let Err(e) = res {
            tracing::warn!(master = %host, port, error = %e, "Replication link failed, retrying");
        }
        // Redis retries once a second.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = target_rx.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn link_down(shared: &Shared) {
    let mut l = shared.repl.link();
    if l.up || l.down_since_ms.is_none() {
        l.down_since_ms = Some(mono_ms());
    }
    l.up = false;
    l.state = "connect";
    l.sync_in_progress = false;
}

fn set_state(shared: &Shared, state: &'static str) {
    shared.repl.link().state = state;
}

fn io_timeout(shared: &Shared) -> Duration {
    Duration::from_secs(shared.config.load().repl_timeout)
}

/// Reads one reply line, skipping the bare newlines a master sends to keep
/// the link alive while it prepares a payload.
async fn read_line(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> Result<String, LinkError> {
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(nl + 1);
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            shared.repl.link().last_io_ms = mono_ms();
            if !text.is_empty() {
                return Ok(text);
            }
        }
        if buf.len() > 64 * 1024 {
            return Err(LinkError::Other("reply line too long".into()));
        }
        let n = tokio::time::timeout(io_timeout(shared), rd.read_buf(buf))
            .await
            .map_err(|_| LinkError::Timeout("no reply from master"))??;
        if n == 0 {
            return Err(LinkError::Other("master closed the connection".into()));
        }
    }
}

fn encode(parts: &[Vec<u8>]) -> BytesMut {
    let mut out = BytesMut::new();
    crate::resp::encode_command(&mut out, parts);
    out
}

async fn link(shared: &Arc<Shared>, host: &str, port: u16) -> Result<(), LinkError> {
    set_state(shared, "connecting");
    let stream = tokio::time::timeout(io_timeout(shared), TcpStream::connect((host, port)))
        .await
        .map_err(|_| LinkError::Timeout("connecting to master"))??;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    set_state(shared, "handshake");
    let cfg = shared.config.load();
    let auth = cfg.masterauth.clone().map(|pass| MasterAuth {
        user: cfg.masteruser.clone(),
        pass,
    });
    let (replid, offset) = shared.repl.position();
    let (mut hs, mut next) = Handshake::start(auth, shared.port, &replid, offset);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        match next {
            Next::Send(parts) => {
                wr.write_all(&encode(&parts)).await?;
                let line = read_line(shared, &mut rd, &mut buf).await?;
                next = hs.on_reply(&line)?;
            }
            Next::FullResync { replid, offset } => {
                tracing::info!(%replid, offset, "Full resync from master");
                full_sync(shared, &mut rd, &mut buf, &replid, offset).await?;
                break;
            }
            Next::Continue { new_replid } => {
                tracing::info!(
                    ?new_replid,
                    offset,
                    "Successful partial resynchronization with master"
                );
                if let Some(id) = new_replid {
                    shared.repl.continue_with(&id);
                }
                break;
            }
        }
    }
    {
        let mut l = shared.repl.link();
        l.up = true;
        l.state = "connected";
        l.down_since_ms = None;
        l.sync_in_progress = false;
        l.last_io_ms = mono_ms();
    }
    tracing::info!(master = %host, port, "MASTER <-> REPLICA sync: Finished with success");
    stream_loop(shared, rd, wr, buf).await
}

/// Receives the RDB payload to a temp file (`$len` or `$EOF:mark`
/// framing), loads it off the runtime, and swaps it in.
async fn full_sync(
    shared: &Arc<Shared>,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    replid: &str,
    offset: u64,
) -> Result<(), LinkError> {
    set_state(shared, "sync");
    {
        let mut l = shared.repl.link();
        l.sync_in_progress = true;
        l.sync_read_bytes = 0;
        l.sync_total_bytes = -1;
    }
    let header = read_line(shared, rd, buf).await?;
    let spec = header
        .strip_prefix('$')
        .ok_or_else(|| LinkError::Other(format!("bad payload header {header:?}")))?;
    let eof_mark: Option<Vec<u8>> = spec
        .strip_prefix("EOF:")
        .map(|m| m.as_bytes().to_vec())
        .filter(|m| m.len() == 40);
    let len: Option<u64> = match &eof_mark {
        Some(_) => None,
        None => Some(
            spec.parse()
                .map_err(|_| LinkError::Other(format!("bad payload length {spec:?}")))?,
        ),
    };
    shared.repl.link().sync_total_bytes = len.map_or(-1, |l| l as i64);
    let path = crate::node::snapshot::rdb_path(shared);
    let tmp = path.with_file_name(format!("temp-{}-{}.rdb", std::process::id(), unix_ms()));
    let received = receive_payload(shared, rd, buf, &tmp, len, eof_mark.as_deref()).await;
    if let Err(e) = received {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    tracing::info!("MASTER <-> REPLICA sync: Loading DB in memory");
    let t = tmp.clone();
    let loaded = tokio::task::spawn_blocking(move || snapshot::load_file(&t, None))
        .await
        .map_err(|e| LinkError::Other(e.to_string()));
    let (db, meta) = match loaded {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(LinkError::Other(e.to_string()));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // Only a payload that loaded completely becomes our dump.rdb.
    if std::fs::rename(&tmp, &path).is_ok() {
        snapshot::fsync_dir(&path);
    }
    let old = {
        let mut st = shared.lock();
        let st = &mut *st;
        let policy = st.db.policy();
        let old = st.db.replace_contents(db);
        st.db.set_policy(policy);
        shared.repl.reset_to_master(replid, offset);
        let want = shared.repl.prop_wanted();
        st.set_propagation(want);
        crate::node::snapshot::saved(shared, snapshot::total_changes(&st.db));
        old
    };
    // Freeing the old dataset can take a while: not under the lock.
    tokio::task::spawn_blocking(move || drop(old));
    shared
        .persist
        .last_load_keys
        .store(meta.keys, std::sync::atomic::Ordering::Relaxed);
    crate::node::aof::after_full_sync(shared);
    Ok(())
}

async fn receive_payload(
    shared: &Shared,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    tmp: &std::path::Path,
    len: Option<u64>,
    eof_mark: Option<&[u8]>,
) -> Result<(), LinkError> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(tmp)?);
    let mut got: u64 = 0;
    // In EOF mode the last 40 bytes seen may be the mark: hold them back.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        if !buf.is_empty() {
            match len {
                Some(total) => {
                    let take = usize::try_from((total - got).min(buf.len() as u64)).unwrap_or(0);
                    let chunk = buf.split_to(take);
                    file.write_all(&chunk)?;
                    got += take as u64;
                }
                None => {
                    tail.extend_from_slice(&buf.split());
                    if let Some(mark) = eof_mark {
                        if tail.ends_with(mark) {
                            let body = tail.len() - mark.len();
                            file.write_all(tail.get(..body).unwrap_or_default())?;
                            got += body as u64;
                            break;
                        }
                        if tail.len() > mark.len() {
                            let flush = tail.len() - mark.len();
                            file.write_all(tail.get(..flush).unwrap_or_default())?;
                            got += flush as u64;
                            tail.drain(..flush);
                        }
                    }
                }
            }
            {
                let mut l = shared.repl.link();
                l.sync_read_bytes = got;
                l.last_io_ms = mono_ms();
            }
            if len.is_some_and(|total| got >= total) {
                break;
            }
        }
        let n = tokio::time::timeout(io_timeout(shared), rd.read_buf(buf))
            .await
            .map_err(|_| LinkError::Timeout("receiving the payload from master"))??;
        if n == 0 {
            return Err(LinkError::Other(
                "master closed the connection during sync".into(),
            ));
        }
    }
    shared.repl.link().sync_read_bytes = got;
    let f = file.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(())
}

/// The master's command stream: applied in batches under the keyspace
/// lock, acknowledged every second and on REPLCONF GETACK.
async fn stream_loop(
    shared: &Arc<Shared>,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    mut buf: BytesMut,
) -> Result<(), LinkError> {
    let mut parser = RequestParser::new();
    let limits = Limits {
        max_bulk_len: shared.config.load().proto_max_bulk_len,
        ..Limits::default()
    };
    let handle = Arc::new(ClientHandle::detached(0, "master"));
    let mut client = Client::new(handle, true).0;
    client.is_master = true;
    let mut other_db = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_io = mono_ms();
    loop {
        let mut cmds: Vec<(Bytes, Vec<Bytes>)> = Vec::new();
        loop {
            match parser.parse_frame(&mut buf, &limits) {
                Ok(Some(c)) => cmds.push(c),
                Ok(None) => break,
                Err(e) => return Err(LinkError::Other(format!("protocol error from master: {e}"))),
            }
            if cmds.len() >= 1024 {
                break;
            }
        }
        if !cmds.is_empty() {
            let more = cmds.len() >= 1024;
            let getack = apply(shared, &mut client, cmds, &mut other_db);
            shared.aof.write_pending();
            if getack {
                send_ack(shared, &mut wr).await?;
            }
            if more {
                continue;
            }
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return Err(LinkError::Other("master closed the connection".into())),
                Ok(_) => {
                    last_io = mono_ms();
                    shared.repl.link().last_io_ms = last_io;
                }
                Err(e) => return Err(e.into()),
            },
            _ = tick.tick() => {
                send_ack(shared, &mut wr).await?;
                let timeout = shared.config.load().repl_timeout * 1000;
                if mono_ms().saturating_sub(last_io) > timeout {
                    return Err(LinkError::Timeout("no data from master"));
                }
            }
        }
    }
}

async fn send_ack(shared: &Shared, wr: &mut OwnedWriteHalf) -> Result<(), LinkError> {
    let off = shared.repl.offset().to_string();
    let parts = [b"REPLCONF".to_vec(), b"ACK".to_vec(), off.into_bytes()];
    wr.write_all(&encode(&parts)).await?;
    Ok(())
}

/// Applies a batch of the master's commands; true if one was GETACK.
/// `other_db` follows the master's SELECT: a node has database 0 only, so
/// writes to other databases of a Redis master are skipped, not misfiled.
fn apply(
    shared: &Shared,
    client: &mut Client,
    cmds: Vec<(Bytes, Vec<Bytes>)>,
    other_db: &mut bool,
) -> bool {
    let mut guard = shared.lock();
    let st = &mut *guard;
    let want = shared.repl.prop_wanted();
    if want != st.prop.is_on() {
        st.set_propagation(want);
    }
    st.db.expiry = ExpiryMode::Ignore;
    let now = unix_ms();
    let mut ack = false;
    let mut raw = BytesMut::new();
    for (frame, args) in &cmds {
        let getack = args.len() >= 2
            && args
                .first()
                .is_some_and(|a| a.eq_ignore_ascii_case(b"replconf"))
            && args
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"));
        let select = args
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(b"select"));
        if getack {
            ack = true;
        } else if select {
            let db = args.get(1).and_then(|d| crate::resp::parse_i64(d));
            if db != Some(0) && !*other_db {
                tracing::warn!(?db, "master writes to a database other than 0: skipped");
            }
            *other_db = db != Some(0);
        } else if !args.is_empty() && !*other_db {
            let mut ctx = st.ctx(client, shared, now);
            let reply = execute(&mut ctx, args);
            if reply.is_error() {
                tracing::debug!(error = ?reply, "command from master failed");
            }
        }
        raw.extend_from_slice(frame);
    }
    client.publish_batch(&shared.stats, now);
    shared.propagated(&mut st.prop);
    shared.repl.append_from_master(&raw);
    st.db.expiry = ExpiryMode::Hide;
    ack
}
