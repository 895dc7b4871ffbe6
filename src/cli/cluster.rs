//! `slotway cluster create` and `slotway cluster check`: the same plan and
//! checks as `redis-cli --cluster`, against any Redis-Cluster-protocol node.

use super::client::{Client, ClientError};
use crate::cluster::topology::NodesConf;
use crate::cluster::SLOTS;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("[ERR] {0}")]
    Refused(String),
}

struct Planned {
    addr: String,
    id: String,
    slots: Option<(u16, u16)>,
    replicate: Option<usize>,
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// Indexes of the masters, and (replica, master) pairs.
type Layout = (Vec<usize>, Vec<(usize, usize)>);

/// Masters first, spread over distinct hosts; then replicas, each placed
/// away from its master's host when possible (redis-cli's anti-affinity).
fn plan(addrs: &[String], replicas: usize) -> Result<Layout, AdminError> {
    let masters = addrs.len() / (replicas + 1);
    if masters < 3 {
        return Err(AdminError::Refused(format!(
            "Invalid configuration for cluster creation.\n*** Redis Cluster requires at least 3 master nodes.\n*** This is not possible with {} nodes and {replicas} replicas per node.\n*** At least {} nodes are required.",
            addrs.len(),
            3 * (replicas + 1)
        )));
    }
    // Interleave hosts so masters land on different machines first.
    let mut by_host: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, a) in addrs.iter().enumerate() {
        by_host.entry(host_of(a)).or_default().push(i);
    }
    let mut order = Vec::new();
    let mut round = 0;
    while order.len() < addrs.len() {
        for idxs in by_host.values() {
            if let Some(&i) = idxs.get(round) {
                order.push(i);
            }
        }
        round += 1;
    }
    let master_idx: Vec<usize> = order.iter().take(masters).copied().collect();
    let mut rest: Vec<usize> = order.iter().skip(masters).copied().collect();
    let mut pairs = Vec::new();
    for _ in 0..replicas {
        let take = master_idx.len().min(rest.len());
        let chunk: Vec<usize> = rest.drain(..take).collect();
        // The rotation of this round's replicas that puts the fewest of them
        // on their master's host.
        let host = |i: usize| addrs.get(i).map_or("", |a| host_of(a));
        let rotated = |rot: usize| {
            chunk
                .iter()
                .cycle()
                .skip(rot)
                .zip(&master_idx)
                .take(chunk.len())
                .map(|(&r, &m)| (r, m))
        };
        let best = (0..chunk.len().max(1))
            .min_by_key(|&rot| rotated(rot).filter(|&(r, m)| host(r) == host(m)).count())
            .unwrap_or(0);
        pairs.extend(rotated(best));
    }
    // Leftovers (uneven counts) go to the masters in turn.
    for (k, r) in rest.into_iter().enumerate() {
        if let Some(&m) = master_idx.get(k % master_idx.len()) {
            pairs.push((r, m));
        }
    }
    Ok((master_idx, pairs))
}

/// redis-cli's split: 16384 / masters, rounded, the last takes the rest.
pub fn slot_ranges(masters: usize) -> Vec<(u16, u16)> {
    let per = SLOTS as f64 / masters as f64;
    let mut out = Vec::new();
    let mut first = 0usize;
    let mut cursor = 0.0f64;
    for i in 0..masters {
        let mut last = (cursor + per - 1.0).round() as usize;
        if last > SLOTS - 1 || i == masters - 1 {
            last = SLOTS - 1;
        }
        if last < first {
            last = first;
        }
        out.push((first as u16, last as u16));
        first = last + 1;
        cursor += per;
    }
    out
}

fn agree(clients: &mut [Client]) -> Result<bool, AdminError> {
    let mut sig: Option<String> = None;
    for c in clients.iter_mut() {
        let text = c.text(&["CLUSTER", "NODES"])?;
        let mut parts: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let slots = f.get(8..).unwrap_or_default().join(",");
                (!slots.is_empty()).then(|| format!("{}:{slots}", f.first().unwrap_or(&"")))
            })
            .collect();
        parts.sort();
        let s = parts.join("|");
        match &sig {
            None => sig = Some(s),
            Some(prev) if *prev != s => return Ok(false),
            _ => {}
        }
    }
    Ok(true)
}

