//! Timing without criterion: every workload is calibrated to a batch of about the same
//! duration, then the workloads run one batch each, round after round (interleaved, so that
//! a noisy neighbour slows all of them alike and ratios measured in the same round stay
//! fair), until the time budget is spent. A workload's figure is the median over its
//! batches of (batch time / iterations), timed with [`std::time::Instant`].

use std::time::{Duration, Instant};

use serde::Serialize;

use super::BenchError;
use super::setup::Workload;
use super::stats::quantile;

/// How long to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Total time for calibration and measurement.
    pub total: Duration,
    /// The target duration of one batch.
    pub batch: Duration,
    /// At least this many rounds, even past the budget.
    pub min_rounds: usize,
}

impl Budget {
    /// About 9 s of measuring, 50 µs batches.
    pub const NORMAL: Budget = Budget {
        total: Duration::from_millis(9_000),
        batch: Duration::from_micros(50),
        min_rounds: 31,
    };
    /// About 1 s of measuring, 20 µs batches.
    pub const QUICK: Budget = Budget {
        total: Duration::from_millis(1_000),
        batch: Duration::from_micros(20),
        min_rounds: 15,
    };
}

/// One workload's timing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Timing {
    /// Median ns per iteration over the batches.
    pub median_ns: f64,
    /// 25th percentile.
    pub p25_ns: f64,
    /// 75th percentile.
    pub p75_ns: f64,
    /// The fastest batch.
    pub min_ns: f64,
    /// Batches timed.
    pub batches: usize,
    /// Iterations per batch.
    pub iters_per_batch: u64,
}

/// Find the iteration count that makes one batch last about `target` (also warms the
/// workload up).
fn calibrate(w: &mut dyn Workload, target: Duration) -> Result<u64, BenchError> {
    let mut iters: u64 = 1;
    loop {
        let t0 = Instant::now();
        w.run_batch(iters)?;
        let dt = t0.elapsed();
        if dt >= target / 4 || iters >= 1 << 24 {
            let scaled = (iters as f64 * target.as_secs_f64() / dt.as_secs_f64().max(1e-9))
                .round()
                .clamp(1.0, (1u64 << 26) as f64);
            return Ok(scaled as u64);
        }
        iters *= 2;
    }
}

/// Time `work` interleaved within `budget`; one [`Timing`] per workload, in order.
pub fn measure(
    work: &mut [Box<dyn Workload + Send>],
    budget: Budget,
) -> Result<Vec<Timing>, BenchError> {
    let start = Instant::now();
    let mut iters = Vec::with_capacity(work.len());
    for w in work.iter_mut() {
        iters.push(calibrate(w.as_mut(), budget.batch)?);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); work.len()];
    let mut round = 0usize;
    let n = work.len();
    while round < budget.min_rounds || start.elapsed() < budget.total {
        for k in 0..n {
            // Rotate the starting workload so none is always first after a pause.
            let i = (k + round) % n;
            let (Some(w), Some(&it), Some(s)) = (work.get_mut(i), iters.get(i), samples.get_mut(i))
            else {
                continue;
            };
            w.run_batch((it / 16).max(1))?;
            let t0 = Instant::now();
            w.run_batch(it)?;
            let dt = t0.elapsed();
            s.push(dt.as_nanos() as f64 / it as f64);
        }
        round += 1;
        if round > 1_000_000 {
            break;
        }
    }
    samples
        .iter()
        .zip(&iters)
        .map(|(s, &it)| {
            let q = |p| quantile(s, p).ok_or(BenchError::NoSamples);
            Ok(Timing {
                median_ns: q(0.5)?,
                p25_ns: q(0.25)?,
                p75_ns: q(0.75)?,
                min_ns: q(0.0)?,
                batches: s.len(),
                iters_per_batch: it,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::setup::{CopyBaseline, CopyShape, SwitchState, round_trip};
    use hypdbg_hyp::Era;
    use hypdbg_model::DebugFeatures;

    #[test]
    fn measures_every_workload_with_sane_numbers() {
        let f = DebugFeatures::from_counts(16, 16, 1).unwrap();
        let mut work: Vec<Box<dyn Workload + Send>> = vec![
            Box::new(CopyBaseline::new(&f)),
            round_trip(Era::Three, CopyShape::FallThrough, f, SwitchState::Dirty),
        ];
        let b = Budget {
            total: Duration::from_millis(20),
            batch: Duration::from_micros(5),
            min_rounds: 5,
        };
        let t = measure(&mut work, b).unwrap();
        assert_eq!(t.len(), 2);
        for x in &t {
            assert!(x.batches >= 5);
            assert!(x.median_ns > 0.0 && x.median_ns.is_finite());
            assert!(x.min_ns <= x.p25_ns && x.p25_ns <= x.median_ns && x.median_ns <= x.p75_ns);
        }
    }
}
