//! `hypdbg bench --kernel`: instructions per KVM_RUN round trip of real arm64 kernels, per
//! mode and debug state, with the simulator's prediction beside them.
//!
//! Each kernel boots in each mode under `qemu-system-aarch64 -cpu max -icount
//! shift=0,sleep=off` (one virtual ns per guest instruction), and
//! [`hypdbg_real::measure_states`] times interleaved batches of round trips in every state.
//! Per state, the figure is the median over the batches that took no interrupt (the agent
//! counts them, outside the timed window), with a distribution-free 95% interval; a state's
//! extra cost over the clean state is the median over rounds of the paired difference (each
//! round visits every state once), with its interval, and an interval that contains 0 is
//! reported as "within noise", not as a number. A measurement whose intervals are wider than
//! [`MAX_RELATIVE_CI`] of the median, whose batches are mostly disturbed, or that met an
//! unexpected exit is broken: it is reported as an error and carries no numbers.

use std::io::IsTerminal as _;
use std::time::Instant;

use hypdbg_hyp::flow::Era;
use hypdbg_real::{
    BootOptions, Cache, DebugState, KernelImage, KernelSpec, Machine, Mode, Plan, Stage,
    StateBatches, StatesMeasurement, fetch, measure_states,
};
use serde::Serialize;

use super::BenchError;
use super::predict::{
    InstructionModel, MODEL, MODEL_GOAL, SimCount, SimFlow, known_miss_reason, simulate_states,
    state_name,
};
use super::stats::median_with_ci;

/// The confidence of every interval.
pub const CONFIDENCE: f64 = 0.95;
/// A state's median must be known within this share (half-width of its 95% interval), or the
/// measurement is broken: two runs then agree within about twice this.
pub const MAX_RELATIVE_CI: f64 = 0.01;
/// At least this share of a state's batches must have run without an interrupt.
pub const MIN_QUIET_SHARE: f64 = 0.5;
/// The repeatability the README promises: two runs' clean medians within this share.
pub const REPEATABILITY: f64 = 0.03;

/// Why `hypdbg bench --kernel` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// A kernel could not be fetched, or did not boot in a mode (with its stage): bad input.
    #[error("{0}")]
    Kernel(hypdbg_real::Error),
    /// The simulator's side failed.
    #[error("{0}")]
    Bench(#[from] BenchError),
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// The kernels.
    pub kernels: Vec<KernelSpec>,
    /// The modes, each booted for every kernel.
    pub modes: Vec<Mode>,
    /// The debug states (the clean state is always measured, first).
    pub states: Vec<DebugState>,
    /// Batches and rounds.
    pub plan: Plan,
    /// Where kernels and the agent are cached.
    pub cache: Cache,
}

/// A median with its interval, in instructions per round trip.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The median.
    pub median: f64,
    /// The 95% interval's low end.
    pub ci_low: f64,
    /// The 95% interval's high end.
    pub ci_high: f64,
    /// Values it was taken over (quiet batches, or rounds for an extra cost).
    pub n: usize,
}

impl Estimate {
    fn of(values: &[f64]) -> Option<Estimate> {
        let (median, ci_low, ci_high) = median_with_ci(values, CONFIDENCE)?;
        Some(Estimate {
            median,
            ci_low,
            ci_high,
            n: values.len(),
        })
    }

    /// Half the interval's width.
    pub fn half_width(&self) -> f64 {
        (self.ci_high - self.ci_low) / 2.0
    }

    /// Whether the interval contains 0.
    pub fn contains_zero(&self) -> bool {
        self.ci_low <= 0.0 && 0.0 <= self.ci_high
    }
}

