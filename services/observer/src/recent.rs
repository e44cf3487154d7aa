//! The last hour, minute by minute, for the page's charts and the map's arrows: orders placed,
//! sagas finished and how long they took end to end (their terminal event's time less their
//! first's), and how long each step took (an event's time less its cause's).
//!
//! The sweep feeds it every event once, in the order they were stored ([`Recent::record`]), from
//! the rows after the last it read: the history is never scanned again. Each minute keeps a
//! histogram per measure, with buckets 5% wide (exact below 20 ms), so an hour costs the same
//! memory at any rate and a percentile is read within 5%.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// How many minutes are kept: the hour the page charts.
pub const MINUTES: usize = 60;

/// One stored event's times, as the sweep reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub event_type: String,
    /// The event's `time`.
    pub time: DateTime<Utc>,
    /// Its cause's `time`, when the observer stored its cause.
    pub cause: Option<DateTime<Utc>>,
    /// When its saga started (its first event's `time`).
    pub started: Option<DateTime<Utc>>,
}

/// The last hour's figures, shared by the sweep that records them and the routes that read them.
#[derive(Debug, Clone, Default)]
pub struct Recent(Arc<Mutex<Hour>>);

/// How long something took over the last hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Latency {
    pub p50_ms: u64,
    pub p99_ms: u64,
    /// How many were measured.
    pub count: u64,
}

/// One minute of the last hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct MinuteFigures {
    /// Its start (RFC 3339, UTC).
    pub minute: String,
    /// `order.placed` events whose time falls in it.
    pub orders: u64,
    /// Sagas whose terminal event's time falls in it.
    pub finished: u64,
    /// Their end-to-end time: terminal event less first event.
    pub end_to_end_p99_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Hour {
    /// Oldest first; at most [`MINUTES`], each a minute after the one before (gaps allowed).
    minutes: VecDeque<Minute>,
}

#[derive(Debug, Default)]
struct Minute {
    /// Minutes since the epoch.
    at: i64,
    placed: u64,
    finished: u64,
    end_to_end: Histogram,
    steps: BTreeMap<String, Histogram>,
}

impl Recent {
    /// Adds `timings` at `now`: each counts in the minute of its time, if that is within the
    /// last hour (a later one, from a clock ahead of the observer's, counts in the current one).
    pub fn record(&self, now: DateTime<Utc>, timings: &[Timing]) {
        let mut hour = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let current = minute_of(now);
        for timing in timings {
            let at = minute_of(timing.time).min(current);
            if at <= current - MINUTES as i64 {
                continue;
            }
            let minute = hour.minute(at);
            match timing.event_type.as_str() {
                t if t == choreo_events::flow::START.routing_key() => minute.placed += 1,
                t if choreo_events::flow::TERMINAL
                    .iter()
                    .any(|terminal| terminal.routing_key() == t) =>
                {
                    minute.finished += 1;
                    if let Some(started) = timing.started {
                        minute.end_to_end.add(millis(timing.time - started));
                    }
                }
                _ => {}
            }
            if let Some(cause) = timing.cause {
                minute
                    .steps
                    .entry(timing.event_type.clone())
                    .or_default()
                    .add(millis(timing.time - cause));
            }
        }
        hour.forget_before(current - MINUTES as i64 + 1);
    }

    /// How long `event_type` took after its cause, over the last hour at `now`.
    pub fn step(&self, now: DateTime<Utc>, event_type: &str) -> Option<Latency> {
        let hour = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged = Histogram::default();
        for minute in hour.within(now) {
            if let Some(histogram) = minute.steps.get(event_type) {
                merged.merge(histogram);
            }
        }
        merged.latency()
    }

    /// End to end, over the last hour at `now`.
    pub fn end_to_end(&self, now: DateTime<Utc>) -> Option<Latency> {
        let hour = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged = Histogram::default();
        for minute in hour.within(now) {
            merged.merge(&minute.end_to_end);
        }
        merged.latency()
    }

    /// Every minute of the last hour at `now`, oldest first, the current one last (empty ones
    /// included, so a chart has no gaps).
    pub fn minutes(&self, now: DateTime<Utc>) -> Vec<MinuteFigures> {
        let hour = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let current = minute_of(now);
        (current - MINUTES as i64 + 1..=current)
            .map(|at| {
                let minute = hour.minutes.iter().find(|m| m.at == at);
                MinuteFigures {
                    minute: DateTime::from_timestamp(at * 60, 0)
                        .map(crate::saga::timestamp)
                        .unwrap_or_default(),
                    orders: minute.map_or(0, |m| m.placed),
                    finished: minute.map_or(0, |m| m.finished),
                    end_to_end_p99_ms: minute
                        .and_then(|m| m.end_to_end.latency())
                        .map(|l| l.p99_ms),
                }
            })
            .collect()
    }
}

impl Hour {
    fn minute(&mut self, at: i64) -> &mut Minute {
        let index = match self.minutes.iter().position(|m| m.at >= at) {
            Some(i) if self.minutes[i].at == at => i,
            Some(i) => {
                self.minutes.insert(
                    i,
                    Minute {
                        at,
                        ..Minute::default()
                    },
                );
                i
            }
            None => {
                self.minutes.push_back(Minute {
                    at,
                    ..Minute::default()
                });
                self.minutes.len() - 1
            }
        };
        &mut self.minutes[index]
    }

    fn forget_before(&mut self, at: i64) {
        while self.minutes.front().is_some_and(|m| m.at < at) {
            self.minutes.pop_front();
        }
    }

