//! INFO: the sections and field names of Redis 7.0 that redis-cli,
//! exporters and dashboards read.

use super::Argv;
use super::{CmdResult, Ctx};
use crate::resp::Reply;
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];
const ALL_EXTRA: &[&str] = &["commandstats", "latencystats"];

/// `1.23M`-style sizes as Redis prints them.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    }
}

fn cpu_times() -> (f64, f64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            (t(u.system_time()), t(u.user_time()))
        }
        Err(_) => (0.0, 0.0),
    }
}

/// INFO replication, laid out as Redis 7.0 does for a master and a replica.
fn replication_section(ctx: &mut Ctx, out: &mut String) {
    let cfg = ctx.shared.config.load();
    let repl = &ctx.shared.repl;
    // Replication timestamps are on the monotonic clock.
    let now = crate::runtime::clock::mono_ms();
    let secs_since = |ms: u64| -> i64 {
        if ms == 0 {
            -1
        } else {
            (now.saturating_sub(ms) / 1000) as i64
        }
    };
    out.push_str("# Replication\r\n");
    let offset = repl.offset();
    match repl.master() {
        Some((host, port)) => {
            let link = repl.link().clone();
            w(out, "role", &"slave");
            w(out, "master_host", &host);
            w(out, "master_port", &port);
            w(
                out,
                "master_link_status",
                &if link.up { "up" } else { "down" },
            );
            w(
                out,
                "master_last_io_seconds_ago",
                &secs_since(link.last_io_ms),
            );
            w(
                out,
                "master_sync_in_progress",
                &u8::from(link.sync_in_progress),
            );
            if link.sync_in_progress {
                let total = link.sync_total_bytes;
                let read = link.sync_read_bytes as i64;
                w(out, "master_sync_total_bytes", &total);
                w(out, "master_sync_read_bytes", &read);
                w(out, "master_sync_left_bytes", &(total - read));
                let perc = if total > 0 {
                    read as f64 * 100.0 / total as f64
                } else {
                    0.0
                };
                w(out, "master_sync_perc", &format!("{perc:.2}"));
                w(
                    out,
                    "master_sync_last_io_seconds_ago",
                    &secs_since(link.last_io_ms),
                );
            }
            w(out, "slave_read_repl_offset", &offset);
            w(out, "slave_repl_offset", &offset);
            if !link.up {
                w(
                    out,
                    "master_link_down_since_seconds",
                    &link.down_since_ms.map_or(-1, secs_since),
                );
            }
            w(out, "slave_priority", &cfg.replica_priority);
            w(out, "slave_read_only", &u8::from(cfg.replica_read_only));
            w(out, "replica_announced", &u8::from(cfg.replica_announced));
        }
        None => w(out, "role", &"master"),
    }
    let replicas = repl.replicas();
    w(out, "connected_slaves", &replicas.len());
    for (i, r) in replicas.iter().enumerate() {
        let _ = write!(
            out,
            "slave{i}:ip={},port={},state={},offset={},lag={}\r\n",
            r.ip,
            r.port,
            r.state.name(),
            r.ack,
            now.saturating_sub(r.last_ack_ms) / 1000
        );
    }
    let f = repl.feed();
    w(out, "master_failover_state", &"no-failover");
    w(out, "master_replid", &f.replid);
    w(out, "master_replid2", &f.replid2);
    w(out, "master_repl_offset", &f.offset);
    w(
        out,
        "second_repl_offset",
        &f.second_offset.map_or(-1, |o| o as i64),
    );
    w(out, "repl_backlog_active", &u8::from(f.backlog.is_some()));
    w(out, "repl_backlog_size", &cfg.repl_backlog_size);
    w(
        out,
        "repl_backlog_first_byte_offset",
        &f.backlog.as_ref().map_or(0, |b| b.start() + 1),
    );
    w(
        out,
        "repl_backlog_histlen",
        &f.backlog.as_ref().map_or(0, |b| b.histlen()),
    );
}

