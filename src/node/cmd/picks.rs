//! Random picks from a collection, as SRANDMEMBER, ZRANDMEMBER and
//! HRANDFIELD give them: the count rules and the reply shapes they share.
//!
//! The count is the client's choice and may be anything up to 2^63, so
//! nothing here allocates by it: a positive count is capped by the
//! collection's size (distinct picks), and a large negative one (picks with
//! repetition) becomes a [`Reply::Sample`] the connection streams.

use crate::node::cmd::{err, int_arg};
use crate::resp::stream::Sample;
use crate::resp::{Proto, Reply};
use rand::seq::IteratorRandom;
use rand::Rng;

/// Up to this many picks with repetition are built as a plain array: small
/// replies stay ordinary values (scripts, MULTI) and only big ones stream.
const INLINE_PICKS: u64 = 1024;

/// Parses the count of a random-pick command with Redis 7.0's limits:
/// -LONG_MAX..=LONG_MAX, and half of that when each pick is a pair
/// (WITHSCORES / WITHVALUES), whose RESP2 header counts two per pick.
pub fn pick_count(arg: &[u8]) -> Result<i64, Reply> {
    let n = int_arg(arg)?;
    if n == i64::MIN {
        return Err(err(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    Ok(n)
}

/// The extra rule for pairs, checked after the option is parsed, as Redis.
pub fn check_pair_count(n: i64) -> Result<(), Reply> {
    if !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&n) {
        return Err(err("ERR value is out of range"));
    }
    Ok(())
}

/// The reply to a pick with `count` over `items` (a collection of `len`
/// entries), each entry written as the replies `shape` gives it.
pub fn random_picks<T>(
    items: impl Iterator<Item = T>,
    len: usize,
    count: i64,
    shape: impl Fn(T) -> Vec<Reply>,
) -> Reply {
    let mut rng = rand::rng();
    if count >= 0 {
        // Distinct picks: never more than the collection holds, whatever
        // was asked (`choose_multiple` reserves what it is asked for).
        let n = usize::try_from(count).unwrap_or(usize::MAX).min(len);
        let chosen = if n == len {
            items.collect::<Vec<T>>()
        } else {
            items.choose_multiple(&mut rng, n)
        };
        return Reply::Array(chosen.into_iter().flat_map(shape).collect());
    }
    let pool: Vec<Vec<Reply>> = items.map(shape).collect();
    let picks = count.unsigned_abs();
    if picks > INLINE_PICKS {
        if let Some(sample) = Sample::new(pool, picks) {
            return Reply::Sample(Box::new(sample));
        }
        return Reply::Array(vec![]);
    }
    let mut out = Vec::new();
    for _ in 0..picks {
        if pool.is_empty() {
            break;
        }
        if let Some(p) = pool.get(rng.random_range(0..pool.len())) {
            out.extend(p.iter().cloned());
        }
    }
    Reply::Array(out)
}

/// One entry of a reply that may carry a second value per member
/// (WITHSCORES, WITHVALUES): RESP3 nests the pair, RESP2 lays it flat.
pub fn pair_shape(proto: Proto, first: Reply, second: Option<Reply>) -> Vec<Reply> {
    match second {
        None => vec![first],
        Some(v) if proto == Proto::Resp3 => vec![Reply::Array(vec![first, v])],
        Some(v) => vec![first, v],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Reply> {
        (0..n).map(|i| Reply::bulk(i.to_string())).collect()
    }

    #[test]
    fn counts_follow_redis_limits() {
        assert!(pick_count(b"-9223372036854775808").is_err());
        assert_eq!(pick_count(b"-9223372036854775807").ok(), Some(-i64::MAX));
        assert!(pick_count(b"9223372036854775808").is_err());
        assert!(check_pair_count(i64::MAX / 2).is_ok());
        assert!(check_pair_count(i64::MAX / 2 + 1).is_err());
        assert!(check_pair_count(-(i64::MAX / 2) - 1).is_err());
    }

    #[test]
    fn a_huge_positive_count_returns_the_whole_collection() {
        let r = random_picks(members(3).into_iter(), 3, i64::MAX, |m| vec![m]);
        assert!(matches!(r, Reply::Array(ref v) if v.len() == 3), "{r:?}");
    }

    #[test]
    fn a_huge_negative_count_is_lazy_and_a_small_one_is_not() {
        let r = random_picks(members(2).into_iter(), 2, -i64::MAX, |m| vec![m]);
        assert!(matches!(r, Reply::Sample(ref s) if s.len() == i64::MAX as u64));
        let r = random_picks(members(2).into_iter(), 2, -5, |m| vec![m]);
        assert!(matches!(r, Reply::Array(ref v) if v.len() == 5), "{r:?}");
    }
}
