//! CLUSTER subcommands (the ones cluster creation, checking and clients
//! need) plus the CLUSTER KEYSLOT family that works on any node.

use super::Argv;
use super::{err, int_arg, is, syntax_error, CmdResult, Ctx};
use crate::cluster::topology::{render_node_line, ClusterNode};
use crate::cluster::{key_hash_slot, SLOTS};
use crate::gossip::state::{FailoverMode, SetSlot};
use crate::node::cluster::ClusterHandle;
use crate::resp::Reply;
use bytes::Bytes;
use std::sync::Arc;

fn handle<'c>(ctx: &'c Ctx) -> Result<&'c Arc<ClusterHandle>, Reply> {
    ctx.shared
        .cluster
        .as_ref()
        .ok_or_else(|| err("ERR This instance has cluster support disabled"))
}

fn slot_arg(b: &[u8]) -> Result<u16, Reply> {
    let n = int_arg(b).map_err(|_| err("ERR Invalid or out of range slot"))?;
    u16::try_from(n)
        .ok()
        .filter(|s| usize::from(*s) < SLOTS)
        .ok_or_else(|| err("ERR Invalid or out of range slot"))
}

fn node_entry(n: &ClusterNode) -> Reply {
    Reply::Array(vec![
        Reply::bulk(&n.ip),
        Reply::Int(i64::from(n.port)),
        Reply::bulk(&n.id),
        Reply::Array(vec![]),
    ])
}

pub fn cluster(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    if is(sub, "keyslot") && a.len() == 3 {
        return Ok(Reply::Int(i64::from(key_hash_slot(a.at(2)?))));
    }
    if is(sub, "countkeysinslot") && a.len() == 3 {
        let slot = slot_arg(a.at(2)?)?;
        return Ok(Reply::Int(ctx.db.count_keys_in_slot(slot) as i64));
    }
    if is(sub, "getkeysinslot") && a.len() == 4 {
        let slot = slot_arg(a.at(2)?)?;
        let n = int_arg(a.at(3)?)?;
        if n < 0 {
            return Err(err("ERR Invalid number of keys"));
        }
        return Ok(Reply::Array(
            ctx.db
                .keys_in_slot(slot)
                .take(n as usize)
                .map(Reply::bulk)
                .collect(),
        ));
    }
    let h = handle(ctx)?.clone();
    let Some(found) = SUBCOMMANDS
        .iter()
        .find(|c| c.names.iter().any(|n| is(sub, n)) && (c.argc_ok)(a.len()))
    else {
        return Err(Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(sub)
        )));
    };
    let reply = (found.run)(ctx, &h, a)?;
    h.pump();
    Ok(reply)
}

/// A CLUSTER subcommand that needs cluster mode: its names, the argument
/// counts it takes, and its handler.
struct Sub {
    names: &'static [&'static str],
    argc_ok: fn(usize) -> bool,
    run: fn(&mut Ctx, &Arc<ClusterHandle>, &[Bytes]) -> CmdResult,
}

// One row per subcommand (rustfmt would spread each over five lines).
#[rustfmt::skip]
const SUBCOMMANDS: &[Sub] = &[
    Sub { names: &["myid"], argc_ok: |_| true, run: cluster_myid },
    Sub { names: &["nodes"], argc_ok: |_| true, run: cluster_nodes },
    Sub { names: &["info"], argc_ok: |_| true, run: cluster_info },
    Sub { names: &["meet"], argc_ok: |n| n == 4 || n == 5, run: cluster_meet },
    Sub { names: &["addslots", "delslots"], argc_ok: |n| n >= 3, run: cluster_addslots },
    Sub { names: &["addslotsrange", "delslotsrange"], argc_ok: |n| n >= 4 && n % 2 == 0, run: cluster_addslotsrange },
    Sub { names: &["set-config-epoch"], argc_ok: |n| n == 3, run: cluster_set_config_epoch },
    Sub { names: &["failover"], argc_ok: |n| n <= 3, run: cluster_failover },
    Sub { names: &["replicate"], argc_ok: |n| n == 3, run: cluster_replicate },
    Sub { names: &["forget"], argc_ok: |n| n == 3, run: cluster_forget },
    Sub { names: &["bumpepoch"], argc_ok: |n| n == 2, run: cluster_bumpepoch },
    Sub { names: &["saveconfig"], argc_ok: |n| n == 2, run: cluster_saveconfig },
    Sub { names: &["count-failure-reports"], argc_ok: |n| n == 3, run: cluster_count_failure_reports },
    Sub { names: &["replicas", "slaves"], argc_ok: |n| n == 3, run: cluster_replicas },
    Sub { names: &["slots"], argc_ok: |n| n == 2, run: cluster_slots },
    Sub { names: &["shards"], argc_ok: |n| n == 2, run: cluster_shards },
    Sub { names: &["reset"], argc_ok: |n| n <= 3, run: cluster_reset },
    Sub { names: &["setslot"], argc_ok: |n| n >= 4, run: cluster_setslot },
    Sub { names: &["help"], argc_ok: |_| true, run: cluster_help },
];

