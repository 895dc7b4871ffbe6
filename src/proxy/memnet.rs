//! An in-memory stand-in for the network between the proxy and its nodes,
//! so the proxy core (sessions, `Routed`, fan-out) runs in unit tests on
//! tokio's paused clock, the way the gossip state machine runs on `Sim`.
//!
//! A connection the proxy opens to `addr` becomes a [`Link`] handed to the
//! fake node listening there: the node receives exactly the requests the
//! connection task would have written, one [`Request`] per queued send
//! (ASKING and its command, or a whole MULTI block, arrive together, as
//! they would on the wire), and answers, loses or refuses each. No node
//! listening at `addr` is a refused connection.

use crate::proxy::backend::{ConnShared, Outcome, Queued, ReplyTo, Take};
use crate::resp::{Limits, RequestParser};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The fake network: which fake node listens at which address.
#[derive(Default)]
pub struct MemNet {
    nodes: Mutex<HashMap<String, mpsc::UnboundedSender<Link>>>,
}

impl MemNet {
    /// A fake node at `addr`: every connection the proxy opens to it
    /// arrives on the returned channel.
    pub fn listen(&self, addr: &str) -> mpsc::UnboundedReceiver<Link> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.nodes.lock().insert(addr.to_string(), tx);
        rx
    }

    /// Nobody listens at `addr` from now on (a node that died: new
    /// connections are refused; open ones live until their node drops them).
    pub fn stop(&self, addr: &str) {
        self.nodes.lock().remove(addr);
    }

    pub(crate) fn attach(self: &Arc<Self>, addr: &str, shared: Arc<ConnShared>) {
        tokio::spawn(dial(self.clone(), addr.to_string(), shared));
    }
}

/// A connection's life before it reaches a node, as the real connection
/// task's: connect lazily at the first request; while nobody listens,
/// hand requests back as never sent and try again at the next one.
async fn dial(net: Arc<MemNet>, addr: String, shared: Arc<ConnShared>) {
    let mut data = BytesMut::new();
    let mut taken = Vec::new();
    loop {
        if let Take::Closed = poll_fn(|cx| shared.poll_take(cx, &mut data, &mut taken)).await {
            return;
        }
        let listener = net.nodes.lock().get(&addr).cloned();
        if let Some(tx) = listener {
            let link = Link {
                net: net.clone(),
                addr: addr.clone(),
                shared: shared.clone(),
                data: std::mem::take(&mut data),
                reqs: std::mem::take(&mut taken).into(),
            };
            match tx.send(link) {
                Ok(()) => return,
                Err(back) => {
                    let back = back.0;
                    data = back.data;
                    taken = back.reqs.into();
                }
            }
        }
        data.clear();
        for q in taken.drain(..) {
            q.reply.send(Outcome::NotSent);
        }
    }
}

/// One connection, seen from the fake node's end.
pub struct Link {
    net: Arc<MemNet>,
    addr: String,
    shared: Arc<ConnShared>,
    data: BytesMut,
    reqs: VecDeque<Queued>,
}

impl Link {
    /// The next request sent on this connection; `None` once the proxy
    /// closed it (every handle dropped) with nothing left to send.
    pub async fn recv(&mut self) -> Option<Request> {
        while self.reqs.is_empty() {
            let mut taken = Vec::new();
            let take = poll_fn(|cx| self.shared.poll_take(cx, &mut self.data, &mut taken)).await;
            if let Take::Closed = take {
                return None;
            }
            self.reqs.extend(taken);
        }
        let q = self.reqs.pop_front()?;
        let data = self.data.split_to(q.len.min(self.data.len())).freeze();
        Some(Request {
            data,
            frames: q.frames,
            reply: q.reply,
        })
    }

    /// The connection breaks: requests sent on it and not received yet
    /// come back as never sent (those received are answered or lost by
    /// the node), and the next request connects again.
    pub fn break_off(self) {
        for q in self.reqs {
            q.reply.send(Outcome::NotSent);
        }
        tokio::spawn(dial(self.net, self.addr, self.shared));
    }
}

/// One send: its commands and how the fake node answers it.
pub struct Request {
    pub data: Bytes,
    /// Reply frames the proxy waits for (one per command).
    pub frames: u32,
    reply: ReplyTo,
}

impl Request {
    /// The commands in this send, each as its arguments.
    pub fn commands(&self) -> Vec<Vec<Bytes>> {
        let mut buf = BytesMut::from(&self.data[..]);
        let mut parser = RequestParser::new();
        let limits = Limits::default();
        let mut out = Vec::new();
        while let Ok(Some((_, args))) = parser.parse_frame(&mut buf, &limits) {
            out.push(args);
        }
        out
    }

    /// The first command's name, upper case (`ASKING`, `GET` ...).
    pub fn name(&self) -> String {
        self.commands()
            .first()
            .and_then(|c| c.first())
            .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
            .unwrap_or_default()
    }

    /// Answers with these reply frames, verbatim.
    pub fn reply(self, frames: &[u8]) {
        self.reply
            .send(Outcome::Reply(Bytes::copy_from_slice(frames)));
    }

    /// The connection died after the request was written: it may or may
    /// not have run.
    pub fn lose(self) {
        self.reply.send(Outcome::Lost);
    }

    /// Dropped unanswered: the request never reaches a reply (a hung node).
    pub fn hang(self) {}
}
