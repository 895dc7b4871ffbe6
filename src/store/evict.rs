//! Eviction under `maxmemory`: the sampled LRU/LFU/random/TTL policies of
//! Redis, and the access clock they read.

use super::*;

impl Db {
    pub(super) fn touch_access(policy: EvictionPolicy, clock: u32, e: &mut Entry) {
        if policy.is_lfu() {
            // Logarithmic counter: the more hits, the less likely a bump.
            if e.access < LFU_MAX {
                let base = e.access.saturating_sub(LFU_INIT) as f64;
                let p = 1.0 / (base * 10.0 + 1.0);
                if rand::rng().random::<f64>() < p {
                    e.access += 1;
                }
            }
        } else {
            e.access = clock;
        }
    }

    /// A random key (from the TTL index when `volatile`), possibly expired.
    pub(super) fn random_key_any(&self, volatile: bool) -> Option<Sds> {
        let total = if volatile { self.expires_len } else { self.len };
        if total == 0 {
            return None;
        }
        let mut rng = rand::rng();
        let start = rng.random_range(0..SLOTS);
        for off in 0..SLOTS {
            let s = slot_at(&self.slots, (start + off) % SLOTS);
            let n = if volatile {
                s.expires.len()
            } else {
                s.keys.len()
            };
            if n == 0 {
                continue;
            }
            let pick = rng.random_range(0..n);
            return if volatile {
                s.expires.keys().nth(pick).cloned()
            } else {
                s.keys.keys().nth(pick).cloned()
            };
        }
        None
    }

    /// Evicts keys per `policy` while `over()` says memory is above the limit.
    /// Err when nothing more can be evicted (the caller answers -OOM).
    pub fn evict(
        &mut self,
        samples: usize,
        now: u64,
        mut over: impl FnMut() -> bool,
    ) -> Result<(), OutOfMemory> {
        let policy = self.policy;
        let mut guard = 0usize;
        while over() {
            if policy == EvictionPolicy::NoEviction {
                return Err(OutOfMemory);
            }
            guard += 1;
            if guard > 1_000_000 {
                return Err(OutOfMemory);
            }
            let volatile = policy.volatile();
            let mut best: Option<(Sds, u64)> = None;
            let rounds = match policy {
                EvictionPolicy::AllKeysRandom | EvictionPolicy::VolatileRandom => 1,
                _ => samples.max(1),
            };
            for _ in 0..rounds {
                let Some(k) = self.random_key_any(volatile) else {
                    return Err(OutOfMemory);
                };
                let i = usize::from(key_hash_slot(&k));
                let slot = slot_at(&self.slots, i);
                // Higher rank = better victim.
                let rank = match policy {
                    EvictionPolicy::VolatileTtl => {
                        u64::MAX - slot.expires.get(k.as_slice()).copied().unwrap_or(u64::MAX)
                    }
                    EvictionPolicy::AllKeysLfu | EvictionPolicy::VolatileLfu => u64::from(
                        LFU_MAX + 1
                            - slot
                                .keys
                                .get(k.as_slice())
                                .map_or(0, |e| e.access.min(LFU_MAX)),
                    ),
                    EvictionPolicy::AllKeysRandom | EvictionPolicy::VolatileRandom => 0,
                    _ => u64::from(
                        self.clock
                            .wrapping_sub(slot.keys.get(k.as_slice()).map_or(0, |e| e.access)),
                    ),
                };
                if best.as_ref().is_none_or(|(_, r)| rank > *r) {
                    best = Some((k, rank));
                }
            }
            if let Some((k, _)) = best {
                if self.remove_quietly(&k, now).is_some() {
                    self.stats.evicted_keys += 1;
                    self.removed_by_server(&k);
                }
            }
        }
        Ok(())
    }

    /// The access field of a key, for `OBJECT IDLETIME` / `OBJECT FREQ`.
    pub fn access_of(&mut self, key: &[u8], now: u64) -> Option<(u32, bool)> {
        let (clock, lfu) = (self.clock, self.policy.is_lfu());
        self.peek(key, now).map(|e| {
            if lfu {
                (e.access, true)
            } else {
                (clock.wrapping_sub(e.access), false)
            }
        })
    }
}
