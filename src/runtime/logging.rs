//! The one tracing setup, for the node (Redis `loglevel`, `logfile`) and
//! the proxy (`log_level`, a tracing filter): output to a file or stderr.

use std::path::Path;
use tracing_subscriber::EnvFilter;

/// Maps Redis log levels to tracing filters.
fn filter_for(loglevel: &str) -> &'static str {
    match loglevel {
        "debug" => "debug",
        "verbose" => "info",
        "notice" => "info",
        "warning" => "warn",
        "nothing" => "off",
        _ => "info",
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over `loglevel` so a
/// developer can turn on one module without editing the config.
pub fn init(loglevel: &str, logfile: Option<&Path>) -> std::io::Result<()> {
    init_filter(filter_for(loglevel), logfile)
}

/// Installs the global subscriber with a tracing filter (`info`,
/// `slotway::proxy=debug`, ...); `RUST_LOG` still wins.
pub fn init_filter(default: &str, logfile: Option<&Path>) -> std::io::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let res = match logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A second init (tests) is harmless.
    let _ = res;
    Ok(())
}
