//! The statistics the report needs: medians and quantiles of batch timings, a
//! distribution-free confidence interval for a median (order statistics), and an ordinary
//! least-squares line with its coefficient of determination.

use serde::Serialize;

/// The `q`-quantile (0 ≤ q ≤ 1) of `values` by linear interpolation between the two nearest
/// ranks (the "R-7" definition, as numpy's default). `None` for an empty input or a `q`
/// outside 0..=1; NaNs sort last.
///
/// ```
/// use hypdbg::bench::stats::quantile;
/// assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
/// assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 1.0), Some(4.0));
/// assert_eq!(quantile(&[], 0.5), None);
/// ```
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (a, b) = (*v.get(lo)?, *v.get(hi)?);
    Some(a + (b - a) * (pos - lo as f64))
}

/// The median (`quantile(values, 0.5)`): the middle value, or the mean of the two middle
/// values for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The ranks (1-based, into the sorted values) of a distribution-free confidence interval for
/// the median of `n` values at `confidence` (e.g. 0.95): the largest `k` such that the
/// chance of a Binomial(n, 1/2) falling below `k` is at most `(1 - confidence) / 2`; the
/// interval is `[x_(k), x_(n + 1 - k)]`. `None` when `n` is too small for that confidence
/// (fewer than 6 values at 95%).
///
/// ```
/// use hypdbg::bench::stats::median_ci_ranks;
/// assert_eq!(median_ci_ranks(6, 0.95), Some((1, 6)));
/// assert_eq!(median_ci_ranks(31, 0.95), Some((10, 22)));
/// assert_eq!(median_ci_ranks(5, 0.95), None);
/// ```
pub fn median_ci_ranks(n: usize, confidence: f64) -> Option<(usize, usize)> {
    if n == 0 || !(0.0..1.0).contains(&confidence) {
        return None;
    }
    let tail = (1.0 - confidence) / 2.0;
    let k = if n <= 1000 {
        // P(B = i) iteratively from P(B = 0) = 2^-n (no underflow for n <= 1000).
        let mut p = 0.5f64.powi(n as i32);
        let mut cdf = 0.0;
        let mut k = 0;
        for i in 0..n {
            cdf += p;
            if cdf > tail {
                break;
            }
            k = i + 1;
            p *= (n - i) as f64 / (i + 1) as f64;
        }
        k
    } else {
        // Normal approximation, z = 1.96 for 95% (2.576 for 99%).
        let z = if confidence >= 0.99 { 2.576 } else { 1.96 };
        let nf = n as f64;
        (nf / 2.0 - z * nf.sqrt() / 2.0).floor().max(0.0) as usize
    };
    (k >= 1).then_some((k, n + 1 - k))
}

/// The median of `values` and its distribution-free confidence interval
/// ([`median_ci_ranks`]): `(median, low, high)`; `None` when there are too few values.
pub fn median_with_ci(values: &[f64], confidence: f64) -> Option<(f64, f64, f64)> {
    let (lo, hi) = median_ci_ranks(values.len(), confidence)?;
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some((median(&v)?, *v.get(lo - 1)?, *v.get(hi - 1)?))
}

/// A fitted line `y = slope * x + intercept`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LinearFit {
    /// The slope.
    pub slope: f64,
    /// The value at x = 0.
    pub intercept: f64,
    /// Coefficient of determination, 1 - SS_res / SS_tot (1 for a perfect line; defined as 1
    /// when every y is the same and the line passes through them).
    pub r2: f64,
    /// Number of points.
    pub n: usize,
}

impl LinearFit {
    /// The line's value at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.slope * x + self.intercept
    }
}

