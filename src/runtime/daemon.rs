//! `daemonize yes` and `pidfile`.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot daemonize: {0}")]
    Fork(#[from] nix::Error),
    #[error("cannot write pidfile {path}: {source}")]
    Pidfile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Detaches from the terminal like redis-server: fork, the parent exits,
/// the child starts a new session with stdio on /dev/null. Must run before
/// any thread (the tokio runtime) exists.
pub fn daemonize() -> Result<(), DaemonError> {
    nix::unistd::daemon(true, false)?;
    Ok(())
}

/// Writes our pid to `path`; removed again by [`remove_pidfile`].
pub fn write_pidfile(path: &Path) -> Result<(), DaemonError> {
    std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
        DaemonError::Pidfile {
            path: path.to_path_buf(),
            source,
        }
    })
}

pub fn remove_pidfile(path: &Path) {
    let _ = std::fs::remove_file(path);
}
