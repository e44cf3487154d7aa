//! Property tests of the event contract's decoders: arbitrary bytes and JSON never panic them,
//! every valid envelope and payload survives a round trip, and each kind of damage to an envelope
//! is rejected or tolerated as `shared/CONTRACT.md` says (a tolerant reader that rejects what it
//! cannot support, with a reason that names the attribute or field).
//!
//! Bounded for CI by proptest's case count (256 per property unless `PROPTEST_CASES` says more);
//! a failure is shrunk and its seed kept under `proptest-regressions/`, replayed first next time.

mod envelope;
mod payloads;
mod strategies;
