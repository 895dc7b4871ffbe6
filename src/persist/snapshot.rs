//! RDB snapshots in `dir`: SAVE (under the keyspace lock, like Redis's
//! blocking save), BGSAVE (a thread reading a copy-on-write image of the
//! keyspace in small batches, so clients keep being served), the save
//! rules, and loading the file at start.
//!
//! Files are written to a temp file, fsynced, renamed over `dbfilename`,
//! and the directory fsynced: a crash never leaves a half-written
//! `dump.rdb`, and a torn or corrupt file is refused at load, never used.

use super::rdb::{self, RdbError, RdbWriter};
use crate::node::client::unix_ms;
use crate::node::shared::Shared;
use crate::store::Db;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes serialized per keyspace-lock hold while a snapshot runs.
const BATCH_BYTES: usize = 256 * 1024;

/// Redis retries a failed background save after this long (ms).
const RETRY_DELAY_MS: u64 = 5000;

/// Persistence counters and flags (INFO persistence).
#[derive(Debug)]
pub struct PersistState {
    /// What the running snapshot is for; None when none runs.
    pub running: std::sync::Mutex<Option<SnapshotKind>>,
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
            running: std::sync::Mutex::new(None),
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
        self.running.lock().map_or(None, |r| *r)
    }

    /// Claims the snapshot machinery; false when another snapshot runs.
    pub fn claim(&self, kind: SnapshotKind) -> bool {
        let Ok(mut r) = self.running.lock() else {
            return false;
        };
        if r.is_some() {
            return false;
        }
        *r = Some(kind);
        true
    }

    pub fn release(&self) {
        if let Ok(mut r) = self.running.lock() {
            *r = None;
        }
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

/// Where `dbfilename` lives.
pub fn rdb_path(shared: &Shared) -> PathBuf {
    let cfg = shared.config.load();
    cfg.dir.join(&cfg.dbfilename)
}

/// The aux fields Redis 7.0 writes, with the replication id and offset the
/// snapshot corresponds to.
pub fn aux_fields(replid: &str, offset: u64) -> Vec<(&'static str, String)> {
    crate::runtime::alloc::flush_local();
    vec![
        ("redis-ver", crate::node::cmd::server::VERSION.to_string()),
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
        let mut w = RdbWriter::start(sink, &aux, db.len(), db.expires_len())?;
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

/// Ends the copy-on-write snapshot however the writer exits.
struct EndGuard<'a>(&'a Shared);

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().db.end_snapshot();
    }
}

/// A snapshot taken (copy-on-write armed) but not yet written out.
#[derive(Debug, Clone)]
pub struct Begun {
    keys: usize,
    expires: usize,
    pub replid: String,
    pub offset: u64,
    changes: u64,
}

/// Takes the point-in-time image, under the keyspace lock the caller holds
/// (`db` is the locked keyspace). The caller must have handed pending
/// propagation on first (`Shared::propagated`) so the replication position
/// matches the data. None if a snapshot already runs.
pub fn begin_locked(shared: &Shared, db: &mut Db) -> Option<Begun> {
    if !db.begin_snapshot(rdb::put_entry) {
        return None;
    }
    let (replid, offset) = shared.repl.position();
    Some(Begun {
        keys: db.len(),
        expires: db.expires_len(),
        replid,
        offset,
        changes: total_changes(db),
    })
}

/// Takes the image under a fresh lock.
pub fn begin(shared: &Shared) -> Option<Begun> {
    let mut st = shared.lock();
    let st = &mut *st;
    shared.propagated(&mut st.prop);
    begin_locked(shared, &mut st.db)
}

/// Writes a begun image to `sink` without holding the keyspace lock for
/// more than one batch at a time.
pub fn write_background<W: Write>(
    shared: &Shared,
    sink: W,
    begun: &Begun,
) -> io::Result<(W, SnapshotInfo)> {
    let _end = EndGuard(shared);
    let aux = aux_fields(&begun.replid, begun.offset);
    let mut w = RdbWriter::start(sink, &aux, begun.keys, begun.expires)?;
    let mut buf = Vec::with_capacity(BATCH_BYTES * 2);
    let mut next = 0;
    let mut taken = 0;
    while next < crate::cluster::SLOTS {
        {
            let mut st = shared.lock();
            next = st.db.snapshot_take(next, &mut buf, BATCH_BYTES);
            taken = st.db.snapshot_keys();
        }
        w.write_raw(&buf)?;
        buf.clear();
    }
    let bytes = w.written() + 9;
    let sink = w.finish()?;
    Ok((
        sink,
        SnapshotInfo {
            keys: taken,
            replid: begun.replid.clone(),
            offset: begun.offset,
            changes: begun.changes,
            bytes,
        },
    ))
}

