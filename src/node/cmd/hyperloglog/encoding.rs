//! Redis's HyperLogLog representation, byte for byte: the 16-byte header
//! ("HYLL", encoding, three unused bytes, the cached cardinality whose top
//! bit marks it stale), the sparse run-length opcodes (ZERO, XZERO, VAL),
//! the dense 6-bit registers, MurmurHash64A with Redis's seed and Otmar
//! Ertl's estimator that redis-server 7.0 uses.
//!
//! A value is a plain string, so anything (SETRANGE, RESTORE) can put any
//! bytes in it. Nothing here trusts the opcodes: every read is bounds
//! checked. Where Redis reads one byte past the end of a corrupt value it
//! finds its string's terminating zero; [`at`] answers 0 there too, so the
//! outcome on corrupt input matches as well as the layout on valid input.

pub const HDR_SIZE: usize = 16;
pub const P: u32 = 14;
pub const REGISTERS: usize = 1 << P;
/// Bits of the hash left for the run of zeros.
const Q: u32 = 64 - P;
const BITS: usize = 6;
const REGISTER_MAX: u8 = (1 << BITS) - 1;
pub const DENSE_SIZE: usize = HDR_SIZE + (REGISTERS * BITS).div_ceil(8);
pub const DENSE: u8 = 0;
pub const SPARSE: u8 = 1;
const MAX_ENCODING: u8 = 1;
const SEED: u64 = 0xadc8_3b19;

const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const SPARSE_XZERO_MAX_LEN: usize = 16384;
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Offset of the cached cardinality's most significant byte.
const CARD_MSB: usize = 15;

/// The byte at `i`, 0 past the end (the terminator Redis's strings have).
#[inline]
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

// ---- hashing ----------------------------------------------------------------

