//! Backend connections: a few shared, pipelined connections per node that
//! every client's requests are multiplexed over, plus dedicated ones for the
//! clients that need a connection of their own (blocking commands, WATCH).
//!
//! A connection is one task. Sessions append a request's bytes straight to
//! the connection's write buffer (one copy, no allocation, under a mutex
//! nobody holds across an `.await`); everything appended since the task's
//! last wake-up goes out in one write. Replies are matched to requests by
//! order (Redis answers in order on a connection) and delivered to the
//! sending session's [`Mailbox`] with the [`Tag`] it chose, so a request
//! costs no channel or oneshot of its own. Reply bytes are forwarded as they
//! came, found by [`FrameScanner`] without building values.
//!
//! What happens to a request when the connection fails is explicit: one
//! never written is handed back [`Outcome::NotSent`] (the caller may send it
//! elsewhere), one written but unanswered is [`Outcome::Lost`] (its effect is
//! unknown, so a write must not be replayed silently).

use crate::proxy::metrics::{Metrics, NodeMetrics};
use crate::resp::encode_command;
use crate::resp::scan::FrameScanner;
use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub enum Outcome {
    /// The reply frames, verbatim.
    Reply(bytes::Bytes),
    /// Never written to the node: safe to send anywhere.
    NotSent,
    /// Written, and the connection died before the reply: the command may
    /// or may not have run.
    Lost,
}

/// How a session finds the request a reply belongs to: its place in the
/// session's queue (`seq`, and `sub` inside a fan-out) and which send of
/// that request it answers (`gen`: a late reply to an earlier attempt is
/// recognised and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tag {
    pub seq: u64,
    pub sub: u32,
    pub gen: u32,
}

/// Where the replies to one session's requests land, in arrival order.
/// One per session instead of one oneshot per request.
#[derive(Default)]
pub struct Mailbox {
    inner: Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    items: Vec<(Tag, Outcome)>,
    waker: Option<Waker>,
    /// The session was woken (or is running) and will look again: no
    /// need to wake it per reply.
    woken: bool,
    /// Deliveries the waiting session can use only together (replies of
    /// one pipeline burst): it is woken at the last one.
    need: usize,
    /// The session is gone: replies are dropped.
    closed: bool,
    /// Reply bytes delivered and not taken yet, and the most the session
    /// may be owed (0: no cap). A client that stops reading stops its
    /// session taking, so this is where its replies pile up.
    bytes: usize,
    limit: usize,
    /// The cap was passed: the replies were dropped and the session must
    /// close its client (Redis's hard output-buffer limit).
    over: bool,
}

impl Mailbox {
    /// A mailbox that holds at most `limit` reply bytes for its session (0:
    /// no cap).
    pub fn with_limit(limit: usize) -> Mailbox {
        let m = Mailbox::default();
        m.inner.lock().limit = limit;
        m
    }

    pub fn deliver(&self, tag: Tag, outcome: Outcome) {
        let mut g = self.inner.lock();
        if g.closed {
            return;
        }
        if let Outcome::Reply(b) = &outcome {
            g.bytes += b.len();
            if g.limit != 0 && g.bytes > g.limit {
                g.over = true;
                g.closed = true;
                g.items = Vec::new();
                if let Some(w) = g.waker.take() {
                    w.wake();
                }
                return;
            }
        }
        g.items.push((tag, outcome));
        if !g.woken {
            if g.need > 1 {
                g.need -= 1;
                return;
            }
            g.woken = true;
            if let Some(w) = &g.waker {
                w.wake_by_ref();
            }
        }
    }

