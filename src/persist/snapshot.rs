//! RDB snapshots in `dir`: SAVE (under the keyspace lock, like Redis's
//! blocking save), BGSAVE (a thread reading a copy-on-write image of the
//! keyspace in small batches, so clients keep being served), the save
//! rules, and loading the file at start.
//!
//! Files are written to a temp file, fsynced, renamed over `dbfilename`,
//! and the directory fsynced: a crash never leaves a half-written
//! `dump.rdb`, and a torn or corrupt file is refused at load, never used.

use super::rdb::{self, RdbError, RdbWriter};

/// Bytes serialized per keyspace-lock hold while a snapshot runs.
pub const BATCH_BYTES: usize = 256 * 1024;
use crate::runtime::clock::wall_ms as unix_ms;
use crate::store::Db;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Persistence counters and flags (INFO persistence).
#[derive(Debug)]
pub struct PersistState {
    /// What the running snapshot is for; None when none runs.
    pub running: parking_lot::Mutex<Option<SnapshotKind>>,
    pub bgsave_scheduled: AtomicBool,
    pub last_bgsave_ok: AtomicBool,
    pub last_bgsave_secs: AtomicI64,
    pub bgsave_started_ms: AtomicU64,
    pub last_bgsave_try_ms: AtomicU64,
    pub rdb_saves: AtomicU64,
    /// Keyspace change count when the last successful save began.
    pub changes_at_last_save: AtomicU64,
    pub loading: AtomicBool,
    /// Set once the shutdown save started: a background save finishing
    /// later must not replace its file with an older image.
    pub shutting_down: AtomicBool,
    pub last_load_keys: AtomicU64,
    pub last_load_expired: AtomicU64,
}

impl Default for PersistState {
    fn default() -> Self {
        PersistState {
            running: parking_lot::Mutex::new(None),
            bgsave_scheduled: AtomicBool::new(false),
            last_bgsave_ok: AtomicBool::new(true),
            last_bgsave_secs: AtomicI64::new(-1),
            bgsave_started_ms: AtomicU64::new(0),
            last_bgsave_try_ms: AtomicU64::new(0),
            rdb_saves: AtomicU64::new(0),
            changes_at_last_save: AtomicU64::new(0),
            loading: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            last_load_keys: AtomicU64::new(0),
            last_load_expired: AtomicU64::new(0),
        }
    }
}

/// Who runs the (single) snapshot machinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// BGSAVE or a save rule.
    Rdb,
    /// A full resync for replicas (also writes `dbfilename`, as Redis's
    /// disk-based sync does).
    Replication,
    /// BGREWRITEAOF: a new base file.
    AofRewrite,
}

impl PersistState {
    pub fn current(&self) -> Option<SnapshotKind> {
        *self.running.lock()
    }

    /// Claims the snapshot machinery; false when another snapshot runs.
    pub fn claim(&self, kind: SnapshotKind) -> bool {
        let mut r = self.running.lock();
        if r.is_some() {
            return false;
        }
        *r = Some(kind);
        true
    }

    pub fn release(&self) {
        *self.running.lock() = None;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("Bad file format reading {path}: {source}")]
    Load { path: String, source: RdbError },
}

/// Changes to the keyspace since start (commands and server deletions).
pub fn total_changes(db: &Db) -> u64 {
    db.dirty + db.removed_by_server
}

/// The aux fields Redis 7.0 writes, with the replication id and offset the
/// snapshot corresponds to.
pub fn aux_fields(replid: &str, offset: u64) -> Vec<(&'static str, String)> {
    crate::runtime::alloc::flush_local();
    vec![
        ("redis-ver", crate::util::VERSION.to_string()),
        ("redis-bits", usize::BITS.to_string()),
        ("ctime", (unix_ms() / 1000).to_string()),
        ("used-mem", crate::runtime::alloc::allocated().to_string()),
        ("repl-stream-db", "0".into()),
        ("repl-id", replid.to_string()),
        ("repl-offset", offset.to_string()),
        ("aof-base", "0".into()),
    ]
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a rename durable.
pub fn fsync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `fill`'s output to `path` atomically: temp file, fsync, rename,
/// fsync of the directory.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(BufWriter<File>) -> io::Result<BufWriter<File>>,
) -> Result<(), SnapshotError> {
    write_atomically_unless(path, &AtomicBool::new(false), fill)
}