/// Writes a begun image to `dbfilename` (the caller has claimed the
/// machinery and runs this off the async runtime).
pub fn bgsave_blocking(shared: &Shared, begun: &Begun) -> Result<SnapshotInfo, SnapshotError> {
    let path = rdb_path(shared);
    let started = unix_ms();
    let ps = &shared.persist;
    ps.bgsave_started_ms.store(started, Ordering::Relaxed);
    ps.last_bgsave_try_ms.store(started, Ordering::Relaxed);
    let mut info = None;
    let res = write_atomically_unless(&path, &ps.shutting_down, |sink| {
        let (sink, i) = write_background(shared, sink, begun)?;
        info = Some(i);
        Ok(sink)
    });
    let secs = (unix_ms().saturating_sub(started) / 1000) as i64;
    ps.last_bgsave_secs.store(secs, Ordering::Relaxed);
    match (res, info) {
        (Ok(()), Some(info)) => {
            saved(shared, info.changes);
            tracing::info!(keys = info.keys, bytes = info.bytes, "DB saved on disk");
            Ok(info)
        }
        (Err(e), _) => {
            ps.last_bgsave_ok.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, "Background saving error");
            Err(e)
        }
        (Ok(()), None) => Err(SnapshotError::Io {
            path: path.display().to_string(),
            source: io::Error::other("snapshot did not run"),
        }),
    }
}

/// Records a successful save that began at `changes`.
pub fn saved(shared: &Shared, changes: u64) {
    let ps = &shared.persist;
    ps.last_bgsave_ok.store(true, Ordering::Relaxed);
    ps.rdb_saves.fetch_add(1, Ordering::Relaxed);
    ps.changes_at_last_save.store(changes, Ordering::Relaxed);
    shared.lastsave.store(unix_ms() / 1000, Ordering::Relaxed);
}

/// BGSAVE: a background save of the image `begun` (taken under the lock by
/// the caller, so later writes are not in it). Err(text) when it cannot
/// start; the image is then released.
pub fn spawn_bgsave(shared: &Arc<Shared>, begun: Begun) -> Result<(), &'static str> {
    if !shared.persist.claim(SnapshotKind::Rdb) {
        return Err("a snapshot is already running");
    }
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("bgsave".into())
        .spawn(move || {
            let _ = bgsave_blocking(&s, &begun);
            s.persist.release();
        });
    if spawned.is_err() {
        shared.persist.release();
        return Err("cannot start the background save thread");
    }
    tracing::info!("Background saving started");
    Ok(())
}

/// BGSAVE from outside any command (save rules, schedule).
pub fn start_bgsave(shared: &Arc<Shared>) -> Result<(), &'static str> {
    if shared.persist.current().is_some() {
        return Err("a snapshot is already running");
    }
    let begun = begin(shared).ok_or("a snapshot is already running")?;
    spawn_bgsave(shared, begun).inspect_err(|_| shared.lock().db.end_snapshot())
}

/// The save rules (`save <secs> <changes>`), the BGSAVE SCHEDULE queue and
/// the retry of a failed save; called from the cron.
pub fn cron(shared: &Arc<Shared>, changes_now: u64) {
    let ps = &shared.persist;
    if ps.current().is_some() {
        return;
    }
    if ps.bgsave_scheduled.swap(false, Ordering::Relaxed) {
        if start_bgsave(shared).is_err() {
            ps.bgsave_scheduled.store(true, Ordering::Relaxed);
        }
        return;
    }
    let cfg = shared.config.load();
    if cfg.save.is_empty() {
        return;
    }
    let now = unix_ms();
    let since = changes_now.saturating_sub(ps.changes_at_last_save.load(Ordering::Relaxed));
    let elapsed = now / 1000 - shared.lastsave.load(Ordering::Relaxed).min(now / 1000);
    let retry_ok = ps.last_bgsave_ok.load(Ordering::Relaxed)
        || now.saturating_sub(ps.last_bgsave_try_ms.load(Ordering::Relaxed)) > RETRY_DELAY_MS;
    if retry_ok && cfg.save.iter().any(|&(s, c)| since >= c && elapsed >= s) {
        tracing::info!(changes = since, seconds = elapsed, "save rule met, saving");
        let _ = start_bgsave(shared);
    }
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