    /// Moves what arrived into `out` (which should be empty: buffers are
    /// swapped, not copied). Ready when something was taken; otherwise the
    /// task is woken when `need` more deliveries have arrived (at least
    /// one). Cancel-safe.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<(Tag, Outcome)>,
        need: usize,
    ) -> Poll<()> {
        let mut g = self.inner.lock();
        if g.over {
            return Poll::Ready(());
        }
        if g.items.is_empty() {
            if !g.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                g.waker = Some(cx.waker().clone());
            }
            g.woken = false;
            g.need = need;
            return Poll::Pending;
        }
        std::mem::swap(&mut g.items, out);
        g.bytes = 0;
        g.woken = true;
        Poll::Ready(())
    }

    /// Takes what arrived without waiting.
    pub fn take_now(&self, out: &mut Vec<(Tag, Outcome)>) {
        let mut g = self.inner.lock();
        if !g.items.is_empty() {
            std::mem::swap(&mut g.items, out);
            g.bytes = 0;
        }
    }

    /// Whether the session's client passed its output limit.
    pub fn over_limit(&self) -> bool {
        self.inner.lock().over
    }

    /// Ready once the client passed its output limit; until then the task
    /// is woken when it does. A session blocked writing to a client that
    /// does not read waits on this too: that is when replies pile up here.
    pub fn poll_over(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.inner.lock();
        if g.over {
            return Poll::Ready(());
        }
        if !g.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            g.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The session ended: later replies are dropped at once.
    pub fn close(&self) {
        let mut g = self.inner.lock();
        g.closed = true;
        g.items.clear();
        g.waker = None;
    }
}

/// Where a request's reply goes.
pub struct ReplyTo {
    pub mailbox: Arc<Mailbox>,
    pub tag: Tag,
}

impl ReplyTo {
    pub(crate) fn send(self, o: Outcome) {
        self.mailbox.deliver(self.tag, o);
    }
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
    /// See `max_reply_bytes` in config/proxy.toml.
    pub max_reply_bytes: usize,
    pub metrics: Arc<Metrics>,
    /// Poked when a connection to a node fails (topology may have changed).
    pub on_failure: Arc<tokio::sync::Notify>,
    /// Connections go to in-memory fake nodes instead of the network (the
    /// proxy core's unit tests); `None` in a running proxy.
    pub memnet: Option<Arc<crate::proxy::memnet::MemNet>>,
}

/// A request appended to a connection, not taken by its task yet.
pub(crate) struct Queued {
    /// Its bytes in [`Queue::data`].
    pub(crate) len: usize,
    /// Reply frames the request produces; the reply is all of them.
    pub(crate) frames: u32,
    pub(crate) reply: ReplyTo,
}

/// What sessions hand a connection's task.
#[derive(Default)]
struct Queue {
    data: BytesMut,
    reqs: Vec<Queued>,
    waker: Option<Waker>,
    woken: bool,
    /// Every handle is gone.
    closed: bool,
    /// The task is gone or will not send any more: hand requests back.
    refusing: bool,
}

pub(crate) struct ConnShared {
    queue: Mutex<Queue>,
    /// Live [`Conn`] handles (the task's own reference is not one).
    handles: AtomicUsize,
}

/// What the task takes from its queue.
pub(crate) enum Take {
    Some,
    /// Every handle is gone and nothing is queued.
    Closed,
}

impl ConnShared {
    /// Moves queued requests into the task's buffers (swapped, not copied,
    /// when the task's buffer is empty).
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        data: &mut BytesMut,
        reqs: &mut Vec<Queued>,
    ) -> Poll<Take> {
        let mut q = self.queue.lock();
        if q.reqs.is_empty() {
            if q.closed {
                return Poll::Ready(Take::Closed);
            }
            if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                q.waker = Some(cx.waker().clone());
            }
            q.woken = false;
            return Poll::Pending;
        }
        if data.is_empty() {
            std::mem::swap(&mut q.data, data);
        } else {
            data.extend_from_slice(&q.data);
            q.data.clear();
        }
        reqs.append(&mut q.reqs);
        q.woken = true;
        Poll::Ready(Take::Some)
    }

    /// Hands back everything queued and everything sent from now on.
    pub(crate) fn refuse_all(&self) {
        let reqs = {
            let mut q = self.queue.lock();
            q.refusing = true;
            q.data.clear();
            std::mem::take(&mut q.reqs)
        };
        for r in reqs {
            r.reply.send(Outcome::NotSent);
        }
    }
}