/// `write_atomically`, but the file is not put in place if `cancel` is
/// set by the time it is complete.
pub fn write_atomically_unless(
    path: &Path,
    cancel: &AtomicBool,
    fill: impl FnOnce(BufWriter<File>) -> io::Result<BufWriter<File>>,
) -> Result<(), SnapshotError> {
    let tmp = path.with_file_name(format!("temp-{}-{}.rdb", std::process::id(), unix_ms()));
    let result = (|| {
        let f = File::create(&tmp)?;
        let w = fill(BufWriter::with_capacity(1 << 20, f))?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled by shutdown"));
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))?;
    fsync_dir(path);
    Ok(())
}

/// SAVE: the whole keyspace, now, under the lock the caller holds.
pub fn save_locked(db: &Db, path: &Path, replid: &str, offset: u64) -> Result<(), SnapshotError> {
    let aux = aux_fields(replid, offset);
    write_atomically(path, |sink| {
        let mut w = RdbWriter::start(
            sink,
            &aux,
            &db.functions.sources(),
            db.len(),
            db.expires_len(),
        )?;
        let mut buf = Vec::with_capacity(BATCH_BYTES);
        let mut res = Ok(());
        db.for_each(|k, v, e| {
            if res.is_ok() {
                rdb::put_entry(&mut buf, k, v, e);
                if buf.len() >= BATCH_BYTES {
                    res = w.write_raw(&buf);
                    buf.clear();
                }
            }
        });
        res?;
        w.write_raw(&buf)?;
        w.finish()
    })
}

/// Library sources by library name (the name of the shebang line); a
/// source without a readable name is dropped with a warning, as it could
/// never be called.
pub fn library_codes(sources: &[Vec<u8>]) -> std::collections::BTreeMap<String, bytes::Bytes> {
    let mut out = std::collections::BTreeMap::new();
    for code in sources {
        match crate::store::functions::parse_shebang(code) {
            Ok(sb) => {
                out.insert(sb.name, bytes::Bytes::copy_from_slice(code));
            }
            Err(e) => tracing::warn!(error = %e, "function library without a valid name skipped"),
        }
    }
    out
}

/// What a background snapshot captured.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub keys: u64,
    /// The replication position the image corresponds to.
    pub replid: String,
    pub offset: u64,
    /// Keyspace change count at the start.
    pub changes: u64,
    pub bytes: u64,
}

/// Loads `path` into a fresh keyspace. Keys already expired are dropped
/// (a master's own file); nothing is returned unless the whole file is
/// valid.
pub fn load_file(path: &Path, now: Option<u64>) -> Result<(Db, rdb::RdbMeta), SnapshotError> {
    let f = File::open(path).map_err(io_err(path))?;
    let reader = io::BufReader::with_capacity(1 << 20, f);
    // Keys go straight into a keyspace of their own, which is dropped
    // unless the whole file loaded.
    let mut db = Db::new();
    let meta =
        rdb::load(reader, now, |k, v, e| db.set_with_expire(&k, v, e)).map_err(|source| {
            SnapshotError::Load {
                path: path.display().to_string(),
                source,
            }
        })?;
    db.functions = crate::store::functions::Libraries::from_codes(library_codes(&meta.functions));
    db.dirty = 0;
    Ok((db, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Value;

    #[test]
    fn save_then_load_and_torn_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.rdb");
        let mut db = Db::new();
        db.set(b"a", Value::Str(crate::store::sds(b"1")));
        db.set_with_expire(
            b"b",
            Value::Str(crate::store::sds(b"2")),
            Some(u64::MAX / 2),
        );
        db.set_with_expire(b"old", Value::Str(crate::store::sds(b"x")), Some(5));
        save_locked(&db, &path, "abc", 7).unwrap();
        let (back, meta) = load_file(&path, Some(10)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(meta.expired, 1);
        assert_eq!(meta.aux("repl-offset"), Some("7"));
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let e = match load_file(&path, None) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a torn file loaded"),
        };
        assert!(e.contains("dump.rdb") && e.contains("truncated"), "{e}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("temp-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
