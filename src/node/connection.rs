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
use tokio::net::tcp::OwnedWriteHalf;
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
        let name = args.first().map_or(&[][..], |n| &n[..]);
        let reply = crate::node::cmd::contain_panic(name, || execute(&mut ctx, args));
        let action = ctx.action.take();
        let extra = std::mem::take(&mut ctx.extra);
        let first_deadline = resumed.take().map(|r| r.deadline);
        if let Some(Action::Block { keys, deadline }) = action {
            let deadline = first_deadline.unwrap_or_else(|| on_mono_clock(deadline, now));
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

/// Writes a reply too large to build, a chunk at a time. False when the
/// client went away, was killed, or the server is stopping mid-way.
async fn write_stream(
    replies: Vec<Reply>,
    client: &Client,
    shared: &Shared,
    handle: &ClientHandle,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    shutdown_rx: &mut tokio::sync::watch::Receiver<bool>,
    out: &mut BytesMut,
) -> bool {
    let mut stream = crate::resp::stream::ReplyStream::new(client.proto, replies);
    let limit = client_limit(&shared.config.load(), client);
    let mut total: u64 = 0;
    loop {
        let done = stream.fill(out, STREAM_CHUNK);
        // Redis builds such a reply whole before writing it, so its hard
        // limit cuts the reply once its size reaches the limit (the
        // "HRANDFIELD with huge count stopped mid-run" case).
        total += out.len() as u64;
        if limit.hard > 0 && total >= limit.hard {
            handle.log_output_limit_close(total);
            return false;
        }
        shared
            .stats
            .net_output_bytes
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        // A client that asked for 2^63 picks and stops reading must still
        // be killable, and must not hold up a shutdown.
        tokio::select! {
            biased;
            _ = handle.kill.notified() => return false,
            _ = shutdown_rx.changed() => return false,
            r = wr.write_all(out) => if r.is_err() { return false },
        }
        out.clear();
        if done {
            return true;
        }
    }
}

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

/// Serves one client until it quits, errs, is killed, or the server stops.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>, handle: Arc<ClientHandle>) {
    let _ = stream.set_nodelay(true);
    let authenticated = shared.config.load().requirepass.is_none();
    let (mut client, mut push_rx) = Client::new(handle.clone(), authenticated);
    let (mut rd, mut wr) = stream.into_split();
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut parser = RequestParser::new();
    let mut pending: VecDeque<Vec<Bytes>> = VecDeque::new();
    let mut shutdown_rx = shared.shutdown.subscribe();
    let mut resumed: Option<Resumed> = None;
    // Once set, no more is parsed: the connection closes after answering
    // what came before the bad request.
    let mut protocol_error = None;

    'conn: loop {
        handle.qbuf.store(rbuf.len() as u64, Ordering::Relaxed);
        let cfg = shared.config.load();
        let limits = Limits {
            max_bulk_len: cfg.proto_max_bulk_len,
            unauthenticated: !client.authenticated,
            ..Limits::default()
        };
        // Before AUTH, one request at a time: the limits change once it has
        // run, as Redis parses each request after the previous one ran.
        let mut parse_more = false;
        while protocol_error.is_none() {
            if limits.unauthenticated && !pending.is_empty() {
                parse_more = !rbuf.is_empty();
                break;
            }
            match parser.parse(&mut rbuf, &limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => pending.push_back(args),
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        let mut end = BatchEnd::Done;
        if !pending.is_empty() {
            let (e, durable) =
                run_batch(&shared, &mut client, &mut pending, &mut out, resumed.take());
            end = e;
            client.publish_batch(&shared.stats, crate::runtime::clock::mono_ms());
            // The log gets the writes before the client gets the replies;
            // with appendfsync always, only once they are on disk.
            if shared.aof.is_on() {
                match durable {
                    Some(offset) => shared.aof.wait_durable(offset).await,
                    None => {
                        shared.aof.write_pending();
                    }
                }
            }
        }
        if let Some(e) = &protocol_error {
            // Every request before the bad one runs and is answered first.
            if matches!(end, BatchEnd::Done) && pending.is_empty() {
                tracing::debug!(client = handle.id, error = %e, "protocol error, closing");
                Reply::Error(format!("ERR {e}")).encode(client.proto, &mut out);
            }
        }
        if !out.is_empty() {
            shared
                .stats
                .net_output_bytes
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            let limit = client_limit(&cfg, &client);
            if !write_limited(&mut wr, &out, &limit, &handle, &mut shutdown_rx).await {
                break;
            }
            out.clear();
        }
        match end {
            BatchEnd::Close => break,
            BatchEnd::Stream(replies) => {
                if !write_stream(
                    replies,
                    &client,
                    &shared,
                    &handle,
                    &mut wr,
                    &mut shutdown_rx,
                    &mut out,
                )
                .await
                {
                    break;
                }
                // The rest of the pipeline, if any, runs now.
                continue 'conn;
            }
            BatchEnd::Shutdown(opts) => {
                match crate::node::server::shutdown_sequence(&shared, opts).await {
                    Ok(()) => break,
                    Err(msg) => {
                        Reply::Error(msg).encode(client.proto, &mut out);
                        if wr.write_all(&out).await.is_err() {
                            break;
                        }
                        out.clear();
                    }
                }
            }
            BatchEnd::Block {
                keys,
                deadline,
                waker,
            } => {
                let wait = deadline.map(|d| Duration::from_millis(d.saturating_sub(mono_ms())));
                let sleep = async {
                    match wait {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::pin!(sleep);
                let mut gone = false;
                let mut timed_out = false;
                let blocked = Blocked::on(&handle, None);
                loop {
                    // Biased: a client that already hung up must be noticed
                    // before a wake-up, or it would pop an element that
                    // nobody receives.
                    tokio::select! {
                            biased;
                            _ = handle.kill.notified() => { gone = true; break; }
                            _ = shutdown_rx.changed() => { gone = true; break; }
                            r = rd.read_buf(&mut rbuf) => {
                                // Keep reading so a client that hangs up is noticed;
                                // its next commands wait behind the blocked one.
                                match r {
                                    Ok(0) | Err(_) => { gone = true; break; }
                                    Ok(n) => {
                        shared.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        handle.qbuf.store(rbuf.len() as u64, Ordering::Relaxed);
                    }
                                }
                            }
                            _ = waker.notified() => break,
                            _ = &mut sleep => { timed_out = true; break; }
                        }
                }
                drop(blocked);
                {
                    let mut st = shared.lock();
                    for k in &keys {
                        st.db.unblock(k, &waker);
                    }
                }
                if gone {
                    break;
                }
                resumed = Some(Resumed {
                    deadline,
                    timed_out,
                });
                continue 'conn;
            }
            BatchEnd::Paused => {
                // Wait for the end of the pause, then run the rest. Held,
                // the client counts as blocked, as in Redis.
                let _held = Blocked::on(&handle, Some(&shared.paused_clients));
                loop {
                    let until = shared.pause_until();
                    let now = crate::runtime::clock::mono_ms();
                    if until <= now {
                        break;
                    }
                    let mut gone = false;
                    tokio::select! {
                        biased;
                        _ = handle.kill.notified() => gone = true,
                        _ = shutdown_rx.changed() => gone = true,
                        _ = shared.unpaused.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis((until - now).min(100))) => {}
                    }
                    if gone {
                        break 'conn;
                    }
                }
                continue 'conn;
            }
            BatchEnd::Sync { psync } => {
                // A replica link is never a maxmemory-clients victim.
                handle.no_evict.store(true, Ordering::Relaxed);
                handle.qbuf.store(0, Ordering::Relaxed);
                let ip = client
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
                    listening_port: client.repl_listening_port,
                };
                let rest = std::mem::take(&mut rbuf);
                crate::node::replication::master::serve(
                    shared.clone(),
                    rd,
                    wr,
                    rest,
                    req,
                    handle.clone(),
                )
                .await;
                cleanup(&shared, &mut client);
                return;
            }
            BatchEnd::Wait {
                numreplicas,
                offset,
                deadline,
            } => {
                let repl = &shared.repl;
                let mut acks = repl.acks_rx();
                repl.request_ack();
                let sleep = async {
                    match deadline {
                        Some(d) => {
                            tokio::time::sleep(Duration::from_millis(d.saturating_sub(mono_ms())))
                                .await
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::pin!(sleep);
                let mut gone = false;
                let count = loop {
                    let n = repl.count_acked(offset);
                    if n >= numreplicas {
                        break n;
                    }
                    tokio::select! {
                            biased;
                            _ = handle.kill.notified() => { gone = true; break n; }
                            _ = shutdown_rx.changed() => { gone = true; break n; }
                            r = acks.changed() => if r.is_err() { break n; },
                            _ = &mut sleep => break repl.count_acked(offset),
                            r = rd.read_buf(&mut rbuf) => match r {
                                Ok(0) | Err(_) => { gone = true; break n; }
                                Ok(n) => {
                        shared.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        handle.qbuf.store(rbuf.len() as u64, Ordering::Relaxed);
                    }
                            },
                        }
                };
                if gone {
                    break;
                }
                encode_reply(&mut client, &Reply::Int(count as i64), &mut out);
                continue 'conn;
            }
            BatchEnd::Done => {}
        }
        if protocol_error.is_some() && pending.is_empty() {
            break;
        }
        if parse_more || !pending.is_empty() {
            continue 'conn;
        }
        let idle = cfg.timeout;
        let idle_sleep = async {
            if idle == 0 || client.subscription_count() > 0 {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep(Duration::from_secs(idle)).await;
            }
        };
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    shared.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    handle.qbuf.store(rbuf.len() as u64, Ordering::Relaxed);
                }
            },
            msg = push_rx.recv() => {
                let Some(msg) = msg else { break };
                // The bytes move from the queue to `out`, whose write the
                // same limit now watches.
                let mut taken = crate::node::pubsub::push_cost(&msg);
                msg.encode(client.proto, &mut out);
                while out.len() <= 64 * 1024 {
                    let Ok(m) = push_rx.try_recv() else { break };
                    taken += crate::node::pubsub::push_cost(&m);
                    m.encode(client.proto, &mut out);
                }
                handle.push_bytes.fetch_sub(taken, Ordering::AcqRel);
            }
            _ = handle.kill.notified() => break,
            _ = shutdown_rx.changed() => break,
            _ = idle_sleep => break,
        }
    }
    cleanup(&shared, &mut client);
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