/// MurmurHash2, 64-bit version, endian neutral as Redis made it.
pub fn murmur64a(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (data.len() as u64).wrapping_mul(M);
    let chunks = data.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let mut k = u64::from_le_bytes(w);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u64::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element goes to and the length of its hash's
/// `000...1` pattern (1 to Q+1).
pub fn pat_len(ele: &[u8]) -> (usize, u8) {
    let hash = murmur64a(ele, SEED);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    // The sentinel bit bounds the count at Q+1.
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

// ---- header -----------------------------------------------------------------

/// Why a string is not a HyperLogLog (Redis answers WRONGTYPE).
#[derive(Debug, PartialEq, Eq)]
pub struct NotHll;

/// The encoding of a string that passes Redis's HLL checks: long enough,
/// the magic, a known encoding, the exact size when dense. The sparse
/// opcodes are not checked here (Redis checks them as it walks them).
pub fn check(v: &[u8]) -> Result<u8, NotHll> {
    if v.len() < HDR_SIZE || v.get(..4) != Some(b"HYLL") {
        return Err(NotHll);
    }
    let enc = at(v, 4);
    if enc > MAX_ENCODING || (enc == DENSE && v.len() != DENSE_SIZE) {
        return Err(NotHll);
    }
    Ok(enc)
}

pub fn cache_valid(v: &[u8]) -> bool {
    at(v, CARD_MSB) & 0x80 == 0
}

pub fn invalidate_cache(v: &mut [u8]) {
    if let Some(b) = v.get_mut(CARD_MSB) {
        *b |= 0x80;
    }
}

pub fn cached_card(v: &[u8]) -> u64 {
    let mut c = [0u8; 8];
    if let Some(s) = v.get(8..16) {
        c.copy_from_slice(s);
    }
    u64::from_le_bytes(c)
}

pub fn set_cached_card(v: &mut [u8], card: u64) {
    if let Some(s) = v.get_mut(8..16) {
        s.copy_from_slice(&card.to_le_bytes());
    }
}

/// A new, empty HLL: sparse, all registers in XZERO runs, cache 0.
pub fn new_sparse() -> Vec<u8> {
    let mut v = Vec::with_capacity(HDR_SIZE + 2);
    v.extend_from_slice(b"HYLL");
    v.push(SPARSE);
    v.resize(HDR_SIZE, 0);
    let mut left = REGISTERS;
    while left > 0 {
        let n = left.min(SPARSE_XZERO_MAX_LEN);
        v.extend_from_slice(&xzero(n));
        left -= n;
    }
    v
}

// ---- dense ------------------------------------------------------------------

/// Register `i` of dense `regs` (the bytes after the header).
#[inline]
pub fn dense_get(regs: &[u8], i: usize) -> u8 {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let b0 = u16::from(at(regs, byte));
    let b1 = u16::from(at(regs, byte + 1));
    (((b0 >> fb) | (b1 << (8 - fb))) & u16::from(REGISTER_MAX)) as u8
}

#[inline]
pub fn dense_put(regs: &mut [u8], i: usize, val: u8) {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let v = u16::from(val);
    let max = u16::from(REGISTER_MAX);
    if let Some(b) = regs.get_mut(byte) {
        *b &= !((max << fb) as u8);
        *b |= (v << fb) as u8;
    }
    if let Some(b) = regs.get_mut(byte + 1) {
        *b &= !((max >> (8 - fb)) as u8);
        *b |= (v >> (8 - fb)) as u8;
    }
}

/// Raises register `i` to `count`; true if it changed.
pub fn dense_set(regs: &mut [u8], i: usize, count: u8) -> bool {
    if count > dense_get(regs, i) {
        dense_put(regs, i, count);
        true
    } else {
        false
    }
}

// ---- sparse opcodes -----------------------------------------------------------

#[inline]
fn is_zero(op: u8) -> bool {
    op & 0xc0 == 0
}
#[inline]
fn is_xzero(op: u8) -> bool {
    op & 0xc0 == 0x40
}
#[inline]
fn is_val(op: u8) -> bool {
    op & 0x80 != 0
}
#[inline]
fn zero_len(op: u8) -> usize {
    usize::from(op & 0x3f) + 1
}
#[inline]
fn xzero_len(op: u8, next: u8) -> usize {
    ((usize::from(op & 0x3f) << 8) | usize::from(next)) + 1
}
#[inline]
fn val_value(op: u8) -> u8 {
    ((op >> 2) & 0x1f) + 1
}
#[inline]
fn val_len(op: u8) -> usize {
    usize::from(op & 0x3) + 1
}
/// `val` 1..=32, `len` 1..=4.
#[inline]
fn val_op(val: u8, len: usize) -> u8 {
    ((val.wrapping_sub(1) << 2) | ((len as u8).wrapping_sub(1) & 3)) | 0x80
}
#[inline]
fn zero_op(len: usize) -> u8 {
    (len as u8).wrapping_sub(1) & 0x3f
}
/// `len` 1..=16384.
#[inline]
fn xzero(len: usize) -> [u8; 2] {
    let l = len.wrapping_sub(1);
    [((l >> 8) as u8 & 0x3f) | 0x40, (l & 0xff) as u8]
}

/// One decoded opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Zero(usize),
    XZero(usize),
    Val(u8, usize),
}

/// The opcodes of sparse data (after the header), as Redis walks them.
pub fn ops(data: &[u8]) -> impl Iterator<Item = Op> + '_ {
    let mut p = 0;
    std::iter::from_fn(move || {
        let op = *data.get(p)?;
        Some(if is_zero(op) {
            p += 1;
            Op::Zero(zero_len(op))
        } else if is_xzero(op) {
            let len = xzero_len(op, at(data, p + 1));
            p += 2;
            Op::XZero(len)
        } else {
            p += 1;
            Op::Val(val_value(op), val_len(op))
        })
    })
}

/// Walks sparse data calling `f(register, value)` for each VAL register;
/// Err(()) if the runs do not cover exactly the 16384 registers (a VAL
/// run that would go past the end stops the walk, as in Redis).
fn walk_sparse(data: &[u8], mut f: impl FnMut(usize, u8)) -> Result<(), Corrupt> {
    let mut idx = 0usize;
    for op in ops(data) {
        match op {
            Op::Zero(n) | Op::XZero(n) => idx += n,
            Op::Val(v, n) => {
                if idx + n > REGISTERS {
                    break;
                }
                for i in idx..idx + n {
                    f(i, v);
                }
                idx += n;
            }
        }
    }
    if idx == REGISTERS {
        Ok(())
    } else {
        Err(Corrupt)
    }
}

