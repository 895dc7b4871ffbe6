//! The smart-routing proxy: one address in front of any Redis Cluster
//! (slotway nodes or real Redis/Valkey). A request's path reads in one
//! direction: [`session`] (socket, parse, order) → [`commands`] (which
//! keys, which route) → [`router`] (slot map) → [`forward`] (redirects,
//! retries) → [`backend`] (shared pipelined connections) → reply.
//! [`fanout`] splits and merges multi-node commands, [`local`] answers what
//! the proxy knows itself, [`pubsub`] relays subscriptions, [`topology`]
//! keeps the slot map fresh, [`metrics`] exports Prometheus metrics, and
//! [`server`] owns the listener, limits and shutdown.

pub mod backend;
pub mod commands;
pub mod config;
pub mod fanout;
pub mod forward;
pub mod local;
pub mod memnet;
pub mod metrics;
pub mod pubsub;
pub mod router;
pub mod server;
pub mod session;
pub mod topology;

#[cfg(test)]
mod core_tests;

/// The error every path answers before any seed node has given the proxy a
/// slot map.
pub const NO_TOPOLOGY: &str =
    "CLUSTERDOWN proxy: no cluster topology yet (no seed node answered CLUSTER SLOTS)";

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

/// Proxy-wide state every session shares.
pub struct Proxy {
    pub cfg: Arc<config::ProxyConfig>,
    pub router: Arc<router::Router>,
    pub metrics: Arc<metrics::Metrics>,
    pub table: &'static commands::Table,
    /// The id the proxy shows as a one-node cluster.
    pub node_id: String,
    pub listen: SocketAddr,
    pub started: Instant,
    pub next_client: AtomicU64,
    pub commands_processed: AtomicU64,
    /// Spreads keyless commands over the masters.
    pub rotate: AtomicU64,
    /// Becomes true when the proxy drains (SIGTERM).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub use server::{main, run, ProxyError};
