//! EVAL / EVALSHA / SCRIPT: Lua scripts run atomically under the keyspace lock.

use super::CommandSpec;

/// Script cache and Lua state (lives under the keyspace lock).
#[derive(Default)]
pub struct Scripts {}

impl Scripts {
    /// Cached scripts (INFO number_of_cached_scripts).
    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub const COMMANDS: &[CommandSpec] = &[];
