//! redis.conf-style text (a config file, `--name value` overrides, CONFIG
//! SET) must be refused with an error, never a panic; what it accepts
//! builds a node configuration, and CONFIG REWRITE's rendering of it reads
//! back to the same settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotway::runtime::config::{ConfigTable, NodeConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut t = ConfigTable::default();
    if t.apply_text(text, "fuzz").is_err() {
        return;
    }
    let _ = NodeConfig::from_table(&t);
    let rendered = t.render_non_defaults();
    let mut again = ConfigTable::default();
    assert!(again.apply_text(&rendered, "rewrite").is_ok(), "{rendered}");
    assert_eq!(again.entries(), t.entries());
});
