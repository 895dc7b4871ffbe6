//! The append-only log, in Redis 7.0's multi-part layout so
//! `redis-check-aof` and redis-server read it: in `dir/appenddirname`, a
//! base file (an RDB image), incremental files of RESP commands (the
//! propagation stream), and a manifest naming them in order.
//!
//! Writes: the stream is appended to a buffer under the keyspace lock (no
//! syscall there); the connection writes it out before sending its
//! replies, and with `appendfsync always` waits until a dedicated thread
//! has fsynced it (one fsync covers every connection waiting, a group
//! commit). `everysec` fsyncs once a second, `no` leaves it to the OS.
//!
//! Rewrite (BGREWRITEAOF, auto rewrite, enabling at runtime, after a full
//! resync): a new incr file starts at the same instant as a copy-on-write
//! image of the keyspace; the image becomes the new base; the manifest is
//! replaced atomically and the old files are deleted.
//!
//! Load: base, then incr files in order. A last command cut short (a
//! crash mid-write) is truncated away with a warning (`aof-load-truncated
//! yes`), as is a MULTI left without its EXEC; anything else malformed
//! stops the start with the file name and the offset.
//!
//! Here: the live log (buffer, writer, fsync thread). `manifest` holds the
//! file list and its atomic replace, `rewrite` the base swap, `load` the
//! stream replay.

mod load;
mod manifest;
mod rewrite;

pub use load::{replay, ReplayError, Replayed, Tail};
use manifest::write_file_atomically;
pub use manifest::{manifest_name, FileKind, Manifest, ManifestFile};

use super::snapshot;
use parking_lot::{Mutex, MutexGuard};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Everysec,
    No,
}

impl Fsync {
    pub fn parse(s: &str) -> Fsync {
        match s {
            "always" => Fsync::Always,
            "no" => Fsync::No,
            _ => Fsync::Everysec,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AofError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("Bad file format reading the append only file {path} at offset {offset}: {reason}")]
    Format {
        path: String,
        offset: u64,
        reason: String,
    },
    #[error("Invalid AOF manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error("{0}")]
    Base(String),
}

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AofError + '_ {
    move |source| AofError::Io {
        path: path.display().to_string(),
        source,
    }
}

// ---- the live log ---------------------------------------------------------------

struct State {
    dir: PathBuf,
    name: String,
    fsync: Fsync,
    manifest: Manifest,
    /// The incr file being appended to (written and fsynced outside this
    /// state's lock, by whoever holds `Aof::writer`).
    file: Option<Arc<File>>,
    buf: Vec<u8>,
    /// Bytes appended since start (never goes back).
    offset: u64,
    /// Bytes of `offset` written to a file.
    written: u64,
    incr_size: u64,
    base_size: u64,
    /// A rewrite that restarts the log (enable, full resync): the new incr
    /// file joins the manifest only with its new base.
    restart_pending: bool,
    /// The incr file being appended to.
    current: Option<ManifestFile>,
}

/// The node's append-only log.
pub struct Aof {
    on: AtomicBool,
    always: AtomicBool,
    st: Mutex<Option<State>>,
    /// Held while bytes go to the file: one writer at a time keeps them in
    /// order, and the state lock (taken under the keyspace lock by every
    /// write command) is never held across a write syscall.
    writer: Mutex<()>,
    /// Offset fsynced so far (`appendfsync always` replies wait on it).
    synced_tx: watch::Sender<u64>,
    sync_req: Mutex<Option<mpsc::Sender<()>>>,
    pub write_ok: AtomicBool,
    pub rewrite_scheduled: AtomicBool,
    pub rewrites: AtomicU64,
    pub rewrite_failures: AtomicU64,
    pub last_rewrite_ok: AtomicBool,
    pub last_rewrite_secs: AtomicI64,
    pub rewrite_started_ms: AtomicU64,
}

impl Default for Aof {
    fn default() -> Self {
        Aof {
            on: AtomicBool::new(false),
            always: AtomicBool::new(false),
            st: Mutex::new(None),
            writer: Mutex::new(()),
            synced_tx: watch::channel(0).0,
            sync_req: Mutex::new(None),
            write_ok: AtomicBool::new(true),
            rewrite_scheduled: AtomicBool::new(false),
            rewrites: AtomicU64::new(0),
            rewrite_failures: AtomicU64::new(0),
            last_rewrite_ok: AtomicBool::new(true),
            last_rewrite_secs: AtomicI64::new(-1),
            rewrite_started_ms: AtomicU64::new(0),
        }
    }
}

