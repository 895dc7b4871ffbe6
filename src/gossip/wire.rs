//! The cluster bus wire format: slotway's own versioned binary protocol
//! between nodes, modelled on Redis's (`clusterMsg`): every message carries
//! a header with the sender's view of itself (epochs, role, slots), then a
//! type-specific body (gossip about other nodes, a FAIL report, an UPDATE...).
//!
//! All integers are big-endian. A frame is complete only when `total_len`
//! bytes are present; a partial frame decodes to `Ok(None)` and consumes
//! nothing. The signature and version are checked first so that a client
//! talking RESP to the bus port, or a future version, is rejected cleanly.

use crate::cluster::topology::SlotSet;
use crate::cluster::SLOTS;
use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const SIGNATURE: &[u8; 4] = b"SWbs";
pub const VERSION: u16 = 1;
/// Fixed part before `total_len`-dependent content: sig + version + type + len.
pub const PREFIX_LEN: usize = 4 + 2 + 2 + 4;
/// Refuse frames larger than this (a full gossip PING is ~ 3 KiB).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    Ping = 0,
    Pong = 1,
    Meet = 2,
    Fail = 3,
    Publish = 4,
    AuthRequest = 5,
    AuthAck = 6,
    Update = 7,
    MfStart = 8,
    PublishShard = 9,
}

impl MsgType {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::Ping,
            1 => Self::Pong,
            2 => Self::Meet,
            3 => Self::Fail,
            4 => Self::Publish,
            5 => Self::AuthRequest,
            6 => Self::AuthAck,
            7 => Self::Update,
            8 => Self::MfStart,
            9 => Self::PublishShard,
            _ => return None,
        })
    }
}

/// Role and state bits of a node, as carried on the wire.
pub mod node_flags {
    pub const MASTER: u16 = 1 << 0;
    pub const SLAVE: u16 = 1 << 1;
    pub const PFAIL: u16 = 1 << 2;
    pub const FAIL: u16 = 1 << 3;
    pub const HANDSHAKE: u16 = 1 << 4;
    pub const NOADDR: u16 = 1 << 5;
    pub const MEET: u16 = 1 << 6;
    pub const NOFAILOVER: u16 = 1 << 7;
}

/// Header flags about the message itself.
pub mod msg_flags {
    /// Sender is paused for a manual failover.
    pub const PAUSED: u8 = 1 << 0;
    /// AUTH_REQUEST: grant even if the master is not failed (manual failover).
    pub const FORCEACK: u8 = 1 << 1;
}

/// What every message says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sender: [u8; 40],
    pub current_epoch: u64,
    pub config_epoch: u64,
    pub repl_offset: u64,
    pub flags: u16,
    pub msg_flags: u8,
    /// 0 ok, 1 fail (the sender's cluster_state).
    pub state: u8,
    pub ip: String,
    pub hostname: String,
    pub port: u16,
    pub cport: u16,
    /// The sender's master when it is a replica, zeroes otherwise.
    pub master: [u8; 40],
    pub slots: SlotSet,
}

/// One gossip entry: what the sender knows about some other node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gossip {
    pub id: [u8; 40],
    pub ping_sent: u64,
    pub pong_received: u64,
    pub ip: String,
    pub port: u16,
    pub cport: u16,
    pub flags: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// PING, PONG, MEET.
    Gossip(Vec<Gossip>),
    /// FAIL: this node is failed.
    Fail { id: [u8; 40] },
    /// PUBLISH / PUBLISHSHARD.
    Publish { channel: Bytes, message: Bytes },
    /// UPDATE: `id` owns `slots` at `config_epoch`.
    Update {
        id: [u8; 40],
        config_epoch: u64,
        slots: Box<SlotSet>,
    },
    /// AUTH_REQUEST, AUTH_ACK, MFSTART: the header says it all.
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MsgType,
    pub header: Header,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad signature (not a slotway bus peer)")]
    Signature,
    #[error("unsupported bus protocol version {0}")]
    Version(u16),
    #[error("unknown message type {0}")]
    Type(u16),
    #[error("frame length {0} out of bounds")]
    Length(usize),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

fn put_str(out: &mut BytesMut, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(255);
    out.put_u8(n as u8);
    out.put_slice(b.get(..n).unwrap_or_default());
}

