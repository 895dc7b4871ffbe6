//! The node's append-only log, driven over the shared state: loading it
//! at start (commands run as a loader client), turning it on and off,
//! BGREWRITEAOF and the auto rewrite rule, restarting it after a full
//! resync, INFO. The files themselves (manifest, incr files, writer and
//! fsync thread, the stream reader) are `persist::aof`'s.

use crate::node::client::{Client, ClientHandle};
use crate::node::shared::Shared;
use crate::persist::aof::{
    io_err, manifest_name, replay, AofError, Fsync, LogSpec, Manifest, ReplayError, Replayed,
};
use crate::persist::snapshot::{self, SnapshotKind};
use crate::runtime::clock::wall_ms as unix_ms;
use crate::store::ExpiryMode;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The address the startup replay's client shows (and the slow log skips).
pub const LOADER_ADDR: &str = "aof-loader";

fn aof_dir(shared: &Shared) -> PathBuf {
    let cfg = shared.config.load();
    cfg.dir.join(&cfg.appenddirname)
}

/// Where the log lives and how it is synced, from the config now.
fn spec(shared: &Shared) -> LogSpec {
    let cfg = shared.config.load();
    LogSpec {
        dir: aof_dir(shared),
        name: cfg.appendfilename.clone(),
        fsync: Fsync::parse(&cfg.appendfsync),
    }
}

/// Loads the log at start if there is one. Ok(false): no log exists.
pub fn load_at_start(shared: &Arc<Shared>) -> Result<bool, AofError> {
    let cfg = shared.config.load();
    let dir = aof_dir(shared);
    let mpath = dir.join(manifest_name(&cfg.appendfilename));
    if !mpath.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
    let manifest = Manifest::parse(&text).map_err(|reason| AofError::Manifest {
        path: mpath.display().to_string(),
        reason,
    })?;
    let started = std::time::Instant::now();
    let handle = Arc::new(ClientHandle::detached(0, LOADER_ADDR));
    let mut client = Client::new(handle, true).0;
    client.is_master = true;
    {
        let mut st = shared.lock();
        st.set_propagation(false);
        st.db.expiry = ExpiryMode::Ignore;
    }
    let mut base_size = 0;
    if let Some(base) = &manifest.base {
        let path = dir.join(&base.name);
        base_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        load_base(shared, &mut client, &path)?;
    }
    let n = manifest.incrs.len();
    let mut incr_size = 0;
    for (i, f) in manifest.incrs.iter().enumerate() {
        let path = dir.join(&f.name);
        let last = i + 1 == n;
        incr_size = load_commands(shared, &mut client, &path, last && cfg.aof_load_truncated)?;
    }
    shared.lock().db.dirty = 0;
    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        files = n + usize::from(manifest.base.is_some()),
        "DB loaded from append only file"
    );
    shared
        .aof
        .open_existing(manifest, spec(shared), base_size, incr_size)
        .map_err(io_err(&mpath))?;
    shared.repl.set_aof_on(true);
    Ok(true)
}

fn load_base(shared: &Shared, client: &mut Client, path: &Path) -> Result<(), AofError> {
    let mut magic = [0u8; 5];
    let is_rdb = File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|()| &magic == b"REDIS")
        .unwrap_or(false);
    if !is_rdb {
        load_commands(shared, client, path, false)?;
        return Ok(());
    }
    // The base's replication position is not restored: the incr files
    // move the data past it, so a replica could wrongly continue from it
    // (Redis ignores it too).
    let (db, _meta) = snapshot::load_file(path, None).map_err(|e| AofError::Base(e.to_string()))?;
    let mut st = shared.lock();
    let policy = st.db.policy();
    let _old = st.db.replace_contents(db);
    st.db.set_policy(policy);
    st.db.expiry = ExpiryMode::Ignore;
    Ok(())
}

