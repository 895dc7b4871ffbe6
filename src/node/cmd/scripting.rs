//! EVAL / EVALSHA / SCRIPT: Lua scripts run atomically under the keyspace lock.

use super::CommandSpec;

/// Script cache and Lua state (lives under the keyspace lock).
#[derive(Default)]
pub struct Scripts {}

pub const COMMANDS: &[CommandSpec] = &[];
