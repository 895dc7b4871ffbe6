//! Copy-on-write snapshots of the keyspace: a SAVE, BGSAVE, AOF rewrite or
//! full sync reads the keyspace as it was at its start while writes go on;
//! a slot is copied only the first time a write touches it during one.

use super::*;

impl Db {
    /// Starts a point-in-time snapshot; false if one is already running.
    pub fn begin_snapshot(&mut self, encode: EntryEncoder) -> bool {
        if self.cow.is_some() {
            return false;
        }
        self.cow = Some(Box::new(Cow {
            encode,
            done: vec![false; SLOTS],
            early: HashMap::new(),
            keys: 0,
        }));
        true
    }

    pub fn snapshot_running(&self) -> bool {
        self.cow.is_some()
    }

    /// Appends the snapshot image of slots from `from` on to `out`, at
    /// least one slot and then until about `budget` bytes were added;
    /// returns the next slot to ask for (SLOTS when done).
    pub fn snapshot_take(&mut self, from: usize, out: &mut Vec<u8>, budget: usize) -> usize {
        let Some(cow) = self.cow.as_mut() else {
            return SLOTS;
        };
        let start = out.len();
        let mut i = from;
        while i < SLOTS && (i == from || out.len() - start < budget) {
            if let Some(early) = cow.early.remove(&(i as u16)) {
                out.extend_from_slice(&early);
            } else if let (Some(done), Some(slot)) = (cow.done.get_mut(i), self.slots.get(i)) {
                if !*done {
                    *done = true;
                    cow.keys += encode_slot(cow.encode, slot, out);
                }
            }
            i += 1;
        }
        i
    }

    /// Keys the running snapshot has serialized so far.
    pub fn snapshot_keys(&self) -> u64 {
        self.cow.as_ref().map_or(0, |c| c.keys)
    }

    /// Ends the snapshot (finished or abandoned).
    pub fn end_snapshot(&mut self) {
        self.cow = None;
    }

    /// Captures the slot of `key` for a running snapshot before it changes.
    #[inline]
    pub(super) fn cow_key(&mut self, key: &[u8]) {
        if self.cow.is_some() {
            self.cow_slot(usize::from(key_hash_slot(key)));
        }
    }

    pub(super) fn cow_slot(&mut self, i: usize) {
        if let (Some(cow), Some(slot)) = (self.cow.as_mut(), self.slots.get(i)) {
            cow.capture(i, slot);
        }
    }
}
