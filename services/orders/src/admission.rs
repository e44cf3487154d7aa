//! Admission control: `POST /orders` answers 503 with `Retry-After` while the orders not yet
//! finished (`pending` or `paid`) number `CHOREO_MAX_UNFINISHED_ORDERS` or more.
//!
//! Under overload the suite would otherwise accept orders faster than it completes them: every
//! accepted order waits behind all the others, and the time from a 201 to the order's terminal
//! event grows for as long as the overload lasts. Unfinished orders are the saga's backlog
//! wherever it sits (the outbox, a queue, a handler), and by Little's law they are the rate
//! times the time each order takes: bounding them bounds that time at a given rate. They are
//! counted in the database, which replicas share, at most every [`REFRESH`]; between counts, the
//! orders this process admitted are added to the last count, so one process alone never admits
//! more than the bound. Replicas each admit up to the bound from the last count they read.

use choreo_messaging::metrics::METADATA;
use choreo_store::Database;
use metrics::{Counter, Key, KeyName, Recorder};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How old a count may be before a request counts again.
pub const REFRESH: Duration = Duration::from_millis(100);

/// `choreo_orders_shed_total`: requests refused by admission control.
pub const SHED: &str = "choreo_orders_shed_total";

/// The bound and the last count.
#[derive(Debug)]
pub struct Admission {
    /// Unfinished orders at which new ones are refused; 0: no bound.
    bound: u64,
    /// The last count and when it was read; `None` before the first.
    last: Mutex<Option<(u64, Instant)>>,
    shed: Counter,
}

/// Why a request was refused: the backlog at the time, and the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub unfinished: u64,
    pub bound: u64,
}

impl Admission {
    pub fn new(bound: u64, recorder: &dyn Recorder) -> Admission {
        recorder.describe_counter(
            KeyName::from_const_str(SHED),
            None,
            "POST /orders refused with 503 because the unfinished orders reached \
             CHOREO_MAX_UNFINISHED_ORDERS."
                .into(),
        );
        Admission {
            bound,
            last: Mutex::new(None),
            shed: recorder.register_counter(&Key::from_static_name(SHED), &METADATA),
        }
    }

    /// Admits one order, or says why not. Counts the unfinished orders first when the last
    /// count is older than [`REFRESH`]; a database that cannot count admits (the write that
    /// follows will say what is wrong).
    pub async fn admit(&self, database: &Database) -> Result<(), Refused> {
        if self.bound == 0 {
            return Ok(());
        }
        let stale = {
            let mut last = self.lock();
            let stale = last.is_none_or(|(_, at)| at.elapsed() >= REFRESH);
            if stale {
                // The others go on with the last count meanwhile: one request counts.
                *last = Some((last.map_or(0, |(n, _)| n), Instant::now()));
            }
            stale
        };
        if stale && let Ok(counted) = database.read(crate::store::unfinished_orders).await {
            *self.lock() = Some((counted, Instant::now()));
        }
        let mut last = self.lock();
        let unfinished = last.map_or(0, |(n, _)| n);
        let decision = decide(unfinished, self.bound);
        match (decision, last.as_mut()) {
            // Admitted: counted as unfinished until the next count sees it for itself.
            (Ok(()), Some((n, _))) => *n += 1,
            (Err(_), _) => self.shed.increment(1),
            (Ok(()), None) => {}
        }
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, Instant)>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The decision alone: refused once `unfinished` reaches a `bound` other than 0.
pub fn decide(unfinished: u64, bound: u64) -> Result<(), Refused> {
    if bound > 0 && unfinished >= bound {
        Err(Refused { unfinished, bound })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_from_the_bound_on_and_never_without_one() {
        assert_eq!(decide(0, 3), Ok(()));
        assert_eq!(decide(2, 3), Ok(()));
        assert_eq!(
            decide(3, 3),
            Err(Refused {
                unfinished: 3,
                bound: 3
            })
        );
        assert!(decide(4, 3).is_err());
        assert_eq!(decide(u64::MAX, 0), Ok(()));
    }
}