fn cluster_myid(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    Ok(Reply::bulk(&h.bus().myself().id))
}

fn cluster_nodes(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    let bus = h.bus();
    let mut text = String::new();
    for n in bus.nodes() {
        text.push_str(&render_node_line(
            n,
            n.flags.myself.then_some(&bus.migrations),
        ));
        text.push('\n');
    }
    Ok(Reply::Verbatim(Bytes::from(text)))
}

fn cluster_info(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    let bus = h.bus();
    let view = h.view.load();
    let nodes = bus.nodes();
    let assigned = (0..SLOTS as u16)
        .filter(|s| bus.slot_owner(*s).is_some())
        .count();
    let failing = |pfail: bool| {
        (0..SLOTS as u16)
            .filter(|s| {
                bus.slot_owner(*s)
                    .is_some_and(|n| if pfail { n.flags.pfail } else { n.flags.fail })
            })
            .count()
    };
    let (pf, f) = (failing(true), failing(false));
    let size = nodes
        .iter()
        .filter(|n| n.flags.master && !n.slots.is_empty())
        .count();
    let text = format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{}\r\ncluster_slots_pfail:{pf}\r\ncluster_slots_fail:{f}\r\ncluster_known_nodes:{}\r\ncluster_size:{size}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\ncluster_stats_messages_sent:{}\r\ncluster_stats_messages_received:{}\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
        if view.ok { "ok" } else { "fail" },
        assigned - pf - f,
        nodes.len(),
        bus.current_epoch,
        bus.myself().master_id.as_deref().and_then(|m| bus.node(m)).map_or(bus.myself().config_epoch, |m| m.config_epoch),
        h.stats_sent.load(std::sync::atomic::Ordering::Relaxed),
        h.stats_received.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(Reply::Verbatim(Bytes::from(text)))
}

fn cluster_meet(ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let now = ctx.now;
    let ip = String::from_utf8_lossy(a.at(2)?).into_owned();
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(Reply::Error(format!(
            "ERR Invalid node address specified: {ip}:{}",
            String::from_utf8_lossy(a.at(3)?)
        )));
    }
    let port =
        u16::try_from(int_arg(a.at(3)?)?).map_err(|_| err("ERR Invalid base port specified"))?;
    let cport = match a.get(4) {
        Some(c) => u16::try_from(int_arg(c)?).map_err(|_| err("ERR Invalid bus port specified"))?,
        None => port
            .checked_add(10000)
            .ok_or_else(|| err("ERR Invalid base port specified"))?,
    };
    h.bus().meet(&ip, port, cport, now);
    Ok(Reply::Ok)
}

fn cluster_addslots(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    let slots = a
        .rest(2)
        .iter()
        .map(|s| slot_arg(s))
        .collect::<Result<Vec<u16>, Reply>>()?;
    slot_change(h, sub, &slots)
}

fn cluster_addslotsrange(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let sub = a.at(1)?;
    let mut slots = Vec::new();
    for (lo, hi) in a.pairs_from(2) {
        let (lo, hi) = (slot_arg(lo)?, slot_arg(hi)?);
        if lo > hi {
            return Err(Reply::Error(format!(
                "ERR start slot number {lo} is greater than end slot number {hi}"
            )));
        }
        slots.extend(lo..=hi);
    }
    let base = if is(sub, "addslotsrange") {
        "addslots"
    } else {
        "delslots"
    };
    slot_change(h, base.as_bytes(), &slots)
}

