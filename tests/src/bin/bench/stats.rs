//! Latency percentiles of a set of samples.

use serde::Serialize;
use std::time::Duration;

/// Percentiles of one set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles: p99 of 200 samples is the 198th smallest, never an
    /// interpolation between two samples that nobody waited for. `None` without samples.
    pub fn of(samples: &[Duration]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            // The epsilon keeps 0.9 * 1000 from rounding up past 900 in floating point.
            let rank = (q * ms.len() as f64 - 1e-9).ceil() as usize;
            ms[rank.clamp(1, ms.len()) - 1]
        };
        Some(Percentiles {
            samples: ms.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: ms[ms.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples).expect("samples");
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        let one = Percentiles::of(&[Duration::from_millis(7)]).expect("one sample");
        assert_eq!((one.p50, one.p999, one.max), (7.0, 7.0, 7.0));
        assert!(Percentiles::of(&[]).is_none());
    }
}
