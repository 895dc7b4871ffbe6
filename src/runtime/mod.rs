//! Process plumbing shared by node and proxy: configuration, allocator and
//! memory accounting, clocks, logging, daemonizing.

pub mod alloc;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod logging;
