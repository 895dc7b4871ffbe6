//! Glob-style matching with Redis's `stringmatchlen` rules (`*`, `?`,
//! `[...]` with ranges and `^`, `\` escapes), used by KEYS, SCAN MATCH,
//! PSUBSCRIBE and CONFIG GET.

/// True if `s` matches `pattern`.
pub fn glob_match(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    // Iterative with backtracking to the last `*`: linear-ish, no recursion
    // depth to exhaust on hostile patterns.
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        let cur = s.get(i).copied();
        if let Some(&pc) = pattern.get(p) {
            match pc {
                b'*' => {
                    while pattern.get(p) == Some(&b'*') {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' if cur.is_some() => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' if cur.is_some() => {
                    if let Some((matched, next)) =
                        cur.and_then(|c| class_match(pattern, p, c, nocase))
                    {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    }
                }
                b'\\'
                    if pattern
                        .get(p + 1)
                        .zip(cur)
                        .is_some_and(|(&c, sc)| eq(c, sc)) =>
                {
                    p += 2;
                    i += 1;
                    continue;
                }
                c if c != b'?' && c != b'[' && cur.is_some_and(|sc| eq(c, sc)) => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        // Mismatch: let the last star swallow one more byte.
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

/// Matches `c` against the class starting at `pattern[p] == '['`. Returns
/// (matched, index after the class).
fn class_match(pattern: &[u8], p: usize, c: u8, nocase: bool) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let norm = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    let c = norm(c);
    let mut matched = false;
    loop {
        match pattern.get(j) {
            None => break, // unterminated class: Redis treats end as close
            Some(b']') => {
                j += 1;
                break;
            }
            Some(b'\\') if pattern.get(j + 1).is_some() => {
                if pattern.get(j + 1).map(|&x| norm(x)) == Some(c) {
                    matched = true;
                }
                j += 2;
            }
            Some(&lo)
                if pattern.get(j + 1) == Some(&b'-')
                    && pattern.get(j + 2).is_some_and(|&x| x != b']') =>
            {
                let hi = pattern.get(j + 2).copied().unwrap_or(lo);
                let (lo, hi) = (norm(lo.min(hi)), norm(lo.max(hi)));
                if lo <= c && c <= hi {
                    matched = true;
                }
                j += 3;
            }
            Some(&x) => {
                if norm(x) == c {
                    matched = true;
                }
                j += 1;
            }
        }
    }
    Some((matched != negate, j))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn redis_patterns() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes(), false);
        assert!(m("*", "anything"));
        assert!(m("h?llo", "hello"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("key:*", "key:000000000001"));
        assert!(!m("key:*", "kex:1"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        assert!(glob_match(b"HELLO", b"hello", true));
    }
}
