//! One request on its way to the cluster: where it goes, and what happens
//! on each answer — MOVED (update the map, resend), ASK (ASKING + resend to
//! the target, map unchanged), TRYAGAIN / CLUSTERDOWN / LOADING and
//! unreachable masters (retry with backoff, waking early on a new map),
//! a connection lost with the request in flight (error for writes, resend
//! for reads), all within the request's deadline.
//!
//! [`Routed`] is a state machine: every transition is synchronous (sending
//! is a channel push), only waiting is async, so a session can wait for its
//! oldest request in a `select!` with its socket without losing anything.

use crate::proxy::backend::{Conn, Kind, Mailbox, Outcome as Wire, Pool, ReplyTo, Tag};
use crate::proxy::metrics::{Outcome, Retry};
use crate::proxy::Proxy;
use crate::resp::scan::{error_text, split_frames};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a request goes.
#[derive(Clone)]
pub enum Target {
    /// The master of a slot (or one of its replicas for reads when allowed).
    Slot(u16),
    /// Any master (keyless commands).
    AnyMaster,
    /// A connection of this client's own (WATCH and the EXEC after it):
    /// never re-routed, its state lives on that node.
    Pinned(Conn, Arc<Pool>),
}

/// What the reply needs before the client sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Post {
    Plain,
    /// A `MULTI` ... `EXEC` block: only the last frame (EXEC's) goes back.
    LastFrame,
}

/// Everything a request needs from its session to be sent.
pub struct SendCtx<'a> {
    pub proxy: &'a Proxy,
    pub client: u64,
    pub kind: Kind,
    /// Reads may go to replicas.
    pub replica_reads: bool,
    /// This client's dedicated connections per node (blocking commands).
    pub dedicated: &'a mut HashMap<String, Conn>,
    /// Where replies to this client's requests arrive.
    pub mailbox: &'a Arc<Mailbox>,
}

enum State {
    /// Not sent yet, or its reply was taken.
    Idle,
    /// Sent; the reply will come to the session's mailbox with this tag.
    InFlight(Tag),
    Wait(Instant),
    Done(Bytes, Outcome),
}

/// What woke a waiting request (replies come through the mailbox).
pub enum Event {
    Deadline,
    Retry,
}

pub struct Routed {
    data: Bytes,
    frames: u32,
    pub target: Target,
    post: Post,
    /// A read: may go to a replica, and may be resent after a lost
    /// connection.
    readonly: bool,
    /// May block on the node (BLPOP ...): own connection, no reply deadline.
    blocking: bool,
    state: State,
    deadline: Instant,
    redirects: u32,
    attempts: u32,
    asking: bool,
    node: Option<Arc<Pool>>,
    /// Where this request sits in its session (see [`Tag`]).
    tag: Tag,
}

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// Classes of error replies the proxy acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect {
    Moved(u16, String),
    Ask(u16, String),
    TryAgain,
    ClusterDown,
    Loading,
}

/// Reads an error reply's class (only error replies are looked at).
pub fn classify(frame: &[u8]) -> Option<Redirect> {
    let text = error_text(frame)?;
    let word = text.split(|&b| b == b' ').next().unwrap_or_default();
    let redirect = |ask: bool| {
        let mut parts = text.split(|&b| b == b' ').skip(1);
        let slot = std::str::from_utf8(parts.next()?)
            .ok()?
            .parse::<u16>()
            .ok()?;
        let addr = std::str::from_utf8(parts.next()?).ok()?;
        let addr = if addr.starts_with(':') {
            // Redis 7 may omit an unknown endpoint: `MOVED 1 :7000`.
            format!("127.0.0.1{addr}")
        } else {
            addr.to_string()
        };
        Some(if ask {
            Redirect::Ask(slot, addr)
        } else {
            Redirect::Moved(slot, addr)
        })
    };
    match word {
        b"MOVED" => redirect(false),
        b"ASK" => redirect(true),
        b"TRYAGAIN" => Some(Redirect::TryAgain),
        b"CLUSTERDOWN" => Some(Redirect::ClusterDown),
        b"LOADING" => Some(Redirect::Loading),
        _ => None,
    }
}