impl State {
    fn new(spec: LogSpec, restart_pending: bool) -> State {
        State {
            dir: spec.dir,
            name: spec.name,
            fsync: spec.fsync,
            manifest: Manifest::default(),
            file: None,
            buf: Vec::new(),
            offset: 0,
            written: 0,
            incr_size: 0,
            base_size: 0,
            restart_pending,
            current: None,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn save_manifest(&self) -> io::Result<()> {
        let path = self.path(&manifest_name(&self.name));
        write_file_atomically(&path, self.manifest.render().as_bytes())
    }

    /// Writes the buffer to the current incr file, under this lock (the
    /// caller holds `Aof::writer`; only for rare paths: a rewrite's switch).
    fn write_buf_locked(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(f) = self.file.as_deref() {
            let mut f: &File = f;
            f.write_all(&self.buf)?;
        }
        self.incr_size += self.buf.len() as u64;
        self.buf.clear();
        self.written = self.offset;
        Ok(())
    }

    /// Starts a new incr file; the appends after this call go there. The
    /// caller holds `Aof::writer`.
    fn open_incr(&mut self) -> io::Result<ManifestFile> {
        self.write_buf_locked()?;
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        let seq = self.manifest.next_incr_seq();
        let name = format!("{}.{seq}.incr.aof", self.name);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&name))?;
        self.file = Some(Arc::new(f));
        self.incr_size = 0;
        tracing::info!(file = %name, "Creating AOF incr file");
        let m = ManifestFile {
            name,
            seq,
            kind: FileKind::Incr,
        };
        self.current = Some(m.clone());
        Ok(m)
    }
}

