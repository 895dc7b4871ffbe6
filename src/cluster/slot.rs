//! Key → hash slot, with the Redis `{hash tag}` rule.

/// Number of hash slots in a Redis cluster.
pub const SLOTS: usize = 16384;

/// The part of a key that is hashed: the content of the first `{...}` if it is
/// non-empty, else the whole key (Redis cluster spec, "Hash tags").
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(rest) = key.get(open + 1..) {
            if let Some(close) = rest.iter().position(|&b| b == b'}') {
                if close > 0 {
                    return rest.get(..close).unwrap_or(key);
                }
            }
        }
    }
    key
}

/// CRC16-XMODEM of the hash tag, modulo 16384.
pub fn key_hash_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) & 0x3FFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots() {
        // Values from a real redis-server 7.0 `CLUSTER KEYSLOT`.
        assert_eq!(key_hash_slot(b"foo"), 12182);
        assert_eq!(key_hash_slot(b"bar"), 5061);
        assert_eq!(key_hash_slot(b"123456789"), 12739);
        assert_eq!(key_hash_slot(b""), 0);
        assert_eq!(
            key_hash_slot(b"{user1000}.following"),
            key_hash_slot(b"user1000")
        );
        // An empty first tag hashes the whole key.
        assert_eq!(key_hash_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_hash_slot(b"{}"), 15257);
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    }
}
