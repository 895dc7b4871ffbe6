//! The sources of the Redis 7 function libraries (FUNCTION LOAD), kept
//! beside the keys so that everything that copies the keyspace whole
//! (snapshots, the AOF base, a full resync, a loaded RDB) carries them
//! too. Compiling and running them is `node::cmd::functions`'s job; this
//! is only the data that must survive a restart.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every change gets a stamp no other set of libraries in this process
/// has, so a compiled copy knows whether it is stale, even after the
/// whole keyspace was swapped for a loaded one.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

fn next_stamp() -> u64 {
    NEXT_STAMP.fetch_add(1, Ordering::Relaxed)
}

/// Library name → its full source (shebang line included), as loaded.
#[derive(Debug, Default, Clone)]
pub struct Libraries {
    codes: BTreeMap<String, Bytes>,
    stamp: u64,
}

impl Libraries {
    /// Libraries as a whole new set (RESTORE FLUSH, a loaded RDB).
    pub fn from_codes(codes: BTreeMap<String, Bytes>) -> Self {
        Libraries {
            codes,
            stamp: next_stamp(),
        }
    }

    /// Identifies this exact content.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    pub fn codes(&self) -> &BTreeMap<String, Bytes> {
        &self.codes
    }

    /// Adds or replaces one library.
    pub fn insert(&mut self, name: String, code: Bytes) {
        self.codes.insert(name, code);
        self.stamp = next_stamp();
    }

    /// Removes one library; false if there was none of that name.
    pub fn remove(&mut self, name: &str) -> bool {
        let had = self.codes.remove(name).is_some();
        if had {
            self.stamp = next_stamp();
        }
        had
    }

    /// The sources, in name order (what snapshots write).
    pub fn sources(&self) -> Vec<Bytes> {
        self.codes.values().cloned().collect()
    }
}

/// What a library's shebang line (`#!lua name=mylib`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    /// As written (`lua`); engines are matched case-insensitively.
    pub engine: String,
    pub name: String,
    /// Where the code after the shebang starts (at its newline, so line
    /// numbers count the shebang as line 1, as in Redis).
    pub body_at: usize,
}

/// The error for a library or function name that is not `[A-Za-z0-9_]+`.
pub const BAD_NAME: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

/// Names of libraries and functions: letters, digits, underscores.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Parses the shebang line with Redis's rules and error texts (without the
/// `ERR ` prefix); the name is checked too.
pub fn parse_shebang(code: &[u8]) -> Result<Shebang, String> {
    if !code.starts_with(b"#!") {
        return Err("Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&c| c == b'\n') else {
        return Err("Invalid library metadata".into());
    };
    let line = code.get(..end).unwrap_or_default();
    let parts = match split_args(line) {
        Some(p) if !p.is_empty() => p,
        _ => return Err("Invalid library metadata".into()),
    };
    let engine = parts
        .first()
        .and_then(|p| p.get(2..))
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    let mut name: Option<Vec<u8>> = None;
    for part in parts.iter().skip(1) {
        if part.len() >= 5
            && part
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"name="))
        {
            if name.is_some() {
                return Err(
                    "Invalid metadata value, name argument was given multiple times".into(),
                );
            }
            name = Some(part.get(5..).unwrap_or_default().to_vec());
            continue;
        }
        return Err(format!(
            "Invalid metadata value given: {}",
            String::from_utf8_lossy(part)
        ));
    }
    let Some(name) = name else {
        return Err("Library name was not given".into());
    };
    if !valid_name(&name) {
        return Err(BAD_NAME.into());
    }
    Ok(Shebang {
        engine,
        name: String::from_utf8_lossy(&name).into_owned(),
        body_at: end,
    })
}

/// Splits a line into words like Redis's `sdssplitargs` (quotes and
/// escapes); None for unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| line.get(i).copied();
    loop {
        while at(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        let Some(_) = at(i) else {
            return Some(out);
        };
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            let c = at(i);
            if inq {
                match c {
                    None => return None,
                    Some(b'\\') if at(i + 1) == Some(b'x') => {
                        let hex = line.get(i + 2..i + 4).and_then(|h| {
                            std::str::from_utf8(h)
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                        });
                        if let Some(b) = hex {
                            cur.push(b);
                            i += 3;
                        } else {
                            cur.push(b'\\');
                        }
                    }
                    Some(b'\\') if at(i + 1).is_some() => {
                        i += 1;
                        cur.push(match at(i) {
                            Some(b'n') => b'\n',
                            Some(b'r') => b'\r',
                            Some(b't') => b'\t',
                            Some(b'b') => 8,
                            Some(b'a') => 7,
                            Some(o) => o,
                            None => return None,
                        });
                    }
                    Some(b'"') => {
                        if at(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(o) => cur.push(o),
                }
            } else if insq {
                match c {
                    None => return None,
                    Some(b'\\') if at(i + 1) == Some(b'\'') => {
                        i += 1;
                        cur.push(b'\'');
                    }
                    Some(b'\'') => {
                        if at(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(o) => cur.push(o),
                }
            } else {
                match c {
                    None => break,
                    Some(w) if w.is_ascii_whitespace() => break,
                    Some(b'"') => inq = true,
                    Some(b'\'') => insq = true,
                    Some(o) => cur.push(o),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs_parse_with_redis_errors() {
        let ok = parse_shebang(b"#!lua name=mylib\nreturn 1").unwrap();
        assert_eq!(
            (ok.engine.as_str(), ok.name.as_str(), ok.body_at),
            ("lua", "mylib", 16)
        );
        let q = parse_shebang(b"#!LUA \"name=a_1\"\n").unwrap();
        assert_eq!((q.engine.as_str(), q.name.as_str()), ("LUA", "a_1"));
        let e = |c: &[u8]| parse_shebang(c).unwrap_err();
        assert_eq!(e(b"return 1"), "Missing library metadata");
        assert_eq!(e(b"#!lua name=x"), "Invalid library metadata");
        assert_eq!(e(b"#!lua \"name=x\n"), "Invalid library metadata");
        assert_eq!(e(b"#!lua\n"), "Library name was not given");
        assert_eq!(
            e(b"#!lua name=a NAME=b\n"),
            "Invalid metadata value, name argument was given multiple times"
        );
        assert_eq!(
            e(b"#!lua foo=bar\n"),
            "Invalid metadata value given: foo=bar"
        );
        assert_eq!(e(b"#!lua name=a-b\n"), BAD_NAME);
        assert_eq!(e(b"#!lua name=\n"), BAD_NAME);
    }

    #[test]
    fn every_new_set_has_its_own_stamp() {
        let a = Libraries::from_codes(BTreeMap::new());
        let b = Libraries::from_codes(BTreeMap::new());
        assert_ne!(a.stamp(), b.stamp());
        assert_ne!(a.stamp(), Libraries::default().stamp());
        assert_eq!(a.clone().stamp(), a.stamp());
    }
}
