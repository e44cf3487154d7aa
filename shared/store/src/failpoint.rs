//! Named failpoints for fault tests, enabled only by the `CHOREO_FAILPOINTS` setting (an
//! environment variable): `name[=action][,name[=action]...]`, where the action is `abort` (the
//! default: the process aborts at once, with no cleanup, as `kill -9` would end it),
//! `transient:N` (the first N hits fail as a transient error) or `unavailable` (every hit fails
//! as an unreachable database would, until the process restarts without it). With the setting
//! empty, a hit is a look-up in an empty map. They live in the lowest crate so that the store can
//! have one too; the messaging runtime and the services use the same type, and an injected
//! failure reaches a handler as the store error it stands for.
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
    Unavailable,
}

/// What a failpoint injected: its caller maps it onto its own error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// A failure that may pass on a later try (`transient:N`).
    Transient(String),
    /// The database is unreachable (`unavailable`).
    Unavailable(String),
}

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Injected::Transient(text) | Injected::Unavailable(text) => f.write_str(text),
        }
    }
}

impl From<Injected> for crate::Error {
    fn from(injected: Injected) -> Self {
        match injected {
            Injected::Transient(text) => crate::Error::Failed(text),
            Injected::Unavailable(text) => crate::Error::Unavailable(text),
        }
    }
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
                None if action == "unavailable" => Action::Unavailable,
                Some(("transient", n)) => Action::Transient(AtomicU32::new(
                    n.parse()
                        .map_err(|_| format!("failpoint {name}: {n:?} is not a count"))?,
                )),
                _ => {
                    return Err(format!(
                        "failpoint {name}: unknown action {action:?} (abort, transient:N, unavailable)"
                    ));
                }
            };
            points.insert(name.to_owned(), action);
        }
        Ok(Failpoints(Arc::new(points)))
    }

    /// Passes, aborts the process, or fails, as configured for `name`.
    pub fn hit(&self, name: &str) -> Result<(), Injected> {
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
                    Ok(_) => Err(Injected::Transient(format!(
                        "failpoint {name}: injected transient failure"
                    ))),
                    Err(_) => Ok(()),
                }
            }
            Some(Action::Unavailable) => Err(Injected::Unavailable(format!(
                "failpoint {name}: injected database outage"
            ))),
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
    fn an_unavailable_failpoint_fails_every_hit_as_an_outage() {
        let points = Failpoints::parse("store.before_commit=unavailable").expect("parses");
        for _ in 0..3 {
            assert!(matches!(
                points.hit("store.before_commit"),
                Err(Injected::Unavailable(_))
            ));
        }
        assert!(matches!(
            crate::Error::from(points.hit("store.before_commit").unwrap_err()),
            crate::Error::Unavailable(_)
        ));
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
