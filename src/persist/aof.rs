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

use super::snapshot;
use crate::resp::{Limits, RequestParser};
use bytes::BytesMut;
use parking_lot::{Mutex, MutexGuard};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
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

// ---- the manifest -------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Base,
    Incr,
    History,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub name: String,
    pub seq: u64,
    pub kind: FileKind,
}

/// `appendonly.aof.manifest`: the files that make up the log, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub base: Option<ManifestFile>,
    pub incrs: Vec<ManifestFile>,
    pub history: Vec<ManifestFile>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut m = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut name = None;
            let mut seq = None;
            let mut kind = None;
            for pair in words.chunks(2) {
                match pair {
                    ["file", v] => name = Some((*v).to_string()),
                    ["seq", v] => seq = v.parse::<u64>().ok(),
                    ["type", "b"] => kind = Some(FileKind::Base),
                    ["type", "i"] => kind = Some(FileKind::Incr),
                    ["type", "h"] => kind = Some(FileKind::History),
                    _ => return Err(format!("line {}: unexpected '{line}'", i + 1)),
                }
            }
            let (Some(name), Some(seq), Some(kind)) = (name, seq, kind) else {
                return Err(format!("line {}: incomplete '{line}'", i + 1));
            };
            if name.contains('/') {
                return Err(format!("line {}: file name with a path", i + 1));
            }
            let f = ManifestFile { name, seq, kind };
            match kind {
                FileKind::Base if m.base.is_some() => {
                    return Err("more than one base file".into());
                }
                FileKind::Base => m.base = Some(f),
                FileKind::Incr => m.incrs.push(f),
                FileKind::History => m.history.push(f),
            }
        }
        Ok(m)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, f: &ManifestFile, t: char| {
            let _ = writeln!(out, "file {} seq {} type {t}", f.name, f.seq);
        };
        if let Some(b) = &self.base {
            line(&mut out, b, 'b');
        }
        for h in &self.history {
            line(&mut out, h, 'h');
        }
        for i in &self.incrs {
            line(&mut out, i, 'i');
        }
        out
    }

    fn next_incr_seq(&self) -> u64 {
        self.incrs.iter().map(|f| f.seq).max().unwrap_or(0) + 1
    }

    fn next_base_seq(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.seq) + 1
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

pub fn manifest_name(name: &str) -> String {
    format!("{name}.manifest")
}