/// A sparse HLL whose opcodes do not describe 16384 registers (Redis's
/// INVALIDOBJ).
#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt;

/// Turns a sparse value into the dense one (header kept, encoding
/// changed); a dense value is left as it is.
pub fn to_dense(v: &mut Vec<u8>) -> Result<(), Corrupt> {
    if at(v, 4) == DENSE {
        return Ok(());
    }
    let mut dense = vec![0u8; DENSE_SIZE];
    if let (Some(d), Some(s)) = (dense.get_mut(..HDR_SIZE), v.get(..HDR_SIZE)) {
        d.copy_from_slice(s);
    }
    if let Some(e) = dense.get_mut(4) {
        *e = DENSE;
    }
    {
        let (_, regs) = dense.split_at_mut(HDR_SIZE);
        walk_sparse(v.get(HDR_SIZE..).unwrap_or_default(), |i, val| {
            dense_put(regs, i, val)
        })?;
    }
    *v = dense;
    Ok(())
}

/// What a register update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    Unchanged,
    Updated,
}

/// Raises register `index` of the HLL `v` (sparse or dense) to `count`,
/// promoting a sparse value to dense when the value does not fit a VAL
/// opcode or the value would grow past `max_bytes`.
pub fn set(v: &mut Vec<u8>, index: usize, count: u8, max_bytes: usize) -> Result<Set, Corrupt> {
    if at(v, 4) == DENSE {
        let regs = v.get_mut(HDR_SIZE..).unwrap_or_default();
        return Ok(if dense_set(regs, index, count) {
            Set::Updated
        } else {
            Set::Unchanged
        });
    }
    if count > SPARSE_VAL_MAX_VALUE {
        return promote(v, index, count);
    }
    // Slack past the end stands for what Redis's string has there (room
    // for the 3 bytes a split adds, and the terminator): the edits below
    // may touch it, and it is cut off again at the end.
    let mut len = v.len();
    v.resize(len + 8, 0);
    let r = sparse_set(v, &mut len, index, count, max_bytes);
    v.truncate(len);
    match r {
        Sparse::Done(s) => Ok(s),
        Sparse::Corrupt => Err(Corrupt),
        Sparse::Promote => promote(v, index, count),
    }
}

enum Sparse {
    Done(Set),
    Corrupt,
    Promote,
}

fn promote(v: &mut Vec<u8>, index: usize, count: u8) -> Result<Set, Corrupt> {
    to_dense(v)?;
    // A promotion always has a register to raise (Redis asserts it).
    if let Some(regs) = v.get_mut(HDR_SIZE..) {
        dense_set(regs, index, count);
    }
    Ok(Set::Updated)
}

/// Writes `b` at `i` if the buffer reaches there.
#[inline]
fn put(v: &mut [u8], i: usize, b: u8) {
    if let Some(x) = v.get_mut(i) {
        *x = b;
    }
}

/// Moves `n` bytes from `from` to `to` inside `v`, as far as `v` reaches.
fn move_bytes(v: &mut [u8], from: usize, to: usize, n: usize) {
    let max = v.len();
    let n = n.min(max.saturating_sub(from)).min(max.saturating_sub(to));
    v.copy_within(from..from + n, to);
}