/// The simulator's prediction for a state, and how it fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The simulator's register accesses of one round trip.
    pub sim: SimCount,
    /// Register moves over the clean state's.
    pub delta_moves: i64,
    /// The model's extra instructions per round trip.
    pub extra: f64,
    /// The measured clean round trip plus `extra`.
    pub round_trip: f64,
    /// (predicted - measured) / |measured| extra cost; `None` when the measured extra cost is
    /// within noise (or for the clean state).
    pub error: Option<f64>,
    /// `clean`; `fit` (the state the model was fitted to) or `not_judged` (another state of
    /// the kernel and mode it was fitted on); else `within_goal` or `missed`.
    pub verdict: &'static str,
    /// Why the model misses, when it does and the reason is known.
    pub reason: Option<&'static str>,
}

/// One state of one kernel and mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateRow {
    /// The state.
    #[serde(serialize_with = "state_name")]
    pub state: DebugState,
    /// `mmio` (the doorbell) or `step` (a single-step exit).
    pub exit: &'static str,
    /// Instructions per round trip: median of the quiet batches.
    pub instructions: Estimate,
    /// Batches taken; how many ran without an interrupt.
    pub batches: usize,
    /// Batches without an interrupt (the ones the median is taken over).
    pub quiet_batches: usize,
    /// The extra instructions over the clean state (paired by round); `None` for clean.
    pub extra: Option<Estimate>,
    /// Whether the extra cost's interval contains 0: reported as within noise.
    pub within_noise: bool,
    /// Measured extra instructions per extra register moved (states that exit at the doorbell,
    /// move registers and are not within noise): the average instructions per debug register
    /// moved.
    pub instructions_per_move: Option<f64>,
    /// The simulator's side.
    pub simulator: Prediction,
}

/// One kernel booted in one mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelRun {
    /// As given (`debian:6.1`, a path).
    pub kernel: String,
    /// `uname -r`.
    pub release: String,
    /// MAJOR.MINOR.
    pub series: String,
    /// `vhe`, `nvhe`, `protected`, `protected-nvhe`.
    pub mode: String,
    /// What the kernel said about its mode.
    pub mode_line: String,
    /// The simulator's era for the release.
    pub era: Option<Era>,
    /// The simulator's variant (`era2`, `era3`, `era3-pkvm`).
    pub flow: Option<&'static str>,
    /// KVM_CAP_GUEST_DEBUG_HW_BPS / _WPS.
    pub brps: u32,
    /// Watchpoints.
    pub wrps: u32,
    /// Round trips per batch.
    pub runs_per_batch: u64,
    /// Rounds (every state visited once per round).
    pub rounds: u32,
    /// Timed batches per visit.
    pub batches_per_visit: u32,
    /// Wall time of the boot, s.
    pub boot_s: f64,
    /// Wall time of the measurement, s.
    pub measure_s: f64,
    /// The host's load average (1, 5, 15 min) before and after.
    pub load_average: [String; 2],
    /// The states; empty when the measurement is broken.
    pub states: Vec<StateRow>,
    /// Why the measurement is broken (then there are no numbers).
    pub error: Option<String>,
}

/// How the real-kernel numbers are taken.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RealMethod {
    /// The QEMU options that matter.
    pub qemu: &'static str,
    /// Rounds per kernel and mode.
    pub rounds: u32,
    /// Timed batches per state and round.
    pub batches_per_visit: u32,
    /// Batches are sized to about this many instructions.
    pub batch_target_instructions: Option<u64>,
    /// The intervals' confidence.
    pub confidence: f64,
    /// The bound on a median's interval (half-width / median).
    pub max_relative_ci: f64,
    /// In words.
    pub statistic: &'static str,
}

/// The real-kernel part of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RealSection {
    /// How.
    pub method: RealMethod,
    /// The instruction cost model.
    pub model: InstructionModel,
    /// The model's goal (share of the measured extra cost).
    pub model_goal: f64,
    /// One entry per kernel and mode, in the order measured.
    pub runs: Vec<KernelRun>,
}

