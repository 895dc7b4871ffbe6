//! nodes.conf parsing must reject garbage with an error, never panic, and
//! whatever it accepts must render back to something it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotway::cluster::topology::NodesConf;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(conf) = NodesConf::parse(text) {
            let again = NodesConf::parse(&conf.render());
            assert!(again.is_ok());
        }
    }
});