/// Writes `text` to `path` atomically (temp, fsync, rename, fsync dir).
fn write_file_atomically(path: &Path, text: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    snapshot::fsync_dir(path);
    Ok(())
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

    /// A rewrite's first step, taken under the keyspace lock together with
    /// the image: appends from now on go to a new incr file, so base + that
    /// file is the whole dataset. `restart`: the old files are dropped once
    /// the new base is in (enable, full resync).
    pub fn begin_rewrite(&self, restart: bool) -> Result<ManifestFile, AofError> {
        let _w = self.writer();
        let mut g = self.state();
        let Some(a) = g.as_mut() else {
            return Err(AofError::Base("the AOF is off".into()));
        };
        let dir = a.dir.clone();
        let incr = a.open_incr().map_err(io_err(&dir))?;
        if restart {
            a.restart_pending = true;
        }
        if !a.restart_pending {
            // The new incr joins the chain now, so its writes are never
            // orphaned if this rewrite fails.
            a.manifest.incrs.push(incr.clone());
            a.save_manifest().map_err(io_err(&dir))?;
        }
        Ok(incr)
    }

    /// Where a rewrite writes its image before `install_base`.
    pub fn rewrite_temp_path(&self) -> Option<PathBuf> {
        self.state().as_ref().map(|a| {
            a.dir
                .join(format!("temp-rewriteaof-bg-{}.aof", std::process::id()))
        })
    }

    /// A rewrite's last step: the image written to `tmp` (`size` bytes)
    /// becomes the base, the incr files written since `new_incr` began are
    /// kept, the manifest is replaced atomically, older files deleted.
    pub fn install_base(
        &self,
        tmp: &Path,
        size: u64,
        new_incr: &ManifestFile,
    ) -> Result<(), AofError> {
        let mut g = self.state();
        let Some(a) = g.as_mut() else {
            let _ = std::fs::remove_file(tmp);
            return Err(AofError::Base("the AOF was turned off".into()));
        };
        let dir = a.dir.clone();
        let seq = a.manifest.next_base_seq();
        let base_name = format!("{}.{seq}.base.rdb", a.name);
        std::fs::rename(tmp, a.path(&base_name)).map_err(io_err(tmp))?;
        let old = a.manifest.clone();
        // The incr files written since the image: the one opened with it,
        // any opened later, and the one being appended to.
        let mut incrs: Vec<ManifestFile> = old
            .incrs
            .iter()
            .filter(|f| f.seq >= new_incr.seq)
            .cloned()
            .collect();
        for f in [Some(new_incr.clone()), a.current.clone()]
            .into_iter()
            .flatten()
        {
            if !incrs.iter().any(|x| x.seq == f.seq) {
                incrs.push(f);
            }
        }
        incrs.sort_by_key(|f| f.seq);
        a.manifest = Manifest {
            base: Some(ManifestFile {
                name: base_name.clone(),
                seq,
                kind: FileKind::Base,
            }),
            incrs,
            history: Vec::new(),
        };
        a.base_size = size;
        a.restart_pending = false;
        a.save_manifest().map_err(io_err(&dir))?;
        tracing::info!(file = %base_name, "Successfully renamed the temporary AOF base file");
        let keep: Vec<String> = a
            .manifest
            .incrs
            .iter()
            .map(|f| f.name.clone())
            .chain(std::iter::once(base_name))
            .collect();
        let dir_files = std::fs::read_dir(&a.dir).map_err(io_err(&dir))?;
        let prefix = format!("{}.", a.name);
        for e in dir_files.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(&prefix)
                && (name.ends_with(".incr.aof") || name.contains(".base."));
            if ours && !keep.contains(&name) {
                tracing::info!(file = %name, "Removing the history file");
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
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

/// A stream of commands that could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("at offset {offset}: {reason}")]
    Format { offset: u64, reason: String },
}

/// How a replay ended.
#[derive(Debug)]
pub struct Replayed {
    /// Bytes taken by complete commands.
    pub consumed: u64,
    /// Bytes read in all.
    pub size: u64,
    /// Set when the stream does not end on a command boundary outside a
    /// transaction: where it would be cut, and whether a command was torn
    /// (else a MULTI was left open; its queued commands were not run).
    pub tail: Option<Tail>,
    /// The stream ended inside MULTI: the runner holds queued commands
    /// that must be dropped, never run.
    pub open_multi: bool,
}

#[derive(Debug)]
pub struct Tail {
    pub at: u64,
    pub torn: bool,
}

/// Reads a RESP command stream (an AOF file's contents) and hands its
/// commands to `run` in batches of up to 4096, in order. `admit` may skip
/// commands (the fuzz target keeps MIGRATE and file writers out); the
/// loader admits all. Running them is the caller's business.
pub fn replay(
    input: &mut impl Read,
    admit: impl Fn(&[bytes::Bytes]) -> bool,
    mut run: impl FnMut(&[Vec<bytes::Bytes>]),
) -> Result<Replayed, ReplayError> {
    let mut parser = RequestParser::new();
    // Our own file: no client limits, only what fits in memory.
    let limits = Limits {
        max_bulk_len: i64::MAX as usize,
        max_multibulk_len: i32::MAX as usize,
        ..Limits::default()
    };
    let mut buf = BytesMut::with_capacity(1 << 16);
    // Bytes consumed by complete commands, and where the last MULTI began
    // while its EXEC is still to come.
    let mut consumed: u64 = 0;
    let mut open_multi: Option<u64> = None;
    let mut eof = false;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let mut batch = Vec::new();
        loop {
            let before = buf.len();
            match parser.parse(&mut buf, &limits) {
                Ok(Some(args)) => {
                    let start = consumed;
                    consumed += (before - buf.len()) as u64;
                    match args.first() {
                        Some(n) if n.eq_ignore_ascii_case(b"multi") => open_multi = Some(start),
                        Some(n) if n.eq_ignore_ascii_case(b"exec") => open_multi = None,
                        _ => {}
                    }
                    if !args.is_empty() && admit(&args) {
                        batch.push(args);
                    }
                    if batch.len() >= 4096 {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ReplayError::Format {
                        offset: consumed,
                        reason: e.to_string(),
                    })
                }
            }
        }
        if !batch.is_empty() {
            run(&batch);
            continue;
        }
        if eof {
            break;
        }
        let n = input.read(&mut chunk)?;
        if n == 0 {
            eof = true;
            if buf.is_empty() {
                break;
            }
            continue;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let torn = !buf.is_empty();
    let size = consumed + buf.len() as u64;
    let tail = match (torn, open_multi) {
        (_, Some(at)) => Some(Tail { at, torn }),
        (true, None) => Some(Tail { at: consumed, torn }),
        (false, None) => None,
    };
    Ok(Replayed {
        consumed,
        size,
        tail,
        open_multi: open_multi.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_matches_redis_7_layout() {
        let text = "file appendonly.aof.2.base.rdb seq 2 type b\nfile appendonly.aof.1.incr.aof seq 1 type h\nfile appendonly.aof.2.incr.aof seq 2 type i\nfile appendonly.aof.3.incr.aof seq 3 type i\n";
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.base.as_ref().unwrap().seq, 2);
        assert_eq!(m.incrs.len(), 2);
        assert_eq!(m.history.len(), 1);
        assert_eq!(m.render(), text);
        assert_eq!(m.next_incr_seq(), 4);
        assert_eq!(m.next_base_seq(), 3);
        for bad in [
            "file a seq x type b",
            "file a seq 1 type z",
            "file a seq 1",
            "file ../x seq 1 type i",
            "file a seq 1 type b\nfile b seq 2 type b",
            "nonsense",
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_manifest_text_parses_or_fails_cleanly(text in ".{0,300}") {
            if let Ok(m) = Manifest::parse(&text) {
                proptest::prop_assert_eq!(Manifest::parse(&m.render()), Ok(m));
            }
        }
    }
}