fn cluster_set_config_epoch(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let e = int_arg(a.at(2)?)?;
    if e < 0 {
        return Err(Reply::Error(format!(
            "ERR Invalid config epoch specified: {e}"
        )));
    }
    let mut bus = h.bus();
    if bus.nodes().len() > 1 {
        return Err(err("ERR The user can assign a config epoch only when the node does not know any other node."));
    }
    if bus.myself().config_epoch != 0 {
        return Err(err("ERR Node config epoch is already non-zero"));
    }
    bus.set_config_epoch(e as u64);
    Ok(Reply::Ok)
}

fn cluster_failover(ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let now = ctx.now;
    let mode = match a.get(2) {
        None => FailoverMode::Default,
        Some(m) if is(m, "force") => FailoverMode::Force,
        Some(m) if is(m, "takeover") => FailoverMode::Takeover,
        Some(_) => return Err(syntax_error()),
    };
    h.bus().failover(mode, now).map_err(err)?;
    Ok(Reply::Ok)
}

fn cluster_replicate(ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    if !ctx.db.is_empty() {
        return Err(err(
            "ERR To set a master the node must be empty and without assigned slots.",
        ));
    }
    let id = String::from_utf8_lossy(a.at(2)?).into_owned();
    h.bus().replicate(&id).map_err(err)?;
    Ok(Reply::Ok)
}

fn cluster_forget(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    h.bus()
        .forget(&String::from_utf8_lossy(a.at(2)?))
        .map_err(err)?;
    Ok(Reply::Ok)
}

fn cluster_bumpepoch(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    let (bumped, e) = h.bus().bump_epoch();
    Ok(Reply::Simple(format!(
        "{} {e}",
        if bumped { "BUMPED" } else { "STILL" }
    )))
}

fn cluster_saveconfig(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    h.save();
    Ok(Reply::Ok)
}

fn cluster_count_failure_reports(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let id = String::from_utf8_lossy(a.at(2)?);
    let n = h
        .bus()
        .failure_reports(&id)
        .ok_or_else(|| Reply::Error(format!("ERR Unknown node {id}")))?;
    Ok(Reply::Int(n as i64))
}

fn cluster_replicas(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let bus = h.bus();
    let id = String::from_utf8_lossy(a.at(2)?).into_owned();
    if bus.node(&id).is_none() {
        return Err(Reply::Error(format!("ERR Unknown node {id}")));
    }
    Ok(Reply::Array(
        bus.replicas_of(&id)
            .into_iter()
            .map(|n| Reply::bulk(render_node_line(n, None)))
            .collect(),
    ))
}

fn cluster_slots(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    let bus = h.bus();
    let mut out = Vec::new();
    let mut slot = 0usize;
    while slot < SLOTS {
        let Some(owner) = bus.slot_owner(slot as u16) else {
            slot += 1;
            continue;
        };
        let start = slot;
        while slot + 1 < SLOTS
            && bus
                .slot_owner(slot as u16 + 1)
                .is_some_and(|o| o.id == owner.id)
        {
            slot += 1;
        }
        let mut entry = vec![
            Reply::Int(start as i64),
            Reply::Int(slot as i64),
            node_entry(owner),
        ];
        for r in bus.replicas_of(&owner.id) {
            if !r.flags.fail {
                entry.push(node_entry(r));
            }
        }
        out.push(Reply::Array(entry));
        slot += 1;
    }
    Ok(Reply::Array(out))
}

