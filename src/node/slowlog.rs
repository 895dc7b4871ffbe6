//! The slow log: commands whose execution took at least
//! `slowlog-log-slower-than` microseconds, newest first, at most
//! `slowlog-max-len` of them, as Redis keeps them (SLOWLOG GET/LEN/RESET).
//!
//! Only the execution is timed, not the wait of a blocked command nor the
//! I/O, so an entry points at a command that held the keyspace.

use bytes::Bytes;
use std::collections::VecDeque;

/// Redis keeps at most this many arguments of a logged command; the last
/// one kept says how many more there were.
const MAX_ARGC: usize = 32;
/// And at most this many bytes of each argument.
const MAX_STRING: usize = 128;

/// One logged command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    /// Unix time in seconds when it ran.
    pub time: u64,
    pub micros: u64,
    pub args: Vec<Bytes>,
    pub addr: String,
    pub name: String,
}

#[derive(Debug, Default)]
pub struct SlowLog {
    entries: VecDeque<Entry>,
    next_id: u64,
}

impl SlowLog {
    /// Records a command (its arguments already shortened by
    /// [`logged_args`]) and trims the log to `max_len`.
    pub fn push(&mut self, mut entry: Entry, max_len: usize) {
        entry.id = self.next_id;
        self.next_id += 1;
        self.entries.push_front(entry);
        self.entries.truncate(max_len);
    }

    /// The newest `count` entries (all of them for `None`).
    pub fn newest(&self, count: Option<usize>) -> impl Iterator<Item = &Entry> {
        self.entries.iter().take(count.unwrap_or(usize::MAX))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the log; ids keep counting, as in Redis.
    pub fn reset(&mut self) {
        self.entries.clear();
    }
}

/// The arguments as the log keeps them: secrets redacted (AUTH, HELLO's
/// AUTH, MIGRATE's AUTH/AUTH2, as Redis 7.0 redacts them), at most 32, each
/// at most 128 bytes with a note of what was cut.
pub fn logged_args(args: &[Bytes]) -> Vec<Bytes> {
    let redacted = redacted_positions(args);
    let keep = if args.len() > MAX_ARGC {
        MAX_ARGC - 1
    } else {
        args.len()
    };
    let mut out: Vec<Bytes> = args
        .iter()
        .take(keep)
        .enumerate()
        .map(|(i, a)| {
            if redacted.contains(&i) {
                Bytes::from_static(b"(redacted)")
            } else if a.len() > MAX_STRING {
                let mut s = a.get(..MAX_STRING).unwrap_or_default().to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_STRING).as_bytes(),
                );
                Bytes::from(s)
            } else {
                a.clone()
            }
        })
        .collect();
    if args.len() > keep {
        out.push(Bytes::from(format!(
            "... ({} more arguments)",
            args.len() - keep
        )));
    }
    out
}

/// Which arguments hold passwords.
fn redacted_positions(args: &[Bytes]) -> Vec<usize> {
    let name = args
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    let is = |i: usize, word: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    };
    match name.as_slice() {
        b"auth" => (1..args.len()).collect(),
        b"hello" => (2..args.len())
            .filter(|&i| is(i, "auth"))
            .flat_map(|i| [i + 1, i + 2])
            .collect(),
        b"migrate" => (6..args.len())
            .flat_map(|i| {
                if is(i, "auth") {
                    vec![i + 1]
                } else if is(i, "auth2") {
                    vec![i + 1, i + 2]
                } else {
                    vec![]
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    fn entry(name: &str) -> Entry {
        Entry {
            id: 0,
            time: 1,
            micros: 2,
            args: b(&[name]),
            addr: "127.0.0.1:1".into(),
            name: String::new(),
        }
    }

    #[test]
    fn newest_first_trimmed_and_ids_survive_reset() {
        let mut log = SlowLog::default();
        for n in ["a", "b", "c"] {
            log.push(entry(n), 2);
        }
        let ids: Vec<u64> = log.newest(None).map(|e| e.id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!(log.newest(Some(1)).count(), 1);
        log.reset();
        assert!(log.is_empty());
        log.push(entry("d"), 2);
        assert_eq!(log.newest(None).next().map(|e| e.id), Some(3));
    }

    #[test]
    fn long_commands_are_cut_like_redis() {
        let mut args = b(&["rpush", "l"]);
        args.extend((1..=40).map(|i| Bytes::from(i.to_string())));
        let kept = logged_args(&args);
        assert_eq!(kept.len(), 32);
        assert_eq!(kept.last(), Some(&Bytes::from("... (11 more arguments)")));
        let long = logged_args(&[Bytes::from("set"), Bytes::from("k".repeat(200))]);
        assert_eq!(
            long.get(1),
            Some(&Bytes::from(format!(
                "{}... (72 more bytes)",
                "k".repeat(128)
            )))
        );
    }

    #[test]
    fn passwords_are_redacted() {
        let r = Bytes::from_static(b"(redacted)");
        assert_eq!(
            logged_args(&b(&["AUTH", "u", "p"])),
            vec![Bytes::from("AUTH"), r.clone(), r.clone()]
        );
        let h = logged_args(&b(&["hello", "2", "auth", "default", "pw", "setname", "x"]));
        assert_eq!(
            h,
            b(&[
                "hello",
                "2",
                "auth",
                "(redacted)",
                "(redacted)",
                "setname",
                "x"
            ])
        );
        let m = logged_args(&b(&[
            "migrate", "h", "1", "", "0", "5", "auth2", "u", "p", "keys", "k",
        ]));
        assert_eq!(m.get(7), Some(&r));
        assert_eq!(m.get(8), Some(&r));
        assert_eq!(m.get(10), Some(&Bytes::from("k")));
    }
}