/// Every node lists every planned replica as a slave of its planned master
/// (so the final check shows the roles, not a half-spread state).
fn roles_visible(clients: &mut [Client], planned: &[Planned]) -> Result<bool, AdminError> {
    let wanted: Vec<(&str, &str)> = planned
        .iter()
        .filter_map(|p| {
            let m = planned.get(p.replicate?)?;
            Some((p.id.as_str(), m.id.as_str()))
        })
        .collect();
    for c in clients.iter_mut() {
        let text = c.text(&["CLUSTER", "NODES"])?;
        let ok = wanted.iter().all(|(r, m)| {
            text.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.first() == Some(r)
                    && f.get(2).is_some_and(|fl| fl.contains("slave"))
                    && f.get(3) == Some(m)
            })
        });
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `slotway cluster create H:P... --replicas N [--yes]`.
pub fn create(
    addrs: &[String],
    replicas: usize,
    yes: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut clients = Vec::new();
    for a in addrs {
        let mut c = Client::connect(a)?;
        let info = c.text(&["INFO", "cluster"])?;
        if !info.contains("cluster_enabled:1") {
            return Err(AdminError::Refused(format!(
                "Node {a} is not configured as a cluster node."
            )));
        }
        let known = c.text(&["CLUSTER", "INFO"])?;
        let dbsize = c.text(&["DBSIZE"])?;
        if !known.contains("cluster_known_nodes:1\r\n") || dbsize != "0" {
            return Err(AdminError::Refused(format!("Node {a} is not empty. Either the node already knows other nodes (check with CLUSTER NODES) or contains some key in database 0.")));
        }
        clients.push(c);
    }
    let (masters, pairs) = plan(addrs, replicas)?;
    let ranges = slot_ranges(masters.len());
    let mut planned: Vec<Planned> = Vec::new();
    for (addr, c) in addrs.iter().zip(clients.iter_mut()) {
        planned.push(Planned {
            addr: addr.clone(),
            id: c.text(&["CLUSTER", "MYID"])?,
            slots: None,
            replicate: None,
        });
    }
    let _ = writeln!(
        out,
        ">>> Performing hash slots allocation on {} nodes...",
        addrs.len()
    );
    for (k, &m) in masters.iter().enumerate() {
        if let (Some(p), Some(r)) = (planned.get_mut(m), ranges.get(k)) {
            p.slots = Some(*r);
            let _ = writeln!(out, "Master[{k}] -> Slots {} - {}", r.0, r.1);
        }
    }
    for &(r, m) in &pairs {
        let addr = |i: usize| addrs.get(i).map_or("?", String::as_str);
        let _ = writeln!(out, "Adding replica {} to {}", addr(r), addr(m));
        if let Some(p) = planned.get_mut(r) {
            p.replicate = Some(m);
        }
    }
    for p in &planned {
        match (p.slots, p.replicate) {
            (Some((lo, hi)), _) => {
                let _ = writeln!(
                    out,
                    "M: {} {}\n   slots:[{lo}-{hi}] ({} slots) master",
                    p.id,
                    p.addr,
                    hi - lo + 1
                );
            }
            (None, Some(m)) => {
                let _ = writeln!(
                    out,
                    "S: {} {}\n   replicates {}",
                    p.id,
                    p.addr,
                    planned.get(m).map_or("", |x| x.id.as_str())
                );
            }
            _ => {}
        }
    }
    if !yes {
        return Err(AdminError::Refused(
            "add --yes to accept this configuration".into(),
        ));
    }
    for (p, c) in planned.iter().zip(clients.iter_mut()) {
        if let Some((lo, hi)) = p.slots {
            c.call(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()])?;
        }
    }
    let _ = writeln!(
        out,
        ">>> Nodes configuration updated\n>>> Assign a different config epoch to each node"
    );
    for (i, c) in clients.iter_mut().enumerate() {
        let _ = c.call(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]);
    }
    let _ = writeln!(out, ">>> Sending CLUSTER MEET messages to join the cluster");
    let first = addrs.first().map_or("", String::as_str);
    let (first_host, first_port) = first.rsplit_once(':').unwrap_or(("127.0.0.1", "6379"));
    for c in clients.iter_mut().skip(1) {
        c.call(&["CLUSTER", "MEET", first_host, first_port])?;
    }
    let _ = write!(out, "Waiting for the cluster to join");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut joined = true;
        // Known-node counts are not enough: a peer still in handshake is
        // listed under a temporary id, and REPLICATE of its real id fails.
        for c in clients.iter_mut() {
            let table = c.text(&["CLUSTER", "NODES"])?;
            joined &= table.lines().count() == addrs.len() && !table.contains("handshake");
        }
        if joined {
            break;
        }
        if Instant::now() > deadline {
            return Err(AdminError::Refused(
                "the nodes did not join within 60 s".into(),
            ));
        }
        let _ = write!(out, ".");
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = writeln!(out);
    for (p, c) in planned.iter().zip(clients.iter_mut()) {
        if let Some(m) = p.replicate {
            let id = planned.get(m).map_or(String::new(), |x| x.id.clone());
            c.call(&["CLUSTER", "REPLICATE", &id])?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agree(&mut clients)? || !roles_visible(&mut clients, &planned)? {
        if Instant::now() > deadline {
            return Err(AdminError::Refused(
                "nodes do not agree about the slots configuration".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    check(first, out)
}

/// `slotway cluster check H:P`: every node agrees, every slot is covered.
pub fn check(addr: &str, out: &mut dyn Write) -> Result<(), AdminError> {
    let mut seed = Client::connect(addr)?;
    let text = seed.text(&["CLUSTER", "NODES"])?;
    let conf = NodesConf::parse(&format!("{text}vars currentEpoch 0 lastVoteEpoch 0\n"))
        .map_err(|e| AdminError::Refused(e.to_string()))?;
    let _ = writeln!(out, ">>> Performing Cluster Check (using node {addr})");
    let mut clients = Vec::new();
    let mut covered = 0usize;
    for n in &conf.nodes {
        let role = if n.flags.master { "M" } else { "S" };
        let _ = writeln!(out, "{role}: {} {}:{}", n.id, n.ip, n.port);
        if n.flags.master {
            covered += n.slots.count();
            let ranges: Vec<String> = n
                .slots
                .ranges()
                .iter()
                .map(|(a, b)| format!("{a}-{b}"))
                .collect();
            let _ = writeln!(
                out,
                "   slots:[{}] ({} slots) master",
                ranges.join(","),
                n.slots.count()
            );
        } else if let Some(m) = &n.master_id {
            let _ = writeln!(out, "   slots: (0 slots) slave\n   replicates {m}");
        }
        clients.push(Client::connect(&format!("{}:{}", n.ip, n.port))?);
    }
    let mut ok = true;
    if agree(&mut clients)? {
        let _ = writeln!(out, "[OK] All nodes agree about slots configuration.");
    } else {
        ok = false;
        let _ = writeln!(out, "[ERR] Nodes don't agree about configuration!");
    }
    let _ = writeln!(out, ">>> Check slots coverage...");
    if covered == SLOTS {
        let _ = writeln!(out, "[OK] All {SLOTS} slots covered.");
    } else {
        ok = false;
        let _ = writeln!(out, "[ERR] Not all {SLOTS} slots are covered by nodes.");
    }
    if ok {
        Ok(())
    } else {
        Err(AdminError::Refused("cluster check failed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_split_matches_redis_cli() {
        assert_eq!(
            slot_ranges(3),
            vec![(0, 5460), (5461, 10922), (10923, 16383)]
        );
        let r = slot_ranges(7);
        assert_eq!(r.first().map(|x| x.0), Some(0));
        assert_eq!(r.last().map(|x| x.1), Some(16383));
    }

    #[test]
    fn plan_puts_replicas_away_from_their_master_host() {
        let addrs: Vec<String> = [
            "10.0.0.1:7000",
            "10.0.0.1:7001",
            "10.0.0.2:7000",
            "10.0.0.2:7001",
            "10.0.0.3:7000",
            "10.0.0.3:7001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (masters, pairs) = plan(&addrs, 1).unwrap();
        let hosts: std::collections::HashSet<&str> =
            masters.iter().map(|&m| host_of(&addrs[m])).collect();
        assert_eq!(hosts.len(), 3, "masters on three hosts");
        for (r, m) in pairs {
            assert_ne!(host_of(&addrs[r]), host_of(&addrs[m]));
        }
        assert!(
            plan(&addrs[..4], 1).is_err(),
            "fewer than 3 masters is refused"
        );
    }
}