/// The sparse update, the same steps as Redis's so the opcodes come out
/// identical: find the opcode covering `index`, split it, then merge
/// neighbouring VALs of equal value. `v` holds `*len` bytes of value and
/// slack after them.
fn sparse_set(v: &mut Vec<u8>, len: &mut usize, index: usize, count: u8, max: usize) -> Sparse {
    let mut end = *len;
    let mut p = HDR_SIZE;
    let mut first = 0usize;
    let mut prev: Option<usize> = None;
    let mut span = 0usize;
    while p < end {
        let op = at(v, p);
        let mut oplen = 1;
        span = if is_zero(op) {
            zero_len(op)
        } else if is_val(op) {
            val_len(op)
        } else {
            oplen = 2;
            xzero_len(op, at(v, p + 1))
        };
        if index < first + span {
            break;
        }
        prev = Some(p);
        p += oplen;
        first += span;
    }
    if span == 0 || p >= end {
        return Sparse::Corrupt;
    }
    let op = at(v, p);
    let next = Some(if is_xzero(op) { p + 2 } else { p + 1 }).filter(|&n| n < end);
    let runlen = if is_zero(op) {
        zero_len(op)
    } else if is_xzero(op) {
        xzero_len(op, at(v, p + 1))
    } else {
        val_len(op)
    };

    let trivial = if is_val(op) {
        if val_value(op) >= count {
            return Sparse::Done(Set::Unchanged);
        }
        runlen == 1
    } else {
        is_zero(op) && runlen == 1
    };
    if trivial {
        put(v, p, val_op(count, 1));
    } else {
        // Split the opcode into up to three: before, ours, after.
        let mut seq: Vec<u8> = Vec::with_capacity(5);
        let last = first + span - 1;
        let zeros = |seq: &mut Vec<u8>, n: usize| {
            if n > SPARSE_ZERO_MAX_LEN {
                seq.extend_from_slice(&xzero(n));
            } else {
                seq.push(zero_op(n));
            }
        };
        if is_zero(op) || is_xzero(op) {
            if index != first {
                zeros(&mut seq, index - first);
            }
            seq.push(val_op(count, 1));
            if index != last {
                zeros(&mut seq, last - index);
            }
        } else {
            let cur = val_value(op);
            if index != first {
                seq.push(val_op(cur, index - first));
            }
            seq.push(val_op(count, 1));
            if index != last {
                seq.push(val_op(cur, last - index));
            }
        }
        let oldlen = if is_xzero(op) { 2 } else { 1 };
        let delta = seq.len() as isize - oldlen;
        if delta > 0 && *len + delta as usize > max {
            return Sparse::Promote;
        }
        if delta != 0 {
            if let Some(n) = next {
                move_bytes(v, n, n.saturating_add_signed(delta), end - n);
            }
        }
        *len = len.saturating_add_signed(delta);
        end = end.saturating_add_signed(delta);
        if v.len() < *len + 8 {
            v.resize(*len + 8, 0);
        }
        put(v, *len, 0);
        for (i, b) in seq.iter().enumerate() {
            put(v, p + i, *b);
        }
    }

    // Merge adjacent VALs of equal value, scanning a few opcodes from the
    // one before the change.
    let mut p = prev.unwrap_or(HDR_SIZE);
    let mut scan = 5;
    while p < end && scan > 0 {
        scan -= 1;
        let op = at(v, p);
        if is_xzero(op) {
            p += 2;
            continue;
        }
        if is_zero(op) {
            p += 1;
            continue;
        }
        let nx = at(v, p + 1);
        if p + 1 < end && is_val(nx) && val_value(op) == val_value(nx) {
            let merged = val_len(op) + val_len(nx);
            if merged <= SPARSE_VAL_MAX_LEN {
                put(v, p + 1, val_op(val_value(op), merged));
                move_bytes(v, p + 1, p, end - p);
                *len -= 1;
                end -= 1;
                put(v, *len, 0);
                continue;
            }
        }
        p += 1;
    }
    invalidate_cache(v);
    Sparse::Done(Set::Updated)
}

// ---- merge and count --------------------------------------------------------

/// Raises `max[i]` to register `i` of the HLL `v` (of encoding `enc`).
pub fn merge_into(max: &mut [u8; REGISTERS], v: &[u8], enc: u8) -> Result<(), Corrupt> {
    let data = v.get(HDR_SIZE..).unwrap_or_default();
    if enc == DENSE {
        for (i, m) in max.iter_mut().enumerate() {
            let r = dense_get(data, i);
            if r > *m {
                *m = r;
            }
        }
        return Ok(());
    }
    walk_sparse(data, |i, val| {
        if let Some(m) = max.get_mut(i) {
            if val > *m {
                *m = val;
            }
        }
    })
}