fn put_blob(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

fn put_slots(out: &mut BytesMut, s: &SlotSet) {
    for w in s.words() {
        out.put_u64(*w);
    }
}

impl Message {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_slice(SIGNATURE);
        out.put_u16(VERSION);
        out.put_u16(self.kind as u16);
        out.put_u32(0); // total_len, patched below
        let h = &self.header;
        out.put_slice(&h.sender);
        out.put_u64(h.current_epoch);
        out.put_u64(h.config_epoch);
        out.put_u64(h.repl_offset);
        out.put_u16(h.flags);
        out.put_u8(h.msg_flags);
        out.put_u8(h.state);
        put_str(out, &h.ip);
        put_str(out, &h.hostname);
        out.put_u16(h.port);
        out.put_u16(h.cport);
        out.put_slice(&h.master);
        put_slots(out, &h.slots);
        match &self.body {
            Body::Gossip(entries) => {
                out.put_u16(entries.len().min(u16::MAX as usize) as u16);
                for g in entries.iter().take(u16::MAX as usize) {
                    out.put_slice(&g.id);
                    out.put_u64(g.ping_sent);
                    out.put_u64(g.pong_received);
                    put_str(out, &g.ip);
                    out.put_u16(g.port);
                    out.put_u16(g.cport);
                    out.put_u16(g.flags);
                }
            }
            Body::Fail { id } => out.put_slice(id),
            Body::Publish { channel, message } => {
                put_blob(out, channel);
                put_blob(out, message);
            }
            Body::Update {
                id,
                config_epoch,
                slots,
            } => {
                out.put_slice(id);
                out.put_u64(*config_epoch);
                put_slots(out, slots);
            }
            Body::Empty => {}
        }
        let total = (out.len() - start) as u32;
        if let Some(len) = out.get_mut(start + 8..start + 12) {
            len.copy_from_slice(&total.to_be_bytes());
        }
    }

    /// Decodes one frame from the front of `buf` if it is complete.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        let Some(mut p) = buf.get(..PREFIX_LEN) else {
            // Reject a wrong signature as soon as its bytes are here.
            let n = buf.len().min(4);
            if buf.get(..n) != SIGNATURE.get(..n) {
                return Err(WireError::Signature);
            }
            return Ok(None);
        };
        let mut sig = [0u8; 4];
        p.copy_to_slice(&mut sig);
        if &sig != SIGNATURE {
            return Err(WireError::Signature);
        }
        let version = p.get_u16();
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let ty = p.get_u16();
        let kind = MsgType::from_u16(ty).ok_or(WireError::Type(ty))?;
        let total = p.get_u32() as usize;
        if !(PREFIX_LEN..=MAX_FRAME).contains(&total) {
            return Err(WireError::Length(total));
        }
        if buf.len() < total {
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        let mut r = Reader(frame.slice(PREFIX_LEN..));
        let header = Header {
            sender: r.id()?,
            current_epoch: r.u64()?,
            config_epoch: r.u64()?,
            repl_offset: r.u64()?,
            flags: r.u16()?,
            msg_flags: r.u8()?,
            state: r.u8()?,
            ip: r.string()?,
            hostname: r.string()?,
            port: r.u16()?,
            cport: r.u16()?,
            master: r.id()?,
            slots: r.slots()?,
        };
        let body = match kind {
            MsgType::Ping | MsgType::Pong | MsgType::Meet => {
                let n = r.u16()?;
                let mut v = Vec::with_capacity(usize::from(n).min(1024));
                for _ in 0..n {
                    v.push(Gossip {
                        id: r.id()?,
                        ping_sent: r.u64()?,
                        pong_received: r.u64()?,
                        ip: r.string()?,
                        port: r.u16()?,
                        cport: r.u16()?,
                        flags: r.u16()?,
                    });
                }
                Body::Gossip(v)
            }
            MsgType::Fail => Body::Fail { id: r.id()? },
            MsgType::Publish | MsgType::PublishShard => Body::Publish {
                channel: r.blob()?,
                message: r.blob()?,
            },
            MsgType::Update => Body::Update {
                id: r.id()?,
                config_epoch: r.u64()?,
                slots: Box::new(r.slots()?),
            },
            MsgType::AuthRequest | MsgType::AuthAck | MsgType::MfStart => Body::Empty,
        };
        if !r.0.is_empty() {
            return Err(WireError::Malformed("trailing bytes"));
        }
        Ok(Some(Message { kind, header, body }))
    }
}

