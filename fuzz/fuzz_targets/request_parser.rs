//! Feeds arbitrary bytes, in arbitrary chunks, to the request parser: it must
//! never panic, and feeding the same bytes whole or in pieces must give the
//! same requests.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slotway::resp::{Limits, RequestParser};

fn parse_all(chunks: &[&[u8]]) -> Vec<Result<Vec<Vec<u8>>, String>> {
    let limits = Limits {
        max_bulk_len: 4096,
        ..Limits::default()
    };
    let mut p = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match p.parse(&mut buf, &limits) {
                Ok(Some(args)) => out.push(Ok(args.iter().map(|a| a.to_vec()).collect())),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = parse_all(&[data]);
    let pieces: Vec<&[u8]> = data.chunks(7).collect();
    let split = parse_all(&pieces);
    assert_eq!(whole, split);
});
