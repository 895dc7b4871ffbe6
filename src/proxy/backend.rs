//! Backend connections: a few shared, pipelined connections per node that
//! every client's requests are multiplexed over, plus dedicated ones for the
//! clients that need a connection of their own (blocking commands, WATCH).
//!
//! A connection is one task. Requests arrive on a channel with a oneshot for
//! the reply; everything queued since the last wake-up goes out in one
//! write, and replies are matched to requests by order (Redis answers in
//! order on a connection). Reply bytes are forwarded as they came, found by
//! [`FrameScanner`] without building values.
//!
//! What happens to a request when the connection fails is explicit: one
//! never written is handed back [`Outcome::NotSent`] (the caller may send it
//! elsewhere), one written but unanswered is [`Outcome::Lost`] (its effect is
//! unknown, so a write must not be replayed silently).

use crate::proxy::metrics::{Metrics, NodeMetrics};
use crate::resp::scan::FrameScanner;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// One request (possibly several commands sent back to back, like
/// `ASKING` + command or a whole `MULTI`...`EXEC` block).
pub struct Req {
    pub data: Bytes,
    /// Reply frames the request produces; the reply is all of them.
    pub frames: u32,
    pub tx: oneshot::Sender<Outcome>,
}

#[derive(Debug)]
pub enum Outcome {
    /// The reply frames, verbatim.
    Reply(Bytes),
    /// Never written to the node: safe to send anywhere.
    NotSent,
    /// Written, and the connection died before the reply: the command may
    /// or may not have run.
    Lost,
}

/// How a connection talks to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind {
    pub resp3: bool,
    /// `READONLY` sent at connect: a replica serves reads on it.
    pub replica_reads: bool,
}

impl Kind {
    fn index(self) -> usize {
        usize::from(self.resp3) | (usize::from(self.replica_reads) << 1)
    }
}

/// What every connection needs to know, shared by all of them.
pub struct BackendCtx {
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    pub conns_per_node: usize,
    pub metrics: Arc<Metrics>,
    /// Poked when a connection to a node fails (topology may have changed).
    pub on_failure: Arc<tokio::sync::Notify>,
}

/// Handle to one connection task. Dropping every handle of a dedicated
/// connection closes it at once (a blocked BLPOP is abandoned with it).
#[derive(Clone)]
pub struct Conn {
    tx: mpsc::UnboundedSender<Req>,
}

impl Conn {
    /// Queues a request. If the task is gone the request is handed back as
    /// never sent.
    pub fn send(&self, req: Req) {
        if let Err(mpsc::error::SendError(req)) = self.tx.send(req) {
            let _ = req.tx.send(Outcome::NotSent);
        }
    }
}

/// All connections to one node (`ip:port`).
pub struct Pool {
    pub addr: String,
    /// This node's metric handles.
    pub metrics: NodeMetrics,
    ctx: Arc<BackendCtx>,
    sets: [OnceLock<Vec<Conn>>; 4],
    state: Arc<NodeState>,
}

/// Health of a node as its connections see it.
#[derive(Default)]
pub struct NodeState {
    /// The last connect attempt failed or a connection was lost, and no
    /// connection has succeeded since.
    down: AtomicBool,
    /// Connect failures since the last success (for logs).
    failures: AtomicU64,
}

impl Pool {
    pub fn new(addr: String, ctx: Arc<BackendCtx>) -> Pool {
        Pool {
            metrics: ctx.metrics.node(&addr),
            addr,
            ctx,
            sets: Default::default(),
            state: Arc::new(NodeState::default()),
        }
    }

    /// The shared connection a client uses: always the same one for a given
    /// client, so its requests to this node run in the order it sent them.
    pub fn shared(&self, client: u64, kind: Kind) -> Option<&Conn> {
        let set = self.sets.get(kind.index())?.get_or_init(|| {
            (0..self.ctx.conns_per_node)
                .map(|_| self.spawn(kind, false))
                .collect()
        });
        let n = set.len().max(1) as u64;
        set.get((client % n) as usize)
    }

    /// A new connection for one client alone.
    pub fn dedicated(&self, kind: Kind) -> Conn {
        self.spawn(kind, true)
    }

    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::Relaxed)
    }

    fn spawn(&self, kind: Kind, dedicated: bool) -> Conn {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = ConnTask {
            addr: self.addr.clone(),
            kind,
            dedicated,
            ctx: self.ctx.clone(),
            node: self.metrics.clone(),
            state: self.state.clone(),
            rx,
        };
        tokio::spawn(task.run());
        Conn { tx }
    }
}