/// An error reply in RESP (the text must not contain CR/LF).
pub fn error_frame(text: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(text.len() + 3);
    b.extend_from_slice(b"-");
    b.extend(
        text.bytes()
            .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    b.extend_from_slice(b"\r\n");
    b.freeze()
}

impl Routed {
    /// A request that must be answered by `deadline` (retries and waits for
    /// a failover included).
    pub fn new(data: Bytes, target: Target, deadline: Instant, readonly: bool) -> Routed {
        Routed {
            data,
            frames: 1,
            target,
            post: Post::Plain,
            readonly,
            blocking: false,
            state: State::Idle,
            deadline,
            redirects: 0,
            attempts: 0,
            asking: false,
            node: None,
            tag: Tag::default(),
        }
    }

    /// Places the request in its session's queue: `seq` of its entry and
    /// its index among the entry's sub-requests.
    pub fn place(&mut self, seq: u64, sub: u32) {
        self.tag.seq = seq;
        self.tag.sub = sub;
    }

    /// A block of `frames` commands (MULTI ... EXEC).
    pub fn block(mut self, frames: u32) -> Routed {
        self.frames = frames;
        self.post = Post::LastFrame;
        self
    }

    pub fn blocking(mut self) -> Routed {
        self.blocking = true;
        self
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(..))
    }

    /// The final reply, once done.
    pub fn take(&mut self) -> Option<(Bytes, Outcome)> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Done(b, o) => Some((b, o)),
            other => {
                self.state = other;
                None
            }
        }
    }

    pub fn peek(&self) -> Option<&Bytes> {
        match &self.state {
            State::Done(b, _) => Some(b),
            _ => None,
        }
    }

    fn finish(&mut self, reply: Bytes, outcome: Outcome) {
        self.state = State::Done(reply, outcome);
    }

    fn fail(&mut self, text: &str, outcome: Outcome) {
        self.finish(error_frame(text), outcome);
    }

    /// Sends (or resends) the request to where it belongs now.
    pub fn dispatch(&mut self, cx: &mut SendCtx<'_>) {
        self.dispatch_to(cx, None);
    }

    fn dispatch_to(&mut self, cx: &mut SendCtx<'_>, ask: Option<Arc<Pool>>) {
        let proxy = cx.proxy;
        let mut kind = cx.kind;
        let pinned = ask.is_none() && self.pinned();
        let pool: Arc<Pool> = if let Some(pool) = ask {
            pool
        } else {
            match &self.target {
                Target::Pinned(_, pool) => pool.clone(),
                Target::Slot(slot) => {
                    let map = proxy.router.load();
                    if map.epoch == 0 {
                        return self.fail(crate::proxy::NO_TOPOLOGY, Outcome::Error);
                    }
                    let Some(shard) = map.shard_of(*slot) else {
                        return self.fail("CLUSTERDOWN Hash slot not served", Outcome::Error);
                    };
                    let use_replica = self.readonly
                        && cx.replica_reads
                        && !self.blocking
                        && self.post == Post::Plain;
                    kind.replica_reads = use_replica;
                    if use_replica && !shard.replicas.is_empty() {
                        let n = shard.replicas.len() as u64;
                        let pick = shard
                            .replicas
                            .get(((cx.client + u64::from(self.attempts)) % n) as usize)
                            .filter(|p| !p.is_down());
                        pick.unwrap_or(&shard.master).clone()
                    } else {
                        shard.master.clone()
                    }
                }
                Target::AnyMaster => {
                    let map = proxy.router.load();
                    let n = map.shards.len();
                    if n == 0 {
                        return self.fail(crate::proxy::NO_TOPOLOGY, Outcome::Error);
                    }
                    let start = proxy.rotate.fetch_add(1, Ordering::Relaxed) as usize;
                    let pick = (0..n)
                        .filter_map(|i| map.shards.get((start + i) % n))
                        .find(|s| !s.master.is_down())
                        .or_else(|| map.shards.get(start % n));
                    let Some(shard) = pick else {
                        return self.fail("CLUSTERDOWN The cluster is down", Outcome::Error);
                    };
                    shard.master.clone()
                }
            }
        };
        self.tag.gen = self.tag.gen.wrapping_add(1);
        let reply = ReplyTo {
            mailbox: cx.mailbox.clone(),
            tag: self.tag,
        };
        let (head, frames): (&[u8], u32) = if self.asking {
            (ASKING, self.frames + 1)
        } else {
            (&[], self.frames)
        };
        let parts = [head, &self.data[..]];
        match &self.target {
            Target::Pinned(conn, _) if pinned => conn.send(&parts, frames, reply),
            _ if self.blocking => dedicated(cx, &pool).send(&parts, frames, reply),
            _ => match pool.shared(cx.client, kind) {
                Some(c) => c.send(&parts, frames, reply),
                None => return self.fail("ERR proxy: no connection", Outcome::Error),
            },
        }
        self.node = Some(pool);
        self.state = State::InFlight(self.tag);
    }

    /// When this request gives up waiting for a reply, if it is waiting for
    /// one with a deadline (the session keeps one timer for its oldest
    /// request instead of one per request).
    pub fn reply_deadline(&self) -> Option<Instant> {
        match self.state {
            State::InFlight(_) if !self.blocking => Some(self.deadline),
            _ => None,
        }
    }

    /// Whether this request waits for a reply from a node.
    pub fn in_flight(&self) -> bool {
        matches!(self.state, State::InFlight(_))
    }

    /// Whether this request waits for a retry (its backoff or a new slot
    /// map), not for a reply.
    pub fn waits_to_retry(&self) -> bool {
        matches!(self.state, State::Wait(_) | State::Idle)
    }

    /// Waits until it is time to retry (see
    /// [`waits_to_retry`](Self::waits_to_retry)). Cancel-safe.
    pub async fn wait(&mut self, epochs: &mut watch::Receiver<u64>) -> Event {
        match &mut self.state {
            State::Wait(at) => {
                let at = *at;
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => Event::Retry,
                    _ = epochs.changed() => Event::Retry,
                }
            }
            State::Idle => Event::Retry,
            State::InFlight(_) | State::Done(..) => std::future::pending().await,
        }
    }

    /// A reply (or a connection's verdict) for this request arrived. Stale
    /// ones, for an earlier attempt, are dropped.
    pub fn on_reply(&mut self, tag: Tag, w: Wire, cx: &mut SendCtx<'_>) {
        if matches!(self.state, State::InFlight(t) if t == tag) {
            self.on_wire(w, cx);
        }
    }

    /// Applies what [`wait`](Self::wait) returned.
    pub fn on_event(&mut self, ev: Event, cx: &mut SendCtx<'_>) {
        match ev {
            Event::Retry => {
                if matches!(self.state, State::Wait(_) | State::Idle) {
                    self.dispatch(cx);
                }
            }
            Event::Deadline => {
                if !matches!(self.state, State::InFlight(_)) || Instant::now() < self.deadline {
                    return;
                }
                if let Some(n) = &self.node {
                    n.metrics.error("timeout");
                }
                let node = self.node_name();
                self.fail(
                    &format!(
                        "ERR proxy: no reply from {node} within {} ms",
                        cx.proxy.cfg.request_deadline_ms
                    ),
                    Outcome::Timeout,
                );
            }
        }
    }

    fn node_name(&self) -> String {
        self.node
            .as_ref()
            .map_or_else(|| "the cluster".to_string(), |p| p.addr.clone())
    }

    fn pinned(&self) -> bool {
        matches!(self.target, Target::Pinned(..))
    }

    fn on_wire(&mut self, w: Wire, cx: &mut SendCtx<'_>) {
        let metrics = &cx.proxy.metrics;
        match w {
            Wire::Reply(mut bytes) => {
                if self.asking {
                    // Drop ASKING's +OK.
                    if let Ok(Some(n)) = crate::resp::scan::frame_len(&bytes) {
                        let _ = bytes.split_to(n);
                    }
                    self.asking = false;
                }
                let redirect = match self.post {
                    Post::Plain => classify(&bytes),
                    // In a block, a queued command's redirect aborts EXEC.
                    Post::LastFrame => split_frames(bytes.clone())
                        .ok()
                        .and_then(|f| f.iter().find_map(|f| classify(f))),
                };
                let Some(redirect) = redirect else {
                    let reply = match self.post {
                        Post::Plain => bytes,
                        Post::LastFrame => split_frames(bytes.clone())
                            .ok()
                            .and_then(|mut f| f.pop())
                            .unwrap_or(bytes),
                    };
                    let outcome = if reply.first() == Some(&b'-') || reply.first() == Some(&b'!') {
                        Outcome::Error
                    } else {
                        Outcome::Ok
                    };
                    return self.finish(reply, outcome);
                };
                match redirect {
                    Redirect::Moved(slot, addr) => {
                        metrics.moved.inc();
                        cx.proxy.router.refresh_now.notify_one();
                        self.redirects += 1;
                        if self.redirects > cx.proxy.cfg.max_redirects || self.pinned() {
                            return self.finish(bytes, Outcome::RedirectError);
                        }
                        cx.proxy.router.moved(slot, &addr);
                        if let Target::Slot(s) = self.target {
                            if s != slot {
                                // A block's slot is its first key's.
                                self.target = Target::Slot(slot);
                            }
                        }
                        self.dispatch(cx);
                    }
                    Redirect::Ask(_, addr) => {
                        metrics.ask.inc();
                        self.redirects += 1;
                        if self.redirects > cx.proxy.cfg.max_redirects || self.pinned() {
                            return self.finish(bytes, Outcome::RedirectError);
                        }
                        if self.post == Post::LastFrame {
                            // ASKING covers one command, not a block: wait
                            // for the migration to finish.
                            return self.retry_later(bytes, cx, Retry::TryAgain);
                        }
                        self.asking = true;
                        let pool = cx.proxy.router.pool(&addr);
                        self.dispatch_to(cx, Some(pool));
                    }
                    Redirect::TryAgain => self.retry_later(bytes, cx, Retry::TryAgain),
                    Redirect::Loading => self.retry_later(bytes, cx, Retry::Loading),
                    Redirect::ClusterDown => {
                        cx.proxy.router.refresh_now.notify_one();
                        self.retry_later(bytes, cx, Retry::ClusterDown)
                    }
                }
            }
            Wire::NotSent | Wire::Lost if self.blocking => {
                // The dedicated connection is gone; the next try opens one.
                if let Some(node) = &self.node {
                    cx.dedicated.remove(&node.addr);
                }
                self.on_wire_unblocked(w, cx)
            }
            w => self.on_wire_unblocked(w, cx),
        }
    }

    fn on_wire_unblocked(&mut self, w: Wire, cx: &mut SendCtx<'_>) {
        match w {
            Wire::Reply(_) => {}
            Wire::NotSent => {
                if self.pinned() {
                    let node = self.node_name();
                    return self.fail(
                        &format!("ERR proxy: connection to {node} lost"),
                        Outcome::RedirectError,
                    );
                }
                let node = self.node_name();
                let text = format!(
                    "CLUSTERDOWN proxy: master {node} unreachable and no failover within {} ms",
                    cx.proxy.cfg.request_deadline_ms
                );
                self.retry_later(error_frame(&text), cx, Retry::Connection);
            }
            Wire::Lost => {
                if self.readonly && !self.pinned() && !self.blocking {
                    let node = self.node_name();
                    let text = format!("ERR proxy: connection to {node} lost");
                    return self.retry_later(error_frame(&text), cx, Retry::Connection);
                }
                let node = self.node_name();
                self.fail(
                    &format!(
                        "ERR proxy: connection to {node} lost while the command was in flight; it may or may not have been executed"
                    ),
                    Outcome::RedirectError,
                );
            }
        }
    }

    /// Backs off and tries again, unless that would pass the deadline: then
    /// the last error is the reply.
    fn retry_later(&mut self, last: Bytes, cx: &mut SendCtx<'_>, why: Retry) {
        cx.proxy.metrics.retry(why);
        let at = Instant::now() + cx.proxy.cfg.backoff(self.attempts);
        self.attempts += 1;
        if self.attempts > cx.proxy.cfg.max_retries {
            return self.finish(last, Outcome::RedirectError);
        }
        if at >= self.deadline {
            let outcome = if matches!(why, Retry::Connection) {
                Outcome::Timeout
            } else {
                Outcome::RedirectError
            };
            return self.finish(last, outcome);
        }
        self.state = State::Wait(at);
    }
}

