//! The cluster's view of itself: nodes, their flags, epochs and slots, and
//! the two text formats Redis tools read — `CLUSTER NODES` lines and
//! `nodes.conf`. Pure data and formatting: no I/O, no clock.

use crate::cluster::SLOTS;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// 40 lowercase hex characters.
pub type NodeId = String;

/// A fresh random node id.
pub fn random_node_id() -> NodeId {
    crate::util::random_hex_id()
}

pub fn is_valid_node_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Node flags, in the order Redis prints them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub myself: bool,
    pub master: bool,
    pub slave: bool,
    pub pfail: bool,
    pub fail: bool,
    pub handshake: bool,
    pub noaddr: bool,
    pub nofailover: bool,
}

impl Flags {
    pub fn render(&self) -> String {
        let mut parts = Vec::new();
        for (on, name) in [
            (self.myself, "myself"),
            (self.master, "master"),
            (self.slave, "slave"),
            (self.pfail, "fail?"),
            (self.fail, "fail"),
            (self.handshake, "handshake"),
            (self.noaddr, "noaddr"),
            (self.nofailover, "nofailover"),
        ] {
            if on {
                parts.push(name);
            }
        }
        if parts.is_empty() {
            "noflags".into()
        } else {
            parts.join(",")
        }
    }

    pub fn parse(s: &str) -> Result<Flags, TopologyError> {
        let mut f = Flags::default();
        for p in s.split(',') {
            match p {
                "myself" => f.myself = true,
                "master" => f.master = true,
                "slave" => f.slave = true,
                "fail?" => f.pfail = true,
                "fail" => f.fail = true,
                "handshake" => f.handshake = true,
                "noaddr" => f.noaddr = true,
                "nofailover" => f.nofailover = true,
                "noflags" => {}
                other => return Err(TopologyError::Parse(format!("unknown flag '{other}'"))),
            }
        }
        Ok(f)
    }
}

/// A set of slots as a bitmap (2 KiB).
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet([u64; SLOTS / 64]);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet([0; SLOTS / 64])
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({})", render_ranges(&self.ranges()))
    }
}

impl SlotSet {
    pub fn contains(&self, slot: u16) -> bool {
        let s = usize::from(slot);
        self.0.get(s / 64).is_some_and(|w| w & (1 << (s % 64)) != 0)
    }

    pub fn insert(&mut self, slot: u16) {
        let s = usize::from(slot);
        if let Some(w) = self.0.get_mut(s / 64) {
            *w |= 1 << (s % 64);
        }
    }

    pub fn remove(&mut self, slot: u16) {
        let s = usize::from(slot);
        if let Some(w) = self.0.get_mut(s / 64) {
            *w &= !(1 << (s % 64));
        }
    }

    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..SLOTS as u16).filter(|s| self.contains(*s))
    }

    /// Contiguous inclusive ranges, ascending.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in self.iter() {
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
        out
    }

    /// The raw words, for the bus codec.
    pub fn words(&self) -> &[u64; SLOTS / 64] {
        &self.0
    }

    pub fn from_words(w: [u64; SLOTS / 64]) -> Self {
        SlotSet(w)
    }
}

/// `0-5460 5462 ...` as in CLUSTER NODES.
pub fn render_ranges(ranges: &[(u16, u16)]) -> String {
    let mut s = String::new();
    for (i, (a, b)) in ranges.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        if a == b {
            let _ = write!(s, "{a}");
        } else {
            let _ = write!(s, "{a}-{b}");
        }
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("nodes.conf: {0}")]
    Parse(String),
}

/// One node as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: NodeId,
    pub ip: String,
    pub port: u16,
    pub cport: u16,
    pub hostname: String,
    pub flags: Flags,
    /// The master's id when this node is a replica.
    pub master_id: Option<NodeId>,
    /// Unix ms of the outstanding PING, 0 when none.
    pub ping_sent: u64,
    /// Unix ms of the last PONG.
    pub pong_received: u64,
    pub config_epoch: u64,
    pub link_connected: bool,
    pub slots: SlotSet,
}

impl ClusterNode {
    pub fn new(id: NodeId, ip: &str, port: u16, cport: u16) -> Self {
        ClusterNode {
            id,
            ip: ip.to_string(),
            port,
            cport,
            hostname: String::new(),
            flags: Flags::default(),
            master_id: None,
            ping_sent: 0,
            pong_received: 0,
            config_epoch: 0,
            link_connected: false,
            slots: SlotSet::default(),
        }
    }

    fn addr_field(&self) -> String {
        let mut s = format!("{}:{}@{}", self.ip, self.port, self.cport);
        if !self.hostname.is_empty() {
            s.push(',');
            s.push_str(&self.hostname);
        }
        s
    }
}

