//! Property tests of the orders service, without a broker: `POST /orders` fed arbitrary and
//! almost-valid bodies through the real router, and one order's lifecycle fed every sequence of
//! duplicated and reordered events its saga can deliver, through the pure `decide` and through
//! the real handler on a SQLite database.
//!
//! Bounded for CI by proptest's case count (256 per property unless `PROPTEST_CASES` says more);
//! a failure is shrunk and its seed kept under `proptest-regressions/`, replayed first next time.

mod convergence;
mod http;
mod service;