/// The histogram of register values of an HLL value; Err for sparse data
/// that does not cover 16384 registers.
fn histogram(v: &[u8], enc: u8) -> Result<[u32; 64], Corrupt> {
    let mut h = [0u32; 64];
    let data = v.get(HDR_SIZE..).unwrap_or_default();
    if enc == DENSE {
        for i in 0..REGISTERS {
            if let Some(c) = h.get_mut(usize::from(dense_get(data, i))) {
                *c += 1;
            }
        }
        return Ok(h);
    }
    // Unlike the other walks, this one counts every run to the end.
    let mut idx = 0usize;
    for op in ops(data) {
        let (val, n) = match op {
            Op::Zero(n) | Op::XZero(n) => (0, n),
            Op::Val(v, n) => (usize::from(v), n),
        };
        idx += n;
        if let Some(c) = h.get_mut(val) {
            *c = c.wrapping_add(n as u32);
        }
    }
    if idx == REGISTERS {
        Ok(h)
    } else {
        Err(Corrupt)
    }
}

/// The cardinality estimate of an HLL value.
pub fn count(v: &[u8], enc: u8) -> Result<u64, Corrupt> {
    Ok(estimate(&histogram(v, enc)?))
}

/// The cardinality estimate of one register per byte (the multi-key
/// PFCOUNT union).
pub fn count_raw(regs: &[u8; REGISTERS]) -> u64 {
    let mut h = [0u32; 64];
    for r in regs {
        if let Some(c) = h.get_mut(usize::from(*r)) {
            *c += 1;
        }
    }
    estimate(&h)
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if prev == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if prev == z {
            return z / 3.0;
        }
    }
}

/// Ertl's improved estimator ("New cardinality estimation algorithms for
/// HyperLogLog sketches", arXiv:1702.01284), as Redis 7.0 computes it.
fn estimate(h: &[u32; 64]) -> u64 {
    let m = REGISTERS as f64;
    let hist = |i: u32| f64::from(h.get(i as usize).copied().unwrap_or(0));
    let mut z = m * tau((m - hist(Q + 1)) / m);
    for j in (1..=Q).rev() {
        z += hist(j);
        z *= 0.5;
    }
    z += m * sigma(hist(0) / m);
    let e = (ALPHA_INF * m * m / z).round();
    // Redis goes through a long long; the estimate is far below its range.
    e as i64 as u64
}