/// Handle to one connection. Dropping every handle of a dedicated
/// connection closes it at once (a blocked BLPOP is abandoned with it).
pub struct Conn {
    shared: Arc<ConnShared>,
}

impl Clone for Conn {
    fn clone(&self) -> Conn {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Conn {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut q = self.shared.queue.lock();
            q.closed = true;
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
    }
}

impl Conn {
    /// Appends a request made of `parts` (sent back to back) that produces
    /// `frames` reply frames. If the connection will not send any more, the
    /// request is handed back as never sent.
    pub fn send(&self, parts: &[&[u8]], frames: u32, reply: ReplyTo) {
        let mut q = self.shared.queue.lock();
        if q.refusing {
            drop(q);
            return reply.send(Outcome::NotSent);
        }
        let mut len = 0;
        for p in parts {
            q.data.extend_from_slice(p);
            len += p.len();
        }
        q.reqs.push(Queued { len, frames, reply });
        if !q.woken {
            q.woken = true;
            if let Some(w) = &q.waker {
                w.wake_by_ref();
            }
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
        let shared = Arc::new(ConnShared {
            queue: Mutex::new(Queue::default()),
            handles: AtomicUsize::new(1),
        });
        if let Some(net) = &self.ctx.memnet {
            net.attach(&self.addr, shared.clone());
            return Conn { shared };
        }
        let task = ConnTask {
            addr: self.addr.clone(),
            kind,
            dedicated,
            ctx: self.ctx.clone(),
            node: self.metrics.clone(),
            state: self.state.clone(),
            shared: shared.clone(),
        };
        tokio::spawn(task.run());
        Conn { shared }
    }
}

/// How long a node that refused a connection is considered down before the
/// next attempt (requests meanwhile are handed back at once).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Stop taking new requests while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 4 << 20;

struct ConnTask {
    addr: String,
    kind: Kind,
    dedicated: bool,
    ctx: Arc<BackendCtx>,
    node: NodeMetrics,
    state: Arc<NodeState>,
    shared: Arc<ConnShared>,
}

struct InFlight {
    /// Offset of the request's first byte in the connection's write stream.
    start: u64,
    frames_left: u32,
    reply: ReplyTo,
}

/// Requests taken from the queue, not yet on their way.
#[derive(Default)]
struct Batch {
    data: BytesMut,
    reqs: Vec<Queued>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    fn refuse(&mut self) {
        self.data.clear();
        for r in self.reqs.drain(..) {
            r.reply.send(Outcome::NotSent);
        }
    }
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

impl ConnTask {
    /// Waits for queued requests (or for every handle to be gone).
    async fn take(&self, batch: &mut Batch) -> Take {
        poll_fn(|cx| self.shared.poll_take(cx, &mut batch.data, &mut batch.reqs)).await
    }

    async fn run(self) {
        self.run_inner().await;
        // Whatever is sent from now on is handed back at once.
        self.shared.refuse_all();
    }

