//! Persistence in `dir`: the RDB snapshot (SAVE, BGSAVE, save rules, on
//! shutdown) and the append-only log. Full resync reuses the snapshot code.

pub mod aof;
pub mod rdb;
pub mod snapshot;
