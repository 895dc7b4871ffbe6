//! Process plumbing shared by node and proxy: configuration, allocator and
//! memory accounting, logging, daemonizing.

pub mod alloc;
pub mod config;
pub mod daemon;
pub mod logging;
