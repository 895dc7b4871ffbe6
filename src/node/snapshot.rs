//! Snapshots of the running node: SAVE/BGSAVE orchestration over the
//! shared state (claiming the machinery, the copy-on-write image taken
//! under the keyspace lock and written in batches, the save rules and
//! retries from the cron). The file format and atomic writes are
//! `persist::snapshot`'s; this is the part that knows the server.

use crate::node::shared::Shared;
use crate::persist::rdb::{self, RdbWriter};
use crate::persist::snapshot::{
    aux_fields, total_changes, write_atomically_unless, SnapshotError, SnapshotInfo, SnapshotKind,
    BATCH_BYTES,
};
use crate::runtime::clock::wall_ms as unix_ms;
use crate::store::Db;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Redis retries a failed background save after this long (ms).
const RETRY_DELAY_MS: u64 = 5000;

/// Where `dbfilename` lives.
pub fn rdb_path(shared: &Shared) -> PathBuf {
    let cfg = shared.config.load();
    cfg.dir.join(&cfg.dbfilename)
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
    /// The function libraries at that instant.
    functions: Vec<bytes::Bytes>,
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
        functions: db.functions.sources(),
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
    let mut w = RdbWriter::start(sink, &aux, &begun.functions, begun.keys, begun.expires)?;
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
