//! A keyspace and one client for the unit tests of the command families:
//! commands run through `execute` the way EXEC or a connection runs them.
//! Each test module adds the ways of running it needs.

use super::State;
use crate::node::client::{Client, ClientHandle};
use crate::node::shared::Shared;
use crate::runtime::config::{ConfigTable, NodeConfig};
use std::sync::Arc;

pub struct Harness {
    pub shared: Shared,
    pub state: State,
    pub client: Client,
}

impl Harness {
    /// A node with the default config and a fresh client (id 1).
    pub fn new() -> Harness {
        let table = ConfigTable::default();
        let cfg = NodeConfig::from_table(&table).unwrap();
        Harness {
            shared: Shared::new(table, cfg, None),
            state: State::new(),
            client: Client::new(Arc::new(ClientHandle::detached(1, "test")), true).0,
        }
    }
}
