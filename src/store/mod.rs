//! The keyspace: keys, values, expiry, eviction, and the per-slot key index.
//! This file holds the tables and expiry; `evict` the maxmemory policies,
//! `signals` WATCH flags and blocked-client wake-ups, `snapshot` the
//! copy-on-write snapshots, `value` the value types.
//!
//! Keys live in one small table per hash slot. That makes the per-slot index
//! that cluster mode needs (`COUNTKEYSINSLOT`, `GETKEYSINSLOT`, migration)
//! free, and lets tables grow independently instead of doubling one giant
//! table at once (latency spikes, memory peaks).
//!
//! Every change to a key goes through this type, so it is the one place that
//! tells WATCHers and blocked clients that a key changed, and the one place
//! that keeps a snapshot in progress consistent.
//!
//! Snapshots (BGSAVE, full resync) do not fork: they are copy-on-write at
//! slot granularity. While one runs, the first change to a slot the
//! snapshot has not read yet serializes that slot first; the snapshot
//! thread reads the other slots in small batches under the keyspace lock.
//! Either way each slot is captured exactly as it was when the snapshot
//! began, so the result is a point-in-time image, and no client waits for
//! more than one batch.

mod evict;
pub mod functions;
mod signals;
mod snapshot;
pub mod stream;
pub mod value;

use crate::cluster::{key_hash_slot, SLOTS};
use hashbrown::HashMap;
use rand::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
pub use stream::{Stream, StreamId};
pub use value::{sds, Collection, Score, Sds, Value, ZSet};

/// A key and its metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Seconds clock of the last access (LRU) or the LFU counter, like the
    /// 24 bits Redis keeps in each object.
    pub access: u32,
}

#[derive(Default)]
struct Slot {
    keys: HashMap<Sds, Entry>,
    /// Expiry times (unix ms) of the keys that have one, apart from `keys`
    /// because most keys have none (memory) and active expiry scans only these.
    expires: HashMap<Sds, u64>,
}

/// Eviction policies of `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    #[default]
    NoEviction,
    AllKeysLru,
    VolatileLru,
    AllKeysLfu,
    VolatileLfu,
    AllKeysRandom,
    VolatileRandom,
    VolatileTtl,
}

impl EvictionPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "noeviction" => Self::NoEviction,
            "allkeys-lru" => Self::AllKeysLru,
            "volatile-lru" => Self::VolatileLru,
            "allkeys-lfu" => Self::AllKeysLfu,
            "volatile-lfu" => Self::VolatileLfu,
            "allkeys-random" => Self::AllKeysRandom,
            "volatile-random" => Self::VolatileRandom,
            "volatile-ttl" => Self::VolatileTtl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NoEviction => "noeviction",
            Self::AllKeysLru => "allkeys-lru",
            Self::VolatileLru => "volatile-lru",
            Self::AllKeysLfu => "allkeys-lfu",
            Self::VolatileLfu => "volatile-lfu",
            Self::AllKeysRandom => "allkeys-random",
            Self::VolatileRandom => "volatile-random",
            Self::VolatileTtl => "volatile-ttl",
        }
    }

    fn is_lfu(self) -> bool {
        matches!(self, Self::AllKeysLfu | Self::VolatileLfu)
    }

    fn volatile(self) -> bool {
        matches!(
            self,
            Self::VolatileLru | Self::VolatileLfu | Self::VolatileRandom | Self::VolatileTtl
        )
    }
}

/// Memory is over `maxmemory` and the policy cannot (or may not) free any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("OOM command not allowed when used memory > 'maxmemory'.")]
pub struct OutOfMemory;

/// Counters shown by `INFO stats`.
#[derive(Debug, Default, Clone)]
pub struct DbStats {
    pub expired_keys: u64,
    pub evicted_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
}

