//! A replica's handshake reads reply lines from whatever it was told is
//! its master: any sequence of lines must move the handshake on or end it
//! with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotway::replication::handshake::{Handshake, MasterAuth, Next};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let auth = text.starts_with('a').then(|| MasterAuth {
        user: None,
        pass: "pw".into(),
    });
    let (mut hs, _) = Handshake::start(auth, 7000, "?", 0);
    for line in text.lines() {
        match hs.on_reply(line) {
            Ok(Next::Send(_)) => {}
            Ok(_) | Err(_) => return,
        }
    }
});