fn cluster_shards(_ctx: &mut Ctx, h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    let bus = h.bus();
    let mut out = Vec::new();
    for m in bus.nodes().into_iter().filter(|n| n.flags.master) {
        let mut ranges = Vec::new();
        for (lo, hi) in m.slots.ranges() {
            ranges.push(Reply::Int(i64::from(lo)));
            ranges.push(Reply::Int(i64::from(hi)));
        }
        let describe = |n: &ClusterNode, role: &str| {
            let offset = bus.repl_offset_of(&n.id);
            // Redis: a replica that has not synced anything yet is
            // still "loading".
            let health = if n.flags.fail {
                "fail"
            } else if n.flags.slave && offset == 0 {
                "loading"
            } else {
                "online"
            };
            Reply::Map(vec![
                (Reply::bulk("id"), Reply::bulk(&n.id)),
                (Reply::bulk("port"), Reply::Int(i64::from(n.port))),
                (Reply::bulk("ip"), Reply::bulk(&n.ip)),
                (Reply::bulk("endpoint"), Reply::bulk(&n.ip)),
                (Reply::bulk("role"), Reply::bulk(role)),
                (
                    Reply::bulk("replication-offset"),
                    Reply::Int(i64::try_from(offset).unwrap_or(i64::MAX)),
                ),
                (Reply::bulk("health"), Reply::bulk(health)),
            ])
        };
        let mut nodes = vec![describe(m, "master")];
        nodes.extend(
            bus.replicas_of(&m.id)
                .into_iter()
                .map(|r| describe(r, "replica")),
        );
        out.push(Reply::Map(vec![
            (Reply::bulk("slots"), Reply::Array(ranges)),
            (Reply::bulk("nodes"), Reply::Array(nodes)),
        ]));
    }
    Ok(Reply::Array(out))
}

fn cluster_reset(ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let hard = match a.get(2) {
        None => false,
        Some(m) if is(m, "soft") => false,
        Some(m) if is(m, "hard") => true,
        Some(_) => return Err(syntax_error()),
    };
    if h.bus().myself().flags.master && !ctx.db.is_empty() {
        return Err(err(
            "ERR CLUSTER RESET can't be called with master nodes containing keys",
        ));
    }
    h.bus().reset(hard);
    Ok(Reply::Ok)
}

fn cluster_setslot(ctx: &mut Ctx, h: &Arc<ClusterHandle>, a: &[Bytes]) -> CmdResult {
    let slot = slot_arg(a.at(2)?)?;
    let id = |i: usize| {
        a.get(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(syntax_error)
    };
    let action = if is(a.at(3)?, "migrating") && a.len() == 5 {
        SetSlot::Migrating(id(4)?)
    } else if is(a.at(3)?, "importing") && a.len() == 5 {
        SetSlot::Importing(id(4)?)
    } else if is(a.at(3)?, "stable") && a.len() == 4 {
        SetSlot::Stable
    } else if is(a.at(3)?, "node") && a.len() == 5 {
        SetSlot::Node(id(4)?)
    } else {
        return Err(syntax_error());
    };
    let keys = ctx.db.count_keys_in_slot(slot);
    h.bus().set_slot(slot, action, keys).map_err(Reply::Error)?;
    Ok(Reply::Ok)
}

fn cluster_help(_ctx: &mut Ctx, _h: &Arc<ClusterHandle>, _a: &[Bytes]) -> CmdResult {
    Ok(Reply::array_of_bulks([
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ADDSLOTS <slot> [<slot> ...]",
        "ADDSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
        "BUMPEPOCH",
        "COUNT-FAILURE-REPORTS <node-id>",
        "COUNTKEYSINSLOT <slot>",
        "DELSLOTS <slot> [<slot> ...]",
        "DELSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
        "FAILOVER [FORCE|TAKEOVER]",
        "FORGET <node-id>",
        "GETKEYSINSLOT <slot> <count>",
        "INFO",
        "KEYSLOT <key>",
        "MEET <ip> <port> [<bus-port>]",
        "MYID",
        "NODES",
        "REPLICATE <node-id>",
        "REPLICAS <node-id>",
        "SAVECONFIG",
        "SET-CONFIG-EPOCH <epoch>",
        "SHARDS",
        "SLOTS",
        "HELP",
    ]))
}

fn slot_change(h: &Arc<ClusterHandle>, sub: &[u8], slots: &[u16]) -> Result<Reply, Reply> {
    let mut bus = h.bus();
    let adding = is(sub, "addslots");
    let mut seen = std::collections::HashSet::new();
    for &s in slots {
        if !seen.insert(s) {
            return Err(Reply::Error(format!(
                "ERR Slot {s} specified multiple times"
            )));
        }
        let owned = bus.slot_owner(s).is_some();
        if adding && owned {
            return Err(Reply::Error(format!("ERR Slot {s} is already busy")));
        }
        if !adding && !owned {
            return Err(Reply::Error(format!("ERR Slot {s} is already unassigned")));
        }
    }
    if adding {
        bus.add_slots(slots);
    } else {
        bus.del_slots(slots);
    }
    let _ = syntax_error;
    Ok(Reply::Ok)
}