/// How lazy expiry treats a key whose TTL passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiryMode {
    /// A master: the key is deleted (and the deletion logged for
    /// propagation as DEL).
    #[default]
    Delete,
    /// A replica's own clients, or a master whose writes are paused: the key
    /// reads as missing but stays; only the master's DEL removes it, so the
    /// replica never diverges from its master on its own authority.
    Hide,
    /// The master's command stream on a replica: keys are as the master
    /// sees them, expired or not.
    Ignore,
}

/// Serializes one key for a snapshot: (out, key, value, expire_at).
pub type EntryEncoder = fn(&mut Vec<u8>, &[u8], &Value, Option<u64>);

/// A snapshot in progress.
struct Cow {
    encode: EntryEncoder,
    /// Slots already captured (by a writer or by the snapshot thread).
    done: Vec<bool>,
    /// Slots writers captured before changing them, not yet collected.
    early: HashMap<u16, Vec<u8>>,
    /// Keys serialized so far.
    keys: u64,
}

impl Cow {
    fn capture(&mut self, i: usize, slot: &Slot) {
        let Some(done) = self.done.get_mut(i) else {
            return;
        };
        if *done {
            return;
        }
        *done = true;
        let mut out = Vec::new();
        self.keys += encode_slot(self.encode, slot, &mut out);
        self.early.insert(i as u16, out);
    }
}

fn encode_slot(encode: EntryEncoder, slot: &Slot, out: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    for (k, e) in &slot.keys {
        encode(out, k, &e.value, slot.expires.get(k.as_slice()).copied());
        n += 1;
    }
    n
}

/// Who to tell when a key changes.
#[derive(Default)]
struct Signals {
    /// WATCHed keys → the watching clients' "dirty" flags.
    watched: HashMap<Sds, Vec<Arc<AtomicBool>>>,
    /// Keys a blocked client waits on → its wake-up handle.
    blocked: HashMap<Sds, Vec<Arc<tokio::sync::Notify>>>,
    /// Commands running (nested: EXEC, scripts) whose announcements wait
    /// until each says whether it changed anything.
    holding: u32,
    /// Keys with listeners announced by the running commands.
    held: Vec<Sds>,
}

/// The slot table holds SLOTS entries from construction (swapped only for
/// another Db's), and every index here is a slot number: key_hash_slot, or a
/// cursor taken modulo SLOTS. The mask makes that visible to the optimizer
/// as well; these two are the table's only indexing.
#[allow(clippy::indexing_slicing)]
#[inline]
fn slot_at(slots: &[Slot], i: usize) -> &Slot {
    &slots[i & (SLOTS - 1)]
}

/// Records that slot `i` holds a key (see `Db::touched`).
#[allow(clippy::indexing_slicing)]
#[inline]
fn mark_touched(touched: &mut [u64; SLOTS / 64], i: usize) {
    let i = i & (SLOTS - 1);
    touched[i / 64] |= 1 << (i % 64);
}

#[allow(clippy::indexing_slicing)]
#[inline]
fn slot_at_mut(slots: &mut [Slot], i: usize) -> &mut Slot {
    &mut slots[i & (SLOTS - 1)]
}

pub struct Db {
    slots: Vec<Slot>,
    /// One bit per slot that has held a key since the last `clear`: a
    /// superset of the occupied slots, so FLUSHALL (and a fuzzer's reset per
    /// input) drops only those tables instead of visiting all 16384.
    touched: Box<[u64; SLOTS / 64]>,
    len: usize,
    expires_len: usize,
    signals: Signals,
    /// Seconds since start, advanced by the server's cron.
    clock: u32,
    policy: EvictionPolicy,
    expire_cursor: usize,
    pub stats: DbStats,
    /// Changes made by commands (Redis's `server.dirty`). A command whose
    /// run leaves it unchanged changed nothing and is not propagated.
    pub dirty: u64,
    /// Keys removed on the server's own authority (expiry, eviction).
    pub removed_by_server: u64,
    /// Whether keys removed by expiry or eviction are recorded in
    /// `deleted` for propagation as DEL.
    log_deletions: bool,
    deleted: Vec<Sds>,
    pub expiry: ExpiryMode,
    cow: Option<Box<Cow>>,
    /// The function libraries (FUNCTION LOAD): FLUSHALL keeps them, a
    /// loaded snapshot replaces them.
    pub functions: functions::Libraries,
}

