//! One client connection: read → parse every complete request → route and
//! send each one → write replies strictly in request order.
//!
//! Requests of one read are all dispatched before waiting for any reply, so
//! a pipelining client keeps every node busy at once. Replies wait in a
//! queue in request order; only the oldest one is awaited, and whatever is
//! ready behind it goes out in the same write.
//!
//! Some requests must not overlap with others of the same client:
//! transactions (`EXEC` sends the whole `MULTI` block), `WATCH`, commands
//! that may block, `HELLO` (it changes which connections are used) and
//! `SUBSCRIBE`. They are "exclusive": sent only when nothing of this client
//! is in flight, and nothing else is sent until they are answered, so the
//! client's requests run in the order it sent them.

mod txn;

use crate::cluster::key_hash_slot;
use crate::proxy::backend::{Conn, Kind, Mailbox, Outcome as Wire, Pool, Tag};
use crate::proxy::commands::{flag, Local, Lookup, Route, Txn};
use crate::proxy::fanout::{self, Fanout};
use crate::proxy::forward::{error_frame, Routed, SendCtx, Target};
use crate::proxy::local::{self, ClientState};
use crate::proxy::metrics::Outcome;
use crate::proxy::Proxy;
use crate::resp::encode_command;
use crate::resp::{Limits, Proto, Raw, RequestParser};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A parsed request: its own bytes (to forward verbatim) and arguments.
pub struct Parsed {
    pub frame: Bytes,
    pub args: Vec<Bytes>,
}

impl Parsed {
    /// The bytes as received are a multibulk (not an inline line).
    fn is_multibulk(&self) -> bool {
        self.frame.first() == Some(&b'*')
    }

    /// The request as a RESP multibulk, taking its own bytes.
    pub fn into_wire(self) -> Bytes {
        if self.is_multibulk() {
            self.frame
        } else {
            self.wire()
        }
    }

    /// The request as a RESP multibulk (inline requests are encoded).
    pub fn wire(&self) -> Bytes {
        if self.is_multibulk() {
            return self.frame.clone();
        }
        let mut out = BytesMut::new();
        let a: Vec<&[u8]> = self.args.iter().map(|b| &b[..]).collect();
        encode_command(&mut out, &a);
        out.freeze()
    }
}

enum Post {
    None,
    /// SCAN: turn the node's cursor into a composite one.
    Scan(u16),
}

enum Entry {
    Ready {
        bytes: Bytes,
        metric: usize,
        outcome: Outcome,
        start: Instant,
    },
    One {
        r: Routed,
        metric: usize,
        start: Instant,
        post: Post,
    },
    Fan {
        f: Box<Fanout>,
        metric: usize,
        start: Instant,
    },
}

impl Entry {
    /// When the request was read: requests read in one burst share it.
    fn start(&self) -> Instant {
        match self {
            Entry::Ready { start, .. } | Entry::One { start, .. } | Entry::Fan { start, .. } => {
                *start
            }
        }
    }

    /// The request this entry waits for first.
    fn waiter(&mut self) -> Option<&mut Routed> {
        match self {
            Entry::Ready { .. } => None,
            Entry::One { r, .. } => (!r.is_done()).then_some(r),
            Entry::Fan { f, .. } => f.subs.iter_mut().find(|s| !s.is_done()),
        }
    }
}

/// Commands queued between MULTI and EXEC.
#[derive(Default)]
struct TxnState {
    cmds: Vec<Bytes>,
    slot: Option<u16>,
    cross: bool,
    dirty: bool,
}

/// A WATCH: its keys' slot and the connection it lives on.
struct WatchState {
    conn: Conn,
    pool: Arc<Pool>,
    slot: u16,
}

/// Longest a ready reply waits for the rest of its burst, counted from
/// when the burst was read (see `Session::held_burst`): bounds the delay a
/// slow command adds to the replies read with it.
const REPLY_HOLD: Duration = Duration::from_millis(1);

/// Requests are parsed into this much before the proxy stops reading.
const MAX_INBUF: usize = 64 << 20;

