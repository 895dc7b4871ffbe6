//! The replication backlog: the tail of the stream, kept so a replica that
//! was briefly disconnected can continue (`+CONTINUE`) instead of a full
//! resync, and shared with the replicas being fed.
//!
//! Like Redis 7's shared replication buffer, the stream is kept once, in
//! blocks that are handed out by reference count: a replica sender reads
//! from its own position without copying. Blocks are freed when they are
//! both older than `repl-backlog-size` and read by every replica (a replica
//! that falls too far behind is disconnected by its sender instead).
//!
//! Offsets are byte counts from the start of the stream: position `p` is
//! the `p`-th byte (0-based), so a replica that processed `p` bytes asks
//! for `PSYNC id p+1`, as Redis counts.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Stream bytes are kept in blocks of about this size.
const BLOCK: usize = 16 * 1024;

#[derive(Debug)]
pub struct Backlog {
    /// Full blocks, oldest first.
    blocks: VecDeque<Bytes>,
    /// The block being filled.
    tail: BytesMut,
    /// Stream position of the first byte held.
    start: u64,
    /// Stream position after the last byte held.
    end: u64,
    limit: usize,
}

impl Backlog {
    /// An empty backlog whose next byte is at stream position `at`.
    pub fn new(at: u64, limit: usize) -> Self {
        Backlog {
            blocks: VecDeque::new(),
            tail: BytesMut::with_capacity(BLOCK),
            start: at,
            end: at,
            limit: limit.max(1),
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes held (INFO `repl_backlog_histlen`).
    pub fn histlen(&self) -> u64 {
        self.end - self.start
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    pub fn append(&mut self, mut b: &[u8]) {
        self.end += b.len() as u64;
        while !b.is_empty() {
            let room = BLOCK.saturating_sub(self.tail.len()).max(1);
            let (now, rest) = b.split_at(room.min(b.len()));
            self.tail.extend_from_slice(now);
            b = rest;
            if self.tail.len() >= BLOCK {
                let full = self.tail.split().freeze();
                self.blocks.push_back(full);
                self.tail.reserve(BLOCK);
            }
        }
    }

    /// Whether a reader can continue from stream position `pos`.
    pub fn has(&self, pos: u64) -> bool {
        pos >= self.start && pos <= self.end
    }

    /// Up to about `max` bytes from `pos` on, as shared slices; None when
    /// `pos` is no longer (or not yet) held.
    pub fn read(&self, pos: u64, max: usize) -> Option<Vec<Bytes>> {
        if !self.has(pos) {
            return None;
        }
        let mut out = Vec::new();
        let mut taken = 0usize;
        let mut at = self.start;
        let tail_ref: &[u8] = &self.tail;
        for b in &self.blocks {
            let b_end = at + b.len() as u64;
            if b_end > pos && taken < max {
                let from = usize::try_from(pos.max(at) - at).unwrap_or(0);
                let upto = b.len().min(from.saturating_add(max - taken));
                out.push(b.slice(from..upto));
                taken += upto - from;
            }
            at = b_end;
        }
        if taken < max && !tail_ref.is_empty() {
            let b_end = at + tail_ref.len() as u64;
            if b_end > pos {
                let from = usize::try_from(pos.max(at) - at).unwrap_or(0);
                let upto = tail_ref.len().min(from.saturating_add(max - taken));
                if let Some(s) = tail_ref.get(from..upto) {
                    out.push(Bytes::copy_from_slice(s));
                }
            }
        }
        Some(out)
    }

    /// Frees whole blocks that are beyond the size limit and before
    /// `keep_from` (the oldest position a replica still needs).
    pub fn trim(&mut self, keep_from: u64) {
        while let Some(front) = self.blocks.front() {
            let len = front.len() as u64;
            let over = self.histlen().saturating_sub(len) >= self.limit as u64;
            if over && self.start + len <= keep_from {
                self.start += len;
                self.blocks.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(b: &Backlog, pos: u64) -> Option<Vec<u8>> {
        b.read(pos, usize::MAX)
            .map(|v| v.iter().flat_map(|c| c.iter().copied()).collect())
    }

    #[test]
    fn reads_from_any_held_position_and_trims_whole_old_blocks() {
        let mut b = Backlog::new(100, 40_000);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(777) {
            b.append(chunk);
        }
        assert_eq!((b.start(), b.end()), (100, 100_100));
        for pos in [100u64, 101, 16_484, 16_485, 50_000, 100_099, 100_100] {
            let got = read_all(&b, pos).unwrap();
            assert_eq!(got, data[(pos - 100) as usize..], "at {pos}");
        }
        assert!(b.read(99, 10).is_none());
        assert!(b.read(100_101, 10).is_none());
        // A bounded read.
        let part: usize = b.read(200, 5000).unwrap().iter().map(|c| c.len()).sum();
        assert_eq!(part, 5000);
        // A reader at 30_000 pins what it still needs.
        b.trim(30_000);
        assert!(b.start() <= 30_000 && b.has(30_000));
        b.trim(u64::MAX);
        assert!(b.histlen() >= 40_000 && b.histlen() < 40_000 + 2 * BLOCK as u64);
        let s = b.start();
        assert_eq!(read_all(&b, s).unwrap(), data[(s - 100) as usize..]);
    }

    proptest::proptest! {
        #[test]
        fn any_appends_then_any_bounded_reads_give_the_stream_back(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..5000), 0..40),
            limit in 1usize..50_000,
            keep in 0u64..200_000,
            reads in proptest::collection::vec((0u64..200_000, 1usize..70_000), 0..20),
        ) {
            let mut b = Backlog::new(7, limit);
            let mut all = Vec::new();
            for c in &chunks {
                b.append(c);
                all.extend_from_slice(c);
                b.trim(keep + 7);
            }
            proptest::prop_assert_eq!(b.end(), 7 + all.len() as u64);
            for (pos, max) in reads {
                let pos = pos + 7;
                match b.read(pos, max) {
                    None => proptest::prop_assert!(!b.has(pos)),
                    Some(parts) => {
                        let got: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                        let from = (pos - 7) as usize;
                        let want = &all[from..(from + max).min(all.len())];
                        proptest::prop_assert_eq!(&got[..], want);
                    }
                }
            }
        }
    }
}