/// How long a node that refused a connection is considered down before the
/// next attempt (requests meanwhile are handed back at once).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Stop taking new requests while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 4 << 20;
/// Requests taken from the channel per wake-up.
const BATCH: usize = 1024;

struct ConnTask {
    addr: String,
    kind: Kind,
    dedicated: bool,
    ctx: Arc<BackendCtx>,
    node: NodeMetrics,
    state: Arc<NodeState>,
    rx: mpsc::UnboundedReceiver<Req>,
}

struct InFlight {
    /// Offset of the request's first byte in the connection's write stream.
    start: u64,
    frames_left: u32,
    tx: oneshot::Sender<Outcome>,
}

/// Why a connection ended.
enum End {
    /// Every handle is gone.
    Closed,
    /// The connection broke; the task may connect again.
    Broken,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("handshake: bad reply")]
    Protocol,
}

/// Connects and runs the handshake (AUTH, HELLO 3, READONLY) a connection
/// of `kind` needs. Used by the topology refresher and pub/sub too.
pub async fn connect(
    addr: &str,
    kind: Kind,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<(TcpStream, BytesMut), ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    let _ = stream.set_nodelay(true);
    let mut hello = BytesMut::new();
    let mut frames = 0;
    let mut push = |args: &[&[u8]]| {
        encode_command(&mut hello, args);
        frames += 1;
    };
    if kind.resp3 {
        if password.is_empty() {
            push(&[b"HELLO", b"3"]);
        } else {
            let user = if user.is_empty() { "default" } else { user };
            push(&[
                b"HELLO",
                b"3",
                b"AUTH",
                user.as_bytes(),
                password.as_bytes(),
            ]);
        }
    } else if !password.is_empty() {
        if user.is_empty() {
            push(&[b"AUTH", password.as_bytes()]);
        } else {
            push(&[b"AUTH", user.as_bytes(), password.as_bytes()]);
        }
    }
    if kind.replica_reads {
        push(&[b"READONLY"]);
    }
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    if frames == 0 {
        return Ok((stream, buf));
    }
    let handshake = async {
        stream.write_all(&hello).await?;
        let mut scanner = FrameScanner::new();
        let mut got = 0;
        while got < frames {
            match scanner.scan(&buf) {
                Ok(Some(n)) => {
                    let frame = buf.split_to(n);
                    if let Some(e) = crate::resp::scan::error_text(&frame) {
                        return Err(ConnectError::Refused(
                            String::from_utf8_lossy(e).into_owned(),
                        ));
                    }
                    got += 1;
                }
                Ok(None) => {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(ConnectError::Protocol);
                    }
                }
                Err(_) => return Err(ConnectError::Protocol),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout)??;
    Ok((stream, buf))
}

/// Appends one command as a RESP multibulk.
pub fn encode_command(out: &mut BytesMut, args: &[&[u8]]) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b"*");
    out.extend_from_slice(b.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        crate::resp::reply::put_bulk(out, a);
    }
}