pub struct Session {
    proxy: Arc<Proxy>,
    st: ClientState,
    pending: VecDeque<Entry>,
    dedicated: HashMap<String, Conn>,
    txn: Option<TxnState>,
    watch: Option<WatchState>,
    /// An exclusive request is in flight.
    barrier: bool,
    /// An exclusive request waiting for the queue to drain.
    deferred: Option<Parsed>,
    closing: bool,
    /// The client subscribed: switch to the pub/sub relay.
    subscribe: Option<Parsed>,
    epochs: tokio::sync::watch::Receiver<u64>,
    limits: Limits,
    /// Replies to this client's requests arrive here.
    mailbox: Arc<Mailbox>,
    /// What was taken from the mailbox, not applied yet (kept for its
    /// capacity).
    inbox: Vec<(Tag, Wire)>,
    /// The command of the last request on the fast path: pipelines mostly
    /// repeat one command.
    last_cmd: Option<&'static crate::proxy::commands::Command>,
    /// When the last reply moved to the output buffer was read (see
    /// [`held_burst`](Self::held_burst)).
    out_start: Option<Instant>,
    /// `seq` of the entry at the front of `pending` (entries are numbered
    /// in request order; replies name theirs in their [`Tag`]).
    base_seq: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

fn is_error(b: &[u8]) -> bool {
    matches!(b.first(), Some(b'-' | b'!'))
}

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Writes all of `out`; false when the client is gone, took no byte for
/// `stall` (zero: waits forever), or passed its output byte limit while
/// the write waited (see [`Mailbox::poll_over`]).
async fn write_out<S: ClientStream>(
    stream: &mut S,
    out: &[u8],
    stall: Duration,
    mailbox: &Mailbox,
) -> bool {
    let mut pos = match stream.try_write_now(out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    while pos < out.len() {
        let rest = out.get(pos..).unwrap_or_default();
        let write = async {
            tokio::select! {
                r = stream.write(rest) => Some(r),
                _ = std::future::poll_fn(|cx| mailbox.poll_over(cx)) => None,
            }
        };
        let r = if stall.is_zero() {
            write.await
        } else {
            match tokio::time::timeout(stall, write).await {
                Ok(r) => r,
                Err(_) => return false,
            }
        };
        match r {
            None | Some(Ok(0)) | Some(Err(_)) => return false,
            Some(Ok(n)) => pos += n,
        }
    }
    true
}

/// A client's connection as the session sees it: a TCP socket, or an
/// in-memory pipe in the proxy core's unit tests.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Writes what fits now without waiting (`WouldBlock` when nothing
    /// does): most replies go out in this one call.
    fn try_write_now(&mut self, buf: &[u8]) -> std::io::Result<usize>;
}

impl ClientStream for TcpStream {
    fn try_write_now(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.try_write(buf)
    }
}

impl ClientStream for tokio::io::DuplexStream {
    fn try_write_now(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(self).poll_write(&mut cx, buf) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// What woke a waiting session.
enum Ev {
    Read(std::io::Result<usize>),
    Replies,
    Front(crate::proxy::forward::Event),
    Idle,
    Shutdown,
}

/// A timer deadline that never comes in practice: the disarmed state of
/// the session's one reply timer.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// Serves one client until it leaves, the proxy drains, or an error.
pub async fn run(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(proxy.listen);
    serve_client(proxy, stream, peer, local).await;
}

/// Serves one client over any stream (`run` for TCP).
pub async fn serve_client<S: ClientStream>(
    proxy: Arc<Proxy>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let id = proxy.next_client.fetch_add(1, Ordering::Relaxed);
    let now = std::time::Instant::now();
    let session = Session {
        st: ClientState {
            id,
            peer,
            local,
            name: None,
            proto: Proto::Resp2,
            authed: proxy.cfg.requirepass.is_empty(),
            readonly: false,
            created: now,
            last_active: now,
        },
        pending: VecDeque::new(),
        dedicated: HashMap::new(),
        txn: None,
        watch: None,
        barrier: false,
        deferred: None,
        closing: false,
        subscribe: None,
        epochs: proxy.router.subscribe(),
        limits: Limits::default(),
        mailbox: Arc::new(Mailbox::with_limit(proxy.cfg.client_output_limit_bytes)),
        inbox: Vec::new(),
        last_cmd: None,
        out_start: None,
        base_seq: 0,
        proxy,
    };
    session.serve(stream).await;
}

impl Session {
    async fn serve<S: ClientStream>(mut self, mut stream: S) {
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut parser = RequestParser::new();
        let mut shutdown = self.proxy.shutdown.clone();
        let mut draining = *shutdown.borrow();
        // Created once: re-polling a registered waiter is cheap, creating
        // one per wait is not.
        let shutdown_signal = async move {
            let _ = shutdown.changed().await;
        };
        tokio::pin!(shutdown_signal);
        // One timer for the reply deadline of the oldest request.
        let tick = tokio::time::sleep_until(far_future());
        tokio::pin!(tick);
        let idle = Duration::from_secs(self.proxy.cfg.client_idle_timeout_secs);
        let stall = Duration::from_secs(self.proxy.cfg.client_output_stall_secs);
        loop {
            if self.mailbox.over_limit() {
                return self.close_over_limit();
            }
            self.process_all(&mut inbuf, &mut parser, &mut out);
            if !self.write_ready(&mut stream, &mut out, stall).await {
                return;
            }
            if self.pending.is_empty() {
                if self.closing || draining {
                    let _ = stream.shutdown().await;
                    return;
                }
                if let Some(first) = self.subscribe.take() {
                    let end = crate::proxy::pubsub::relay(
                        &self.proxy,
                        &mut self.st,
                        &mut stream,
                        &mut inbuf,
                        &mut parser,
                        first,
                    )
                    .await;
                    match end {
                        crate::proxy::pubsub::End::Reset => {
                            self.reset();
                            continue;
                        }
                        crate::proxy::pubsub::End::Closed => return,
                    }
                }
                if self.deferred.is_some() {
                    continue;
                }
            }
            let (need, timer) = self.arm_timer(&out, tick.as_mut());
            let can_read = !self.closing
                && !draining
                && self.pending.len() < self.proxy.cfg.max_pipeline
                && inbuf.len() < MAX_INBUF;
            let idle = Some(idle).filter(|d| !d.is_zero() && self.pending.is_empty());
            let ev = {
                let front = self
                    .pending
                    .front_mut()
                    .and_then(Entry::waiter)
                    .filter(|r| r.waits_to_retry());
                let has_front = front.is_some();
                let epochs = &mut self.epochs;
                let mailbox = &self.mailbox;
                let inbox = &mut self.inbox;
                let replies = std::future::poll_fn(|cx| mailbox.poll_take(cx, inbox, need));
                let wait_front = async move {
                    match front {
                        Some(r) => r.wait(epochs).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = stream.read_buf(&mut inbuf), if can_read => Ev::Read(r),
                    _ = replies => Ev::Replies,
                    e = wait_front, if has_front => Ev::Front(e),
                    _ = &mut tick, if timer => Ev::Front(crate::proxy::forward::Event::Deadline),
                    // An async block: select! builds every branch's future,
                    // and a Sleep costs a clock read even when never polled.
                    _ = async { tokio::time::sleep(idle.unwrap_or_default()).await }, if idle.is_some() => Ev::Idle,
                    _ = &mut shutdown_signal, if !draining => Ev::Shutdown,
                }
            };
            match ev {
                Ev::Read(Ok(0)) | Ev::Read(Err(_)) | Ev::Idle => return,
                Ev::Read(Ok(_)) => {}
                Ev::Replies => self.apply_replies(),
                Ev::Shutdown => draining = true,
                Ev::Front(e) => self.on_front_event(e, tick.as_mut()),
            }
        }
    }

    /// Parses and routes what was read, takes the replies that arrived,
    /// and moves the finished ones to `out`, until nothing moves.
    fn process_all(
        &mut self,
        inbuf: &mut BytesMut,
        parser: &mut RequestParser,
        out: &mut BytesMut,
    ) {
        loop {
            let progressed = self.process(inbuf, parser);
            self.mailbox.take_now(&mut self.inbox);
            self.apply_replies();
            self.collect(out);
            if !progressed {
                break;
            }
        }
    }

    /// Writes the replies that are due. Replies are ready but others read
    /// in the same burst (one pipeline) are still on their way from other
    /// nodes: the write waits for them, up to REPLY_HOLD after the burst
    /// was read, so the burst's replies go out in one write. False when
    /// the client must go.
    async fn write_ready<S: ClientStream>(
        &mut self,
        stream: &mut S,
        out: &mut BytesMut,
        stall: Duration,
    ) -> bool {
        let write_now = !out.is_empty()
            && self
                .held_burst()
                .is_none_or(|start| Instant::now() >= start + REPLY_HOLD);
        if !write_now {
            return true;
        }
        if !write_out(stream, out, stall, &self.mailbox).await {
            if self.mailbox.over_limit() {
                self.close_over_limit();
            } else {
                tracing::debug!(
                    client = self.st.id,
                    pending = out.len(),
                    "client not reading or gone, closing"
                );
            }
            return false;
        }
        out.clear();
        if out.capacity() > 1 << 20 {
            *out = BytesMut::with_capacity(16 * 1024);
        }
        true
    }

    /// Sets the one timer to the front request's reply deadline or the end
    /// of its burst's hold, whichever is first. Returns how many replies
    /// are worth waking for, and whether the timer is armed.
    fn arm_timer(&mut self, out: &BytesMut, tick: Pin<&mut tokio::time::Sleep>) -> (usize, bool) {
        let front_deadline = self
            .pending
            .front_mut()
            .and_then(Entry::waiter)
            .and_then(|r| r.reply_deadline());
        // Replies are written a burst at a time: no use waking before the
        // whole front burst is answered, unless the hold runs out.
        let mut need = self.burst_in_flight();
        let mut hold = None;
        if need > 1 || !out.is_empty() {
            if let Some(start) = self.pending.front().map(Entry::start) {
                if Instant::now() < start + REPLY_HOLD {
                    hold = Some(start + REPLY_HOLD);
                } else {
                    // Held long enough: each reply may go out as it comes.
                    need = 1;
                }
            }
        }
        let due = match (front_deadline, hold) {
            (Some(d), Some(h)) => Some(d.min(h)),
            (d, h) => d.or(h),
        };
        if let Some(d) = due {
            // A later deadline is a cheap update of the armed timer.
            if tick.deadline() != d {
                tick.reset(d);
            }
        }
        (need, due.is_some())
    }

    /// A retry wake-up or a deadline for the request at the front.
    fn on_front_event(
        &mut self,
        e: crate::proxy::forward::Event,
        tick: Pin<&mut tokio::time::Sleep>,
    ) {
        if matches!(e, crate::proxy::forward::Event::Deadline) {
            tick.reset(far_future());
        }
        let (mut cx, pending) = self.send_ctx_and_pending();
        if let Some(r) = pending.front_mut().and_then(Entry::waiter) {
            r.on_event(e, &mut cx);
        }
    }

    fn close_over_limit(&self) {
        self.proxy.metrics.clients_output_limit.inc();
        tracing::warn!(
            client = self.st.id,
            peer = %self.st.peer,
            limit = self.proxy.cfg.client_output_limit_bytes,
            "client closed for overcoming output buffer limits"
        );
    }

    fn kind(&self) -> Kind {
        Kind {
            resp3: self.st.proto == Proto::Resp3,
            replica_reads: false,
        }
    }

    fn replica_reads(&self) -> bool {
        self.proxy.cfg.read_from_replicas || self.st.readonly
    }

    fn reset(&mut self) {
        self.txn = None;
        self.watch = None;
        self.dedicated.clear();
        self.st.name = None;
        self.st.proto = Proto::Resp2;
        self.st.readonly = false;
        self.st.authed = self.proxy.cfg.requirepass.is_empty();
    }

    /// Parses and dispatches what is buffered. Returns whether anything was
    /// taken (so the caller loops until nothing more can move).
    fn process(&mut self, inbuf: &mut BytesMut, parser: &mut RequestParser) -> bool {
        let max = self.proxy.cfg.max_pipeline;
        let mut start: Option<Instant> = None;
        let mut progressed = false;
        loop {
            if self.closing || self.subscribe.is_some() || self.barrier || self.pending.len() >= max
            {
                return progressed;
            }
            // Redis's caps for an anonymous client (10 arguments of 16 KiB)
            // hold until AUTH runs, which happens in this loop, so the next
            // request already parses without them.
            self.limits.unauthenticated = !self.st.authed;
            let req = match self.deferred.take() {
                Some(d) => {
                    if !self.pending.is_empty() {
                        self.deferred = Some(d);
                        return progressed;
                    }
                    d
                }
                None => match parser.parse_raw(inbuf, &self.limits) {
                    Ok(Some(Raw::Frame(frame))) => {
                        progressed = true;
                        if parser.argc() == 0 {
                            continue;
                        }
                        let start = *start.get_or_insert_with(Instant::now);
                        match self.fast(frame, parser, start) {
                            Ok(()) => continue,
                            Err(frame) => {
                                let args = parser.args_of(&frame);
                                Parsed { frame, args }
                            }
                        }
                    }
                    Ok(Some(Raw::Inline(_, args))) => {
                        if args.is_empty() {
                            progressed = true;
                            continue;
                        }
                        Parsed {
                            frame: Bytes::new(),
                            args,
                        }
                    }
                    Ok(None) => return progressed,
                    Err(e) => {
                        let other = self.other_metric();
                        let start = *start.get_or_insert_with(Instant::now);
                        self.ready(
                            error_frame(&format!("ERR {e}")),
                            other,
                            Outcome::Error,
                            start,
                        );
                        self.closing = true;
                        return true;
                    }
                },
            };
            progressed = true;
            let start = *start.get_or_insert_with(Instant::now);
            self.handle(req, start);
        }
    }

    /// The common case without building an argument list: a command with
    /// one key at a fixed place, from a client that is authenticated and
    /// not inside MULTI. Anything else is handed back for [`handle`].
    fn fast(&mut self, frame: Bytes, parser: &RequestParser, start: Instant) -> Result<(), Bytes> {
        if !self.st.authed || self.txn.is_some() {
            return Err(frame);
        }
        let Some(name) = parser.arg(&frame, 0) else {
            return Err(frame);
        };
        let cmd = match self.last_cmd {
            Some(c) if name.eq_ignore_ascii_case(c.name.as_bytes()) => c,
            _ => match self.proxy.table.lookup_plain(name) {
                Some(c) => {
                    self.last_cmd = Some(c);
                    c
                }
                None => return Err(frame),
            },
        };
        if cmd.route != Route::Keyed || !cmd.arity_ok(parser.argc()) {
            return Err(frame);
        }
        let Some(key) = cmd.single_key().and_then(|i| parser.arg(&frame, i)) else {
            return Err(frame);
        };
        let slot = key_hash_slot(key);
        let r = Routed::new(
            frame,
            Target::Slot(slot),
            self.deadline(start),
            cmd.has(flag::READONLY),
        );
        self.send_one(r, cmd.metric, start, Post::None);
        Ok(())
    }

    /// The deadline of a request read at `start`.
    fn deadline(&self, start: Instant) -> Instant {
        start + self.proxy.cfg.request_deadline()
    }

    fn other_metric(&self) -> usize {
        self.proxy.table.other_metric()
    }

    fn ready(&mut self, bytes: Bytes, metric: usize, outcome: Outcome, start: Instant) {
        self.pending.push_back(Entry::Ready {
            bytes,
            metric,
            outcome,
            start,
        });
    }

    fn ready_err(&mut self, text: &str, metric: usize, start: Instant) {
        self.ready(error_frame(text), metric, Outcome::Error, start);
    }

    fn send_ctx(&mut self) -> SendCtx<'_> {
        self.send_ctx_and_pending().0
    }

    /// A send context and the pending queue at once: replies and events
    /// act on a queued request and may send again (retries, redirects).
    fn send_ctx_and_pending(&mut self) -> (SendCtx<'_>, &mut VecDeque<Entry>) {
        let kind = self.kind();
        let replica_reads = self.replica_reads();
        let cx = SendCtx {
            proxy: &self.proxy,
            client: self.st.id,
            kind,
            replica_reads,
            dedicated: &mut self.dedicated,
            mailbox: &self.mailbox,
        };
        (cx, &mut self.pending)
    }

    /// When replies waiting in the output buffer were read, if the oldest
    /// unanswered request was read in the same burst (one read) as them.
    fn held_burst(&self) -> Option<Instant> {
        let start = self.pending.front().map(Entry::start)?;
        (Some(start) == self.out_start).then_some(start)
    }

    /// Requests of the oldest unanswered burst (read together) waiting for
    /// a reply from a node.
    fn burst_in_flight(&self) -> usize {
        let Some(start) = self.pending.front().map(Entry::start) else {
            return 0;
        };
        self.pending
            .iter()
            .take_while(|e| e.start() == start)
            .map(|e| match e {
                Entry::Ready { .. } => 0,
                Entry::One { r, .. } => usize::from(r.in_flight()),
                Entry::Fan { f, .. } => f.subs.iter().filter(|s| s.in_flight()).count(),
            })
            .sum()
    }

    /// The `seq` the next entry pushed to `pending` gets.
    fn next_seq(&self) -> u64 {
        self.base_seq + self.pending.len() as u64
    }

    /// Applies the replies taken from the mailbox to their requests.
    fn apply_replies(&mut self) {
        if self.inbox.is_empty() {
            return;
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        let base_seq = self.base_seq;
        let (mut cx, pending) = self.send_ctx_and_pending();
        for (tag, w) in inbox.drain(..) {
            // Entries already answered and gone leave stale tags behind.
            let Some(i) = tag.seq.checked_sub(base_seq) else {
                continue;
            };
            let r = match pending.get_mut(i as usize) {
                Some(Entry::One { r, .. }) => r,
                Some(Entry::Fan { f, .. }) => match f.subs.get_mut(tag.sub as usize) {
                    Some(r) => r,
                    None => continue,
                },
                Some(Entry::Ready { .. }) | None => continue,
            };
            r.on_reply(tag, w, &mut cx);
        }
        self.inbox = inbox;
    }

    fn send_one(&mut self, mut r: Routed, metric: usize, start: Instant, post: Post) {
        r.place(self.next_seq(), 0);
        let mut cx = self.send_ctx();
        r.dispatch(&mut cx);
        self.pending.push_back(Entry::One {
            r,
            metric,
            start,
            post,
        });
    }

    /// Defers an exclusive request until nothing else is in flight.
    /// Returns the request back if it may go now.
    fn exclusive(&mut self, req: Parsed) -> Option<Parsed> {
        if self.pending.is_empty() {
            Some(req)
        } else {
            self.deferred = Some(req);
            None
        }
    }

    /// The slot of every key of a call, or CROSSSLOT. `None` for no keys.
    fn slot_of(cmd: &crate::proxy::commands::Command, args: &[Bytes]) -> Result<Option<u16>, ()> {
        let mut slot: Option<u16> = None;
        let mut cross = false;
        cmd.for_each_key(args, |i| {
            if let Some(k) = args.get(i) {
                let s = key_hash_slot(k);
                match slot {
                    None => slot = Some(s),
                    Some(x) if x != s => cross = true,
                    Some(_) => {}
                }
            }
        });
        if cross {
            Err(())
        } else {
            Ok(slot)
        }
    }

    fn handle(&mut self, req: Parsed, start: Instant) {
        let table = self.proxy.table;
        let cmd = match table.lookup(&req.args) {
            Lookup::Found(c) => c,
            Lookup::Unknown(e) => {
                if let Some(t) = self.txn.as_mut() {
                    t.dirty = true;
                }
                return self.ready_err(&e, self.other_metric(), start);
            }
        };
        let metric = cmd.metric;
        if !cmd.arity_ok(req.args.len()) {
            if let Some(t) = self.txn.as_mut() {
                t.dirty = true;
            }
            return self.ready_err(&cmd.arity_error(), metric, start);
        }
        if !self.st.authed
            && !matches!(
                cmd.route,
                Route::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
            )
        {
            return self.ready_err("NOAUTH Authentication required.", metric, start);
        }
        if self.txn.is_some()
            && !matches!(
                cmd.route,
                Route::Txn(_) | Route::Local(Local::Quit | Local::Reset)
            )
        {
            return self.queue_in_txn(cmd, req, start);
        }
        let readonly = cmd.has(flag::READONLY);
        match cmd.route {
            Route::Local(Local::Info)
                if crate::proxy::local::info_wants_keyspace(
                    req.args.get(1..).unwrap_or_default(),
                ) =>
            {
                self.info_keyspace(&req, metric, start)
            }
            Route::Local(which) => self.local(which, req, metric, start),
            Route::Keyed => self.keyed(cmd, req, metric, start, readonly),
            Route::Blocking if !cmd.blocks(&req.args) => {
                self.keyed(cmd, req, metric, start, readonly)
            }
            Route::Blocking => self.blocking(cmd, req, metric, start),
            Route::Split(kind) => {
                let positions = cmd.key_positions(&req.args);
                match fanout::split(self.deadline(start), kind, &req.args, &positions, readonly) {
                    None => self.keyed(cmd, req, metric, start, readonly),
                    Some(f) => self.send_fan(f, metric, start),
                }
            }
            Route::AnyMaster => {
                let deadline = self.deadline(start);
                let r = Routed::new(req.wire(), Target::AnyMaster, deadline, readonly);
                self.send_one(r, metric, start, Post::None);
            }
            Route::AllMasters(merge) => {
                self.everywhere(&req, merge, false, metric, start, readonly)
            }
            Route::AllNodes(merge) => self.everywhere(&req, merge, true, metric, start, readonly),
            Route::Scan => self.scan(&req, metric, start),
            Route::Channel => {
                let slot = key_hash_slot(req.args.get(1).map_or(&[][..], |c| &c[..]));
                let r = Routed::new(req.wire(), Target::Slot(slot), self.deadline(start), false);
                self.send_one(r, metric, start, Post::None);
            }
            Route::SlotArg => self.slot_arg(&req, metric, start),
            Route::Txn(t) => self.txn_command(t, cmd, req, metric, start),
            Route::Subscribe => {
                if let Some(req) = self.exclusive(req) {
                    self.subscribe = Some(req);
                }
            }
            Route::Unsupported(why) => {
                let name = cmd.name.replace('|', " ").to_ascii_uppercase();
                let text = format!("ERR proxy: {name} is not supported through the proxy: {why}");
                self.ready_err(&text, metric, start);
            }
        }
    }

    /// INFO asking for the keyspace: every master's figures, summed.
    fn info_keyspace(&mut self, req: &Parsed, metric: usize, start: Instant) {
        let proxy = self.proxy.clone();
        let resp3 = self.st.proto == Proto::Resp3;
        let sections = req.args.get(1..).unwrap_or_default();
        match fanout::info(&proxy, sections, resp3, self.deadline(start)) {
            Some(f) => self.send_fan(f, metric, start),
            None => {
                let mut out = BytesMut::new();
                let text = crate::proxy::local::info(&proxy, sections);
                crate::resp::Reply::Verbatim(Bytes::from(text)).encode(self.st.proto, &mut out);
                self.ready(out.freeze(), metric, Outcome::Ok, start);
            }
        }
    }

    /// A command the proxy answers itself.
    fn local(&mut self, which: Local, req: Parsed, metric: usize, start: Instant) {
        // These change which connections later requests use.
        let changes_conns = matches!(
            which,
            Local::Hello | Local::Readonly | Local::Readwrite | Local::Reset
        );
        let req = if changes_conns {
            let Some(r) = self.exclusive(req) else {
                return;
            };
            r
        } else {
            req
        };
        if which == Local::Reset {
            self.txn = None;
            self.watch = None;
            self.dedicated.clear();
        }
        let proto = self.st.proto;
        let res = local::run(&self.proxy, &mut self.st, which, &req.args);
        if self.st.proto != proto {
            // Dedicated connections speak the old protocol.
            self.dedicated.clear();
        }
        let mut out = BytesMut::new();
        for r in &res.replies {
            r.encode(self.st.proto, &mut out);
        }
        let outcome = if res.replies.iter().any(|r| r.is_error()) {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        self.ready(out.freeze(), metric, outcome, start);
        if res.close {
            self.closing = true;
        }
    }

    /// A call that may block: alone on the wire, and the ones after it
    /// wait behind it (the barrier), as on a direct connection.
    fn blocking(
        &mut self,
        cmd: &crate::proxy::commands::Command,
        req: Parsed,
        metric: usize,
        start: Instant,
    ) {
        let Some(req) = self.exclusive(req) else {
            return;
        };
        match Self::slot_of(cmd, &req.args) {
            Err(()) => self.ready_err(CROSSSLOT, metric, start),
            Ok(slot) => {
                let target = slot.map_or(Target::AnyMaster, Target::Slot);
                let r = Routed::new(req.wire(), target, self.deadline(start), false).blocking();
                self.barrier = true;
                self.send_one(r, metric, start, Post::None);
            }
        }
    }

    /// A call sent to every master, and with `replicas` to every replica
    /// too, with the replies merged.
    fn everywhere(
        &mut self,
        req: &Parsed,
        merge: crate::proxy::commands::Merge,
        replicas: bool,
        metric: usize,
        start: Instant,
        readonly: bool,
    ) {
        let proxy = self.proxy.clone();
        let deadline = self.deadline(start);
        let mut f = fanout::all_masters(&proxy, &req.wire(), merge, deadline, readonly);
        if f.subs.is_empty() {
            return self.ready_err(crate::proxy::NO_TOPOLOGY, metric, start);
        }
        if replicas {
            let kind = self.kind();
            let map = proxy.router.load();
            for rep in map.shards.iter().flat_map(|s| &s.replicas) {
                if let Some(conn) = rep.shared(self.st.id, kind) {
                    let target = Target::Pinned(conn.clone(), rep.clone());
                    f.subs
                        .push(Routed::new(req.wire(), target, deadline, readonly));
                }
            }
        }
        self.send_fan(f, metric, start);
    }

    /// SCAN: the proxy's cursor names a slot and the node's cursor there,
    /// so one scan walks the shards in slot order.
    fn scan(&mut self, req: &Parsed, metric: usize, start: Instant) {
        let Some((slot, node_cursor)) = req.args.get(1).and_then(|c| fanout::scan_cursor(c)) else {
            return self.ready_err("ERR invalid cursor", metric, start);
        };
        let slot = if node_cursor == 0 && slot == 0 {
            match self.proxy.router.load().shard_first_slots().first() {
                Some(s) => *s,
                None => return self.ready_err(crate::proxy::NO_TOPOLOGY, metric, start),
            }
        } else {
            slot
        };
        let data = fanout::scan_request(&req.args, node_cursor);
        let r = Routed::new(data, Target::Slot(slot), self.deadline(start), true);
        self.send_one(r, metric, start, Post::Scan(slot));
    }

    /// A call naming its slot as an argument (CLUSTER COUNTKEYSINSLOT ...).
    fn slot_arg(&mut self, req: &Parsed, metric: usize, start: Instant) {
        let slot = req
            .args
            .get(2)
            .and_then(|s| crate::resp::parse_i64(s))
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| *s < 16384);
        let Some(slot) = slot else {
            return self.ready_err("ERR Invalid slot", metric, start);
        };
        let r = Routed::new(req.wire(), Target::Slot(slot), self.deadline(start), true);
        self.send_one(r, metric, start, Post::None);
    }

    fn keyed(
        &mut self,
        cmd: &crate::proxy::commands::Command,
        req: Parsed,
        metric: usize,
        start: Instant,
        readonly: bool,
    ) {
        match Self::slot_of(cmd, &req.args) {
            Err(()) => self.ready_err(CROSSSLOT, metric, start),
            Ok(slot) => {
                let target = slot.map_or(Target::AnyMaster, Target::Slot);
                let r = Routed::new(req.into_wire(), target, self.deadline(start), readonly);
                self.send_one(r, metric, start, Post::None);
            }
        }
    }

    fn send_fan(&mut self, mut f: Fanout, metric: usize, start: Instant) {
        let seq = self.next_seq();
        let mut cx = self.send_ctx();
        for (i, s) in f.subs.iter_mut().enumerate() {
            s.place(seq, i as u32);
            s.dispatch(&mut cx);
        }
        self.pending.push_back(Entry::Fan {
            f: Box::new(f),
            metric,
            start,
        });
    }

    /// Moves every finished reply at the front of the queue to `out`.
    fn collect(&mut self, out: &mut BytesMut) {
        let mut now: Option<Instant> = None;
        let mut n = 0u64;
        loop {
            let done = match self.pending.front() {
                None => false,
                Some(Entry::Ready { .. }) => true,
                Some(Entry::One { r, .. }) => r.is_done(),
                Some(Entry::Fan { f, .. }) => f.subs.iter().all(Routed::is_done),
            };
            if !done {
                break;
            }
            let Some(entry) = self.pending.pop_front() else {
                break;
            };
            self.base_seq += 1;
            self.out_start = Some(entry.start());
            let (bytes, outcome, metric, start) = match entry {
                Entry::Ready {
                    bytes,
                    metric,
                    outcome,
                    start,
                } => (bytes, outcome, metric, start),
                Entry::One {
                    mut r,
                    metric,
                    start,
                    post,
                } => {
                    let (bytes, outcome) = r
                        .take()
                        .unwrap_or_else(|| (error_frame("ERR proxy: internal"), Outcome::Error));
                    let bytes = match post {
                        Post::Scan(slot) if !is_error(&bytes) => {
                            fanout::scan_reply(&bytes, slot, &self.proxy.router.load())
                        }
                        _ => bytes,
                    };
                    (bytes, outcome, metric, start)
                }
                Entry::Fan {
                    mut f,
                    metric,
                    start,
                } => {
                    let replies = f
                        .subs
                        .iter_mut()
                        .map(|s| {
                            s.take().unwrap_or_else(|| {
                                (error_frame("ERR proxy: internal"), Outcome::Error)
                            })
                        })
                        .collect();
                    let (bytes, outcome) = fanout::merge(&f.plan, replies);
                    (bytes, outcome, metric, start)
                }
            };
            out.extend_from_slice(&bytes);
            let now = *now.get_or_insert_with(Instant::now);
            if let Some(m) = self.proxy.metrics.command(metric) {
                m.record(outcome, now.saturating_duration_since(start).as_secs_f64());
            }
            n += 1;
        }
        if n > 0 {
            self.proxy
                .commands_processed
                .fetch_add(n, Ordering::Relaxed);
            if let Some(now) = now {
                self.st.last_active = now.into_std();
            }
        }
        if self.pending.is_empty() {
            self.barrier = false;
        }
    }
}
