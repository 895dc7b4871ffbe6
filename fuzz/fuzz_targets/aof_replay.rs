//! The append-only-file loader (and a replica applying its master's
//! stream, which runs commands the same way) executes whatever commands
//! the file holds, with a master client's privileges: no command with any
//! arguments may panic the node. Commands that write files, reach the
//! network or change the process (SAVE, MIGRATE, CONFIG, SHUTDOWN ...)
//! are kept out so the fuzzer stays in memory and on this machine.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use slotway::node::client::{Client, ClientHandle};
use slotway::node::shared::Shared;
use slotway::node::aof::replay_as as replay;
use slotway::runtime::config::{ConfigTable, NodeConfig};
use std::sync::{Arc, OnceLock};

const KEPT_OUT: &[&str] = &[
    "save",
    "bgsave",
    "bgrewriteaof",
    "config",
    "shutdown",
    "debug",
    "replicaof",
    "slaveof",
    "migrate",
    "cluster",
    "failover",
    "sync",
    "psync",
    "monitor",
    "module",
    "acl",
    "client",
    // A fixed self-test of the HyperLogLog code: hundreds of thousands of
    // register writes whatever the input, so under the sanitizer it only
    // trips the timeout without exploring anything.
    "pfselftest",
];

fn admit(args: &[Bytes]) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    !KEPT_OUT.contains(&name.as_str())
}

struct World {
    _rt: tokio::runtime::Runtime,
    shared: Shared,
}

/// One node for the whole run (building one per input would be most of
/// the time spent); each input starts from an empty keyspace.
fn world() -> Option<&'static World> {
    static WORLD: OnceLock<Option<World>> = OnceLock::new();
    WORLD
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let table = ConfigTable::default();
            let cfg = NodeConfig::from_table(&table).ok()?;
            let shared = {
                let _guard = rt.enter();
                Shared::new(table, cfg, None)
            };
            Some(World { _rt: rt, shared })
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Some(w) = world() else { return };
    let _guard = w._rt.enter();
    let handle = Arc::new(ClientHandle::detached(0, "aof-loader"));
    let mut client = Client::new(handle, true).0;
    client.is_master = true;
    {
        let mut st = w.shared.lock();
        st.set_propagation(false);
        st.db.expiry = slotway::store::ExpiryMode::Ignore;
    }
    let _ = replay(
        &w.shared,
        &mut client,
        &mut &b"*1\r\n$8\r\nFLUSHALL\r\n"[..],
        |_| true,
    );
    let _ = replay(&w.shared, &mut client, &mut &data[..], admit);
});