impl Default for Db {
    fn default() -> Self {
        Self::new()
    }
}

/// Maximum value of the LFU counter (8 bits, as in Redis).
const LFU_MAX: u32 = 255;
const LFU_INIT: u32 = 5;

impl Db {
    pub fn new() -> Self {
        let mut slots = Vec::with_capacity(SLOTS);
        slots.resize_with(SLOTS, Slot::default);
        Db {
            slots,
            touched: Box::new([0; SLOTS / 64]),
            len: 0,
            expires_len: 0,
            signals: Signals::default(),
            clock: 0,
            policy: EvictionPolicy::NoEviction,
            expire_cursor: 0,
            stats: DbStats::default(),
            dirty: 0,
            removed_by_server: 0,
            log_deletions: false,
            deleted: Vec::new(),
            expiry: ExpiryMode::Delete,
            cow: None,
            functions: functions::Libraries::default(),
        }
    }

    /// Replaces every key with those of `other` (a loaded snapshot): WATCHers
    /// of any key are told and blocked clients re-check, as after FLUSHALL.
    /// Returns the old keys, for the caller to drop outside the lock.
    pub fn replace_contents(&mut self, other: Db) -> Db {
        if self.cow.is_some() {
            for i in 0..SLOTS {
                self.cow_slot(i);
            }
        }
        for flags in self.signals.watched.values() {
            for f in flags {
                f.store(true, Ordering::Release);
            }
        }
        let mut old = Db::new();
        old.slots = std::mem::replace(&mut self.slots, other.slots);
        old.touched = std::mem::replace(&mut self.touched, other.touched);
        old.functions = std::mem::replace(&mut self.functions, other.functions);
        self.len = other.len;
        self.expires_len = other.expires_len;
        self.dirty += 1;
        for waiters in self.signals.blocked.values() {
            for w in waiters {
                w.notify_one();
            }
        }
        old
    }