impl ConnTask {
    async fn run(mut self) {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        let mut queued: Vec<Req> = Vec::new();
        loop {
            // Connect lazily, when there is something to send.
            if queued.is_empty() {
                match self.rx.recv().await {
                    Some(r) => queued.push(r),
                    None => return,
                }
            }
            match connect(
                &self.addr,
                self.kind,
                &self.ctx.user,
                &self.ctx.password,
                self.ctx.connect_timeout,
            )
            .await
            {
                Ok((stream, rbuf)) => {
                    backoff = RECONNECT_BACKOFF_MIN;
                    if self.state.down.swap(false, Ordering::Relaxed) {
                        tracing::info!(node = %self.addr, "backend reachable again");
                    }
                    self.state.failures.store(0, Ordering::Relaxed);
                    self.node.connections.inc();
                    let end = self.serve(stream, rbuf, std::mem::take(&mut queued)).await;
                    self.node.connections.dec();
                    match end {
                        End::Closed => return,
                        End::Broken => {
                            self.mark_down("io");
                            if self.dedicated {
                                // A dedicated connection is not reopened:
                                // its state (WATCH, a block) died with it.
                                self.refuse_all();
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    let n = self.state.failures.fetch_add(1, Ordering::Relaxed);
                    if n == 0 {
                        tracing::warn!(node = %self.addr, error = %e, "cannot connect to backend");
                    }
                    self.mark_down(if matches!(e, ConnectError::Timeout) {
                        "timeout"
                    } else {
                        "connect"
                    });
                    for r in queued.drain(..) {
                        let _ = r.tx.send(Outcome::NotSent);
                    }
                    if self.dedicated {
                        self.refuse_all();
                        return;
                    }
                    // Hand back everything that arrives until it is time to
                    // try again.
                    let until = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    loop {
                        tokio::select! {
                            r = self.rx.recv() => match r {
                                Some(r) => { let _ = r.tx.send(Outcome::NotSent); }
                                None => return,
                            },
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                }
            }
        }
    }

    fn mark_down(&self, kind: &'static str) {
        self.state.down.store(true, Ordering::Relaxed);
        self.node.error(kind);
        self.ctx.on_failure.notify_one();
    }

    fn refuse_all(&mut self) {
        self.rx.close();
        while let Ok(r) = self.rx.try_recv() {
            let _ = r.tx.send(Outcome::NotSent);
        }
    }

    async fn serve(&mut self, stream: TcpStream, mut rbuf: BytesMut, first: Vec<Req>) -> End {
        let (mut rd, wr) = stream.into_split();
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut queued_bytes: u64 = 0;
        let mut written: u64 = 0;
        let mut scanner = FrameScanner::new();
        // Bytes of the front request's reply scanned so far.
        let mut front_len = 0usize;
        let mut batch: Vec<Req> = first;
        let mut closed = false;
        loop {
            for r in batch.drain(..) {
                inflight.push_back(InFlight {
                    start: queued_bytes,
                    frames_left: r.frames.max(1),
                    tx: r.tx,
                });
                queued_bytes += r.data.len() as u64;
                out.extend_from_slice(&r.data);
                self.node.inflight.inc();
            }
            // Write what we can now; wait for writability only if the
            // socket is full.
            while !out.is_empty() {
                match wr.try_write(&out) {
                    Ok(n) => {
                        out.advance(n);
                        written += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return self.fail(inflight, written, End::Broken),
                }
            }
            if closed && inflight.is_empty() {
                return End::Closed;
            }
            let accept = !closed && out.len() < WRITE_HIGH_WATER;
            enum Ev {
                Read(std::io::Result<usize>),
                Writable(std::io::Result<()>),
                Reqs(usize),
            }
            let ev = tokio::select! {
                biased;
                r = rd.read_buf(&mut rbuf) => Ev::Read(r),
                w = wr.writable(), if !out.is_empty() => Ev::Writable(w),
                n = self.rx.recv_many(&mut batch, BATCH), if accept => Ev::Reqs(n),
            };
            match ev {
                Ev::Read(Ok(0)) | Ev::Read(Err(_)) => {
                    return self.fail(inflight, written, End::Broken);
                }
                Ev::Read(Ok(_)) => loop {
                    match scanner.scan(rbuf.get(front_len..).unwrap_or_default()) {
                        Ok(Some(n)) => {
                            front_len += n;
                            // A push frame (RESP3) answers no request.
                            let is_push = rbuf.get(front_len - n) == Some(&b'>');
                            if is_push && !self.dedicated {
                                let _ = rbuf.split_to(front_len);
                                front_len = 0;
                                continue;
                            }
                            let Some(front) = inflight.front_mut() else {
                                // A reply nobody asked for: the stream is
                                // out of step, do not guess.
                                self.node.error("protocol");
                                return self.fail(inflight, written, End::Broken);
                            };
                            front.frames_left -= 1;
                            if front.frames_left == 0 {
                                let reply = rbuf.split_to(front_len).freeze();
                                front_len = 0;
                                if let Some(f) = inflight.pop_front() {
                                    let _ = f.tx.send(Outcome::Reply(reply));
                                }
                                self.node.inflight.dec();
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            self.node.error("protocol");
                            return self.fail(inflight, written, End::Broken);
                        }
                    }
                },
                Ev::Writable(Ok(())) => {}
                Ev::Writable(Err(_)) => return self.fail(inflight, written, End::Broken),
                Ev::Reqs(0) => {
                    closed = true;
                    if self.dedicated {
                        return self.fail(inflight, written, End::Closed);
                    }
                }
                Ev::Reqs(_) => {}
            }
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
        }
    }

    /// Ends a connection: unwritten requests are handed back, written ones
    /// are lost.
    fn fail(&self, inflight: VecDeque<InFlight>, written: u64, end: End) -> End {
        let n = inflight.len() as i64;
        for f in inflight {
            let o = if f.start >= written {
                Outcome::NotSent
            } else {
                Outcome::Lost
            };
            let _ = f.tx.send(o);
        }
        self.node.inflight.sub(n);
        end
    }
}
