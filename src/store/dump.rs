//! The DUMP/RESTORE payload that carries a value between nodes (MIGRATE).
//!
//! slotway's own format, not Redis's RDB encoding: `SW1`, a type byte, the
//! body (big-endian lengths), then a CRC16 of everything before it so a torn
//! or foreign payload is refused instead of loaded as garbage.

use super::value::{sds, Value, ZSet};
use bytes::{Buf, BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 3] = b"SW1";

fn put(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

pub fn dump(v: &Value) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(MAGIC);
    match v {
        Value::Str(s) => {
            out.put_u8(0);
            put(&mut out, s);
        }
        Value::List(l) => {
            out.put_u8(1);
            out.put_u32(l.len() as u32);
            for e in l.iter() {
                put(&mut out, e);
            }
        }
        Value::Hash(h) => {
            out.put_u8(2);
            out.put_u32(h.len() as u32);
            for (k, v) in h.iter() {
                put(&mut out, k);
                put(&mut out, v);
            }
        }
        Value::Set(s) => {
            out.put_u8(3);
            out.put_u32(s.len() as u32);
            for e in s.iter() {
                put(&mut out, e);
            }
        }
        Value::ZSet(z) => {
            out.put_u8(4);
            out.put_u32(z.len() as u32);
            for (m, score) in z.iter() {
                put(&mut out, m);
                out.put_f64(score);
            }
        }
    }
    let crc = crc16::State::<crc16::XMODEM>::calculate(&out);
    out.put_u16(crc);
    out.freeze()
}

fn take(b: &mut &[u8]) -> Option<Vec<u8>> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if b.remaining() < n {
        return None;
    }
    let v = b.get(..n)?.to_vec();
    b.advance(n);
    Some(v)
}

fn count(b: &mut &[u8]) -> Option<usize> {
    (b.remaining() >= 4).then(|| b.get_u32() as usize)
}

/// Decodes a payload; None when it is not a valid slotway payload.
pub fn restore(payload: &[u8]) -> Option<Value> {
    let body_len = payload.len().checked_sub(2)?;
    let (body, crc) = payload.split_at(body_len);
    let want = u16::from_be_bytes([*crc.first()?, *crc.get(1)?]);
    if crc16::State::<crc16::XMODEM>::calculate(body) != want || body.get(..3)? != MAGIC {
        return None;
    }
    let mut b = body.get(3..)?;
    if b.remaining() < 1 {
        return None;
    }
    let v = match b.get_u8() {
        0 => Value::Str(sds(&take(&mut b)?)),
        1 => {
            let n = count(&mut b)?;
            let mut l = std::collections::VecDeque::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                l.push_back(sds(&take(&mut b)?));
            }
            Value::List(Box::new(l))
        }
        2 => {
            let n = count(&mut b)?;
            let mut h = hashbrown::HashMap::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let k = take(&mut b)?;
                h.insert(sds(&k), sds(&take(&mut b)?));
            }
            Value::Hash(Box::new(h))
        }
        3 => {
            let n = count(&mut b)?;
            let mut s = hashbrown::HashSet::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                s.insert(sds(&take(&mut b)?));
            }
            Value::Set(Box::new(s))
        }
        4 => {
            let n = count(&mut b)?;
            let mut z = ZSet::default();
            for _ in 0..n {
                let m = take(&mut b)?;
                if b.remaining() < 8 {
                    return None;
                }
                let score = b.get_f64();
                if score.is_nan() {
                    return None;
                }
                z.insert(&m, score);
            }
            Value::ZSet(Box::new(z))
        }
        _ => return None,
    };
    b.is_empty().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_damage_is_refused() {
        let mut z = ZSet::default();
        z.insert(b"a", 1.5);
        z.insert(b"b", -2.0);
        let values = vec![
            Value::Str(sds(b"hello")),
            Value::List(Box::new([sds(b"x"), sds(b"y")].into_iter().collect())),
            Value::Hash(Box::new([(sds(b"f"), sds(b"v"))].into_iter().collect())),
            Value::Set(Box::new([sds(b"m")].into_iter().collect())),
            Value::ZSet(Box::new(z)),
        ];
        for v in values {
            let p = dump(&v);
            let back = restore(&p).unwrap();
            assert_eq!(dump(&back), p);
            for cut in 0..p.len() {
                assert!(restore(&p[..cut]).is_none(), "truncated payload accepted");
            }
            let mut bad = p.to_vec();
            bad[4] ^= 0xff;
            assert!(restore(&bad).is_none(), "corrupt payload accepted");
        }
    }
}
