//! Named failpoints for fault tests, enabled only by the `CHOREO_FAILPOINTS` setting (an
//! environment variable): `name[=action][,name[=action]...]`, where the action is `abort` (the
//! default: the process aborts at once, with no cleanup, as `kill -9` would end it) or
//! `transient:N` (the first N hits fail as a transient error). With the setting empty, a hit is a
//! look-up in an empty map. They live in the lowest crate so that the store can have one too;
//! the messaging runtime and the services use the same type.
//!
//! Points:
//! - `consumer.before_handle`: inside the message's transaction, before the handler runs;
//! - `consumer.before_commit`: inside the batch's transaction, after every handler ran and the
//!   outbox rows were written; nothing is committed, nothing acked;
//! - `store.before_commit`: in the store, just before it sends `COMMIT` for a unit of work that
//!   succeeded (on SQLite, for the whole group the writer commits together): the first write of
//!   any kind after start hits it;
//! - `consumer.after_commit`: the effect is committed, the delivery is not yet acked;
//! - `relay.after_confirm`: the broker confirmed a publish, the outbox row is not yet marked sent;
//! - `orders.after_commit`: an order is committed, the HTTP response is not yet sent.
//!
//! There is no point between "payment decided" and "outbox row written": in this design they are
//! one transaction, so no crash can separate them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
enum Action {
    Abort,
    Transient(AtomicU32),
}

/// The failpoints of one service. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Failpoints(Arc<HashMap<String, Action>>);

impl Failpoints {
    /// Parses the setting; an empty text enables nothing.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut points = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, action) = entry.split_once('=').unwrap_or((entry, "abort"));
            let action = match action.split_once(':') {
                None if action == "abort" => Action::Abort,
                Some(("transient", n)) => Action::Transient(AtomicU32::new(
                    n.parse()
                        .map_err(|_| format!("failpoint {name}: {n:?} is not a count"))?,
                )),
                _ => {
                    return Err(format!(
                        "failpoint {name}: unknown action {action:?} (abort, transient:N)"
                    ));
                }
            };
            points.insert(name.to_owned(), action);
        }
        Ok(Failpoints(Arc::new(points)))
    }

    /// Passes, aborts the process, or fails with a transient error, as configured for `name`.
    pub fn hit(&self, name: &str) -> Result<(), String> {
        match self.0.get(name) {
            None => Ok(()),
            Some(Action::Abort) => {
                eprintln!("failpoint {name} hit: aborting");
                std::process::abort();
            }
            Some(Action::Transient(remaining)) => {
                let left = remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                match left {
                    Ok(_) => Err(format!("failpoint {name}: injected transient failure")),
                    Err(_) => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_failpoint_fails_the_first_n_hits_only() {
        let points = Failpoints::parse("consumer.before_handle=transient:2").expect("parses");
        assert!(points.hit("consumer.before_handle").is_err());
        assert!(points.hit("consumer.before_handle").is_err());
        assert!(points.hit("consumer.before_handle").is_ok());
        assert!(points.hit("anything.else").is_ok());
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(Failpoints::parse("x=explode").is_err());
        assert!(Failpoints::parse("x=transient:many").is_err());
        assert!(
            Failpoints::parse("")
                .expect("empty is fine")
                .hit("x")
                .is_ok()
        );
    }
}
