//! What a write tells others: WATCH flags (a transaction watching the key
//! fails its EXEC) and blocked clients (BLPOP ... wakes).

use super::*;

impl Db {
    /// Records a change made by a command and tells watchers and blocked
    /// clients about it.
    pub fn signal(&mut self, key: &[u8]) {
        self.dirty += 1;
        if self.signals.holding == 0 {
            self.notify(key);
        } else if self.signals.watched.contains_key(key) || self.signals.blocked.contains_key(key) {
            self.signals.held.push(sds(key));
        }
    }

    /// A command starts: its announcements are held until
    /// [`release_signals`](Self::release_signals). Returns the mark to
    /// release from.
    pub fn hold_signals(&mut self) -> usize {
        self.signals.holding += 1;
        self.signals.held.len()
    }

    /// The command that got `mark` ended. Watchers and blocked clients
    /// hear of its keys only if it changed something: in Redis a command
    /// that turned out a no-op (SADD of a present member) does not dirty
    /// a WATCH.
    pub fn release_signals(&mut self, mark: usize, changed: bool) {
        self.signals.holding = self.signals.holding.saturating_sub(1);
        if self.signals.held.len() <= mark {
            return;
        }
        let keys: Vec<Sds> = self.signals.held.drain(mark..).collect();
        if changed {
            for k in &keys {
                self.notify(k);
            }
        }
    }

    /// Tells watchers and blocked clients that `key` changed.
    pub(super) fn notify(&mut self, key: &[u8]) {
        if !self.signals.watched.is_empty() {
            if let Some(flags) = self.signals.watched.get(key) {
                for f in flags {
                    f.store(true, Ordering::Release);
                }
            }
        }
        if !self.signals.blocked.is_empty() {
            if let Some(waiters) = self.signals.blocked.get(key) {
                for w in waiters {
                    w.notify_one();
                }
            }
        }
    }

    pub fn watch(&mut self, key: &[u8], flag: &Arc<AtomicBool>) {
        self.signals
            .watched
            .entry(sds(key))
            .or_default()
            .push(flag.clone());
    }

    pub fn unwatch(&mut self, key: &[u8], flag: &Arc<AtomicBool>) {
        if let Some(v) = self.signals.watched.get_mut(key) {
            v.retain(|f| !Arc::ptr_eq(f, flag));
            if v.is_empty() {
                self.signals.watched.remove(key);
            }
        }
    }

    pub fn block_on(&mut self, key: &[u8], waker: &Arc<tokio::sync::Notify>) {
        self.signals
            .blocked
            .entry(sds(key))
            .or_default()
            .push(waker.clone());
    }

    pub fn unblock(&mut self, key: &[u8], waker: &Arc<tokio::sync::Notify>) {
        if let Some(v) = self.signals.blocked.get_mut(key) {
            v.retain(|w| !Arc::ptr_eq(w, waker));
            if v.is_empty() {
                self.signals.blocked.remove(key);
            }
        }
    }

    /// Clients currently blocked on some key (INFO `blocked_clients`).
    pub fn blocked_waiters(&self) -> usize {
        // A client blocked on several keys is registered under each of them.
        let mut seen = std::collections::HashSet::new();
        self.signals
            .blocked
            .values()
            .flatten()
            .filter(|w| seen.insert(Arc::as_ptr(w)))
            .count()
    }
}
