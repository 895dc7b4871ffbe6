//! Subscribe mode: a subscribed client gets backend connections of its own
//! and the proxy relays frames both ways.
//!
//! `SUBSCRIBE`/`PSUBSCRIBE` (and anything else the client sends while
//! subscribed) go to one master — cluster `PUBLISH` reaches every node, so
//! any master sees every message. `SSUBSCRIBE` goes to the master of the
//! channel's slot (one connection per node). Messages are forwarded whole,
//! frame by frame, so frames from several nodes never interleave. If a
//! backend connection drops, the client's connection is closed so that it
//! reconnects and subscribes again, as it would after a node failure.

use crate::cluster::key_hash_slot;
use crate::proxy::backend::{connect, Kind};
use crate::proxy::forward::error_frame;
use crate::proxy::local::ClientState;
use crate::proxy::session::Parsed;
use crate::proxy::Proxy;
use crate::resp::scan::FrameScanner;
use crate::resp::{Proto, Reply, RequestParser};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// How subscribe mode ended.
pub enum End {
    /// The client left, or must reconnect.
    Closed,
    /// The client sent RESET: back to normal mode.
    Reset,
}

struct Backend {
    wr: OwnedWriteHalf,
    reader: AbortHandle,
}

/// From a backend reader: a whole frame, or the connection's end.
enum FromNode {
    Frame(Bytes),
    Gone(String),
}

struct Relay<'a> {
    proxy: &'a Proxy,
    kind: Kind,
    primary: Option<(String, Backend)>,
    shards: HashMap<String, Backend>,
    tx: mpsc::Sender<FromNode>,
}

