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

use super::snapshot::{self, SnapshotKind};
use crate::node::client::{unix_ms, Client, ClientHandle};
use crate::node::shared::Shared;
use crate::resp::{Limits, RequestParser};
use crate::store::ExpiryMode;
use bytes::BytesMut;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
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

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AofError + '_ {
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

fn manifest_name(name: &str) -> String {
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
        self.st.lock().unwrap_or_else(|p| p.into_inner())
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
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
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
        if let Ok(g) = self.sync_req.lock() {
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
        if let Ok(mut g) = self.sync_req.lock() {
            *g = Some(tx);
        }
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

    fn sizes(&self) -> (u64, u64) {
        self.state()
            .as_ref()
            .map_or((0, 0), |s| (s.base_size + s.incr_size, s.base_size))
    }
}

// ---- start, enable, rewrite ---------------------------------------------------------

fn aof_dir(shared: &Shared) -> PathBuf {
    let cfg = shared.config.load();
    cfg.dir.join(&cfg.appenddirname)
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
    let handle = Arc::new(ClientHandle::detached(0, "aof-loader"));
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
    open_existing(shared, manifest, dir, base_size, incr_size).map_err(io_err(&mpath))?;
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
    let replayed = replay(shared, client, &mut f, |_| true).map_err(|e| match e {
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
}

#[derive(Debug)]
pub struct Tail {
    pub at: u64,
    pub torn: bool,
}

/// Runs every command of a RESP command stream (an AOF file's contents)
/// as `client`, a loader client, in batches under the keyspace lock.
/// `admit` may skip commands (the fuzz target keeps MIGRATE and file
/// writers out); the loader admits all.
pub fn replay(
    shared: &Shared,
    client: &mut Client,
    input: &mut impl Read,
    admit: impl Fn(&[bytes::Bytes]) -> bool,
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
            let mut st = shared.lock();
            let now = unix_ms();
            for args in &batch {
                let mut ctx = st.ctx(client, shared, now);
                let _ = crate::node::cmd::execute(&mut ctx, args);
            }
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
    if open_multi.is_some() {
        // The commands of the unfinished transaction were queued by the
        // loader client, never run: drop them.
        client.multi = None;
        client.multi_error = false;
    }
    Ok(Replayed {
        consumed,
        size,
        tail,
    })
}

/// Makes the loaded log the live one: appends go to its last incr file.
fn open_existing(
    shared: &Arc<Shared>,
    mut manifest: Manifest,
    dir: PathBuf,
    base_size: u64,
    incr_size: u64,
) -> io::Result<()> {
    let cfg = shared.config.load();
    let mut st = State {
        dir,
        name: cfg.appendfilename.clone(),
        fsync: Fsync::parse(&cfg.appendfsync),
        manifest: Manifest::default(),
        file: None,
        buf: Vec::new(),
        offset: 0,
        written: 0,
        incr_size,
        base_size,
        restart_pending: false,
        current: None,
    };
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
    activate(shared, st);
    Ok(())
}

fn activate(shared: &Arc<Shared>, st: State) {
    let aof = &shared.aof;
    let policy = st.fsync;
    *aof.state() = Some(st);
    // Offsets start over with this log.
    aof.synced_tx.send_replace(0);
    aof.always.store(policy == Fsync::Always, Ordering::Relaxed);
    aof.on.store(true, Ordering::Relaxed);
    shared.repl.set_aof_on(true);
    if aof.sync_req.lock().map(|g| g.is_none()).unwrap_or(false) {
        aof.spawn_fsync_thread();
    }
}

/// Turns the log on with a fresh base from the current data (start with
/// no log yet, CONFIG SET appendonly yes). The first rewrite is done
/// before this returns when `blocking`, else in the background.
pub fn enable(shared: &Arc<Shared>, blocking: bool) -> Result<(), String> {
    if shared.aof.is_on() {
        return Ok(());
    }
    let cfg = shared.config.load();
    let dir = aof_dir(shared);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let st = State {
        dir,
        name: cfg.appendfilename.clone(),
        fsync: Fsync::parse(&cfg.appendfsync),
        manifest: Manifest::default(),
        file: None,
        buf: Vec::new(),
        offset: 0,
        written: 0,
        incr_size: 0,
        base_size: 0,
        restart_pending: true,
        current: None,
    };
    activate(shared, st);
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
    shared.aof.flush_and_sync();
    shared.aof.on.store(false, Ordering::Relaxed);
    shared.repl.set_aof_on(false);
    *shared.aof.state() = None;
    shared.aof.synced_tx.send_replace(u64::MAX);
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
    let dir = aof_dir(shared);
    // The new incr file and the image start at the same instant, under
    // the keyspace lock: base + new incr is the whole dataset.
    let (begun, new_incr) = {
        let mut st = shared.lock();
        let st = &mut *st;
        shared.propagated(&mut st.prop);
        let _w = aof.writer();
        let mut g = aof.state();
        let Some(a) = g.as_mut() else {
            return Err(AofError::Base("the AOF is off".into()));
        };
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
        drop(g);
        let begun = crate::node::snapshot::begin_locked(shared, &mut st.db)
            .ok_or_else(|| AofError::Base("a snapshot is already running".into()))?;
        (begun, incr)
    };
    tracing::info!("Background append only file rewriting started");
    let tmp = dir.join(format!("temp-rewriteaof-bg-{}.aof", std::process::id()));
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
    // Install: the new base, the incr files written since, a new manifest.
    let mut g = aof.state();
    let Some(a) = g.as_mut() else {
        let _ = std::fs::remove_file(&tmp);
        return Err(AofError::Base("the AOF was turned off".into()));
    };
    let seq = a.manifest.next_base_seq();
    let base_name = format!("{}.{seq}.base.rdb", a.name);
    std::fs::rename(&tmp, a.path(&base_name)).map_err(io_err(&tmp))?;
    let old = a.manifest.clone();
    // The incr files written since the image: the one opened with it, any
    // opened later, and the one being appended to.
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
        let ours =
            name.starts_with(&prefix) && (name.ends_with(".incr.aof") || name.contains(".base."));
        if ours && !keep.contains(&name) {
            tracing::info!(file = %name, "Removing the history file");
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
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
        let buffered = aof.state().as_ref().map_or(0, |s| s.buf.len());
        w("aof_current_size", &size);
        w("aof_base_size", &base);
        w("aof_pending_rewrite", &0);
        w("aof_buffer_length", &buffered);
        w("aof_pending_bio_fsync", &0);
        w("aof_delayed_fsync", &0);
    }
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