    fn within(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Minute> {
        let oldest = minute_of(now) - MINUTES as i64 + 1;
        self.minutes.iter().filter(move |m| m.at >= oldest)
    }
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

/// A duration in whole milliseconds; a negative one (clocks of two services apart) is 0.
fn millis(duration: chrono::TimeDelta) -> u64 {
    u64::try_from(duration.num_milliseconds()).unwrap_or(0)
}

/// Counts of milliseconds in buckets 5% wide: bucket 0 holds 0 ms, bucket `b` from 1.05^(b-1)
/// (so below 20 ms each whole millisecond has a bucket of its own).
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: BTreeMap<u16, u64>,
    total: u64,
}

const GROWTH: f64 = 1.05;

impl Histogram {
    fn bucket(ms: u64) -> u16 {
        if ms == 0 {
            return 0;
        }
        // A float's rounding could put an exact power a bucket low: nudge it up first.
        let b = ((ms as f64).ln() / GROWTH.ln() + 1e-9).floor() as u64 + 1;
        u16::try_from(b).unwrap_or(u16::MAX)
    }

    /// The least whole millisecond in `bucket`: what a percentile that falls in it reads.
    fn value(bucket: u16) -> u64 {
        if bucket == 0 {
            return 0;
        }
        let low = GROWTH.powi(i32::from(bucket) - 1).ceil() as u64;
        // The first whole millisecond that really maps here.
        (low.saturating_sub(1)..=low + 1)
            .find(|ms| Self::bucket(*ms) == bucket)
            .unwrap_or(low)
    }

    fn add(&mut self, ms: u64) {
        *self.counts.entry(Self::bucket(ms)).or_default() += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (bucket, n) in &other.counts {
            *self.counts.entry(*bucket).or_default() += n;
        }
        self.total += other.total;
    }

    /// The least value at or above which a fraction `q` of the counts lie (nearest rank).
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        self.counts.iter().find_map(|(bucket, n)| {
            seen += n;
            (seen >= rank).then(|| Self::value(*bucket))
        })
    }

    fn latency(&self) -> Option<Latency> {
        Some(Latency {
            p50_ms: self.quantile(0.50)?,
            p99_ms: self.quantile(0.99)?,
            count: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("a time")
    }

    fn ms(t: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
        t + chrono::TimeDelta::milliseconds(ms)
    }

    fn timing(event_type: &str, time: DateTime<Utc>, cause: Option<DateTime<Utc>>) -> Timing {
        Timing {
            event_type: event_type.to_owned(),
            time,
            cause,
            started: None,
        }
    }

    #[test]
    fn a_percentile_reads_within_five_percent_and_exactly_below_twenty_ms() {
        let mut exact = Histogram::default();
        for ms in 1..=10 {
            exact.add(ms);
        }
        let mut wide = Histogram::default();
        for ms in 1..=10_000 {
            wide.add(ms);
        }

        assert_eq!(exact.quantile(0.5), Some(5));
        assert_eq!(exact.quantile(0.99), Some(10));
        assert_eq!(Histogram::default().quantile(0.5), None);
        for (q, truth) in [(0.5, 5000.0), (0.99, 9900.0)] {
            let read = wide.quantile(q).expect("counted") as f64;
            assert!(read <= truth && read >= truth / GROWTH - 1.0, "{q}: {read}");
        }
        for ms in [0, 1, 2, 19, 20, 21, 100, 1_000, 65_536, 3_600_000] {
            let bucket = Histogram::bucket(ms);
            assert!(Histogram::value(bucket) <= ms, "{ms}");
            assert_eq!(Histogram::bucket(Histogram::value(bucket)), bucket, "{ms}");
        }
    }

    #[test]
    fn steps_orders_and_end_to_end_times_are_kept_by_minute_for_an_hour() {
        let recent = Recent::default();
        let start = at(0);
        recent.record(
            start,
            &[
                timing("order.placed", start, None),
                timing("payment.captured", ms(start, 4), Some(start)),
                timing("payment.captured", ms(start, 30), Some(start)),
                Timing {
                    started: Some(start),
                    ..timing("order.completed", ms(start, 250), Some(ms(start, 200)))
                },
            ],
        );
        let later = at(600);
        recent.record(later, &[timing("order.placed", later, None)]);

        let minutes = recent.minutes(later);
        let captured = recent.step(later, "payment.captured").expect("measured");

        assert_eq!(minutes.len(), MINUTES);
        assert_eq!(minutes.last().map(|m| m.orders), Some(1));
        let first = minutes
            .iter()
            .find(|m| m.finished == 1)
            .expect("the first minute");
        assert_eq!(first.orders, 1);
        assert_eq!(
            first.end_to_end_p99_ms,
            Some(Histogram::value(Histogram::bucket(250)))
        );
        assert_eq!(captured.p50_ms, 4);
        assert_eq!(captured.p99_ms, Histogram::value(Histogram::bucket(30)));
        assert_eq!(captured.count, 2);
        assert_eq!(recent.step(later, "order.placed"), None);
        // An hour on, the first minute is gone, and so are its figures.
        let hour_on = at(3_600);
        recent.record(hour_on, &[]);
        assert_eq!(recent.step(hour_on, "payment.captured"), None);
        assert_eq!(recent.end_to_end(hour_on), None);
        assert_eq!(
            recent
                .minutes(hour_on)
                .iter()
                .map(|m| m.orders)
                .sum::<u64>(),
            1
        );
    }

    #[test]
    fn an_event_older_than_the_hour_is_left_out_and_one_from_ahead_counts_now() {
        let recent = Recent::default();
        let now = at(7_200);

        recent.record(
            now,
            &[
                timing("order.placed", at(0), None),
                timing("order.placed", at(7_500), None),
            ],
        );

        let minutes = recent.minutes(now);
        assert_eq!(minutes.iter().map(|m| m.orders).sum::<u64>(), 1);
        assert_eq!(minutes.last().map(|m| m.orders), Some(1));
    }
}
