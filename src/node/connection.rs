//! One client connection: read → parse every complete request → run them
//! under one keyspace lock → write all replies in one go.
//!
//! Batching the pipeline under one lock acquisition is what makes pipelined
//! throughput competitive; replies always go out in request order. A command
//! that blocks (BLPOP ...) parks the rest of this client's pipeline until it
//! is served, like Redis.

use crate::node::client::{unix_ms, Client, ClientHandle};
use crate::node::cmd::{execute, Action, State};
use crate::node::shared::Shared;
use crate::resp::{Limits, Reply, RequestParser};
use crate::runtime::clock::mono_ms;
use crate::runtime::config::{NodeConfig, OutputLimit};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A blocked command about to be re-run.
struct Resumed {
    deadline: Option<u64>,
    timed_out: bool,
}

/// How a batch of pipelined commands ended.
enum BatchEnd {
    Done,
    Close,
    Shutdown(crate::node::cmd::ShutdownOpts),
    /// The front command blocked; `waker` is registered on `keys`.
    Block {
        keys: Vec<Bytes>,
        deadline: Option<u64>,
        waker: Arc<Notify>,
    },
    /// The front command waits for the end of a client pause.
    Paused,
    /// PSYNC/SYNC: the connection becomes a replica link.
    Sync {
        psync: Option<(String, String)>,
    },
    /// A reply too large to build (random picks by the billion): the
    /// connection writes it a chunk at a time before the rest of the
    /// pipeline runs.
    Stream(Vec<Reply>),
    /// WAIT: its reply is due once replicas acknowledged.
    Wait {
        numreplicas: usize,
        offset: u64,
        deadline: Option<u64>,
    },
}

/// Whether a pause holds this command back: every command under
/// CLIENT PAUSE ALL, else what writes or may write (Redis 7: `write` and
/// `may-replicate` commands, EXEC of a transaction that writes).
fn held_by_pause(all: bool, args: &[Bytes], client: &Client) -> bool {
    use crate::node::cmd::{flags, lookup};
    if client.is_master {
        return false;
    }
    if all {
        return true;
    }
    let Some(spec) = args.first().and_then(|n| lookup(n)) else {
        return false;
    };
    let may_write = |s: &crate::node::cmd::CommandSpec| {
        s.has(flags::WRITE)
            || matches!(
                s.name,
                "eval" | "evalsha" | "publish" | "spublish" | "script"
            )
    };
    if spec.name == "exec" {
        return client.multi.as_ref().is_some_and(|q| {
            q.iter()
                .any(|c| c.first().and_then(|n| lookup(n)).is_some_and(may_write))
        });
    }
    // Inside MULTI commands are only queued.
    !client.in_multi() && may_write(spec)
}

/// Runs queued commands until the queue is empty or one blocks.
///
/// `resumed` is set when the front command is one that blocked before and is
/// being re-run: `timed_out` says its deadline passed, and if it blocks again
/// it keeps `deadline` (the one of its first run) rather than restarting its
/// timeout on every wake-up that found nothing to take.
///
/// Also returns the append-only log offset the replies must wait for
/// (`appendfsync always`), when the batch wrote anything.
fn run_batch(
    shared: &Shared,
    client: &mut Client,
    pending: &mut VecDeque<Vec<Bytes>>,
    out: &mut BytesMut,
    mut resumed: Option<Resumed>,
) -> (BatchEnd, Option<u64>) {
    let mut guard = shared.lock();
    let now = unix_ms();
    shared.sync_state(&mut guard);
    let end = run_locked(&mut guard, shared, client, pending, out, &mut resumed, now);
    let mut durable = None;
    if guard.prop.has_output() || guard.db.log_deletions_pending() {
        guard.propagate_server_deletions();
        shared.propagated(&mut guard.prop);
        durable = shared.aof.durable_target();
    }
    (end, durable)
}

/// Commands state their timeouts as wall-clock deadlines (the time they
/// ran at plus the timeout); the wait runs on the monotonic clock, so a
/// step of the wall clock neither fires nor stretches a BLPOP timeout.
fn on_mono_clock(deadline: Option<u64>, wall_now: u64) -> Option<u64> {
    deadline.map(|d| mono_ms().saturating_add(d.saturating_sub(wall_now)))
}

/// A client waiting (on keys or for a pause to end): CLIENT LIST shows
/// it with flag `b`, and a paused one is counted in INFO's
/// `blocked_clients` (key waiters are counted by the keyspace).
struct Blocked<'a> {
    handle: &'a ClientHandle,
    count: Option<&'a AtomicU64>,
}