impl Aof {
    fn state(&self) -> MutexGuard<'_, Option<State>> {
        self.st.lock()
    }

    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Appends propagated bytes (under the keyspace lock: no syscall).
    pub fn append(&self, b: &[u8]) {
        if !self.is_on() {
            return;
        }
        if let Some(st) = self.state().as_mut() {
            st.buf.extend_from_slice(b);
            st.offset += b.len() as u64;
        }
    }

    /// The offset a reply must wait for under `appendfsync always`.
    pub fn durable_target(&self) -> Option<u64> {
        if !self.is_on() || !self.always.load(Ordering::Relaxed) {
            return None;
        }
        self.state().as_ref().map(|s| s.offset)
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock()
    }

    /// Writes what is buffered to the file (before replies go out).
    /// Returns the file and the offset now written, for an fsync.
    pub fn write_pending(&self) -> Option<(Arc<File>, u64)> {
        if !self.is_on() {
            return None;
        }
        let _w = self.writer();
        let (data, file, upto) = {
            let mut g = self.state();
            let st = g.as_mut()?;
            if st.buf.is_empty() {
                return st.file.clone().map(|f| (f, st.written));
            }
            (std::mem::take(&mut st.buf), st.file.clone(), st.offset)
        };
        let res = match file.as_deref() {
            Some(f) => {
                let mut f: &File = f;
                f.write_all(&data)
            }
            None => Ok(()),
        };
        let ok = res.is_ok();
        self.record_write(res);
        let mut g = self.state();
        let st = g.as_mut()?;
        if ok {
            st.written = upto;
            st.incr_size += data.len() as u64;
        } else {
            // Keep the bytes: they go out with the next write.
            let mut rest = data;
            rest.extend_from_slice(&st.buf);
            st.buf = rest;
            return None;
        }
        if st.buf.is_empty() {
            let mut spare = data;
            spare.clear();
            st.buf = spare;
        }
        file.map(|f| (f, upto))
    }

    fn record_write(&self, res: io::Result<()>) {
        match res {
            Ok(()) => {
                if !self.write_ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("AOF write error looks solved, Redis can write again.");
                }
            }
            Err(e) => {
                if self.write_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Error writing to the AOF file");
                }
            }
        }
    }

    /// Waits until the log is fsynced up to `offset` (`appendfsync always`).
    pub async fn wait_durable(&self, offset: u64) {
        let mut rx = self.synced_tx.subscribe();
        if *rx.borrow_and_update() >= offset {
            return;
        }
        {
            let g = self.sync_req.lock();
            if let Some(tx) = g.as_ref() {
                let _ = tx.send(());
            }
        }
        // Turning the log off releases waiters (it sends u64::MAX).
        while *rx.borrow_and_update() < offset {
            if rx.changed().await.is_err() || !self.is_on() {
                return;
            }
        }
    }

    /// Writes and fsyncs everything appended so far (shutdown).
    pub fn flush_and_sync(&self) {
        if let Some((f, upto)) = self.write_pending() {
            if f.sync_data().is_ok() {
                self.synced_tx.send_replace(upto);
            }
        }
    }

    /// The fsync thread: on request (always) or every second (everysec).
    fn spawn_fsync_thread(self: &Arc<Self>) {
        let (tx, rx) = mpsc::channel::<()>();
        *self.sync_req.lock() = Some(tx);
        let me = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("aof-fsync".into())
            .spawn(move || loop {
                let got = rx.recv_timeout(Duration::from_secs(1));
                if matches!(got, Err(mpsc::RecvTimeoutError::Disconnected)) {
                    return;
                }
                // Connections that are about to ask too get the same fsync.
                std::thread::yield_now();
                while rx.try_recv().is_ok() {}
                let Some(aof) = me.upgrade() else { return };
                if !aof.is_on() {
                    continue;
                }
                let policy = aof.state().as_ref().map(|s| s.fsync);
                let Some((file, upto)) = aof.write_pending() else {
                    continue;
                };
                if policy == Some(Fsync::No) {
                    aof.synced_tx.send_replace(upto);
                    continue;
                }
                match file.sync_data() {
                    Ok(()) => {
                        aof.synced_tx.send_replace(upto);
                    }
                    Err(e) => {
                        aof.record_write(Err(e));
                    }
                }
            });
    }

    pub fn set_fsync(&self, policy: Fsync) {
        self.always
            .store(policy == Fsync::Always, Ordering::Relaxed);
        if let Some(st) = self.state().as_mut() {
            st.fsync = policy;
        }
    }

    /// (current size, base size) of the log, for the auto rewrite rule
    /// and INFO.
    pub fn sizes(&self) -> (u64, u64) {
        self.state()
            .as_ref()
            .map_or((0, 0), |s| (s.base_size + s.incr_size, s.base_size))
    }

    /// Bytes appended and not yet written (INFO `aof_buffer_length`).
    pub fn buffered(&self) -> usize {
        self.state().as_ref().map_or(0, |s| s.buf.len())
    }

    /// Makes a loaded log the live one: appends go to the last incr file
    /// of `manifest` (a new one if it lists none).
    pub fn open_existing(
        self: &Arc<Self>,
        mut manifest: Manifest,
        spec: LogSpec,
        base_size: u64,
        incr_size: u64,
    ) -> io::Result<()> {
        let mut st = State::new(spec, false);
        st.incr_size = incr_size;
        st.base_size = base_size;
        match manifest.incrs.last() {
            Some(last) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(st.path(&last.name))?;
                st.file = Some(Arc::new(f));
                st.current = Some(last.clone());
                st.manifest = manifest;
            }
            None => {
                st.manifest = manifest.clone();
                let incr = st.open_incr()?;
                manifest.incrs.push(incr);
                st.manifest = manifest;
                st.save_manifest()?;
            }
        }
        self.activate(st);
        Ok(())
    }

    /// Starts a log with no files yet: its first rewrite (which the caller
    /// runs next) gives it a base and a manifest.
    pub fn open_fresh(self: &Arc<Self>, spec: LogSpec) {
        self.activate(State::new(spec, true));
    }

    fn activate(self: &Arc<Self>, st: State) {
        let policy = st.fsync;
        *self.state() = Some(st);
        // Offsets start over with this log.
        self.synced_tx.send_replace(0);
        self.always
            .store(policy == Fsync::Always, Ordering::Relaxed);
        self.on.store(true, Ordering::Relaxed);
        if self.sync_req.lock().is_none() {
            self.spawn_fsync_thread();
        }
    }

    /// Turns the log off: what was appended is written and fsynced first,
    /// and `appendfsync always` waiters are released.
    pub fn turn_off(&self) {
        self.flush_and_sync();
        self.on.store(false, Ordering::Relaxed);
        *self.state() = None;
        self.synced_tx.send_replace(u64::MAX);
    }
}

/// Where a log lives and how it is synced (from `dir`, `appenddirname`,
/// `appendfilename`, `appendfsync`).
#[derive(Debug, Clone)]
pub struct LogSpec {
    pub dir: PathBuf,
    pub name: String,
    pub fsync: Fsync,
}
