//! The proxy builds its slot map from whatever a node answers to CLUSTER
//! SLOTS: any reply must give a layout or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotway::proxy::topology::parse_cluster_slots;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, _))) = redis_protocol::resp2::decode::decode(data) {
        let _ = parse_cluster_slots(&frame, "127.0.0.1:7000");
    }
});