/// Replays one file of commands. `may_truncate`: a last command cut short
/// (or a MULTI without EXEC) is cut off the file instead of failing.
/// Returns the file's (final) size.
fn load_commands(
    shared: &Shared,
    client: &mut Client,
    path: &Path,
    may_truncate: bool,
) -> Result<u64, AofError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let replayed = replay_as(shared, client, &mut f, |_| true).map_err(|e| match e {
        ReplayError::Io(source) => AofError::Io {
            path: path.display().to_string(),
            source,
        },
        ReplayError::Format { offset, reason } => AofError::Format {
            path: path.display().to_string(),
            offset,
            reason,
        },
    })?;
    let Some(tail) = replayed.tail else {
        return Ok(replayed.consumed);
    };
    if !may_truncate {
        return Err(AofError::Format {
            path: path.display().to_string(),
            offset: tail.at,
            reason: if tail.torn {
                "unexpected end of file (truncated command)".into()
            } else {
                "MULTI without EXEC".into()
            },
        });
    }
    tracing::warn!(
        file = %path.display(),
        offset = tail.at,
        dropped = replayed.size - tail.at,
        "!!! Warning: short read while loading the AOF file !!! AOF loaded anyway because aof-load-truncated is enabled; the torn tail was truncated"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(tail.at).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(tail.at)
}

/// Runs every command of a RESP command stream as `client` (a loader
/// client, with a master's privileges), in batches under the keyspace
/// lock. A transaction the stream leaves open is dropped, never run.
pub fn replay_as(
    shared: &Shared,
    client: &mut Client,
    input: &mut impl Read,
    admit: impl Fn(&[bytes::Bytes]) -> bool,
) -> Result<Replayed, ReplayError> {
    let replayed = replay(input, admit, |batch| {
        let mut st = shared.lock();
        let now = unix_ms();
        for args in batch {
            let mut ctx = st.ctx(client, shared, now);
            let _ = crate::node::cmd::execute(&mut ctx, args);
        }
    })?;
    if replayed.open_multi {
        client.multi = None;
        client.multi_error = false;
    }
    Ok(replayed)
}

/// Turns the log on with a fresh base from the current data (start with
/// no log yet, CONFIG SET appendonly yes). The first rewrite is done
/// before this returns when `blocking`, else in the background.
pub fn enable(shared: &Arc<Shared>, blocking: bool) -> Result<(), String> {
    if shared.aof.is_on() {
        return Ok(());
    }
    let spec = spec(shared);
    std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
    shared.aof.open_fresh(spec);
    shared.repl.set_aof_on(true);
    if blocking {
        rewrite(shared, true).map_err(|e| e.to_string())
    } else {
        start_rewrite(shared, true)
    }
}

/// Turns the log off (CONFIG SET appendonly no): what was appended is
/// written and fsynced first.
pub fn disable(shared: &Shared) {
    if !shared.aof.is_on() {
        return;
    }
    shared.aof.turn_off();
    shared.repl.set_aof_on(false);
}

/// BGREWRITEAOF: Err(reply text) when it cannot start now.
pub fn start_rewrite(shared: &Arc<Shared>, restart: bool) -> Result<(), String> {
    if !shared.persist.claim(SnapshotKind::AofRewrite) {
        return Err("busy".into());
    }
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("aof-rewrite".into())
        .spawn(move || {
            let _ = rewrite_claimed(&s, restart);
            s.persist.release();
        });
    if spawned.is_err() {
        shared.persist.release();
        return Err("cannot start the rewrite thread".into());
    }
    Ok(())
}

fn rewrite(shared: &Arc<Shared>, restart: bool) -> Result<(), AofError> {
    while !shared.persist.claim(SnapshotKind::AofRewrite) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = rewrite_claimed(shared, restart);
    shared.persist.release();
    r
}

/// The rewrite itself (the caller holds the snapshot machinery).
fn rewrite_claimed(shared: &Arc<Shared>, restart: bool) -> Result<(), AofError> {
    let aof = &shared.aof;
    let started = unix_ms();
    aof.rewrite_started_ms.store(started, Ordering::Relaxed);
    let res = rewrite_inner(shared, restart);
    aof.last_rewrite_secs.store(
        (unix_ms().saturating_sub(started) / 1000) as i64,
        Ordering::Relaxed,
    );
    aof.rewrite_started_ms.store(0, Ordering::Relaxed);
    match &res {
        Ok(()) => {
            aof.rewrites.fetch_add(1, Ordering::Relaxed);
            aof.rewrite_failures.store(0, Ordering::Relaxed);
            aof.last_rewrite_ok.store(true, Ordering::Relaxed);
            tracing::info!("Background AOF rewrite finished successfully");
        }
        Err(e) => {
            aof.rewrite_failures.fetch_add(1, Ordering::Relaxed);
            aof.last_rewrite_ok.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, "Background AOF rewrite failed");
        }
    }
    res
}

