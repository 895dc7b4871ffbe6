//! Leaf helpers every layer may use: the Redis version we speak, Redis's
//! integer and float argument rules, random 40-hex ids. Depends on nothing in the crate.

/// The redis-server version slotway answers as (INFO, HELLO, RDB aux).
pub const VERSION: &str = "7.0.15";

/// Parses a float the way Redis's `strtold`-based parsing accepts it:
/// `inf`, `-inf`, `+inf` (and `infinity`) allowed; NaN, empty input,
/// surrounding spaces and trailing garbage refused.
pub fn parse_float(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        other => other.parse::<f64>().ok()?,
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

/// A fresh random id of 40 lowercase hex characters, the shape Redis uses
/// for node ids, replication ids and run ids.
pub fn random_hex_id() -> String {
    (0..40)
        .map(|_| char::from_digit(u32::from(rand::random::<u8>() % 16), 16).unwrap_or('0'))
        .collect()
}

/// Parses a signed decimal exactly like Redis's `string2ll` (no spaces, no
/// plus sign, no leading zeros except "0").
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        v = if neg {
            v.checked_mul(10)?.checked_sub(digit)?
        } else {
            v.checked_mul(10)?.checked_add(digit)?
        };
    }
    if neg && v == 0 {
        return None; // "-0" is rejected by Redis
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_40_lowercase_hex_and_differ() {
        let (a, b) = (random_hex_id(), random_hex_id());
        assert_eq!(a.len(), 40);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn floats_follow_redis_rules() {
        assert_eq!(parse_float(b"1.5"), Some(1.5));
        assert_eq!(parse_float(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float(b"+Infinity"), Some(f64::INFINITY));
        for bad in [&b"nan"[..], b"", b" 1", b"1 ", b"1x"] {
            assert_eq!(parse_float(bad), None, "{bad:?}");
        }
    }
}