/// Slot migration state kept by `myself` only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrations {
    /// slot → node it is migrating to.
    pub migrating: BTreeMap<u16, NodeId>,
    /// slot → node it is importing from.
    pub importing: BTreeMap<u16, NodeId>,
}

/// One `CLUSTER NODES` / nodes.conf line.
pub fn render_node_line(n: &ClusterNode, mig: Option<&Migrations>) -> String {
    let link = if n.flags.myself || n.link_connected {
        "connected"
    } else {
        "disconnected"
    };
    let mut line = format!(
        "{} {} {} {} {} {} {} {}",
        n.id,
        n.addr_field(),
        n.flags.render(),
        n.master_id.as_deref().unwrap_or("-"),
        n.ping_sent,
        n.pong_received,
        n.config_epoch,
        link
    );
    let ranges = n.slots.ranges();
    if !ranges.is_empty() {
        line.push(' ');
        line.push_str(&render_ranges(&ranges));
    }
    if let Some(m) = mig {
        for (slot, to) in &m.migrating {
            let _ = write!(line, " [{slot}->-{to}]");
        }
        for (slot, from) in &m.importing {
            let _ = write!(line, " [{slot}-<-{from}]");
        }
    }
    line
}

/// The whole content of nodes.conf.
pub struct NodesConf {
    pub nodes: Vec<ClusterNode>,
    pub migrations: Migrations,
    pub current_epoch: u64,
    pub last_vote_epoch: u64,
}

impl NodesConf {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let mig = n.flags.myself.then_some(&self.migrations);
            out.push_str(&render_node_line(n, mig));
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "vars currentEpoch {} lastVoteEpoch {}",
            self.current_epoch, self.last_vote_epoch
        );
        out
    }

    pub fn parse(text: &str) -> Result<NodesConf, TopologyError> {
        let err =
            |line: usize, what: &str| TopologyError::Parse(format!("line {}: {what}", line + 1));
        let mut conf = NodesConf {
            nodes: Vec::new(),
            migrations: Migrations::default(),
            current_epoch: 0,
            last_vote_epoch: 0,
        };
        for (i, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(first) = f.first() else { continue };
            if *first == "vars" {
                for kv in f.get(1..).unwrap_or_default().chunks(2) {
                    let (Some(k), Some(v)) = (kv.first(), kv.get(1)) else {
                        return Err(err(i, "odd vars"));
                    };
                    let v: u64 = v.parse().map_err(|_| err(i, "bad vars value"))?;
                    match *k {
                        "currentEpoch" => conf.current_epoch = v,
                        "lastVoteEpoch" => conf.last_vote_epoch = v,
                        _ => {}
                    }
                }
                continue;
            }
            let &[id, addr_field, flags, master, ping_sent, pong_recv, epoch, link, ref slots @ ..] =
                f.as_slice()
            else {
                return Err(err(i, "too few fields"));
            };
            if !is_valid_node_id(id) {
                return Err(err(i, "bad node id"));
            }
            let (addr, hostname) = addr_field.split_once(',').unwrap_or((addr_field, ""));
            let (hostport, cport) = addr
                .split_once('@')
                .ok_or_else(|| err(i, "address without @cport"))?;
            let (ip, port) = hostport
                .rsplit_once(':')
                .ok_or_else(|| err(i, "address without port"))?;
            let port: u16 = port.parse().map_err(|_| err(i, "bad port"))?;
            let cport: u16 = cport.parse().map_err(|_| err(i, "bad cluster port"))?;
            let mut node = ClusterNode::new(id.to_string(), ip, port, cport);
            node.hostname = hostname.to_string();
            node.flags = Flags::parse(flags).map_err(|e| err(i, &e.to_string()))?;
            node.master_id = (master != "-").then(|| master.to_string());
            node.ping_sent = ping_sent.parse().map_err(|_| err(i, "bad ping-sent"))?;
            node.pong_received = pong_recv.parse().map_err(|_| err(i, "bad pong-recv"))?;
            node.config_epoch = epoch.parse().map_err(|_| err(i, "bad config epoch"))?;
            node.link_connected = link == "connected";
            for tok in slots {
                if let Some(inner) = tok.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                    if let Some((slot, to)) = inner.split_once("->-") {
                        let s = parse_slot(slot).ok_or_else(|| err(i, "bad migrating slot"))?;
                        conf.migrations.migrating.insert(s, to.to_string());
                    } else if let Some((slot, from)) = inner.split_once("-<-") {
                        let s = parse_slot(slot).ok_or_else(|| err(i, "bad importing slot"))?;
                        conf.migrations.importing.insert(s, from.to_string());
                    } else {
                        return Err(err(i, "bad slot migration token"));
                    }
                    continue;
                }
                let (a, b) = match tok.split_once('-') {
                    Some((a, b)) => (parse_slot(a), parse_slot(b)),
                    None => (parse_slot(tok), parse_slot(tok)),
                };
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(err(i, "bad slot range"));
                };
                for s in a..=b {
                    node.slots.insert(s);
                }
            }
            conf.nodes.push(node);
        }
        if conf.nodes.iter().filter(|n| n.flags.myself).count() != 1 {
            return Err(TopologyError::Parse(
                "exactly one node must be flagged myself".into(),
            ));
        }
        Ok(conf)
    }
}