fn w(out: &mut String, k: &str, v: &dyn std::fmt::Display) {
    let _ = write!(out, "{k}:{v}\r\n");
}

type SectionFn = fn(&mut Ctx, &mut String);

/// Every section, in the order Redis prints them.
const SECTIONS: &[(&str, SectionFn)] = &[
    ("server", server_section),
    ("clients", clients_section),
    ("memory", memory_section),
    ("persistence", persistence_section),
    ("stats", stats_section),
    ("replication", replication_section),
    ("cpu", cpu_section),
    ("modules", modules_section),
    ("errorstats", errorstats_section),
    ("commandstats", commandstats_section),
    ("latencystats", latencystats_section),
    ("cluster", cluster_section),
    ("keyspace", keyspace_section),
];

fn section(ctx: &mut Ctx, name: &str, out: &mut String) {
    if let Some((_, write_section)) = SECTIONS.iter().find(|(n, _)| *n == name) {
        write_section(ctx, out);
    }
}

fn server_section(ctx: &mut Ctx, out: &mut String) {
    let cfg = ctx.shared.config.load();
    let up = ctx.shared.started.elapsed().as_secs();

    out.push_str("# Server\r\n");
    w(out, "redis_version", &super::server::VERSION);
    w(out, "redis_git_sha1", &"00000000");
    w(out, "redis_git_dirty", &0);
    w(out, "redis_build_id", &"slotway");
    w(
        out,
        "redis_mode",
        &if cfg.cluster_enabled {
            "cluster"
        } else {
            "standalone"
        },
    );
    w(
        out,
        "os",
        &format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    );
    w(out, "arch_bits", &(usize::BITS));
    w(out, "multiplexing_api", &"epoll");
    w(out, "process_id", &std::process::id());
    w(out, "process_supervised", &"no");
    w(out, "run_id", &ctx.shared.run_id);
    w(out, "tcp_port", &ctx.shared.port);
    w(out, "server_time_usec", &(ctx.now * 1000));
    w(out, "uptime_in_seconds", &up);
    w(out, "uptime_in_days", &(up / 86400));
    w(out, "hz", &cfg.hz);
    w(out, "configured_hz", &cfg.hz);
    w(
        out,
        "executable",
        &std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    let file = ctx.shared.table.lock().file.clone();
    w(
        out,
        "config_file",
        &file.map(|f| f.display().to_string()).unwrap_or_default(),
    );
    w(out, "io_threads_active", &0);
    w(out, "slotway_version", &env!("CARGO_PKG_VERSION"));
}

fn clients_section(ctx: &mut Ctx, out: &mut String) {
    let cfg = ctx.shared.config.load();

    out.push_str("# Clients\r\n");
    w(out, "connected_clients", &ctx.shared.connected_clients());
    w(out, "cluster_connections", &0);
    w(out, "maxclients", &cfg.maxclients);
    let paused = ctx.shared.paused_clients.load(Ordering::Relaxed);
    w(
        out,
        "blocked_clients",
        &(ctx.db.blocked_waiters() as u64 + paused),
    );
    w(out, "tracking_clients", &0);
    w(out, "clients_in_timeout_table", &0);
}

fn memory_section(ctx: &mut Ctx, out: &mut String) {
    let cfg = ctx.shared.config.load();

    crate::runtime::alloc::flush_local();
    let used = crate::runtime::alloc::allocated() as u64;
    let rss = crate::runtime::alloc::rss() as u64;
    let peak = ctx
        .shared
        .peak_memory
        .fetch_max(used, Ordering::Relaxed)
        .max(used);
    out.push_str("# Memory\r\n");
    w(out, "used_memory", &used);
    w(out, "used_memory_human", &human(used));
    w(out, "used_memory_rss", &rss);
    w(out, "used_memory_rss_human", &human(rss));
    w(out, "used_memory_peak", &peak);
    w(out, "used_memory_peak_human", &human(peak));
    w(
        out,
        "used_memory_peak_perc",
        &format!(
            "{:.2}%",
            if peak > 0 {
                used as f64 * 100.0 / peak as f64
            } else {
                100.0
            }
        ),
    );
    w(out, "used_memory_dataset", &used);
    w(out, "used_memory_lua", &0);
    w(out, "number_of_cached_scripts", &ctx.scripts.len());
    w(out, "maxmemory", &cfg.maxmemory);
    w(out, "maxmemory_human", &human(cfg.maxmemory));
    w(out, "maxmemory_policy", &cfg.maxmemory_policy.name());
    w(
        out,
        "mem_fragmentation_ratio",
        &format!(
            "{:.2}",
            if used > 0 {
                rss as f64 / used as f64
            } else {
                0.0
            }
        ),
    );
    w(out, "mem_allocator", &"jemalloc");
}

fn persistence_section(ctx: &mut Ctx, out: &mut String) {
    use crate::persist::snapshot::{total_changes, SnapshotKind};
    let ps = &ctx.shared.persist;
    let running = ps.current();
    let rdb_running = matches!(running, Some(SnapshotKind::Rdb | SnapshotKind::Replication));
    let since_start = |ms: u64| -> i64 { (ctx.now.saturating_sub(ms) / 1000) as i64 };
    let ok = |b: bool| if b { "ok" } else { "err" };
    out.push_str("# Persistence\r\n");
    w(
        out,
        "loading",
        &u8::from(ps.loading.load(Ordering::Relaxed)),
    );
    w(out, "async_loading", &0);
    w(out, "current_cow_peak", &0);
    w(out, "current_cow_size", &0);
    w(out, "current_cow_size_age", &0);
    w(out, "current_fork_perc", &"0.00");
    w(out, "current_save_keys_processed", &ctx.db.snapshot_keys());
    w(
        out,
        "current_save_keys_total",
        &if running.is_some() { ctx.db.len() } else { 0 },
    );
    w(
        out,
        "rdb_changes_since_last_save",
        &total_changes(ctx.db).saturating_sub(ps.changes_at_last_save.load(Ordering::Relaxed)),
    );
    w(out, "rdb_bgsave_in_progress", &u8::from(rdb_running));
    w(
        out,
        "rdb_last_save_time",
        &ctx.shared.lastsave.load(Ordering::Relaxed),
    );
    w(
        out,
        "rdb_last_bgsave_status",
        &ok(ps.last_bgsave_ok.load(Ordering::Relaxed)),
    );
    w(
        out,
        "rdb_last_bgsave_time_sec",
        &ps.last_bgsave_secs.load(Ordering::Relaxed),
    );
    w(
        out,
        "rdb_current_bgsave_time_sec",
        &if rdb_running {
            since_start(ps.bgsave_started_ms.load(Ordering::Relaxed))
        } else {
            -1
        },
    );
    w(out, "rdb_saves", &ps.rdb_saves.load(Ordering::Relaxed));
    w(out, "rdb_last_cow_size", &0);
    w(
        out,
        "rdb_last_load_keys_expired",
        &ps.last_load_expired.load(Ordering::Relaxed),
    );
    w(
        out,
        "rdb_last_load_keys_loaded",
        &ps.last_load_keys.load(Ordering::Relaxed),
    );
    crate::node::aof::info_fields(ctx.shared, ctx.now, out);
    w(out, "module_fork_in_progress", &0);
    w(out, "module_fork_last_cow_size", &0);
}

fn stats_section(ctx: &mut Ctx, out: &mut String) {
    let st = &ctx.shared.stats;
    let rs = &ctx.shared.repl.stats;
    let db = &ctx.db.stats;
    let (channels, patterns, shard_channels) = {
        let p = ctx.shared.pubsub.lock();
        (
            p.names(crate::node::pubsub::Kind::Channel, None).len() as u64,
            p.numpat() as u64,
            p.names(crate::node::pubsub::Kind::Shard, None).len() as u64,
        )
    };
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let fields = [
        (
            "total_connections_received",
            load(&st.total_connections_received),
        ),
        (
            "total_commands_processed",
            load(&st.total_commands_processed),
        ),
        ("instantaneous_ops_per_sec", load(&st.ops_per_sec)),
        ("total_net_input_bytes", load(&st.net_input_bytes)),
        ("total_net_output_bytes", load(&st.net_output_bytes)),
        ("rejected_connections", load(&st.rejected_connections)),
        ("sync_full", load(&rs.sync_full)),
        ("sync_partial_ok", load(&rs.sync_partial_ok)),
        ("sync_partial_err", load(&rs.sync_partial_err)),
        ("expired_keys", db.expired_keys),
        ("evicted_keys", db.evicted_keys),
        ("evicted_clients", load(&st.evicted_clients)),
        ("keyspace_hits", db.keyspace_hits),
        ("keyspace_misses", db.keyspace_misses),
        ("pubsub_channels", channels),
        ("pubsub_patterns", patterns),
        ("pubsubshard_channels", shard_channels),
        ("total_error_replies", load(&st.error_replies)),
    ];
    out.push_str("# Stats\r\n");
    for (name, value) in fields {
        w(out, name, &value);
    }
}

fn cpu_section(_ctx: &mut Ctx, out: &mut String) {
    let (sys, user) = cpu_times();
    out.push_str("# CPU\r\n");
    w(out, "used_cpu_sys", &format!("{sys:.6}"));
    w(out, "used_cpu_user", &format!("{user:.6}"));
    w(out, "used_cpu_sys_children", &"0.000000");
    w(out, "used_cpu_user_children", &"0.000000");
}

fn modules_section(_ctx: &mut Ctx, out: &mut String) {
    out.push_str("# Modules\r\n");
}

fn errorstats_section(_ctx: &mut Ctx, out: &mut String) {
    out.push_str("# Errorstats\r\n");
}

fn commandstats_section(_ctx: &mut Ctx, out: &mut String) {
    out.push_str("# Commandstats\r\n");
}

fn latencystats_section(_ctx: &mut Ctx, out: &mut String) {
    out.push_str("# Latencystats\r\n");
}

fn cluster_section(ctx: &mut Ctx, out: &mut String) {
    let cfg = ctx.shared.config.load();

    out.push_str("# Cluster\r\n");
    w(out, "cluster_enabled", &u8::from(cfg.cluster_enabled));
}

fn keyspace_section(ctx: &mut Ctx, out: &mut String) {
    out.push_str("# Keyspace\r\n");
    if !ctx.db.is_empty() {
        let _ = write!(
            out,
            "db0:keys={},expires={},avg_ttl=0\r\n",
            ctx.db.len(),
            ctx.db.expires_len()
        );
    }
}

pub fn info(ctx: &mut Ctx, a: &[Bytes]) -> CmdResult {
    let mut wanted: Vec<String> = Vec::new();
    for arg in a.rest(1) {
        let s = String::from_utf8_lossy(arg).to_ascii_lowercase();
        match s.as_str() {
            "default" => wanted.extend(DEFAULT.iter().map(|s| s.to_string())),
            "all" | "everything" => {
                wanted.extend(DEFAULT.iter().map(|s| s.to_string()));
                wanted.extend(ALL_EXTRA.iter().map(|s| s.to_string()));
            }
            _ => wanted.push(s),
        }
    }
    if wanted.is_empty() {
        wanted.extend(DEFAULT.iter().map(|s| s.to_string()));
    }
    let mut out = String::new();
    let mut seen = Vec::new();
    // Sections come out in Redis's order whatever order they were asked in.
    for name in DEFAULT.iter().chain(ALL_EXTRA) {
        if wanted.iter().any(|w| w == name) && !seen.contains(name) {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            section(ctx, name, &mut out);
            seen.push(name);
        }
    }
    Ok(Reply::Verbatim(Bytes::from(out)))
}