    async fn run_inner(&self) {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        let mut queued = Batch::default();
        loop {
            // Connect lazily, when there is something to send.
            if queued.is_empty() {
                if let Take::Closed = self.take(&mut queued).await {
                    return;
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
                    queued.refuse();
                    if self.dedicated {
                        return;
                    }
                    // Hand back everything that arrives until it is time to
                    // try again.
                    let until = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    loop {
                        tokio::select! {
                            t = self.take(&mut queued) => match t {
                                Take::Some => queued.refuse(),
                                Take::Closed => return,
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

    async fn serve(&self, stream: TcpStream, mut rbuf: BytesMut, first: Batch) -> End {
        let (mut rd, wr) = stream.into_split();
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut queued_bytes: u64 = 0;
        let mut written: u64 = 0;
        let mut scanner = FrameScanner::new();
        // Bytes of the front request's reply scanned so far.
        let mut front_len = 0usize;
        let mut batch = first;
        // Bytes taken from the queue and not written yet.
        let mut out = std::mem::take(&mut batch.data);
        let mut closed = false;
        loop {
            if !batch.reqs.is_empty() && !closed {
                // Requests just arrived: let every session the scheduler
                // runs this turn add its own before writing, so the node
                // gets (and answers) them in one read instead of several.
                tokio::task::yield_now().await;
                let _ = self.shared.poll_take(
                    &mut Context::from_waker(Waker::noop()),
                    &mut out,
                    &mut batch.reqs,
                );
            }
            let n = batch.reqs.len();
            for r in batch.reqs.drain(..) {
                inflight.push_back(InFlight {
                    start: queued_bytes,
                    frames_left: r.frames.max(1),
                    reply: r.reply,
                });
                queued_bytes += r.len as u64;
            }
            if n > 0 {
                self.node.inflight.add(n as i64);
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
                Reqs(Take),
            }
            let ev = tokio::select! {
                biased;
                r = rd.read_buf(&mut rbuf) => Ev::Read(r),
                w = wr.writable(), if !out.is_empty() => Ev::Writable(w),
                t = poll_fn(|cx| self.shared.poll_take(cx, &mut out, &mut batch.reqs)), if accept => Ev::Reqs(t),
            };
            match ev {
                Ev::Read(Ok(0)) | Ev::Read(Err(_)) => {
                    return self.fail(inflight, written, End::Broken);
                }
                Ev::Read(Ok(_)) => {
                    let mut answered = 0i64;
                    loop {
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
                                    self.node.inflight.sub(answered);
                                    return self.fail(inflight, written, End::Broken);
                                };
                                front.frames_left -= 1;
                                if front.frames_left == 0 {
                                    let reply = rbuf.split_to(front_len).freeze();
                                    front_len = 0;
                                    if let Some(f) = inflight.pop_front() {
                                        f.reply.send(Outcome::Reply(reply));
                                    }
                                    answered += 1;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => {
                                self.node.error("protocol");
                                self.node.inflight.sub(answered);
                                return self.fail(inflight, written, End::Broken);
                            }
                        }
                    }
                    if answered > 0 {
                        self.node.inflight.sub(answered);
                    }
                    if rbuf.len() > self.ctx.max_reply_bytes {
                        return self.refuse_oversized(inflight, written);
                    }
                }
                Ev::Writable(Ok(())) => {}
                Ev::Writable(Err(_)) => return self.fail(inflight, written, End::Broken),
                Ev::Reqs(Take::Closed) => {
                    closed = true;
                    if self.dedicated {
                        return self.fail(inflight, written, End::Closed);
                    }
                }
                Ev::Reqs(Take::Some) => {}
            }
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
        }
    }

    /// The front reply outgrew `max_reply_bytes`: its request gets an error
    /// (not "lost", which would retry a read into the same wall), and the
    /// connection, mid-reply, cannot be used again.
    fn refuse_oversized(&self, mut inflight: VecDeque<InFlight>, written: u64) -> End {
        self.node.error("reply_too_large");
        tracing::warn!(
            node = %self.addr,
            limit = self.ctx.max_reply_bytes,
            "reply larger than max_reply_bytes, closing the node connection"
        );
        if let Some(f) = inflight.pop_front() {
            self.node.inflight.sub(1);
            let text = format!(
                "ERR proxy: reply larger than max_reply_bytes ({} bytes)",
                self.ctx.max_reply_bytes
            );
            f.reply
                .send(Outcome::Reply(crate::proxy::forward::error_frame(&text)));
        }
        self.fail(inflight, written, End::Broken)
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
            f.reply.send(o);
        }
        self.node.inflight.sub(n);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tag(seq: u64) -> Tag {
        Tag {
            seq,
            sub: 0,
            gen: 1,
        }
    }

    fn reply(m: &Arc<Mailbox>, seq: u64) -> ReplyTo {
        ReplyTo {
            mailbox: m.clone(),
            tag: tag(seq),
        }
    }

    fn conn() -> (Conn, Arc<ConnShared>) {
        let shared = Arc::new(ConnShared {
            queue: Mutex::new(Queue::default()),
            handles: AtomicUsize::new(1),
        });
        (
            Conn {
                shared: shared.clone(),
            },
            shared,
        )
    }

    #[test]
    fn mailbox_wakes_once_per_wait_and_keeps_order() {
        let m = Arc::new(Mailbox::default());
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(m.poll_take(&mut cx, &mut out, 1).is_pending());
        m.deliver(tag(1), Outcome::Lost);
        m.deliver(tag(2), Outcome::NotSent);
        // Two replies, one wake-up: the session takes both at once.
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(m.poll_take(&mut cx, &mut out, 1).is_ready());
        let seqs: Vec<u64> = out.iter().map(|(t, _)| t.seq).collect();
        assert_eq!(seqs, [1, 2]);
        // While the session runs (has not waited again) nothing wakes it.
        m.deliver(tag(3), Outcome::Lost);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        out.clear();
        m.take_now(&mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        // Waiting for three replies: woken at the third.
        assert!(m.poll_take(&mut cx, &mut out, 3).is_pending());
        m.deliver(tag(4), Outcome::Lost);
        m.deliver(tag(5), Outcome::Lost);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        m.deliver(tag(6), Outcome::Lost);
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        m.take_now(&mut out);
        assert_eq!(out.len(), 3);
        out.clear();
        // A closed mailbox (the session ended) keeps nothing.
        m.close();
        m.deliver(tag(7), Outcome::Lost);
        m.take_now(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn queued_requests_go_in_order_in_one_buffer() {
        let (c, shared) = conn();
        let m = Arc::new(Mailbox::default());
        c.send(&[b"*1\r\n$4\r\nPING\r\n"], 1, reply(&m, 1));
        c.send(
            &[b"*1\r\n$6\r\nASKING\r\n", b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"],
            2,
            reply(&m, 2),
        );
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut data = BytesMut::new();
        let mut reqs = Vec::new();
        assert!(matches!(
            shared.poll_take(&mut cx, &mut data, &mut reqs),
            Poll::Ready(Take::Some)
        ));
        assert_eq!(
            &data[..],
            b"*1\r\n$4\r\nPING\r\n*1\r\n$6\r\nASKING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
        );
        let lens: Vec<(usize, u32, u64)> = reqs
            .iter()
            .map(|r| (r.len, r.frames, r.reply.tag.seq))
            .collect();
        assert_eq!(lens, [(14, 1, 1), (36, 2, 2)]);
        assert!(shared.poll_take(&mut cx, &mut data, &mut reqs).is_pending());
    }

    #[test]
    fn a_connection_that_stopped_hands_requests_back() {
        let (c, shared) = conn();
        let m = Arc::new(Mailbox::default());
        c.send(&[b"*1\r\n$4\r\nPING\r\n"], 1, reply(&m, 1));
        shared.refuse_all();
        c.send(&[b"*1\r\n$4\r\nPING\r\n"], 1, reply(&m, 2));
        let mut out = Vec::new();
        m.take_now(&mut out);
        let got: Vec<(u64, bool)> = out
            .iter()
            .map(|(t, o)| (t.seq, matches!(o, Outcome::NotSent)))
            .collect();
        assert_eq!(got, [(1, true), (2, true)]);
    }

    #[test]
    fn the_last_handle_closes_the_connection() {
        let (c, shared) = conn();
        let c2 = c.clone();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut data = BytesMut::new();
        let mut reqs = Vec::new();
        drop(c);
        assert!(shared.poll_take(&mut cx, &mut data, &mut reqs).is_pending());
        drop(c2);
        assert!(matches!(
            shared.poll_take(&mut cx, &mut data, &mut reqs),
            Poll::Ready(Take::Closed)
        ));
    }
}
