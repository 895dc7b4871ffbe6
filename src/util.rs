//! Leaf helpers every layer may use: the Redis version we speak, Redis's
//! float argument rules, random 40-hex ids. Depends on nothing in the crate.

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
