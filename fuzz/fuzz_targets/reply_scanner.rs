//! Feeds arbitrary bytes to the proxy's reply frame scanner, whole and in
//! 5-byte pieces: it must never panic, and both ways must find the same
//! frame boundaries (the resumable scan must not lose its place).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotway::resp::scan::FrameScanner;

fn frames(data: &[u8], step: usize) -> Vec<Result<usize, ()>> {
    let mut out = Vec::new();
    let mut sc = FrameScanner::new();
    let mut start = 0;
    let mut end = 0;
    while end < data.len() {
        end = (end + step).min(data.len());
        loop {
            match sc.scan(&data[start..end]) {
                Ok(Some(n)) => {
                    out.push(Ok(n));
                    start += n;
                }
                Ok(None) => break,
                Err(_) => {
                    out.push(Err(()));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(frames(data, data.len().max(1)), frames(data, 5));
});
