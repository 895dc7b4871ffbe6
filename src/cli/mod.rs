//! The admin CLI (`slotway cluster ...`) and `slotway up`.

pub mod client;
pub mod cluster;
pub mod up;

/// Subcommands that arrive with later issues say so plainly.
pub fn not_yet(what: &str) -> anyhow::Result<()> {
    anyhow::bail!("`slotway {what}` is not implemented yet")
}