fn rewrite_inner(shared: &Arc<Shared>, restart: bool) -> Result<(), AofError> {
    let aof = &shared.aof;
    // The new incr file and the image start at the same instant, under
    // the keyspace lock: base + new incr is the whole dataset.
    let (begun, new_incr) = {
        let mut st = shared.lock();
        let st = &mut *st;
        shared.propagated(&mut st.prop);
        let incr = aof.begin_rewrite(restart)?;
        let begun = crate::node::snapshot::begin_locked(shared, &mut st.db)
            .ok_or_else(|| AofError::Base("a snapshot is already running".into()))?;
        (begun, incr)
    };
    tracing::info!("Background append only file rewriting started");
    let tmp = aof
        .rewrite_temp_path()
        .ok_or_else(|| AofError::Base("the AOF was turned off".into()))?;
    let written = (|| -> io::Result<u64> {
        let f = File::create(&tmp)?;
        let (w, info) = crate::node::snapshot::write_background(
            shared,
            io::BufWriter::with_capacity(1 << 20, f),
            &begun,
        )?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(info.bytes)
    })();
    let size = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(AofError::Io {
                path: tmp.display().to_string(),
                source: e,
            });
        }
    };
    aof.install_base(&tmp, size, &new_incr)
}

/// The auto rewrite rule and a scheduled BGREWRITEAOF; from the cron.
pub fn cron(shared: &Arc<Shared>) {
    let aof = &shared.aof;
    if !aof.is_on() || shared.persist.current().is_some() {
        return;
    }
    if aof.rewrite_scheduled.swap(false, Ordering::Relaxed) {
        if start_rewrite(shared, false).is_err() {
            aof.rewrite_scheduled.store(true, Ordering::Relaxed);
        }
        return;
    }
    let cfg = shared.config.load();
    let (size, base) = aof.sizes();
    if cfg.auto_aof_rewrite_percentage > 0 && size > cfg.auto_aof_rewrite_min_size {
        let base = base.max(1);
        let growth = (size.saturating_sub(base)) * 100 / base;
        if growth >= cfg.auto_aof_rewrite_percentage {
            tracing::info!(growth, "Starting automatic rewriting of AOF");
            let _ = start_rewrite(shared, false);
        }
    }
}

/// After a full resync replaced the dataset: the log starts over from the
/// new data (Redis restarts its AOF the same way).
pub fn after_full_sync(shared: &Arc<Shared>) {
    if shared.aof.is_on() {
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("aof-restart".into())
            .spawn(move || {
                let _ = rewrite(&s, true);
            });
    }
}

/// Appends propagated commands to the log.
pub fn append(shared: &Shared, stream: &[u8]) {
    shared.aof.append(stream);
}

/// The `aof_*` lines of INFO persistence.
pub fn info_fields(shared: &Shared, now: u64, out: &mut String) {
    let aof = &shared.aof;
    let mut w = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    let running = shared.persist.current() == Some(SnapshotKind::AofRewrite);
    let started = aof.rewrite_started_ms.load(Ordering::Relaxed);
    w("aof_enabled", &u8::from(aof.is_on()));
    w("aof_rewrite_in_progress", &u8::from(running));
    w(
        "aof_rewrite_scheduled",
        &u8::from(aof.rewrite_scheduled.load(Ordering::Relaxed)),
    );
    w(
        "aof_last_rewrite_time_sec",
        &aof.last_rewrite_secs.load(Ordering::Relaxed),
    );
    w(
        "aof_current_rewrite_time_sec",
        &if running && started > 0 {
            (now.saturating_sub(started) / 1000) as i64
        } else {
            -1
        },
    );
    let ok = |b: bool| if b { "ok" } else { "err" };
    w(
        "aof_last_bgrewrite_status",
        &ok(aof.last_rewrite_ok.load(Ordering::Relaxed)),
    );
    w("aof_rewrites", &aof.rewrites.load(Ordering::Relaxed));
    w(
        "aof_rewrites_consecutive_failures",
        &aof.rewrite_failures.load(Ordering::Relaxed),
    );
    w(
        "aof_last_write_status",
        &ok(aof.write_ok.load(Ordering::Relaxed)),
    );
    w("aof_last_cow_size", &0);
    if aof.is_on() {
        let (size, base) = aof.sizes();
        let buffered = aof.buffered();
        w("aof_current_size", &size);
        w("aof_base_size", &base);
        w("aof_pending_rewrite", &0);
        w("aof_buffer_length", &buffered);
        w("aof_pending_bio_fsync", &0);
        w("aof_delayed_fsync", &0);
    }
}
