//! The manifest (`appendonly.aof.manifest`): which base and incr files
//! make up the log, in order, in Redis 7.0's text layout; and the atomic
//! replace every manifest change goes through.

use super::snapshot;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Base,
    Incr,
    History,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub name: String,
    pub seq: u64,
    pub kind: FileKind,
}

/// `appendonly.aof.manifest`: the files that make up the log, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub base: Option<ManifestFile>,
    pub incrs: Vec<ManifestFile>,
    pub history: Vec<ManifestFile>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut m = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut name = None;
            let mut seq = None;
            let mut kind = None;
            for pair in words.chunks(2) {
                match pair {
                    ["file", v] => name = Some((*v).to_string()),
                    ["seq", v] => seq = v.parse::<u64>().ok(),
                    ["type", "b"] => kind = Some(FileKind::Base),
                    ["type", "i"] => kind = Some(FileKind::Incr),
                    ["type", "h"] => kind = Some(FileKind::History),
                    _ => return Err(format!("line {}: unexpected '{line}'", i + 1)),
                }
            }
            let (Some(name), Some(seq), Some(kind)) = (name, seq, kind) else {
                return Err(format!("line {}: incomplete '{line}'", i + 1));
            };
            if name.contains('/') {
                return Err(format!("line {}: file name with a path", i + 1));
            }
            let f = ManifestFile { name, seq, kind };
            match kind {
                FileKind::Base if m.base.is_some() => {
                    return Err("more than one base file".into());
                }
                FileKind::Base => m.base = Some(f),
                FileKind::Incr => m.incrs.push(f),
                FileKind::History => m.history.push(f),
            }
        }
        Ok(m)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, f: &ManifestFile, t: char| {
            let _ = writeln!(out, "file {} seq {} type {t}", f.name, f.seq);
        };
        if let Some(b) = &self.base {
            line(&mut out, b, 'b');
        }
        for h in &self.history {
            line(&mut out, h, 'h');
        }
        for i in &self.incrs {
            line(&mut out, i, 'i');
        }
        out
    }

    pub(super) fn next_incr_seq(&self) -> u64 {
        self.incrs.iter().map(|f| f.seq).max().unwrap_or(0) + 1
    }

    pub(super) fn next_base_seq(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.seq) + 1
    }
}

pub fn manifest_name(name: &str) -> String {
    format!("{name}.manifest")
}

/// Writes `text` to `path` atomically (temp, fsync, rename, fsync dir).
pub(super) fn write_file_atomically(path: &Path, text: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    snapshot::fsync_dir(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_matches_redis_7_layout() {
        let text = "file appendonly.aof.2.base.rdb seq 2 type b\nfile appendonly.aof.1.incr.aof seq 1 type h\nfile appendonly.aof.2.incr.aof seq 2 type i\nfile appendonly.aof.3.incr.aof seq 3 type i\n";
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.base.as_ref().unwrap().seq, 2);
        assert_eq!(m.incrs.len(), 2);
        assert_eq!(m.history.len(), 1);
        assert_eq!(m.render(), text);
        assert_eq!(m.next_incr_seq(), 4);
        assert_eq!(m.next_base_seq(), 3);
        for bad in [
            "file a seq x type b",
            "file a seq 1 type z",
            "file a seq 1",
            "file ../x seq 1 type i",
            "file a seq 1 type b\nfile b seq 2 type b",
            "nonsense",
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_manifest_text_parses_or_fails_cleanly(text in ".{0,300}") {
            if let Ok(m) = Manifest::parse(&text) {
                proptest::prop_assert_eq!(Manifest::parse(&m.render()), Ok(m));
            }
        }
    }
}