fn parse_slot(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|v| usize::from(*v) < SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines written by a real redis-server 7.0.15 (`redis-cli --cluster
    /// create` of 3 masters + 3 replicas on loopback).
    const GOLDEN: &str = "\
73643d7d789cb3846de7a67c9c3160b203706573 127.0.0.1:6504@16504 slave c2313dbad44e31e2f507e571aa06b0c7666219d4 0 1795571638208 2 connected
47ddbd11ae66cd49b116e5c6f86d684bc0bf47cf 127.0.0.1:6506@16506 slave 484d764959980552931ef6d67ea2683e208d93e7 0 1795571639000 1 connected
484d764959980552931ef6d67ea2683e208d93e7 127.0.0.1:6501@16501 myself,master - 0 1795571638000 1 connected 0-5460
c2313dbad44e31e2f507e571aa06b0c7666219d4 127.0.0.1:6502@16502 master - 0 1795571639213 2 connected 5461-10922
e019cc76c67131a43cc05334cf5f320fc38e1070 127.0.0.1:6505@16505 slave 2aa40ded217cd3b4eba1d9ec2e10c39994c1aafb 0 1795571639000 3 connected
2aa40ded217cd3b4eba1d9ec2e10c39994c1aafb 127.0.0.1:6503@16503 master - 0 1795571640217 3 connected 10923-16383
vars currentEpoch 6 lastVoteEpoch 0
";

    #[test]
    fn golden_nodes_conf_round_trips_byte_for_byte() {
        let conf = NodesConf::parse(GOLDEN).unwrap();
        assert_eq!(conf.nodes.len(), 6);
        assert_eq!(conf.current_epoch, 6);
        let me = conf.nodes.iter().find(|n| n.flags.myself).unwrap();
        assert_eq!(me.slots.count(), 5461);
        assert_eq!(conf.render(), GOLDEN);
    }

    #[test]
    fn founding_document_failover_line() {
        // From the founding document: a failed master, as seen by a peer.
        let line = "3b830fa49ce18dca453ba256de2d2069d11376fe 10.0.20.181:6379@16379 master,fail - 1723945502704 1723945501099 1 disconnected";
        let conf = NodesConf::parse(&format!("{line}\n11a6e4d7af788676592fdfcef1ae8a18c3d44645 10.0.20.1:6379@16379 myself,master - 0 0 5 connected\n")).unwrap();
        let n = &conf.nodes[0];
        assert!(n.flags.fail && n.flags.master && !n.link_connected);
        assert_eq!(render_node_line(n, None), line);
    }

    #[test]
    fn migrations_and_single_slots() {
        let mut n = ClusterNode::new("a".repeat(40), "127.0.0.1", 7000, 17000);
        n.flags = Flags {
            myself: true,
            master: true,
            ..Flags::default()
        };
        for s in [0u16, 1, 2, 7, 100] {
            n.slots.insert(s);
        }
        let mut m = Migrations::default();
        m.migrating.insert(7, "b".repeat(40));
        m.importing.insert(200, "c".repeat(40));
        let line = render_node_line(&n, Some(&m));
        assert!(
            line.ends_with(&format!(
                " 0-2 7 100 [7->-{}] [200-<-{}]",
                "b".repeat(40),
                "c".repeat(40)
            )),
            "{line}"
        );
        let conf =
            NodesConf::parse(&format!("{line}\nvars currentEpoch 1 lastVoteEpoch 1\n")).unwrap();
        assert_eq!(conf.migrations, m);
        assert_eq!(conf.nodes[0].slots, n.slots);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        for bad in [
            "x",
            "vars currentEpoch",
            "zz 1:2@3 master - 0 0 0 connected",
            &format!("{} 1.2.3.4:x@1 myself - 0 0 0 connected", "a".repeat(40)),
            &format!(
                "{} 1.2.3.4:1@1 myself - 0 0 0 connected 99999",
                "a".repeat(40)
            ),
        ] {
            assert!(NodesConf::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_render_in_redis_order() {
        let f = Flags {
            master: true,
            pfail: true,
            ..Flags::default()
        };
        assert_eq!(f.render(), "master,fail?");
        assert_eq!(Flags::default().render(), "noflags");
        assert_eq!(
            Flags::parse("myself,slave").unwrap(),
            Flags {
                myself: true,
                slave: true,
                ..Flags::default()
            }
        );
    }
}