impl Relay<'_> {
    async fn open(&self, addr: &str) -> Option<Backend> {
        let cfg = &self.proxy.cfg;
        let (stream, mut buf) = connect(
            addr,
            self.kind,
            &cfg.backend_user,
            &cfg.backend_password,
            cfg.connect_timeout(),
        )
        .await
        .ok()?;
        let (mut rd, wr) = stream.into_split();
        let tx = self.tx.clone();
        let name = addr.to_string();
        let task = tokio::spawn(async move {
            let mut scanner = FrameScanner::new();
            loop {
                match scanner.scan(&buf) {
                    Ok(Some(n)) => {
                        let frame = buf.split_to(n).freeze();
                        if tx.send(FromNode::Frame(frame)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = tx.send(FromNode::Gone(name)).await;
        });
        Some(Backend {
            wr,
            reader: task.abort_handle(),
        })
    }

    /// The master a channel's slot belongs to.
    fn master_for(&self, channel: &[u8]) -> Option<String> {
        let map = self.proxy.router.load();
        map.master_of(key_hash_slot(channel))
            .map(|p| p.addr.clone())
            .or_else(|| map.shards.first().map(|s| s.master.addr.clone()))
    }

    async fn send_primary(&mut self, req: &Parsed) -> Result<(), Bytes> {
        if self.primary.is_none() {
            let channel = req.args.get(1).cloned().unwrap_or_default();
            let addr = self.master_for(&channel).ok_or_else(no_topology)?;
            let b = self.open(&addr).await.ok_or_else(|| unreachable(&addr))?;
            self.primary = Some((addr, b));
        }
        let Some((addr, b)) = self.primary.as_mut() else {
            return Err(no_topology());
        };
        let addr = addr.clone();
        b.wr.write_all(&req.wire())
            .await
            .map_err(|_| unreachable(&addr))
    }

    async fn send_shard(&mut self, addr: &str, data: &[u8]) -> Result<(), Bytes> {
        if !self.shards.contains_key(addr) {
            let b = self.open(addr).await.ok_or_else(|| unreachable(addr))?;
            self.shards.insert(addr.to_string(), b);
        }
        match self.shards.get_mut(addr) {
            Some(b) => b.wr.write_all(data).await.map_err(|_| unreachable(addr)),
            None => Err(unreachable(addr)),
        }
    }

    fn close(&mut self) {
        if let Some((_, b)) = self.primary.take() {
            b.reader.abort();
        }
        for (_, b) in self.shards.drain() {
            b.reader.abort();
        }
    }
}

fn no_topology() -> Bytes {
    error_frame(crate::proxy::NO_TOPOLOGY)
}

fn unreachable(addr: &str) -> Bytes {
    error_frame(&format!("ERR proxy: cannot reach {addr}"))
}

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

/// Relays between a subscribed client and its backend connections, starting
/// with the SUBSCRIBE-family command `first`.
pub async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    proxy: &Proxy,
    st: &mut ClientState,
    stream: &mut S,
    inbuf: &mut BytesMut,
    parser: &mut RequestParser,
    first: Parsed,
) -> End {
    let (tx, mut rx) = mpsc::channel(1024);
    let mut relay = Relay {
        proxy,
        kind: Kind {
            resp3: st.proto == Proto::Resp3,
            replica_reads: false,
        },
        primary: None,
        shards: HashMap::new(),
        tx,
    };
    let limits = crate::resp::Limits::default();
    let mut next = Some(first);
    let end = 'outer: loop {
        // Requests: the first one, then whatever the client sent.
        loop {
            let req = match next.take() {
                Some(r) => r,
                None => match parser.parse_frame(inbuf, &limits) {
                    Ok(Some((_, args))) if args.is_empty() => continue,
                    Ok(Some((frame, args))) => Parsed { frame, args },
                    Ok(None) => break,
                    Err(e) => {
                        let _ = stream.write_all(&error_frame(&format!("ERR {e}"))).await;
                        break 'outer End::Closed;
                    }
                },
            };
            let name = req.args.first().map(|n| lower(n)).unwrap_or_default();
            let res = match name.as_slice() {
                b"quit" => {
                    let _ = stream.write_all(b"+OK\r\n").await;
                    break 'outer End::Closed;
                }
                b"reset" => {
                    let _ = stream.write_all(b"+RESET\r\n").await;
                    break 'outer End::Reset;
                }
                b"ssubscribe" | b"sunsubscribe" => {
                    let channels = req.args.get(1..).unwrap_or_default();
                    if channels.is_empty() {
                        // SUNSUBSCRIBE from every shard channel.
                        let addrs: Vec<String> = relay.shards.keys().cloned().collect();
                        if addrs.is_empty() {
                            let items = vec![Reply::bulk(&name), Reply::Nil, Reply::Int(0)];
                            let r = if st.proto == Proto::Resp3 {
                                Reply::Push(items)
                            } else {
                                Reply::Array(items)
                            };
                            Err(r.to_bytes(st.proto))
                        } else {
                            let mut res = Ok(());
                            for a in addrs {
                                res = res.and(relay.send_shard(&a, &req.wire()).await);
                            }
                            res
                        }
                    } else {
                        let slot = key_hash_slot(channels.first().map_or(&[][..], |c| &c[..]));
                        if channels.iter().any(|c| key_hash_slot(c) != slot) {
                            Err(error_frame(
                                "CROSSSLOT Keys in request don't hash to the same slot",
                            ))
                        } else {
                            match proxy.router.load().master_of(slot).map(|p| p.addr.clone()) {
                                Some(addr) => relay.send_shard(&addr, &req.wire()).await,
                                None => Err(error_frame("CLUSTERDOWN Hash slot not served")),
                            }
                        }
                    }
                }
                _ => relay.send_primary(&req).await,
            };
            if let Err(reply) = res {
                if stream.write_all(&reply).await.is_err() {
                    break 'outer End::Closed;
                }
            }
        }
        // Wait for the client or a node.
        let mut out = BytesMut::new();
        tokio::select! {
            r = stream.read_buf(inbuf) => match r {
                Ok(0) | Err(_) => break End::Closed,
                Ok(_) => {}
            },
            m = rx.recv() => {
                let mut m = m;
                loop {
                    match m {
                        Some(FromNode::Frame(f)) => out.extend_from_slice(&f),
                        Some(FromNode::Gone(addr)) => {
                            tracing::info!(node = %addr, client = st.id, "subscription connection lost; closing the client so it resubscribes");
                            let _ = stream.write_all(&out).await;
                            break 'outer End::Closed;
                        }
                        None => break,
                    }
                    m = match rx.try_recv() {
                        Ok(x) => Some(x),
                        Err(_) => break,
                    };
                }
                if stream.write_all(&out).await.is_err() {
                    break End::Closed;
                }
            }
        }
    };
    relay.close();
    end
}
