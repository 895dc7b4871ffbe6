//! Replies too large to build up front, produced while they are written.
//!
//! A negative count to SRANDMEMBER / ZRANDMEMBER / HRANDFIELD asks for that
//! many picks *with repetition*: a client may ask for 2^63 of them from a set
//! of one. Redis appends them to its output buffer as it goes; building them
//! as one `Vec<Reply>` (or one buffer) would let a single request exhaust the
//! node's memory. A [`Sample`] keeps only the pool it draws from (a copy of
//! the collection, bounded by the data already held) and a count;
//! [`ReplyStream`] encodes it in chunks that the connection writes out before
//! it makes the next one, so memory stays at one chunk whatever the count.

use crate::resp::reply::put_len;
use crate::resp::{Proto, Reply};
use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// `count` random picks, with repetition, from `pool`.
///
/// Each pick is written as the replies of one pool entry, flat: one bulk for
/// a member, two (member, score) for RESP2 WITHSCORES, one `[member, score]`
/// array for RESP3. The command that builds it chooses that shape for the
/// client's protocol, as it would for a materialised reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pool: Vec<Vec<Reply>>,
    count: u64,
    width: u64,
}

impl Sample {
    /// `None` when the pool is empty (nothing to draw from) or its entries
    /// do not all have the same shape.
    pub fn new(pool: Vec<Vec<Reply>>, count: u64) -> Option<Sample> {
        let width = pool.first()?.len() as u64;
        if pool.iter().any(|p| p.len() as u64 != width) {
            return None;
        }
        Some(Sample { pool, count, width })
    }

    /// Elements of the array this reply is, as its header announces them.
    pub fn len(&self) -> u64 {
        self.count.saturating_mul(self.width)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pick<'a>(&'a self, rng: &mut SmallRng) -> &'a [Reply] {
        let i = rng.random_range(0..self.pool.len());
        self.pool.get(i).map_or(&[], Vec::as_slice)
    }

    /// The whole reply as values, for consumers that cannot take a stream
    /// (scripts); `None` when it would have more than `limit` elements.
    pub fn materialize(&self, limit: u64) -> Option<Vec<Reply>> {
        if self.len() > limit {
            return None;
        }
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut out = Vec::with_capacity(usize::try_from(self.len()).ok()?);
        for _ in 0..self.count {
            out.extend(self.pick(&mut rng).iter().cloned());
        }
        Some(out)
    }
}

enum Frame {
    Items(std::vec::IntoIter<Reply>),
    Picks { sample: Box<Sample>, left: u64 },
}

/// Encodes a sequence of replies, some of them lazy, a chunk at a time.
pub struct ReplyStream {
    proto: Proto,
    stack: Vec<Frame>,
    rng: SmallRng,
}

impl ReplyStream {
    pub fn new(proto: Proto, replies: Vec<Reply>) -> ReplyStream {
        ReplyStream {
            proto,
            stack: vec![Frame::Items(replies.into_iter())],
            // Seeded once from the thread RNG: the stream crosses await
            // points, where a thread-local generator may not go.
            rng: SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// Appends to `out` until it holds at least `budget` bytes or the
    /// replies end; true once everything has been encoded.
    pub fn fill(&mut self, out: &mut BytesMut, budget: usize) -> bool {
        while out.len() < budget {
            let Some(top) = self.stack.last_mut() else {
                return true;
            };
            match top {
                Frame::Items(items) => match items.next() {
                    None => {
                        self.stack.pop();
                    }
                    Some(Reply::Sample(sample)) => {
                        put_len(out, b'*', sample.len());
                        let left = sample.count;
                        self.stack.push(Frame::Picks { sample, left });
                    }
                    Some(Reply::Array(inner)) if inner.iter().any(Reply::is_lazy) => {
                        put_len(out, b'*', inner.len() as u64);
                        self.stack.push(Frame::Items(inner.into_iter()));
                    }
                    Some(r) => r.encode(self.proto, out),
                },
                Frame::Picks { sample, left } => {
                    if *left == 0 {
                        self.stack.pop();
                    } else {
                        *left -= 1;
                        for r in sample.pick(&mut self.rng) {
                            r.encode(self.proto, out);
                        }
                    }
                }
            }
        }
        self.stack.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn drain(mut s: ReplyStream, budget: usize) -> (Vec<u8>, usize) {
        let mut all = Vec::new();
        let mut chunks = 0;
        loop {
            let mut out = BytesMut::new();
            let done = s.fill(&mut out, budget);
            assert!(out.len() < budget + 64, "a chunk overshoots its budget");
            all.extend_from_slice(&out);
            chunks += 1;
            if done {
                return (all, chunks);
            }
        }
    }

    #[test]
    fn a_sample_streams_in_chunks_with_the_announced_length() {
        let pool = vec![vec![Reply::bulk("a")]];
        let sample = Sample::new(pool, 10_000).map(Box::new);
        let Some(sample) = sample else {
            panic!("a one-member pool makes a sample");
        };
        let s = ReplyStream::new(Proto::Resp2, vec![Reply::Sample(sample), Reply::Int(7)]);
        let (bytes, chunks) = drain(s, 1024);
        let mut want = b"*10000\r\n".to_vec();
        for _ in 0..10_000 {
            want.extend_from_slice(b"$1\r\na\r\n");
        }
        want.extend_from_slice(b":7\r\n");
        assert_eq!(bytes, want);
        assert!(
            chunks > 60,
            "only {chunks} chunks: the stream did not split"
        );
    }

    #[test]
    fn pairs_count_twice_in_the_header_and_nested_arrays_stream() {
        let pool = vec![vec![Reply::bulk("m"), Reply::bulk("1")]];
        let Some(sample) = Sample::new(pool, 3) else {
            panic!("a pool makes a sample");
        };
        let exec = Reply::Array(vec![Reply::Ok, Reply::Sample(Box::new(sample))]);
        let (bytes, _) = drain(ReplyStream::new(Proto::Resp2, vec![exec]), 4);
        let want = b"*2\r\n+OK\r\n*6\r\n$1\r\nm\r\n$1\r\n1\r\n$1\r\nm\r\n$1\r\n1\r\n$1\r\nm\r\n$1\r\n1\r\n";
        assert_eq!(bytes, want.to_vec());
    }

    #[test]
    fn an_empty_pool_or_mixed_shapes_make_no_sample() {
        assert!(Sample::new(vec![], 5).is_none());
        let mixed = vec![vec![Reply::Bulk(Bytes::from_static(b"a"))], vec![]];
        assert!(Sample::new(mixed, 5).is_none());
    }

    #[test]
    fn materialize_refuses_past_its_limit() {
        let Some(s) = Sample::new(vec![vec![Reply::bulk("a")]], 5) else {
            panic!("a pool makes a sample");
        };
        assert_eq!(s.materialize(5).map(|v| v.len()), Some(5));
        assert!(s.materialize(4).is_none());
    }
}
