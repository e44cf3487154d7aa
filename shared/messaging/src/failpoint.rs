//! Named crash points for fault tests. `CHOREO_FAILPOINTS=name[,name...]` makes the process abort
//! (as a `kill -9` would end it, with no cleanup) the first time it reaches a named point; with the
//! variable unset, [`hit`] is a cheap check of an empty list.
//!
//! Points: `consumer.after_commit` (effect committed, delivery not yet acked),
//! `relay.after_confirm` (broker confirmed a publish, outbox row not yet marked sent),
//! `orders.after_commit` (order committed, HTTP response not yet sent).

use std::sync::OnceLock;

fn enabled() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("CHOREO_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// Aborts the process if `name` is enabled.
pub fn hit(name: &str) {
    if enabled().iter().any(|p| p == name) {
        eprintln!("failpoint {name} hit: aborting");
        std::process::abort();
    }
}