/// This client's own connection to a node, opened on first use.
fn dedicated(cx: &mut SendCtx<'_>, pool: &Arc<Pool>) -> Conn {
    cx.dedicated
        .entry(pool.addr.clone())
        .or_insert_with(|| pool.dedicated(cx.kind))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_classes() {
        assert_eq!(
            classify(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved(3999, "127.0.0.1:6381".into()))
        );
        assert_eq!(
            classify(b"-ASK 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Ask(3999, "127.0.0.1:6381".into()))
        );
        assert_eq!(
            classify(b"-MOVED 1 :7000\r\n"),
            Some(Redirect::Moved(1, "127.0.0.1:7000".into()))
        );
        assert_eq!(
            classify(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Some(Redirect::TryAgain)
        );
        assert_eq!(
            classify(b"-CLUSTERDOWN The cluster is down\r\n"),
            Some(Redirect::ClusterDown)
        );
        assert_eq!(
            classify(b"-LOADING Redis is loading the dataset in memory\r\n"),
            Some(Redirect::Loading)
        );
        assert_eq!(classify(b"-ERR MOVED\r\n"), None);
        assert_eq!(classify(b"+MOVED 1 a:1\r\n"), None);
        assert_eq!(classify(b"-MOVED x y\r\n"), None);
    }

    #[test]
    fn error_frames_cannot_break_the_stream() {
        assert_eq!(&error_frame("ERR a\r\nb")[..], b"-ERR a  b\r\n");
    }
}
