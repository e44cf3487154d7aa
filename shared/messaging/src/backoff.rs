//! How long to wait before trying again: reconnecting to the broker, or handling a message while
//! the database is away.

use std::time::Duration;

/// Capped exponential backoff with full jitter: a random wait in `[min, min(max, min * 2^n)]`.
pub(crate) fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    use rand::Rng;
    let ceiling = min
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(max)
        .max(min);
    let spread = ceiling.saturating_sub(min).as_millis() as u64;
    min + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for failures in 0..40 {
            let delay = backoff(min, max, failures);
            assert!(delay >= min && delay <= max, "{delay:?}");
        }
        assert!(backoff(min, max, 0) <= Duration::from_millis(200));
    }
}