    /// Every key with its value and expiry (SAVE, under the lock).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &Value, Option<u64>)) {
        for slot in &self.slots {
            for (k, e) in &slot.keys {
                f(k, &e.value, slot.expires.get(k.as_slice()).copied());
            }
        }
    }

    /// Starts or stops recording server-side deletions for propagation.
    pub fn set_log_deletions(&mut self, on: bool) {
        self.log_deletions = on;
        if !on {
            self.deleted.clear();
        }
    }

    /// Keys removed by expiry or eviction since the last call, in order.
    pub fn take_deleted(&mut self) -> Option<Vec<Sds>> {
        if self.deleted.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.deleted))
        }
    }

    /// Whether server-side deletions wait to be propagated.
    pub fn log_deletions_pending(&self) -> bool {
        !self.deleted.is_empty()
    }

    /// Records a key removed on the server's own authority.
    fn removed_by_server(&mut self, key: &[u8]) {
        self.removed_by_server += 1;
        if self.log_deletions {
            self.deleted.push(sds(key));
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn expires_len(&self) -> usize {
        self.expires_len
    }

    pub fn set_clock(&mut self, secs: u32) {
        self.clock = secs;
    }

    pub fn policy(&self) -> EvictionPolicy {
        self.policy
    }

    pub fn set_policy(&mut self, p: EvictionPolicy) {
        if p.is_lfu() != self.policy.is_lfu() {
            // The access field changes meaning; start everyone fresh.
            let init = if p.is_lfu() { LFU_INIT } else { self.clock };
            for s in &mut self.slots {
                for e in s.keys.values_mut() {
                    e.access = init;
                }
            }
        }
        self.policy = p;
    }

    fn slot_mut(&mut self, key: &[u8]) -> &mut Slot {
        slot_at_mut(&mut self.slots, usize::from(key_hash_slot(key)))
    }

    /// Applies lazy expiry to `key`: true when the key must be treated as
    /// missing (removed, or hidden on a replica).
    fn expire_if_needed(&mut self, key: &[u8], now: u64) -> bool {
        let mode = self.expiry;
        let slot = self.slot_mut(key);
        if slot.expires.is_empty() {
            return false;
        }
        match slot.expires.get(key) {
            Some(&at) if at <= now => match mode {
                ExpiryMode::Ignore => false,
                ExpiryMode::Hide => true,
                ExpiryMode::Delete => {
                    self.cow_key(key);
                    let slot = self.slot_mut(key);
                    slot.expires.remove(key);
                    slot.keys.remove(key);
                    self.len -= 1;
                    self.expires_len -= 1;
                    self.stats.expired_keys += 1;
                    self.notify(key);
                    self.removed_by_server(key);
                    true
                }
            },
            _ => false,
        }
    }

    /// Reads a key (counts a hit or miss, updates its access time).
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&Value> {
        if self.expire_if_needed(key, now) {
            self.stats.keyspace_misses += 1;
            return None;
        }
        let (policy, clock) = (self.policy, self.clock);
        let i = usize::from(key_hash_slot(key));
        match slot_at_mut(&mut self.slots, i).keys.get_mut(key) {
            Some(e) => {
                self.stats.keyspace_hits += 1;
                Self::touch_access(policy, clock, e);
                Some(&e.value)
            }
            None => {
                self.stats.keyspace_misses += 1;
                None
            }
        }
    }

    /// Looks at a key without counting it as an access (TYPE, EXISTS, TTL).
    pub fn peek(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        if self.expire_if_needed(key, now) {
            return None;
        }
        self.slot_mut(key).keys.get(key)
    }

    /// Mutable access for a command that changes the value in place. The
    /// change is announced now, so call this only to write.
    pub fn get_mut(&mut self, key: &[u8], now: u64) -> Option<&mut Value> {
        if self.expire_if_needed(key, now) {
            return None;
        }
        self.cow_key(key);
        self.signal(key);
        let (policy, clock) = (self.policy, self.clock);
        let e = self.slot_mut(key).keys.get_mut(key)?;
        Self::touch_access(policy, clock, e);
        Some(&mut e.value)
    }

    /// Mutable access, creating the key with `make()` if it does not exist.
    pub fn get_or_insert_with(
        &mut self,
        key: &[u8],
        now: u64,
        make: impl FnOnce() -> Value,
    ) -> &mut Value {
        if self.expire_if_needed(key, now) && self.expiry == ExpiryMode::Hide {
            // A hidden stale key must not lend its old value to the write.
            let _ = self.remove_quietly_even_if_expired(key);
        }
        self.cow_key(key);
        self.signal(key);
        let (policy, clock) = (self.policy, self.clock);
        let init = if policy.is_lfu() { LFU_INIT } else { clock };
        let i = usize::from(key_hash_slot(key));
        let slot = slot_at_mut(&mut self.slots, i);
        if !slot.keys.contains_key(key) {
            self.len += 1;
            mark_touched(&mut self.touched, i);
        }
        let e = slot.keys.entry(sds(key)).or_insert_with(|| Entry {
            value: make(),
            access: init,
        });
        Self::touch_access(policy, clock, e);
        &mut e.value
    }

    /// Sets a key, dropping any TTL (like `SET`).
    pub fn set(&mut self, key: &[u8], value: Value) {
        self.set_with_expire(key, value, None);
    }

    /// Sets a key; `expire_at` None clears the TTL.
    pub fn set_with_expire(&mut self, key: &[u8], value: Value, expire_at: Option<u64>) {
        self.cow_key(key);
        self.signal(key);
        let init = if self.policy.is_lfu() {
            LFU_INIT
        } else {
            self.clock
        };
        let i = usize::from(key_hash_slot(key));
        let slot = slot_at_mut(&mut self.slots, i);
        let k = sds(key);
        match slot.keys.get_mut(key) {
            Some(e) => {
                e.value = value;
                e.access = init;
            }
            None => {
                slot.keys.insert(
                    k.clone(),
                    Entry {
                        value,
                        access: init,
                    },
                );
                self.len += 1;
                mark_touched(&mut self.touched, i);
            }
        }
        let had = match expire_at {
            Some(at) => slot.expires.insert(k, at).is_some(),
            None => {
                let had = slot.expires.remove(key).is_some();
                if had {
                    self.expires_len -= 1;
                }
                return;
            }
        };
        if !had {
            self.expires_len += 1;
        }
    }

    /// Replaces the value but keeps the TTL (SET KEEPTTL, SETRANGE, APPEND...).
    pub fn set_keep_ttl(&mut self, key: &[u8], value: Value, now: u64) {
        let ttl = self.expire_at(key, now);
        self.set_with_expire(key, value, ttl);
    }

    pub fn remove(&mut self, key: &[u8], now: u64) -> Option<Value> {
        self.remove_live(key, now, true)
    }

    /// Removes a key without counting it as a command's change (eviction).
    fn remove_quietly(&mut self, key: &[u8], now: u64) -> Option<Value> {
        self.remove_live(key, now, false)
    }

    /// Removes a live key; `counted` says whether it is a command's change
    /// (dirty counter, propagation) or the server's own (watchers and
    /// blocked clients are told either way).
    fn remove_live(&mut self, key: &[u8], now: u64, counted: bool) -> Option<Value> {
        if self.expire_if_needed(key, now) {
            return None;
        }
        let value = self.remove_quietly_even_if_expired(key)?;
        if counted {
            self.signal(key);
        } else {
            self.notify(key);
        }
        Some(value)
    }

    fn remove_quietly_even_if_expired(&mut self, key: &[u8]) -> Option<Value> {
        self.cow_key(key);
        let slot = self.slot_mut(key);
        let e = slot.keys.remove(key)?;
        let had_ttl = slot.expires.remove(key).is_some();
        self.len -= 1;
        if had_ttl {
            self.expires_len -= 1;
        }
        Some(e.value)
    }

    /// Removes the key if it holds an empty collection (after a pop/remove).
    pub fn remove_if_empty(&mut self, key: &[u8], now: u64) {
        let empty = self
            .slot_mut(key)
            .keys
            .get(key)
            .is_some_and(|e| e.value.is_empty_collection());
        if empty {
            self.remove(key, now);
        }
    }

    pub fn contains(&mut self, key: &[u8], now: u64) -> bool {
        self.peek(key, now).is_some()
    }

    /// Absolute expiry (unix ms) of a live key.
    pub fn expire_at(&mut self, key: &[u8], now: u64) -> Option<u64> {
        if self.expire_if_needed(key, now) {
            return None;
        }
        self.slot_mut(key).expires.get(key).copied()
    }

    /// Sets the TTL of an existing key; false if the key does not exist.
    pub fn set_expire(&mut self, key: &[u8], at: u64, now: u64) -> bool {
        if self.expire_if_needed(key, now) {
            return false;
        }
        if !self.slot_mut(key).keys.contains_key(key) {
            return false;
        }
        self.cow_key(key);
        let slot = self.slot_mut(key);
        if slot.expires.insert(sds(key), at).is_none() {
            self.expires_len += 1;
        }
        self.signal(key);
        true
    }

    /// Drops the TTL; true if there was one.
    pub fn persist(&mut self, key: &[u8], now: u64) -> bool {
        if self.expire_if_needed(key, now) {
            return false;
        }
        if !self.slot_mut(key).expires.contains_key(key) {
            return false;
        }
        self.cow_key(key);
        let removed = self.slot_mut(key).expires.remove(key).is_some();
        if removed {
            self.expires_len -= 1;
            self.signal(key);
        }
        removed
    }

    /// Removes every key. Watchers of any key are told.
    pub fn clear(&mut self) {
        self.dirty += 1;
        for flags in self.signals.watched.values() {
            for f in flags {
                f.store(true, Ordering::Release);
            }
        }
        if self.cow.is_some() {
            for i in 0..SLOTS {
                self.cow_slot(i);
            }
        }
        for (w, word) in self.touched.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                *slot_at_mut(&mut self.slots, i) = Slot::default();
            }
        }
        self.len = 0;
        self.expires_len = 0;
    }

    /// The first slot at or after `from` that may hold keys (None past the
    /// last): SCAN and KEYS skip the empty tables of a small keyspace.
    pub fn next_slot_with_keys(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut bits = self.touched.get(w)? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
            w += 1;
            bits = *self.touched.get(w)?;
        }
    }

    pub fn count_keys_in_slot(&self, slot: u16) -> usize {
        self.slots
            .get(usize::from(slot))
            .map_or(0, |s| s.keys.len())
    }

    /// Keys of one slot (unordered), live or not yet expired lazily.
    pub fn keys_in_slot(&self, slot: u16) -> impl Iterator<Item = &Sds> {
        self.slots
            .get(usize::from(slot))
            .into_iter()
            .flat_map(|s| s.keys.keys())
    }

    /// Whether a key in `slot` is logically expired at `now`.
    pub fn is_expired_in_slot(&self, slot: u16, key: &[u8], now: u64) -> bool {
        self.slots
            .get(usize::from(slot))
            .and_then(|s| s.expires.get(key))
            .is_some_and(|&at| at <= now)
    }

    /// A random live key, or None when empty.
    pub fn random_key(&mut self, now: u64) -> Option<Sds> {
        for _ in 0..100 {
            let k = self.random_key_any(false)?;
            if !self.expire_if_needed(&k, now) {
                return Some(k);
            }
        }
        None
    }

    /// Deletes expired keys, visiting at most `budget` TTL entries, resuming
    /// where the previous call stopped. Returns how many it deleted.
    pub fn active_expire(&mut self, now: u64, budget: usize) -> usize {
        if self.expires_len == 0 || self.expiry != ExpiryMode::Delete {
            return 0;
        }
        let mut visited = 0;
        let mut deleted = 0;
        let mut dead: Vec<Sds> = Vec::new();
        for _ in 0..SLOTS {
            let i = self.expire_cursor;
            self.expire_cursor = (self.expire_cursor + 1) % SLOTS;
            let slot = slot_at_mut(&mut self.slots, i);
            if slot.expires.is_empty() {
                continue;
            }
            visited += slot.expires.len();
            dead.extend(
                slot.expires
                    .iter()
                    .filter(|(_, &at)| at <= now)
                    .map(|(k, _)| k.clone()),
            );
            if !dead.is_empty() {
                self.cow_slot(i);
            }
            for k in dead.drain(..) {
                let slot = slot_at_mut(&mut self.slots, i);
                slot.expires.remove(&k);
                slot.keys.remove(&k);
                self.len -= 1;
                self.expires_len -= 1;
                self.stats.expired_keys += 1;
                deleted += 1;
                self.notify(&k);
                self.removed_by_server(&k);
            }
            if visited >= budget {
                break;
            }
        }
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(sds(v.as_bytes()))
    }

    fn enc(out: &mut Vec<u8>, k: &[u8], v: &Value, e: Option<u64>) {
        let v = match v {
            Value::Str(s) => String::from_utf8_lossy(s).into_owned(),
            Value::List(l) => format!("list{}", l.len()),
            _ => "other".into(),
        };
        out.extend_from_slice(format!("{}={}@{:?}\n", String::from_utf8_lossy(k), v, e).as_bytes());
    }

    fn image(out: &[u8]) -> Vec<String> {
        let mut v: Vec<String> = String::from_utf8_lossy(out)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn snapshot_is_the_state_at_its_start_whatever_changes_after() {
        let mut db = Db::new();
        for i in 0..500 {
            db.set(format!("k{i}").as_bytes(), s("old"));
        }
        db.set_with_expire(b"ttl", s("t"), Some(10));
        db.set_with_expire(b"gone", s("g"), Some(10));
        db.set(b"l", Value::List(Box::new([sds(b"a")].into())));
        let mut want = Vec::new();
        db.for_each(|k, v, e| enc(&mut want, k, v, e));
        assert!(db.begin_snapshot(enc));
        assert!(!db.begin_snapshot(enc), "one at a time");
        // Read a few slots, then change things in read and unread slots.
        let mut got = Vec::new();
        let mut next = db.snapshot_take(0, &mut got, 1);
        for i in 0..500 {
            db.set(format!("k{i}").as_bytes(), s("new"));
        }
        db.set(b"added", s("x"));
        db.remove(b"k7", 0);
        db.persist(b"ttl", 0);
        assert!(db.get(b"gone", 20).is_none(), "lazily expired");
        if let Some(Value::List(l)) = db.get_mut(b"l", 0) {
            l.push_back(sds(b"b"));
        }
        db.clear();
        db.set(b"after", s("y"));
        while next < SLOTS {
            next = db.snapshot_take(next, &mut got, 4096);
        }
        assert_eq!(db.snapshot_keys(), 503);
        db.end_snapshot();
        assert_eq!(image(&got), image(&want));
    }

    #[test]
    fn set_get_remove_counts() {
        let mut db = Db::new();
        db.set(b"a", s("1"));
        db.set(b"b", s("2"));
        db.set(b"a", s("3"));
        assert_eq!(db.len(), 2);
        assert!(matches!(db.get(b"a", 0), Some(Value::Str(v)) if v.as_slice() == b"3"));
        assert!(db.remove(b"a", 0).is_some());
        assert_eq!(db.len(), 1);
        assert!(db.get(b"a", 0).is_none());
    }

    #[test]
    fn lazy_and_active_expiry() {
        let mut db = Db::new();
        db.set_with_expire(b"t", s("x"), Some(100));
        db.set_with_expire(b"u", s("x"), Some(100));
        db.set(b"keep", s("x"));
        assert_eq!(db.expires_len(), 2);
        assert!(db.get(b"t", 99).is_some());
        assert!(db.get(b"t", 100).is_none());
        assert_eq!(db.len(), 2);
        assert_eq!(db.active_expire(100, 1000), 1);
        assert_eq!(db.len(), 1);
        assert_eq!(db.expires_len(), 0);
        assert_eq!(db.stats.expired_keys, 2);
    }

    #[test]
    fn set_clears_ttl_and_keep_ttl_keeps_it() {
        let mut db = Db::new();
        db.set_with_expire(b"k", s("x"), Some(1000));
        db.set_keep_ttl(b"k", s("y"), 0);
        assert_eq!(db.expire_at(b"k", 0), Some(1000));
        db.set(b"k", s("z"));
        assert_eq!(db.expire_at(b"k", 0), None);
        assert_eq!(db.expires_len(), 0);
    }

    #[test]
    fn watch_flag_set_on_write() {
        let mut db = Db::new();
        let f = Arc::new(AtomicBool::new(false));
        db.watch(b"k", &f);
        db.set(b"other", s("x"));
        assert!(!f.load(Ordering::Acquire));
        db.set(b"k", s("x"));
        assert!(f.load(Ordering::Acquire));
        db.unwatch(b"k", &f);
        assert!(db.signals.watched.is_empty());
    }

    #[test]
    fn blocked_client_on_several_keys_counts_once() {
        let mut db = Db::new();
        let a = Arc::new(tokio::sync::Notify::new());
        let b = Arc::new(tokio::sync::Notify::new());
        db.block_on(b"k1", &a);
        db.block_on(b"k2", &a);
        db.block_on(b"k1", &b);
        assert_eq!(db.blocked_waiters(), 2);
        db.unblock(b"k1", &a);
        db.unblock(b"k2", &a);
        assert_eq!(db.blocked_waiters(), 1);
    }

    #[test]
    fn per_slot_index() {
        let mut db = Db::new();
        db.set(b"{user}a", s("1"));
        db.set(b"{user}b", s("1"));
        let slot = key_hash_slot(b"user");
        assert_eq!(db.count_keys_in_slot(slot), 2);
        assert_eq!(db.keys_in_slot(slot).count(), 2);
    }

    #[test]
    fn clear_drops_every_key_and_an_empty_clear_is_harmless() {
        let mut db = Db::new();
        db.clear();
        db.set(b"{user}a", s("1"));
        db.set(b"other", s("1"));
        db.clear();
        assert_eq!(db.len(), 0);
        assert_eq!(db.count_keys_in_slot(key_hash_slot(b"user")), 0);
        assert_eq!(db.count_keys_in_slot(key_hash_slot(b"other")), 0);
        db.set(b"again", s("1"));
        assert_eq!(db.len(), 1);
    }

    #[test]
    fn clear_drops_keys_that_arrived_by_any_path() {
        // `clear` visits only slots marked as touched: keys created by
        // get_or_insert_with, by set, and by a swapped-in snapshot must all
        // be marked, or they would survive FLUSHALL.
        let mut db = Db::new();
        for i in 0..2000 {
            db.set(format!("k{i}").as_bytes(), s("1"));
        }
        db.get_or_insert_with(b"made", 0, || s("x"));
        db.clear();
        for i in 0..2000 {
            assert!(db.peek(format!("k{i}").as_bytes(), 0).is_none());
        }
        assert!(db.peek(b"made", 0).is_none());
        let mut loaded = Db::new();
        loaded.set(b"from-snapshot", s("1"));
        let _old = db.replace_contents(loaded);
        db.clear();
        assert!(db.peek(b"from-snapshot", 0).is_none());
        assert_eq!(
            (0..SLOTS as u16)
                .map(|i| db.count_keys_in_slot(i))
                .sum::<usize>(),
            0
        );
    }

    #[test]
    fn next_slot_with_keys_finds_each_occupied_slot_in_order() {
        let mut db = Db::new();
        assert_eq!(db.next_slot_with_keys(0), None);
        let keys: [&[u8]; 4] = [b"{a}", b"{b}", b"{c}", b"{zz}"];
        let mut slots: Vec<usize> = keys.iter().map(|k| usize::from(key_hash_slot(k))).collect();
        for k in keys {
            db.set(k, s("1"));
        }
        slots.sort_unstable();
        let mut seen = Vec::new();
        let mut at = 0;
        while let Some(i) = db.next_slot_with_keys(at) {
            seen.push(i);
            at = i + 1;
        }
        assert_eq!(seen, slots);
        assert_eq!(db.next_slot_with_keys(SLOTS), None);
    }

    #[test]
    fn eviction_removes_until_under_limit() {
        let mut db = Db::new();
        for i in 0..100 {
            db.set(format!("k{i}").as_bytes(), s("v"));
        }
        db.set_policy(EvictionPolicy::AllKeysRandom);
        let mut allowed = 60usize;
        let res = db.evict(5, 0, || db_len_hack(&mut allowed));
        assert!(res.is_ok());
        assert_eq!(db.len(), 60);
        db.set_policy(EvictionPolicy::NoEviction);
        assert!(db.evict(5, 0, || true).is_err());

        fn db_len_hack(allowed: &mut usize) -> bool {
            // Pretend each call before the 40th sees memory over the limit.
            if *allowed < 100 {
                *allowed += 1;
                true
            } else {
                false
            }
        }
    }
}