/// PFDEBUG DECODE's text of sparse data.
pub fn decode(data: &[u8]) -> String {
    let parts: Vec<String> = ops(data)
        .map(|op| match op {
            Op::Zero(n) => format!("z:{n}"),
            Op::XZero(n) => format!("Z:{n}"),
            Op::Val(v, n) => format!("v:{v},{n}"),
        })
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn registers(v: &[u8]) -> Vec<u8> {
        let mut max = [0u8; REGISTERS];
        merge_into(&mut max, v, check(v).unwrap()).unwrap();
        max.to_vec()
    }

    #[test]
    fn murmur_matches_redis_vectors() {
        // PFADD h a b c then PFDEBUG DECODE h on redis-server 7.0.15:
        // "Z:8436 v:1,1 Z:4274 v:2,1 Z:3068 v:1,1 Z:603".
        let mut got: Vec<(usize, u8)> =
            [&b"a"[..], b"b", b"c"].iter().map(|e| pat_len(e)).collect();
        got.sort();
        assert_eq!(got, [(8436, 1), (12711, 2), (15780, 1)]);
    }

    #[test]
    fn empty_hll_is_one_xzero_and_counts_zero() {
        let v = new_sparse();
        assert_eq!(v.len(), HDR_SIZE + 2);
        assert_eq!(&v[HDR_SIZE..], &[0x7f, 0xff]);
        assert_eq!(decode(&v[HDR_SIZE..]), "Z:16384");
        assert_eq!(count(&v, SPARSE), Ok(0));
    }

    #[test]
    fn redis_example_value() {
        // GET of `PFADD h a b c` on redis-server 7.0.15.
        let mut v = new_sparse();
        for e in [&b"a"[..], b"b", b"c"] {
            let (i, c) = pat_len(e);
            assert_eq!(set(&mut v, i, c, 3000), Ok(Set::Updated));
        }
        let want = b"\x60\xf3\x80\x50\xb1\x84\x4b\xfb\x80\x42\x5a";
        assert_eq!(&v[HDR_SIZE..], want);
        assert_eq!(count(&v, SPARSE), Ok(3));
    }

    #[test]
    fn dense_registers_round_trip_without_touching_neighbours() {
        let mut regs = vec![0u8; DENSE_SIZE - HDR_SIZE];
        let vals: Vec<u8> = (0..REGISTERS).map(|i| ((i * 37 + 11) % 64) as u8).collect();
        for (i, &x) in vals.iter().enumerate() {
            dense_put(&mut regs, i, x);
        }
        for (i, &x) in vals.iter().enumerate() {
            assert_eq!(dense_get(&regs, i), x, "register {i}");
        }
    }

    #[test]
    fn corrupt_sparse_is_refused_not_read_out_of_bounds() {
        let mut v = new_sparse();
        v.truncate(HDR_SIZE + 1); // half an XZERO
        assert_eq!(count(&v, SPARSE), Err(Corrupt));
        assert_eq!(to_dense(&mut v.clone()), Err(Corrupt));
        let mut max = [0u8; REGISTERS];
        assert_eq!(merge_into(&mut max, &v, SPARSE), Err(Corrupt));
        // Only VALs, far too many registers.
        let mut w = new_sparse();
        w.truncate(HDR_SIZE);
        w.extend(std::iter::repeat_n(0xff, 5000));
        assert_eq!(count(&w, SPARSE), Err(Corrupt));
        assert_eq!(set(&mut w.clone(), 16383, 3, 3000), Ok(Set::Unchanged));
        // No opcodes at all.
        let mut e = new_sparse();
        e.truncate(HDR_SIZE);
        assert_eq!(set(&mut e, 5, 3, 3000), Err(Corrupt));
    }

    #[test]
    fn promotion_at_the_size_limit_and_for_big_values() {
        let mut v = new_sparse();
        let mut n = 0u64;
        while at(&v, 4) == SPARSE {
            let (i, c) = pat_len(&n.to_le_bytes());
            if c > SPARSE_VAL_MAX_VALUE {
                n += 1;
                continue;
            }
            set(&mut v, i, c, 3000).unwrap();
            assert!(v.len() <= 3000 || at(&v, 4) == DENSE);
            n += 1;
        }
        assert_eq!(v.len(), DENSE_SIZE);
        let mut w = new_sparse();
        assert_eq!(set(&mut w, 7, 40, 3000), Ok(Set::Updated));
        assert_eq!(w.len(), DENSE_SIZE);
        assert_eq!(dense_get(&w[HDR_SIZE..], 7), 40);
    }

    proptest! {
        #[test]
        fn sparse_and_dense_hold_the_same_registers(
            elems in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..400),
            max_bytes in prop_oneof![Just(3000usize), 0usize..400],
        ) {
            let mut sparse = new_sparse();
            let mut dense = new_sparse();
            to_dense(&mut dense).unwrap();
            for e in &elems {
                let (i, c) = pat_len(e);
                let a = set(&mut sparse, i, c, max_bytes).unwrap();
                let b = set(&mut dense, i, c, max_bytes).unwrap();
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(registers(&sparse), registers(&dense));
            prop_assert_eq!(count(&sparse, check(&sparse).unwrap()), count(&dense, DENSE));
            // The sparse form stays canonical enough to decode back.
            if check(&sparse).unwrap() == SPARSE {
                let mut d = sparse.clone();
                to_dense(&mut d).unwrap();
                prop_assert_eq!(&d[HDR_SIZE..], &dense[HDR_SIZE..]);
            }
        }

        #[test]
        fn any_bytes_after_the_header_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            idx in 0usize..REGISTERS,
            c in 1u8..52,
        ) {
            let mut v = new_sparse();
            v.truncate(HDR_SIZE);
            v.extend_from_slice(&data);
            let _ = count(&v, SPARSE);
            let _ = set(&mut v.clone(), idx, c, 3000);
            let _ = to_dense(&mut v.clone());
            let _ = decode(&data);
            let mut max = [0u8; REGISTERS];
            let _ = merge_into(&mut max, &v, SPARSE);
        }
    }
}
