//! The cluster bus decoder takes bytes from any peer that can reach the
//! bus port: garbage must be refused with an error, never a panic or an
//! allocation sized by the input; a decoded message encodes back to a
//! frame that decodes to the same message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slotway::gossip::wire::Message;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(msg)) = Message::decode(&mut buf) {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let again = Message::decode(&mut out);
        assert_eq!(again, Ok(Some(msg)));
        assert!(out.is_empty());
    }
});
