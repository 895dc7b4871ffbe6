//! The `slotway` binary: `node`, `proxy`, `cluster`, `up`.

#![deny(clippy::indexing_slicing)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: slotway::runtime::alloc::CountingAlloc = slotway::runtime::alloc::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "slotway",
    version,
    about = "Redis-Cluster-compatible node, proxy and admin CLI"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node: `slotway node node.conf --port 7001` (flags override
    /// directives, exactly like redis-server).
    Node {
        /// `[CONF] [--directive value...]`: a redis.conf-style file (optional),
        /// then overrides.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CONF | --DIRECTIVE VALUE"
        )]
        args: Vec<String>,
    },
    /// Run the smart-routing proxy: `slotway proxy --config config/proxy.toml`
    /// (flags override the file).
    Proxy(slotway::proxy::config::ProxyArgs),
    /// Cluster administration, same semantics as `redis-cli --cluster`.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Start a local cluster (3 masters with 1 replica each by default) and
    /// the proxy in the foreground; Ctrl-C stops everything.
    Up(slotway::cli::up::UpOptions),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Create a cluster: `slotway cluster create H:P... --replicas 1 --yes`.
    Create {
        /// Node addresses (ip:port), at least 3 masters' worth.
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Replicas per master.
        #[arg(long, alias = "cluster-replicas", default_value_t = 0)]
        replicas: usize,
        /// Accept the proposed layout without asking.
        #[arg(long, alias = "cluster-yes")]
        yes: bool,
    },
    /// Check that every node agrees and every slot is covered.
    Check {
        /// Any node of the cluster (ip:port).
        node: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Node { mut args } => {
            // `slotway node --port 7000` (no file) is allowed, as with redis-server.
            let file = match args.first() {
                Some(c) if !c.starts_with("--") => Some(PathBuf::from(args.remove(0))),
                _ => None,
            };
            let overrides = args;
            if let Err(e) = slotway::node::server::start(file.as_deref(), &overrides) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Proxy(args) => {
            if let Err(e) = slotway::proxy::main(args) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Cluster { cmd } => {
            let mut out = std::io::stdout();
            let res = match cmd {
                ClusterCmd::Create {
                    nodes,
                    replicas,
                    yes,
                } => slotway::cli::cluster::create(&nodes, replicas, yes, &mut out),
                ClusterCmd::Check { node } => slotway::cli::cluster::check(&node, &mut out),
            };
            if let Err(e) = res {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Up(opts) => {
            if let Err(e) = slotway::cli::up::run(&opts) {
                eprintln!("slotway up: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
