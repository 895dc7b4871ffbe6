//! The two clocks of the process. Wall time (`wall_ms`) is what users and
//! files see: key expiry deadlines, RDB `ctime`, `TIME`, `LASTSAVE`.
//! Every timer that decides something (node timeouts, failure detection,
//! pauses, replication timeouts, shutdown waits) runs on `mono_ms`, so an
//! NTP or operator step of the wall clock cannot mark peers failed, pause
//! writes or fire a timeout.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the system clock; it may jump.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A monotonic millisecond count. It starts at the wall time of its first
/// use, so values shown to operators (CLUSTER NODES ping/pong times) read
/// like Unix times, and from then on only moves forward with real elapsed
/// time, whatever the wall clock does. It keeps counting while the process
/// is stopped, which is what the bus's pause detector relies on.
pub fn mono_ms() -> u64 {
    static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();
    let (start, wall) = ORIGIN.get_or_init(|| (Instant::now(), wall_ms()));
    wall.saturating_add(start.elapsed().as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_starts_near_wall_time_and_never_goes_back() {
        let a = mono_ms();
        let w = wall_ms();
        assert!(a.abs_diff(w) < 60_000, "mono {a} wall {w}");
        let mut last = a;
        for _ in 0..1000 {
            let t = mono_ms();
            assert!(t >= last);
            last = t;
        }
    }
}