/// Bounds-checked reads over a frame.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.0.len() < n {
            Err(WireError::Malformed(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1, "u8")?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        self.need(2, "u16")?;
        Ok(self.0.get_u16())
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8, "u64")?;
        Ok(self.0.get_u64())
    }
    fn id(&mut self) -> Result<[u8; 40], WireError> {
        self.need(40, "node id")?;
        let mut id = [0u8; 40];
        self.0.copy_to_slice(&mut id);
        Ok(id)
    }
    fn string(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u8()?);
        self.need(n, "string")?;
        let b = self.0.split_to(n);
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed("utf-8 string"))
    }
    fn blob(&mut self) -> Result<Bytes, WireError> {
        self.need(4, "blob length")?;
        let n = self.0.get_u32() as usize;
        self.need(n, "blob")?;
        Ok(self.0.split_to(n))
    }
    fn slots(&mut self) -> Result<SlotSet, WireError> {
        self.need(SLOTS / 8, "slot bitmap")?;
        let mut w = [0u64; SLOTS / 64];
        for x in &mut w {
            *x = self.0.get_u64();
        }
        Ok(SlotSet::from_words(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        let mut slots = SlotSet::default();
        for s in 0..=5460 {
            slots.insert(s);
        }
        Header {
            sender: [b'a'; 40],
            current_epoch: 6,
            config_epoch: 1,
            repl_offset: 14,
            flags: node_flags::MASTER,
            msg_flags: 0,
            state: 0,
            ip: "127.0.0.1".into(),
            hostname: String::new(),
            port: 7000,
            cport: 17000,
            master: [0; 40],
            slots,
        }
    }

    fn sample_messages() -> Vec<Message> {
        let g = Gossip {
            id: [b'b'; 40],
            ping_sent: 1,
            pong_received: 2,
            ip: "127.0.0.1".into(),
            port: 7001,
            cport: 17001,
            flags: node_flags::SLAVE | node_flags::PFAIL,
        };
        vec![
            Message {
                kind: MsgType::Ping,
                header: header(),
                body: Body::Gossip(vec![g.clone(), g]),
            },
            Message {
                kind: MsgType::Fail,
                header: header(),
                body: Body::Fail { id: [b'c'; 40] },
            },
            Message {
                kind: MsgType::Publish,
                header: header(),
                body: Body::Publish {
                    channel: Bytes::from("ch"),
                    message: Bytes::from("hello"),
                },
            },
            Message {
                kind: MsgType::Update,
                header: header(),
                body: Body::Update {
                    id: [b'd'; 40],
                    config_epoch: 9,
                    slots: Box::new(header().slots),
                },
            },
            Message {
                kind: MsgType::AuthRequest,
                header: header(),
                body: Body::Empty,
            },
        ]
    }

    #[test]
    fn round_trip_and_partial_frames() {
        for m in sample_messages() {
            let mut out = BytesMut::new();
            m.encode(&mut out);
            let wire = out.clone().freeze();
            for cut in [0, 1, 4, 11, 12, wire.len() / 2, wire.len() - 1] {
                let mut part = BytesMut::from(&wire[..cut]);
                assert_eq!(Message::decode(&mut part), Ok(None), "cut {cut}");
                assert_eq!(part.len(), cut, "partial input must not be consumed");
            }
            assert_eq!(Message::decode(&mut out).unwrap().unwrap(), m);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn golden_header_bytes() {
        let m = Message {
            kind: MsgType::Pong,
            header: header(),
            body: Body::Gossip(vec![]),
        };
        let mut out = BytesMut::new();
        m.encode(&mut out);
        // signature, version 1, type 1 (PONG), total length.
        assert_eq!(&out[..8], b"SWbs\x00\x01\x00\x01");
        let total = u32::from_be_bytes([out[8], out[9], out[10], out[11]]) as usize;
        assert_eq!(total, out.len());
        // sender id follows the prefix; the epochs follow the id.
        assert_eq!(&out[12..52], &[b'a'; 40][..]);
        assert_eq!(&out[52..60], &6u64.to_be_bytes());
    }

    #[test]
    fn rejects_resp_and_future_versions() {
        let mut resp = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(Message::decode(&mut resp), Err(WireError::Signature));
        let mut v2 = BytesMut::from(&b"SWbs\x00\x02\x00\x00\x00\x00\x00\x20"[..]);
        assert_eq!(Message::decode(&mut v2), Err(WireError::Version(2)));
        let mut huge = BytesMut::from(&b"SWbs\x00\x01\x00\x00\xff\xff\xff\xff"[..]);
        assert!(matches!(
            Message::decode(&mut huge),
            Err(WireError::Length(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_after_a_valid_prefix_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..600), ty in 0u16..12) {
            let mut buf = BytesMut::new();
            buf.put_slice(SIGNATURE);
            buf.put_u16(VERSION);
            buf.put_u16(ty);
            buf.put_u32((PREFIX_LEN + tail.len()) as u32);
            buf.put_slice(&tail);
            let _ = Message::decode(&mut buf);
        }
    }
}