impl RealSection {
    /// Whether any measurement is broken.
    pub fn broken(&self) -> bool {
        self.runs.iter().any(|r| r.error.is_some())
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Fetch every kernel (before anything boots): a kernel that cannot be had is bad input.
pub fn fetch_kernels(opts: &RealOptions) -> Result<Vec<KernelImage>, RealError> {
    opts.kernels
        .iter()
        .map(|k| fetch(k, &opts.cache).map_err(RealError::Kernel))
        .collect()
}

/// The states of a measurement: clean first, then the others asked for, once each.
pub fn states_with_clean(states: &[DebugState]) -> Vec<DebugState> {
    let mut v = vec![DebugState::Clean];
    for s in states {
        if !v.contains(s) {
            v.push(*s);
        }
    }
    v
}

/// Boot, measure and judge every kernel in every mode, in order, one QEMU at a time. A boot
/// failure stops everything ([`RealError::Kernel`]); a broken measurement is recorded in its
/// run and the others go on.
pub fn run(opts: &RealOptions) -> Result<RealSection, RealError> {
    let kernels = fetch_kernels(opts)?;
    let mut plan = opts.plan.clone();
    plan.states = states_with_clean(&opts.states);
    let progress = std::io::stderr().is_terminal();
    let mut runs = Vec::new();
    for k in &kernels {
        for &mode in &opts.modes {
            if progress {
                eprintln!("hypdbg: measuring {} {mode} ...", k.name());
            }
            runs.push(run_one(k, mode, &plan, &opts.cache)?);
        }
    }
    Ok(RealSection {
        method: RealMethod {
            qemu: "-M virt,virtualization=on -cpu max -smp 1 -icount shift=0,sleep=off",
            rounds: plan.rounds,
            batches_per_visit: plan.batches_per_visit,
            batch_target_instructions: plan.batch_target_ns,
            confidence: CONFIDENCE,
            max_relative_ci: MAX_RELATIVE_CI,
            statistic: "instructions per round trip = guest CLOCK_MONOTONIC ns per batch / round \
                        trips under -icount shift=0; per state the median of the batches that \
                        took no interrupt, 95% interval from order statistics; extra cost = \
                        median over rounds of (state - clean), paired by round",
        },
        model: MODEL,
        model_goal: MODEL_GOAL,
        runs,
    })
}

/// Boot `k` in `mode` and measure it.
fn run_one(
    k: &KernelImage,
    mode: Mode,
    plan: &Plan,
    cache: &Cache,
) -> Result<KernelRun, RealError> {
    let load_before = load_average();
    let mut boot = BootOptions::new(cache.clone());
    boot.icount = true;
    let t = Instant::now();
    let mut m = Machine::boot(k, mode, &boot).map_err(RealError::Kernel)?;
    let boot_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let measured = measure_states(m.agent(), plan);
    let measure_s = t.elapsed().as_secs_f64();
    let mut run = KernelRun {
        kernel: k.spec.clone(),
        release: k.version.clone(),
        series: k.series.clone(),
        mode: mode.name().to_string(),
        mode_line: m.mode_line().trim().to_string(),
        era: None,
        flow: None,
        brps: 0,
        wrps: 0,
        runs_per_batch: 0,
        rounds: plan.rounds,
        batches_per_visit: plan.batches_per_visit,
        boot_s,
        measure_s,
        load_average: [load_before, String::new()],
        states: Vec::new(),
        error: None,
    };
    match measured {
        Ok(meas) => {
            let _ = m.power_off();
            run.load_average[1] = load_average();
            judge(&mut run, k, mode, &meas)?;
        }
        Err(e) if e.stage == Stage::Agent => {
            drop(m);
            run.load_average[1] = load_average();
            run.error = Some(format!("broken measurement: {e}"));
        }
        Err(e) => return Err(RealError::Kernel(e)),
    }
    Ok(run)
}

/// Fill `run` from a measurement: statistics per state, the simulator's counts, the model's
/// predictions. A statistic out of bounds makes the run broken.
fn judge(
    run: &mut KernelRun,
    k: &KernelImage,
    mode: Mode,
    meas: &StatesMeasurement,
) -> Result<(), RealError> {
    run.brps = meas.brps;
    run.wrps = meas.wrps;
    run.runs_per_batch = meas.runs;
    let flow = SimFlow::for_kernel(&k.version, mode);
    run.era = flow.map(|f| f.era);
    run.flow = flow.map(SimFlow::name);
    let Some(flow) = flow else {
        run.error = Some(format!(
            "no simulator era for release {}: cannot predict",
            k.version
        ));
        return Ok(());
    };
    let states: Vec<DebugState> = meas.states.iter().map(|s| s.state).collect();
    let bp = u8::try_from(meas.brps).unwrap_or(0);
    let wp = u8::try_from(meas.wrps).unwrap_or(0);
    let sims = simulate_states(flow, bp, wp, &states)?;
    match rows(meas, &sims, flow, MODEL.is_fit_kernel(&k.series, mode)) {
        Ok(rows) => run.states = rows,
        Err(why) => run.error = Some(format!("broken measurement: {why}")),
    }
    Ok(())
}

/// A state's median over its quiet batches, checked against the bounds.
fn state_estimate(s: &StateBatches) -> Result<(Estimate, usize), String> {
    let all = s.per_round_trip();
    let quiet: Vec<f64> = all
        .iter()
        .zip(&s.batches)
        .filter(|(_, (_, b))| b.interrupts == Some(0))
        .map(|(v, _)| *v)
        .collect();
    let name = s.state.name();
    if (quiet.len() as f64) < MIN_QUIET_SHARE * all.len() as f64 {
        return Err(format!(
            "state {name}: only {} of {} batches ran without an interrupt",
            quiet.len(),
            all.len()
        ));
    }
    let e = Estimate::of(&quiet).ok_or_else(|| {
        format!(
            "state {name}: {} quiet batches are too few for an interval",
            quiet.len()
        )
    })?;
    let rel = e.half_width() / e.median.abs().max(1.0);
    if rel > MAX_RELATIVE_CI {
        return Err(format!(
            "state {name}: the 95% interval of the median ({:.0}..{:.0}, +-{:.1}%) exceeds the \
             bound +-{:.0}%",
            e.ci_low,
            e.ci_high,
            100.0 * rel,
            100.0 * MAX_RELATIVE_CI
        ));
    }
    Ok((e, quiet.len()))
}

/// The mean of each round's quiet batches.
fn per_round(s: &StateBatches) -> std::collections::BTreeMap<u32, f64> {
    let mut sums: std::collections::BTreeMap<u32, (f64, u32)> = Default::default();
    let runs = s.runs.max(1) as f64;
    for (round, b) in &s.batches {
        if b.interrupts == Some(0) {
            let e = sums.entry(*round).or_insert((0.0, 0));
            e.0 += b.ns as f64 / runs;
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(r, (sum, n))| (r, sum / f64::from(n)))
        .collect()
}

/// The extra cost of `s` over `clean`, paired by round.
fn extra_estimate(s: &StateBatches, clean: &StateBatches) -> Result<Estimate, String> {
    let a = per_round(s);
    let c = per_round(clean);
    let d: Vec<f64> = a
        .iter()
        .filter_map(|(r, v)| c.get(r).map(|cv| v - cv))
        .collect();
    Estimate::of(&d).ok_or_else(|| {
        format!(
            "state {}: {} rounds with quiet batches of both it and clean are too few",
            s.state.name(),
            d.len()
        )
    })
}

/// The prediction for one state and its verdict.
fn predict(
    sim: SimCount,
    clean_sim: &SimCount,
    clean: f64,
    extra: Option<&Estimate>,
    flow: SimFlow,
    fit_kernel: bool,
) -> Prediction {
    let delta_moves = i64::from(sim.moves) - i64::from(clean_sim.moves);
    let p = MODEL.predict(delta_moves);
    let mut out = Prediction {
        sim,
        delta_moves,
        extra: p,
        round_trip: clean + p,
        error: None,
        verdict: "clean",
        reason: None,
    };
    let Some(m) = extra else {
        return out;
    };
    let within = if m.contains_zero() {
        p >= m.ci_low - m.half_width() && p <= m.ci_high + m.half_width()
    } else {
        let err = (p - m.median) / m.median.abs();
        out.error = Some(err);
        err.abs() <= MODEL_GOAL
    };
    let fitted = DebugState::parse(MODEL.fitted_state) == Some(sim.state);
    out.verdict = match (fit_kernel, fitted, within) {
        (true, true, _) => "fit",
        (true, false, _) => "not_judged",
        (false, _, true) => "within_goal",
        (false, _, false) => "missed",
    };
    if !within {
        out.reason = known_miss_reason(flow, sim.state);
    }
    out
}

/// Every state's row (clean first).
fn rows(
    meas: &StatesMeasurement,
    sims: &[SimCount],
    flow: SimFlow,
    fit_kernel: bool,
) -> Result<Vec<StateRow>, String> {
    let clean_batches = meas
        .states
        .iter()
        .find(|s| s.state == DebugState::Clean)
        .ok_or("the clean state was not measured")?;
    let clean_sim = sims
        .iter()
        .find(|s| s.state == DebugState::Clean)
        .ok_or("the clean state was not simulated")?;
    let (clean, _) = state_estimate(clean_batches)?;
    let mut out = Vec::new();
    for (s, sim) in meas.states.iter().zip(sims) {
        let (instructions, quiet) = state_estimate(s)?;
        let extra = match s.state {
            DebugState::Clean => None,
            _ => Some(extra_estimate(s, clean_batches)?),
        };
        let within_noise = extra.is_some_and(|e| e.contains_zero());
        let prediction = predict(
            *sim,
            clean_sim,
            clean.median,
            extra.as_ref(),
            flow,
            fit_kernel,
        );
        // Per move only where the exit is the clean state's (a step exit is another path).
        let instructions_per_move = match (&extra, prediction.delta_moves, s.state) {
            (_, _, DebugState::SingleStep) => None,
            (Some(e), d, _) if d > 0 && !within_noise => Some(e.median / d as f64),
            _ => None,
        };
        out.push(StateRow {
            state: s.state,
            exit: match s.state {
                DebugState::SingleStep => "step",
                _ => "mmio",
            },
            instructions,
            batches: s.batches.len(),
            quiet_batches: quiet,
            extra,
            within_noise,
            instructions_per_move,
            simulator: prediction,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypdbg_real::Batch;

    fn batches(state: DebugState, per_rt: &[(u32, f64, u64)]) -> StateBatches {
        StateBatches {
            state,
            runs: 100,
            batches: per_rt
                .iter()
                .map(|&(round, v, irq)| {
                    (
                        round,
                        Batch {
                            ns: (v * 100.0) as u64,
                            interrupts: Some(irq),
                        },
                    )
                })
                .collect(),
        }
    }

    fn steady(state: DebugState, base: f64, rounds: u32) -> StateBatches {
        let v: Vec<(u32, f64, u64)> = (0..rounds)
            .flat_map(|r| {
                let jitter = f64::from(r % 3);
                [(r, base + jitter, 0), (r, base + jitter + 1.0, 0)]
            })
            .collect();
        batches(state, &v)
    }

    #[test]
    fn quiet_batches_give_the_median_and_disturbed_ones_are_left_out() {
        let mut s = steady(DebugState::Clean, 5000.0, 11);
        // Three batches with a tick: far off, and not counted.
        for (i, b) in s.batches.iter_mut().enumerate().take(3) {
            b.1.ns = 10_000_000 + i as u64;
            b.1.interrupts = Some(1);
        }
        let (e, quiet) = state_estimate(&s).unwrap();
        assert_eq!(quiet, 19);
        assert!((5000.0..=5003.0).contains(&e.median), "{e:?}");
        assert!(e.ci_low <= e.median && e.median <= e.ci_high);
        // Mostly disturbed: broken.
        for b in s.batches.iter_mut().take(15) {
            b.1.interrupts = Some(2);
        }
        assert!(
            state_estimate(&s)
                .unwrap_err()
                .contains("without an interrupt")
        );
    }

    #[test]
    fn a_wide_interval_is_a_broken_measurement() {
        let v: Vec<(u32, f64, u64)> = (0..20)
            .map(|r| (r, if r % 2 == 0 { 5000.0 } else { 5400.0 }, 0))
            .collect();
        let e = state_estimate(&batches(DebugState::Clean, &v)).unwrap_err();
        assert!(e.contains("exceeds the bound"), "{e}");
    }

    #[test]
    fn extra_costs_are_paired_by_round_and_noise_is_named() {
        let clean = steady(DebugState::Clean, 5000.0, 11);
        let go = steady(DebugState::GuestOwned, 5362.0, 11);
        let e = extra_estimate(&go, &clean).unwrap();
        assert_eq!(e.median, 362.0);
        assert!(!e.contains_zero());
        // A state that costs the same: its interval contains 0.
        let v: Vec<(u32, f64, u64)> = (0..11)
            .flat_map(|r| {
                let j = if r % 2 == 0 { -1.0 } else { 1.0 };
                [
                    (r, 5000.0 + j + f64::from(r % 3), 0),
                    (r, 5001.0 + f64::from(r % 3), 0),
                ]
            })
            .collect();
        let same = batches(DebugState::OsLock, &v);
        assert!(extra_estimate(&same, &clean).unwrap().contains_zero());
    }

    #[test]
    fn predictions_are_judged_against_the_goal() {
        use hypdbg_hyp::access::SwitchStats;
        let sim = |state, moves| SimCount {
            state,
            accesses: SwitchStats::default(),
            moves,
        };
        let flow = SimFlow {
            era: Era::Three,
            pkvm: false,
        };
        let clean = sim(DebugState::Clean, 0);
        let m = |median: f64, lo: f64, hi: f64| Estimate {
            median,
            ci_low: lo,
            ci_high: hi,
            n: 31,
        };
        let p = predict(
            sim(DebugState::UseHw, 84),
            &clean,
            7400.0,
            Some(&m(373.0, 372.0, 374.0)),
            flow,
            false,
        );
        assert_eq!(p.verdict, "within_goal");
        assert!((p.round_trip - 7400.0 - MODEL.predict(84)).abs() < 1e-9);
        assert!(p.error.unwrap().abs() < 0.05);
        let p = predict(
            sim(DebugState::SingleStep, 84),
            &clean,
            7400.0,
            Some(&m(-251.0, -252.0, -250.0)),
            flow,
            false,
        );
        assert_eq!(p.verdict, "missed");
        assert!(p.reason.unwrap().contains("step exit"));
        let p = predict(
            sim(DebugState::GuestOwned, 84),
            &clean,
            5356.0,
            Some(&m(362.0, 361.0, 363.0)),
            flow,
            true,
        );
        assert_eq!(p.verdict, "fit");
        // Measured within noise, predicted 0: agrees.
        let p = predict(
            sim(DebugState::OsLock, 0),
            &clean,
            5356.0,
            Some(&m(0.5, -1.0, 2.0)),
            flow,
            false,
        );
        assert_eq!((p.verdict, p.error), ("within_goal", None));
    }

    #[test]
    fn clean_is_always_measured_first() {
        assert_eq!(
            states_with_clean(&[DebugState::UseHw, DebugState::Clean, DebugState::UseHw]),
            [DebugState::Clean, DebugState::UseHw]
        );
    }
}
