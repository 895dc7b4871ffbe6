//! Load: a RESP command stream (an AOF file's contents) replayed in
//! batches, with a torn last command or an open MULTI reported as the tail
//! to cut rather than an error.

use crate::resp::{Limits, RequestParser};
use bytes::BytesMut;
use std::io::{self, Read};

/// A stream of commands that could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("at offset {offset}: {reason}")]
    Format { offset: u64, reason: String },
}

/// How a replay ended.
#[derive(Debug)]
pub struct Replayed {
    /// Bytes taken by complete commands.
    pub consumed: u64,
    /// Bytes read in all.
    pub size: u64,
    /// Set when the stream does not end on a command boundary outside a
    /// transaction: where it would be cut, and whether a command was torn
    /// (else a MULTI was left open; its queued commands were not run).
    pub tail: Option<Tail>,
    /// The stream ended inside MULTI: the runner holds queued commands
    /// that must be dropped, never run.
    pub open_multi: bool,
}

#[derive(Debug)]
pub struct Tail {
    pub at: u64,
    pub torn: bool,
}

/// Reads a RESP command stream (an AOF file's contents) and hands its
/// commands to `run` in batches of up to 4096, in order. `admit` may skip
/// commands (the fuzz target keeps MIGRATE and file writers out); the
/// loader admits all. Running them is the caller's business.
pub fn replay(
    input: &mut impl Read,
    admit: impl Fn(&[bytes::Bytes]) -> bool,
    mut run: impl FnMut(&[Vec<bytes::Bytes>]),
) -> Result<Replayed, ReplayError> {
    let mut parser = RequestParser::new();
    // Our own file: no client limits, only what fits in memory.
    let limits = Limits {
        max_bulk_len: i64::MAX as usize,
        max_multibulk_len: i32::MAX as usize,
        ..Limits::default()
    };
    let mut buf = BytesMut::with_capacity(1 << 16);
    // Bytes consumed by complete commands, and where the last MULTI began
    // while its EXEC is still to come.
    let mut consumed: u64 = 0;
    let mut open_multi: Option<u64> = None;
    let mut eof = false;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let mut batch = Vec::new();
        loop {
            let before = buf.len();
            match parser.parse(&mut buf, &limits) {
                Ok(Some(args)) => {
                    let start = consumed;
                    consumed += (before - buf.len()) as u64;
                    match args.first() {
                        Some(n) if n.eq_ignore_ascii_case(b"multi") => open_multi = Some(start),
                        Some(n) if n.eq_ignore_ascii_case(b"exec") => open_multi = None,
                        _ => {}
                    }
                    if !args.is_empty() && admit(&args) {
                        batch.push(args);
                    }
                    if batch.len() >= 4096 {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ReplayError::Format {
                        offset: consumed,
                        reason: e.to_string(),
                    })
                }
            }
        }
        if !batch.is_empty() {
            run(&batch);
            continue;
        }
        if eof {
            break;
        }
        let n = input.read(&mut chunk)?;
        if n == 0 {
            eof = true;
            if buf.is_empty() {
                break;
            }
            continue;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let torn = !buf.is_empty();
    let size = consumed + buf.len() as u64;
    let tail = match (torn, open_multi) {
        (_, Some(at)) => Some(Tail { at, torn }),
        (true, None) => Some(Tail { at: consumed, torn }),
        (false, None) => None,
    };
    Ok(Replayed {
        consumed,
        size,
        tail,
        open_multi: open_multi.is_some(),
    })
}
