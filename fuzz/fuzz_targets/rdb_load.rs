//! The RDB loader (snapshot files, full-resync payloads) and DUMP payload
//! decoder must refuse garbage with an error, never panic or allocate
//! without bound; whatever loads must save and load again to the same keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotway::persist::rdb;

fuzz_target!(|data: &[u8]| {
    let _ = rdb::restore_payload(data);
    let mut keys = Vec::new();
    if rdb::load(data, None, |k, v, e| keys.push((k, v, e))).is_ok() {
        let again = rdb::to_vec(&[], keys.iter().map(|(k, v, e)| (k.as_slice(), v, *e)));
        let mut n = 0;
        assert!(rdb::load(&again[..], None, |_, _, _| n += 1).is_ok());
        assert_eq!(n, keys.len());
    }
});
