//! The clock of the stored tables: every timestamp a service writes is RFC 3339 text in UTC with
//! milliseconds, so text order is time order on both backends.
//!
//! The time is the process's own steady clock ([`now`]): the wall clock as it read when the
//! process first asked, advanced by the monotonic clock since. A wall clock that jumps while a
//! process runs (a `date -s`, an NTP step, a VM restored with its old time) moves neither the
//! rows it stamps nor the cutoffs that retention compares them with, so a jump forward prunes
//! nothing early and a jump back stamps nothing in the past. What it does not follow: a wall
//! clock corrected while the process runs (it goes on from the time it started with, until it
//! restarts), and a machine suspended meanwhile (the monotonic clock stops, so the process's time
//! lags by the suspension). [`drift`] says how far the two clocks are apart.

use chrono::{DateTime, Utc};
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<(DateTime<Utc>, Instant)> = OnceLock::new();

/// The process's steady time: the wall clock at its first call, plus the monotonic time since.
pub fn now() -> DateTime<Utc> {
    let (wall, steady) = START.get_or_init(|| (Utc::now(), Instant::now()));
    *wall + chrono::Duration::from_std(steady.elapsed()).unwrap_or(chrono::Duration::MAX)
}

/// How far the wall clock is ahead of the process's steady time (negative: behind).
pub fn drift() -> chrono::Duration {
    Utc::now() - now()
}

/// The current time as the tables store it.
pub fn now_text() -> String {
    time_text(now())
}

/// `at` as the tables store it: what a query compares stored times with.
pub fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_with_milliseconds_so_text_order_is_time_order() {
        let now = super::now_text();
        assert_eq!(now.len(), "2026-11-29T01:02:03.456Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn the_steady_time_starts_at_the_wall_clock_and_never_goes_back() {
        let first = super::now();
        let second = super::now();

        assert!(second >= first);
        assert!(super::drift().num_seconds().abs() < 5, "{}", super::drift());
    }
}