/// Ordinary least squares over `(x, y)` points. `None` with fewer than two points or when
/// every x is the same (the slope is undefined).
///
/// ```
/// use hypdbg::bench::stats::least_squares;
/// let f = least_squares(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
/// assert!((f.slope - 2.0).abs() < 1e-12 && (f.intercept - 1.0).abs() < 1e-12);
/// assert!((f.r2 - 1.0).abs() < 1e-12);
/// ```
pub fn least_squares(points: &[(f64, f64)]) -> Option<LinearFit> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 || !sxx.is_finite() {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_tot: f64 = points.iter().map(|p| (p.1 - my) * (p.1 - my)).sum();
    let ss_res: f64 = points
        .iter()
        .map(|p| {
            let e = p.1 - (slope * p.0 + intercept);
            e * e
        })
        .sum();
    let r2 = if ss_tot == 0.0 {
        if ss_res == 0.0 { 1.0 } else { 0.0 }
    } else {
        1.0 - ss_res / ss_tot
    };
    Some(LinearFit {
        slope,
        intercept,
        r2,
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[10.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        // Outliers do not move it.
        assert_eq!(median(&[1.0, 1.0, 1.0, 1e9, 1.0]), Some(1.0));
    }

    #[test]
    fn quantiles_interpolate_and_reject_bad_q() {
        let v = [0.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(quantile(&v, 0.0), Some(0.0));
        assert_eq!(quantile(&v, 0.25), Some(10.0));
        assert_eq!(quantile(&v, 0.1), Some(4.0));
        assert_eq!(quantile(&v, 1.0), Some(40.0));
        assert_eq!(quantile(&v, 1.5), None);
        assert_eq!(quantile(&v, -0.1), None);
        assert_eq!(quantile(&v, f64::NAN), None);
    }

    #[test]
    fn median_confidence_intervals_from_order_statistics() {
        // Textbook ranks (e.g. Conover, Practical Nonparametric Statistics, table A3): n = 10
        // -> (2, 9); n = 20 -> (6, 15); n = 62 -> (23, 40).
        assert_eq!(median_ci_ranks(10, 0.95), Some((2, 9)));
        assert_eq!(median_ci_ranks(20, 0.95), Some((6, 15)));
        assert_eq!(median_ci_ranks(62, 0.95), Some((23, 40)));
        assert_eq!(median_ci_ranks(0, 0.95), None);
        assert_eq!(median_ci_ranks(10, 1.0), None);
        // The normal approximation takes over smoothly.
        let (k, _) = median_ci_ranks(1000, 0.95).unwrap();
        let (k2, _) = median_ci_ranks(1001, 0.95).unwrap();
        assert!(k.abs_diff(k2) <= 1, "{k} {k2}");
        let v: Vec<f64> = (1..=31).map(f64::from).collect();
        assert_eq!(median_with_ci(&v, 0.95), Some((16.0, 10.0, 22.0)));
        assert_eq!(median_with_ci(&v[..5], 0.95), None);
    }

    #[test]
    fn least_squares_recovers_a_line_and_scores_noise() {
        let pts: Vec<(f64, f64)> = (2..=16)
            .map(|x| (x as f64, 4.5 * x as f64 + 12.0))
            .collect();
        let f = least_squares(&pts).unwrap();
        assert!((f.slope - 4.5).abs() < 1e-9, "{f:?}");
        assert!((f.intercept - 12.0).abs() < 1e-9, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert_eq!(f.n, 15);
        assert!((f.at(10.0) - 57.0).abs() < 1e-9);

        // Known example: x = 1..5, y = 2, 4, 5, 4, 5: slope 0.6, intercept 2.2, R² = 0.6.
        let f =
            least_squares(&[(1.0, 2.0), (2.0, 4.0), (3.0, 5.0), (4.0, 4.0), (5.0, 5.0)]).unwrap();
        assert!((f.slope - 0.6).abs() < 1e-12, "{f:?}");
        assert!((f.intercept - 2.2).abs() < 1e-12, "{f:?}");
        assert!((f.r2 - 0.6).abs() < 1e-12, "{f:?}");

        // A flat line is a perfect fit; no slope without two distinct x.
        let f = least_squares(&[(1.0, 3.0), (2.0, 3.0)]).unwrap();
        assert_eq!((f.slope, f.r2), (0.0, 1.0));
        assert_eq!(least_squares(&[(1.0, 3.0)]), None);
        assert_eq!(least_squares(&[(2.0, 3.0), (2.0, 4.0)]), None);
    }
}
