//! The value types a key can hold.

use compact_bytes::CompactBytes;
use hashbrown::{HashMap, HashSet};
use std::collections::{BTreeSet, VecDeque};

/// Byte strings of the keyspace: up to 23 bytes inline, no heap allocation,
/// which is most keys and small values (memory per key). A newtype so that
/// tables keyed by it can be probed with a plain `&[u8]` (`Borrow`) and it
/// can be ordered.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Sds(CompactBytes);

pub fn sds(b: &[u8]) -> Sds {
    Sds(CompactBytes::new(b))
}

impl Sds {
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }

    pub fn extend_from_slice(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// The bytes, to change in place (SETBIT on a large bitmap).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

impl std::ops::Deref for Sds {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl AsRef<[u8]> for Sds {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl std::borrow::Borrow<[u8]> for Sds {
    fn borrow(&self) -> &[u8] {
        self.0.as_slice()
    }
}

// Must hash exactly like `[u8]` for `Borrow` lookups to find entries.
impl std::hash::Hash for Sds {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_slice().hash(state);
    }
}

impl PartialOrd for Sds {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sds {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_slice().cmp(other.0.as_slice())
    }
}

impl std::fmt::Debug for Sds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.0.as_slice()))
    }
}

/// A value. Collections are boxed so that a string key costs no more than
/// its inline bytes plus a tag.
#[derive(Debug, Clone)]
pub enum Value {
    Str(Sds),
    List(Box<VecDeque<Sds>>),
    Hash(Box<HashMap<Sds, Sds>>),
    Set(Box<HashSet<Sds>>),
    ZSet(Box<ZSet>),
    Stream(Box<super::stream::Stream>),
}

impl Value {
    /// Name as reported by `TYPE`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    /// Name as reported by `OBJECT ENCODING` (Redis 7 names for the shapes
    /// clients usually check).
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) => {
                if crate::resp::parse_i64(s).is_some() {
                    "int"
                } else if s.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            Value::List(_) => "quicklist",
            Value::Hash(h) if h.len() <= 128 => "listpack",
            Value::Hash(_) => "hashtable",
            Value::Set(s)
                if s.len() <= 128 && s.iter().all(|m| crate::resp::parse_i64(m).is_some()) =>
            {
                "intset"
            }
            Value::Set(_) => "hashtable",
            Value::ZSet(z) if z.len() <= 128 => "listpack",
            Value::ZSet(_) => "skiplist",
            Value::Stream(_) => "stream",
        }
    }

    /// True for a collection with no elements: Redis never keeps those.
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
            // An empty stream is kept: its last ID and groups matter.
            Value::Stream(_) => false,
        }
    }
}

/// A collection type a key can hold, so typed access is written once.
pub trait Collection: Sized {
    fn of(v: &Value) -> Option<&Self>;
    fn of_mut(v: &mut Value) -> Option<&mut Self>;
    fn empty() -> Value;
}

macro_rules! collection {
    ($t:ty, $variant:ident) => {
        impl Collection for $t {
            fn of(v: &Value) -> Option<&Self> {
                match v {
                    Value::$variant(x) => Some(x),
                    _ => None,
                }
            }
            fn of_mut(v: &mut Value) -> Option<&mut Self> {
                match v {
                    Value::$variant(x) => Some(x),
                    _ => None,
                }
            }
            fn empty() -> Value {
                Value::$variant(Box::default())
            }
        }
    };
}

collection!(VecDeque<Sds>, List);
collection!(HashMap<Sds, Sds>, Hash);
collection!(HashSet<Sds>, Set);
collection!(ZSet, ZSet);
collection!(super::stream::Stream, Stream);

/// A float with a total order, for the score index. NaN never gets in
/// (commands reject it with "ERR resulting score is not a number").
/// -0 and 0 are the same score, as in Redis (ties sort by member, and a
/// `-0` range bound takes in `0`): the order agrees with `==`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .partial_cmp(&other.0)
            .unwrap_or_else(|| self.0.total_cmp(&other.0))
    }
}

/// Sorted set: member → score, plus an ordered index by (score, member).
#[derive(Debug, Clone, Default)]
pub struct ZSet {
    pub scores: HashMap<Sds, f64>,
    pub index: BTreeSet<(Score, Sds)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Inserts or updates; returns true when the member is new.
    pub fn insert(&mut self, member: &[u8], score: f64) -> bool {
        // Stored as 0: Redis's listpack (every small sorted set) keeps a
        // -0 score as the integer 0, so that is what it replies and saves.
        let score = if score == 0.0 { 0.0 } else { score };
        let m = sds(member);
        match self.scores.insert(m.clone(), score) {
            Some(old) => {
                if Score(old) != Score(score) {
                    self.index.remove(&(Score(old), m.clone()));
                    self.index.insert((Score(score), m));
                }
                false
            }
            None => {
                self.index.insert((Score(score), m));
                true
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(old) => {
                self.index.remove(&(Score(old), sds(member)));
                true
            }
            None => false,
        }
    }

    /// 0-based rank in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        let key = (Score(score), sds(member));
        Some(self.index.range(..&key).count())
    }

    /// Members in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Sds, f64)> {
        self.index.iter().map(|(s, m)| (m, s.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zset_order_and_rank() {
        let mut z = ZSet::default();
        assert!(z.insert(b"b", 2.0));
        assert!(z.insert(b"a", 2.0));
        assert!(z.insert(b"c", 1.0));
        assert!(!z.insert(b"c", 3.0));
        let order: Vec<&[u8]> = z.iter().map(|(m, _)| m.as_slice()).collect();
        assert_eq!(order, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(z.rank(b"c"), Some(2));
        assert!(z.remove(b"a"));
        assert_eq!(z.rank(b"b"), Some(0));
        assert_eq!(z.index.len(), z.len());
    }
}