impl<'a> Blocked<'a> {
    fn on(handle: &'a ClientHandle, count: Option<&'a AtomicU64>) -> Blocked<'a> {
        handle.blocked.store(true, Ordering::Relaxed);
        if let Some(c) = count {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Blocked { handle, count }
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.handle.blocked.store(false, Ordering::Relaxed);
        if let Some(c) = self.count {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn run_locked(
    st: &mut State,
    shared: &Shared,
    client: &mut Client,
    pending: &mut VecDeque<Vec<Bytes>>,
    out: &mut BytesMut,
    resumed: &mut Option<Resumed>,
    now: u64,
) -> BatchEnd {
    while let Some(args) = pending.front() {
        if let Some(all) = shared.paused() {
            if held_by_pause(all, args, client) {
                return BatchEnd::Paused;
            }
        }
        let mut ctx = st.ctx(client, shared, now);
        ctx.timed_out = resumed.as_ref().is_some_and(|r| r.timed_out);
        ctx.resumed = resumed.is_some();
        let name = args.first().map_or(&[][..], |n| &n[..]);
        let reply = crate::node::cmd::contain_panic(name, || execute(&mut ctx, args));
        let action = ctx.action.take();
        let rerun = ctx.rerun.take();
        let extra = std::mem::take(&mut ctx.extra);
        let first_deadline = resumed.take().map(|r| r.deadline);
        if let Some(Action::Block { keys, deadline }) = action {
            let deadline = first_deadline.unwrap_or_else(|| on_mono_clock(deadline, now));
            if let (Some(new), Some(front)) = (rerun, pending.front_mut()) {
                *front = new;
            }
            let waker = Arc::new(Notify::new());
            for k in &keys {
                st.db.block_on(k, &waker);
            }
            return BatchEnd::Block {
                keys,
                deadline,
                waker,
            };
        }
        pending.pop_front();
        match action {
            Some(Action::Sync { psync }) => return BatchEnd::Sync { psync },
            Some(Action::Wait {
                numreplicas,
                offset,
                deadline,
            }) => {
                return BatchEnd::Wait {
                    numreplicas,
                    offset,
                    deadline: on_mono_clock(deadline, now),
                }
            }
            _ => {}
        }
        if reply.is_error() {
            shared.stats.error_replies.fetch_add(1, Ordering::Relaxed);
        }
        if reply.is_lazy() && action.is_none() && client.takes_reply() {
            let mut replies = vec![reply];
            replies.extend(extra);
            return BatchEnd::Stream(replies);
        }
        encode_reply(client, &reply, out);
        for r in &extra {
            encode_reply(client, r, out);
        }
        match action {
            Some(Action::Close) => return BatchEnd::Close,
            Some(Action::Shutdown(opts)) => return BatchEnd::Shutdown(opts),
            _ => {}
        }
        // A long pipeline's replies go out in slices: the memory a client
        // can make the node hold is one slice (or one reply), not the sum.
        if out.len() >= BATCH_OUT_CAP {
            break;
        }
    }
    BatchEnd::Done
}

fn encode_reply(client: &mut Client, reply: &Reply, out: &mut BytesMut) {
    if client.skip_replies > 0 {
        client.skip_replies -= 1;
        return;
    }
    if client.reply_off {
        return;
    }
    reply.encode(client.proto, out);
}

/// Reply bytes after which a batch of pipelined commands stops to write.
const BATCH_OUT_CAP: usize = 1 << 20;

/// Bytes of a streamed reply encoded before they are written: big enough
/// for few syscalls, small enough that the reply's size never shows in
/// memory.
const STREAM_CHUNK: usize = 64 * 1024;

/// The output-buffer limit of this client's class: pubsub while it has
/// subscriptions (in RESP2 and RESP3 alike, as Redis), else normal.
fn client_limit(cfg: &NodeConfig, client: &Client) -> OutputLimit {
    if client.subscription_count() > 0 {
        cfg.output_limits.pubsub
    } else {
        cfg.output_limits.normal
    }
}

/// Writes `out` to the client under its output-buffer limit: a reply at or
/// over the hard limit closes the connection unsent, and one left at or
/// over the soft limit for longer than its seconds (a client that stopped
/// reading) closes it mid-way, as Redis does. A kill or shutdown also ends
/// the write. False when the connection must close.
async fn write_limited(
    wr: &mut OwnedWriteHalf,
    out: &[u8],
    limit: &OutputLimit,
    handle: &ClientHandle,
    shutdown_rx: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut pos = 0;
    let mut soft_since = None;
    // Most writes fit in the socket buffer at once: no timers, no futures.
    if limit.hard == 0 || (out.len() as u64) < limit.hard {
        match wr.try_write(out) {
            Ok(n) => pos = n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    while pos < out.len() {
        let pending = (out.len() - pos) as u64;
        handle.obuf.store(pending, Ordering::Relaxed);
        let now = mono_ms();
        if limit.exceeded(pending, &mut soft_since, now) {
            handle.log_output_limit_close(pending);
            return false;
        }
        let recheck = async {
            match soft_since {
                Some(since) => {
                    let due = since + limit.soft_secs.saturating_mul(1000) + 1;
                    tokio::time::sleep(Duration::from_millis(due.saturating_sub(now))).await
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            _ = handle.kill.notified() => return false,
            _ = shutdown_rx.changed() => return false,
            r = wr.write(out.get(pos..).unwrap_or_default()) => match r {
                Ok(0) | Err(_) => return false,
                Ok(n) => pos += n,
            },
            _ = recheck => {}
        }
    }
    handle.obuf.store(0, Ordering::Relaxed);
    true
}

/// What the connection does after one turn of its loop.
enum Step {
    /// Parse and run what is buffered, or wait for more.
    Again,
    Close,
    /// PSYNC/SYNC: hand the socket to the replication master side.
    Replica(Option<(String, String)>),
}

/// How a wait on keys ended.
enum Woke {
    Gone,
    Ready,
    TimedOut,
    /// The node became a replica.
    Demoted,
    /// The key's slot is no longer served here.
    Redirected(Reply),
}

/// Sleeps until a monotonic deadline, or forever without one.
async fn sleep_until_mono(deadline: Option<u64>) {
    match deadline {
        Some(d) => tokio::time::sleep(Duration::from_millis(d.saturating_sub(mono_ms()))).await,
        None => std::future::pending::<()>().await,
    }
}

/// The state of one client connection between turns of its loop.
struct Conn {
    shared: Arc<Shared>,
    handle: Arc<ClientHandle>,
    client: Client,
    push_rx: tokio::sync::mpsc::Receiver<Reply>,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    rbuf: BytesMut,
    out: BytesMut,
    parser: RequestParser,
    pending: VecDeque<Vec<Bytes>>,
    shutdown_rx: tokio::sync::watch::Receiver<bool>,
    resumed: Option<Resumed>,
    /// Once set, no more is parsed: the connection closes after answering
    /// what came before the bad request.
    protocol_error: Option<crate::resp::request::ProtocolError>,
}

/// Serves one client until it quits, errs, is killed, or the server stops.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>, handle: Arc<ClientHandle>) {
    let mut conn = Conn::new(stream, shared, handle);
    loop {
        match conn.turn().await {
            Step::Again => {}
            Step::Close => break,
            Step::Replica(psync) => return conn.become_replica(psync).await,
        }
    }
    cleanup(&conn.shared, &mut conn.client);
}

impl Conn {
    fn new(stream: TcpStream, shared: Arc<Shared>, handle: Arc<ClientHandle>) -> Conn {
        let _ = stream.set_nodelay(true);
        let authenticated = shared.config.load().requirepass.is_none();
        let (client, push_rx) = Client::new(handle.clone(), authenticated);
        let (rd, wr) = stream.into_split();
        let shutdown_rx = shared.shutdown.subscribe();
        Conn {
            shared,
            handle,
            client,
            push_rx,
            rd,
            wr,
            rbuf: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::with_capacity(16 * 1024),
            parser: RequestParser::new(),
            pending: VecDeque::new(),
            shutdown_rx,
            resumed: None,
            protocol_error: None,
        }
    }

    /// Parse, run, answer, then wait for whatever the batch ended on.
    async fn turn(&mut self) -> Step {
        self.handle
            .qbuf
            .store(self.rbuf.len() as u64, Ordering::Relaxed);
        let cfg = self.shared.config.load();
        let parse_more = self.parse_requests(cfg.proto_max_bulk_len);
        let end = self.run_pending().await;
        if let Some(e) = &self.protocol_error {
            // Every request before the bad one runs and is answered first.
            if matches!(end, BatchEnd::Done) && self.pending.is_empty() {
                tracing::debug!(client = self.handle.id, error = %e, "protocol error, closing");
                Reply::Error(format!("ERR {e}")).encode(self.client.proto, &mut self.out);
            }
        }
        if !self.flush(&client_limit(&cfg, &self.client)).await {
            return Step::Close;
        }
        match end {
            BatchEnd::Done => self.after_batch(cfg.timeout, parse_more).await,
            BatchEnd::Close => Step::Close,
            BatchEnd::Stream(replies) => match self.write_stream(replies).await {
                // The rest of the pipeline, if any, runs now.
                true => Step::Again,
                false => Step::Close,
            },
            BatchEnd::Shutdown(opts) => match self.shutdown(opts).await {
                true => self.after_batch(cfg.timeout, parse_more).await,
                false => Step::Close,
            },
            BatchEnd::Block {
                keys,
                deadline,
                waker,
            } => self.wait_keys(keys, deadline, waker).await,
            BatchEnd::Paused => self.wait_unpause().await,
            BatchEnd::Sync { psync } => Step::Replica(psync),
            BatchEnd::Wait {
                numreplicas,
                offset,
                deadline,
            } => self.wait_replicas(numreplicas, offset, deadline).await,
        }
    }

    /// Moves every complete request from the read buffer to `pending`.
    /// True when requests are left unparsed on purpose (before AUTH).
    fn parse_requests(&mut self, max_bulk_len: usize) -> bool {
        let limits = Limits {
            max_bulk_len,
            unauthenticated: !self.client.authenticated,
            ..Limits::default()
        };
        while self.protocol_error.is_none() {
            // Before AUTH, one request at a time: the limits change once it
            // has run, as Redis parses each request after the previous one ran.
            if limits.unauthenticated && !self.pending.is_empty() {
                return !self.rbuf.is_empty();
            }
            match self.parser.parse(&mut self.rbuf, &limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => self.pending.push_back(args),
                Ok(None) => break,
                Err(e) => self.protocol_error = Some(e),
            }
        }
        false
    }

    /// Runs what is pending; the log gets the writes before the client
    /// gets the replies (with appendfsync always, only once on disk).
    async fn run_pending(&mut self) -> BatchEnd {
        if self.pending.is_empty() {
            return BatchEnd::Done;
        }
        let (end, durable) = run_batch(
            &self.shared,
            &mut self.client,
            &mut self.pending,
            &mut self.out,
            self.resumed.take(),
        );
        self.client.publish_batch(&self.shared.stats, mono_ms());
        let aof = &self.shared.aof;
        if aof.is_on() {
            match durable {
                Some(offset) => aof.wait_durable(offset).await,
                None => {
                    aof.write_pending();
                }
            }
        }
        end
    }

    /// Writes the replies built so far. False when the connection must close.
    async fn flush(&mut self, limit: &OutputLimit) -> bool {
        if self.out.is_empty() {
            return true;
        }
        self.shared
            .stats
            .net_output_bytes
            .fetch_add(self.out.len() as u64, Ordering::Relaxed);
        let ok = write_limited(
            &mut self.wr,
            &self.out,
            limit,
            &self.handle,
            &mut self.shutdown_rx,
        )
        .await;
        self.out.clear();
        ok
    }

    /// Accounts for bytes read while waiting. False when the client left.
    fn took_input(&self, read: std::io::Result<usize>) -> bool {
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                let stats = &self.shared.stats;
                stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                self.handle
                    .qbuf
                    .store(self.rbuf.len() as u64, Ordering::Relaxed);
                true
            }
        }
    }

    /// Writes a reply too large to build, a chunk at a time. False when the
    /// client went away, was killed, or the server is stopping mid-way.
    async fn write_stream(&mut self, replies: Vec<Reply>) -> bool {
        let mut stream = crate::resp::stream::ReplyStream::new(self.client.proto, replies);
        let limit = client_limit(&self.shared.config.load(), &self.client);
        let mut total: u64 = 0;
        loop {
            let done = stream.fill(&mut self.out, STREAM_CHUNK);
            // Redis builds such a reply whole before writing it, so its hard
            // limit cuts the reply once its size reaches the limit (the
            // "HRANDFIELD with huge count stopped mid-run" case).
            total += self.out.len() as u64;
            if limit.hard > 0 && total >= limit.hard {
                self.handle.log_output_limit_close(total);
                return false;
            }
            self.shared
                .stats
                .net_output_bytes
                .fetch_add(self.out.len() as u64, Ordering::Relaxed);
            // A client that asked for 2^63 picks and stops reading must
            // still be killable, and must not hold up a shutdown.
            tokio::select! {
                biased;
                _ = self.handle.kill.notified() => return false,
                _ = self.shutdown_rx.changed() => return false,
                r = self.wr.write_all(&self.out) => if r.is_err() { return false },
            }
            self.out.clear();
            if done {
                return true;
            }
        }
    }

    /// SHUTDOWN: true when it was refused and the connection goes on.
    async fn shutdown(&mut self, opts: crate::node::cmd::ShutdownOpts) -> bool {
        let Err(msg) = crate::node::server::shutdown_sequence(&self.shared, opts).await else {
            return false;
        };
        Reply::Error(msg).encode(self.client.proto, &mut self.out);
        let ok = self.wr.write_all(&self.out).await.is_ok();
        self.out.clear();
        ok
    }

    /// A blocked command waits for its keys, its timeout, or the client
    /// to go; then it runs again.
    async fn wait_keys(
        &mut self,
        keys: Vec<Bytes>,
        deadline: Option<u64>,
        waker: Arc<Notify>,
    ) -> Step {
        let sleep = sleep_until_mono(deadline);
        tokio::pin!(sleep);
        let handle = self.handle.clone();
        let blocked = Blocked::on(&handle, None);
        let mut demoted = self.shared.repl.demoted_rx();
        let cluster = self.shared.cluster.clone();
        let mut views = cluster.as_ref().map(|c| c.view_rx());
        // Only a blocking read flagged READONLY (XREAD) may wait on a
        // READONLY replica connection; pops and moves are writes a replica
        // never serves, so those are redirected like any write.
        let readonly_read = self.client.readonly
            && self
                .pending
                .front()
                .and_then(|c| c.first())
                .and_then(|n| crate::node::cmd::lookup(n))
                .is_some_and(|spec| spec.has(crate::node::cmd::flags::READONLY));
        let woke = loop {
            // Biased: a client that already hung up must be noticed before
            // a wake-up, or it would pop an element that nobody receives.
            tokio::select! {
                biased;
                _ = handle.kill.notified() => break Woke::Gone,
                _ = self.shutdown_rx.changed() => break Woke::Gone,
                // Keep reading so a client that hangs up is noticed; its
                // next commands wait behind the blocked one.
                r = self.rd.read_buf(&mut self.rbuf) => if !self.took_input(r) {
                    break Woke::Gone;
                },
                _ = demoted.changed() => break Woke::Demoted,
                Some(Ok(())) = async { match views.as_mut() {
                    Some(v) => Some(v.changed().await),
                    None => None,
                } } => {
                    let redirect = cluster.as_ref().zip(keys.first()).and_then(|(c, k)| {
                        crate::node::cluster::blocked_redirect(&c.view.load(), k, readonly_read)
                    });
                    if let Some(r) = redirect {
                        break Woke::Redirected(r.reply());
                    }
                },
                _ = waker.notified() => break Woke::Ready,
                _ = &mut sleep => break Woke::TimedOut,
            }
        };
        drop(blocked);
        {
            let mut st = self.shared.lock();
            for k in &keys {
                st.db.unblock(k, &waker);
            }
        }
        let timed_out = match woke {
            Woke::Gone => return Step::Close,
            Woke::Ready => false,
            Woke::TimedOut => true,
            Woke::Demoted => {
                // As Redis: the error, then the connection closes.
                Reply::error(
                    "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)",
                )
                .encode(self.client.proto, &mut self.out);
                let _ = self.wr.write_all(&self.out).await;
                self.out.clear();
                return Step::Close;
            }
            Woke::Redirected(reply) => {
                // The blocked command is answered with the redirect; what
                // the client pipelined after it runs next.
                self.pending.pop_front();
                reply.encode(self.client.proto, &mut self.out);
                return Step::Again;
            }
        };
        self.resumed = Some(Resumed {
            deadline,
            timed_out,
        });
        Step::Again
    }

    /// Waits for the end of a client pause, then the rest runs. Held, the
    /// client counts as blocked, as in Redis.
    async fn wait_unpause(&mut self) -> Step {
        let shared = self.shared.clone();
        let handle = self.handle.clone();
        let _held = Blocked::on(&handle, Some(&shared.paused_clients));
        loop {
            let until = shared.pause_until();
            let now = mono_ms();
            if until <= now {
                return Step::Again;
            }
            tokio::select! {
                biased;
                _ = handle.kill.notified() => return Step::Close,
                _ = self.shutdown_rx.changed() => return Step::Close,
                _ = shared.unpaused.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis((until - now).min(100))) => {}
            }
        }
    }

    /// WAIT: answers once enough replicas acknowledged `offset`, or at the
    /// deadline with how many did.
    async fn wait_replicas(
        &mut self,
        numreplicas: usize,
        offset: u64,
        deadline: Option<u64>,
    ) -> Step {
        let shared = self.shared.clone();
        let repl = &shared.repl;
        let mut acks = repl.acks_rx();
        repl.request_ack();
        let sleep = sleep_until_mono(deadline);
        tokio::pin!(sleep);
        let count = loop {
            let n = repl.count_acked(offset);
            if n >= numreplicas {
                break n;
            }
            tokio::select! {
                biased;
                _ = self.handle.kill.notified() => return Step::Close,
                _ = self.shutdown_rx.changed() => return Step::Close,
                r = acks.changed() => if r.is_err() { break n; },
                _ = &mut sleep => break repl.count_acked(offset),
                r = self.rd.read_buf(&mut self.rbuf) => if !self.took_input(r) {
                    return Step::Close;
                },
            }
        };
        encode_reply(&mut self.client, &Reply::Int(count as i64), &mut self.out);
        Step::Again
    }

    /// After a batch that ran to its end: close after a protocol error,
    /// run what is still queued, or wait for input.
    async fn after_batch(&mut self, idle_secs: u64, parse_more: bool) -> Step {
        if self.protocol_error.is_some() && self.pending.is_empty() {
            return Step::Close;
        }
        if parse_more || !self.pending.is_empty() {
            return Step::Again;
        }
        self.wait_input(idle_secs).await
    }

    /// Waits for the next request, a pub/sub push, a kill, or the idle
    /// timeout (never for a subscriber, as Redis).
    async fn wait_input(&mut self, idle_secs: u64) -> Step {
        let subscriber = self.client.subscription_count() > 0;
        let idle_sleep = async {
            if idle_secs == 0 || subscriber {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep(Duration::from_secs(idle_secs)).await;
            }
        };
        tokio::select! {
            r = self.rd.read_buf(&mut self.rbuf) => if !self.took_input(r) {
                return Step::Close;
            },
            msg = self.push_rx.recv() => {
                let Some(msg) = msg else { return Step::Close };
                self.encode_pushes(msg);
            }
            _ = self.handle.kill.notified() => return Step::Close,
            _ = self.shutdown_rx.changed() => return Step::Close,
            _ = idle_sleep => return Step::Close,
        }
        Step::Again
    }

    /// Moves queued pushes into `out`, whose write the same output limit
    /// then watches.
    fn encode_pushes(&mut self, first: Reply) {
        let mut taken = crate::node::pubsub::push_cost(&first);
        first.encode(self.client.proto, &mut self.out);
        while self.out.len() <= 64 * 1024 {
            let Ok(m) = self.push_rx.try_recv() else {
                break;
            };
            taken += crate::node::pubsub::push_cost(&m);
            m.encode(self.client.proto, &mut self.out);
        }
        self.handle.push_bytes.fetch_sub(taken, Ordering::AcqRel);
    }

    /// The connection becomes a replica link until the replica goes.
    async fn become_replica(mut self, psync: Option<(String, String)>) {
        // A replica link is never a maxmemory-clients victim.
        self.handle.no_evict.store(true, Ordering::Relaxed);
        self.handle.qbuf.store(0, Ordering::Relaxed);
        let handle = &self.handle;
        let ip = self
            .client
            .repl_ip
            .clone()
            .or_else(|| {
                handle
                    .addr
                    .rsplit_once(':')
                    .map(|(ip, _)| ip.trim_matches(['[', ']']).to_string())
            })
            .unwrap_or_default();
        let req = crate::node::replication::master::SyncRequest {
            psync,
            ip,
            listening_port: self.client.repl_listening_port,
        };
        crate::node::replication::master::serve(
            self.shared.clone(),
            self.rd,
            self.wr,
            self.rbuf,
            req,
            self.handle.clone(),
        )
        .await;
        cleanup(&self.shared, &mut self.client);
    }
}

/// Forgets everything the server knows about a departing client.
fn cleanup(shared: &Shared, client: &mut Client) {
    if !client.watched.is_empty() {
        let mut st = shared.lock();
        for k in client.watched.drain(..) {
            st.db.unwatch(&k, &client.watch_dirty);
        }
    }
    if client.subscription_count() > 0 {
        shared.pubsub.lock().remove_client(client.id());
    }
    shared.clients.lock().remove(&client.id());
}
