//! The quick report: measure every flow, profile and state, count the accesses with the
//! checking implementation, model cycles, fit the growth with the implemented count, and
//! judge the three targets. Rendered as text tables or one JSON document, and as an SVG
//! chart.
//!
//! # The JSON document (`hypdbg bench --json`, schema `hypdbg-bench/2`)
//!
//! One object; keys are stable within a schema version (version 2 dropped the
//! `dirty_max_vs_copy` target and added `real`):
//!
//! - `schema`, `quick`;
//! - `machine`: `cpu`, `cpus`, `arch`, `os`;
//! - `method`: `budget_s`, `batch_us`, `min_batches`, `workloads`, `elapsed_s`, `statistic`;
//! - `cost_model`: `costs` (`key`, `what`, `cycles`, `estimate`, `source`),
//!   `altra_null_hypercall_ns`, `assumed_clock_ghz`, `xgene_hypercall_cycles`, `note`;
//! - `rows` (flow x profile x state): `flow` (`era1`..`era3`), `kernels`, `profile`,
//!   `same_counts`, `brps`, `wrps`, `state` (`clean`/`dirty`), `round_trip` and
//!   `loop_round_trip` (dirty only, else null) as `median_ns`, `p25_ns`, `p75_ns`, `min_ns`,
//!   `batches`, `iters_per_batch`; `copy_baseline_ns`, `copy_baseline_bytes`,
//!   `ratio_to_copy`, `accesses` (`dbg_reads`, `dbg_writes`, `mdccint_reads`,
//!   `mdccint_writes`, `id_reads`, `other`, `isb`), `debug_state_moves`,
//!   `modelled_cycles`, `shares` (`of_xgene_hypercall`, `ns_at_altra_clock`,
//!   `of_altra_hypercall`);
//! - `sweep`: per flow and state, and `copy`/`baseline`: `points` (`count`, `ns`), `fit`
//!   (`slope`, `intercept`, `r2`, `n`), `slope_ns_per_register`, `slope_ns_per_move`;
//! - `targets`: `name` (`clean_vs_dirty_min`, `linear_growth`), `flow`, `value`, `limit`,
//!   `met`, `detail` (the copy baseline is measured, with no target: each Arm debug register
//!   is its own MRS/MSR, so a `memcpy` of the same bytes is a lower bound, not a goal);
//! - `real`: `null` without `--kernel`; else (see [`super::real`]) `method` (`qemu`,
//!   `rounds`, `batches_per_visit`, `batch_target_instructions`, `confidence`,
//!   `max_relative_ci`, `statistic`), `model` (`per_move`, `fitted_series`, `fitted_mode`,
//!   `fitted_state`, `fitted_extra`, `fitted_moves`, `note`), `model_goal`, and `runs`, one
//!   per kernel and mode: `kernel`, `release`, `series`, `mode`, `mode_line`, `era`, `flow`,
//!   `brps`, `wrps`, `runs_per_batch`, `rounds`, `batches_per_visit`, `boot_s`, `measure_s`,
//!   `load_average` (before, after), `error` (a broken measurement: then `states` is empty)
//!   and `states`, one per debug state (`clean`, `guest_owned`, `use_hw`, `single_step`,
//!   `os_lock`): `state`, `exit` (`mmio`/`step`), `instructions` and `extra` (null for clean)
//!   as `median`, `ci_low`, `ci_high`, `n`; `batches`, `quiet_batches`, `within_noise`,
//!   `instructions_per_move`, and `simulator`: `sim` (`state`, `accesses` (`dbg_reads`,
//!   `dbg_writes`, `mdccint`, `context`, `mdcr_el2`, `id_reads`), `moves`), `delta_moves`,
//!   `extra`, `round_trip`, `error`, `verdict` (`clean`, `fit`, `not_judged`, `within_goal`,
//!   `missed`),
//!   `reason`.

use std::fmt::Write as _;

use hypdbg_hyp::Era;
use hypdbg_hyp::access::AccessRecord;
use hypdbg_model::DebugFeatures;
use hypdbg_model::profiles::{PROFILES, by_name};
use serde::Serialize;

use super::BenchError;
use super::cost::{self, AccessCost, AccessCounts, Shares};
use super::measure::{Budget, Timing, measure};
use super::predict::MODEL;
use super::real::RealSection;
use super::setup::{CopyBaseline, CopyShape, ERAS, SwitchState, Workload, round_trip};
use super::stats::{LinearFit, least_squares};
use super::svg::{Chart, Series, SvgError, document};

/// The JSON document's schema name; bump when a key changes meaning or goes away.
pub const SCHEMA: &str = "hypdbg-bench/2";

/// The profiles of the tables (every other built-in profile has the same counts as one
/// of these).
pub const TABLE_PROFILES: [&str; 3] = ["min", "cortex-a57", "max"];

/// The implemented counts of the growth sweep (breakpoints = watchpoints = n).
pub const SWEEP: std::ops::RangeInclusive<u8> = 2..=16;

/// The largest share of the dirty min round trip a clean round trip may take.
pub const TARGET_CLEAN_SHARE: f64 = 0.05;
/// The smallest R² of the least-squares line for "grows linearly".
pub const TARGET_LINEAR_R2: f64 = 0.95;

/// What to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// About 1 s of measuring instead of about 9 s.
    pub quick: bool,
}

/// The machine the numbers were measured on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `/proc/cpuinfo`'s model name (or CPU implementer/part), `unknown` elsewhere.
    pub cpu: String,
    /// `std::thread::available_parallelism`.
    pub cpus: usize,
    /// Target architecture.
    pub arch: &'static str,
    /// Target OS.
    pub os: &'static str,
}

impl Machine {
    /// Describe this machine.
    pub fn this() -> Self {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |k: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|n| n.trim() == k))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let cpu = field("model name")
            .or_else(|| {
                let imp = field("CPU implementer")?;
                let part = field("CPU part")?;
                Some(format!("CPU implementer {imp}, part {part}"))
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            arch: std::env::consts::ARCH,
            os: std::env::consts::OS,
        }
    }
}

/// How the numbers were taken.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Method {
    /// The measuring budget, s.
    pub budget_s: f64,
    /// The target duration of a batch, µs.
    pub batch_us: f64,
    /// The fewest batches any workload got.
    pub min_batches: usize,
    /// Workloads timed.
    pub workloads: usize,
    /// Wall time of the whole run, s.
    pub elapsed_s: f64,
    /// In words.
    pub statistic: &'static str,
}

/// The published costs and the assumption behind the ns comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CostModel {
    /// The per-access costs.
    pub costs: Vec<AccessCost>,
    /// Ampere Altra null hypercall round trip (kvm-unit-tests arm/micro-bench, 2024), ns.
    pub altra_null_hypercall_ns: f64,
    /// The clock assumed to turn modelled cycles into Altra ns (ASSUMPTION), GHz.
    pub assumed_clock_ghz: f64,
    /// KVM/ARM hypercall on X-Gene (Dall et al., ISCA 2016), cycles.
    pub xgene_hypercall_cycles: f64,
    /// In words.
    pub note: &'static str,
}

/// One row of a table: a flow, a profile and a state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// `era1`, `era2`, `era3`.
    pub flow: Era,
    /// Kernel versions of the flow.
    pub kernels: &'static str,
    /// The profile.
    pub profile: &'static str,
    /// Built-in profiles with the same counts.
    pub same_counts: Vec<&'static str>,
    /// Implemented breakpoints.
    pub brps: usize,
    /// Implemented watchpoints.
    pub wrps: usize,
    /// `clean` or `dirty`.
    pub state: SwitchState,
    /// The round trip with the kernel's fall-through copy.
    pub round_trip: Timing,
    /// The same round trip with a loop copy (dirty rows only).
    pub loop_round_trip: Option<Timing>,
    /// The `copy_from_slice` baseline of this profile, median ns.
    pub copy_baseline_ns: f64,
    /// Bytes the baseline moves per round trip.
    pub copy_baseline_bytes: usize,
    /// Round trip median / baseline median.
    pub ratio_to_copy: f64,
    /// Registers read and written (checking run of the same code).
    pub accesses: AccessCounts,
    /// Breakpoint/watchpoint registers and MDCCINT_EL1 moved.
    pub debug_state_moves: u32,
    /// Accesses x [`cost::COSTS`] (estimates).
    pub modelled_cycles: f64,
    /// Shares of published world switches.
    pub shares: Shares,
}

/// One point of the growth sweep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SweepPoint {
    /// Implemented breakpoints = watchpoints.
    pub count: u8,
    /// Median ns per round trip.
    pub ns: f64,
}

/// One line of the growth sweep: a flow and state (or the copy baseline).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepSeries {
    /// `era1`, `era2`, `era3` or `copy`.
    pub flow: &'static str,
    /// `clean`, `dirty` or `baseline`.
    pub state: &'static str,
    /// The points, by count.
    pub points: Vec<SweepPoint>,
    /// Least squares of ns against the count.
    pub fit: Option<LinearFit>,
    /// `fit.slope / 4`: ns per implemented debug register (each count adds a DBGBCR, DBGBVR,
    /// DBGWCR and DBGWVR).
    pub slope_ns_per_register: Option<f64>,
    /// `fit.slope / 16`: ns per register move (each register is moved four times per round
    /// trip).
    pub slope_ns_per_move: Option<f64>,
}

/// A target and whether this run met it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// `clean_vs_dirty_min` or `linear_growth`.
    pub name: &'static str,
    /// The flow judged.
    pub flow: Era,
    /// The measured value.
    pub value: f64,
    /// The limit.
    pub limit: f64,
    /// `value <= limit` (ratios) or `value >= limit` (R²).
    pub met: bool,
    /// In words, with the numbers.
    pub detail: String,
}

/// Everything `hypdbg bench` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// `--quick`.
    pub quick: bool,
    /// Where.
    pub machine: Machine,
    /// How.
    pub method: Method,
    /// The cycle model.
    pub cost_model: CostModel,
    /// The tables: flow x profile x state.
    pub rows: Vec<Row>,
    /// The growth sweep (one series per flow and state, and the copy baseline).
    pub sweep: Vec<SweepSeries>,
    /// The two targets, per flow.
    pub targets: Vec<Target>,
    /// The real kernels (`--kernel`), with the simulator's predictions.
    pub real: Option<RealSection>,
}

/// What each timed workload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Row(Era, usize, SwitchState, CopyShape),
    Baseline(usize),
    Sweep(Era, u8, SwitchState),
    SweepBaseline(u8),
}

/// The workloads of the report, in timing order.
type Workloads = Vec<Box<dyn Workload + Send>>;

/// Every workload of the report, keyed.
fn plan(profiles: &[(&'static str, DebugFeatures)]) -> Result<(Vec<Key>, Workloads), BenchError> {
    let mut keys = Vec::new();
    let mut work: Workloads = Vec::new();
    for (p, (_, f)) in profiles.iter().enumerate() {
        keys.push(Key::Baseline(p));
        work.push(Box::new(CopyBaseline::new(f)));
        for era in ERAS {
            for state in SwitchState::ALL {
                keys.push(Key::Row(era, p, state, CopyShape::FallThrough));
                work.push(round_trip(era, CopyShape::FallThrough, *f, state));
            }
            keys.push(Key::Row(era, p, SwitchState::Dirty, CopyShape::Loop));
            work.push(round_trip(era, CopyShape::Loop, *f, SwitchState::Dirty));
        }
    }
    for n in SWEEP {
        let f = DebugFeatures::from_counts(n, n, 1)?;
        keys.push(Key::SweepBaseline(n));
        work.push(Box::new(CopyBaseline::new(&f)));
        for era in ERAS {
            for state in SwitchState::ALL {
                keys.push(Key::Sweep(era, n, state));
                work.push(round_trip(era, CopyShape::FallThrough, f, state));
            }
        }
    }
    Ok((keys, work))
}

/// What was measured, by key.
struct Measured {
    keys: Vec<Key>,
    timings: Vec<Timing>,
    accesses: Vec<Option<Vec<AccessRecord>>>,
}

impl Measured {
    fn timing(&self, k: Key) -> Result<Timing, BenchError> {
        self.keys
            .iter()
            .position(|x| *x == k)
            .and_then(|i| self.timings.get(i).copied())
            .ok_or(BenchError::NoSamples)
    }

    fn counts(&self, k: Key) -> AccessCounts {
        self.keys
            .iter()
            .position(|x| *x == k)
            .and_then(|i| self.accesses.get(i).cloned().flatten())
            .map(|log| AccessCounts::of(&log))
            .unwrap_or_default()
    }

    /// The profiles other than `name` with the same counts as `f`.
    fn same_counts(name: &str, f: &DebugFeatures) -> Vec<&'static str> {
        PROFILES
            .iter()
            .filter(|q| q.name != name)
            .filter(|q| q.features().is_ok_and(|g| g.same_counts(f)))
            .map(|q| q.name)
            .collect()
    }

    /// One row per flow, profile and state.
    fn rows(&self, profiles: &[(&'static str, DebugFeatures)]) -> Result<Vec<Row>, BenchError> {
        let mut rows = Vec::new();
        for era in ERAS {
            for (p, (name, f)) in profiles.iter().enumerate() {
                let base = self.timing(Key::Baseline(p))?;
                for state in SwitchState::ALL {
                    let t = self.timing(Key::Row(era, p, state, CopyShape::FallThrough))?;
                    let loop_t = match state {
                        SwitchState::Dirty => {
                            Some(self.timing(Key::Row(era, p, state, CopyShape::Loop))?)
                        }
                        SwitchState::Clean => None,
                    };
                    let c = self.counts(Key::Row(era, p, state, CopyShape::FallThrough));
                    let cycles = cost::modelled_cycles(&c);
                    rows.push(Row {
                        flow: era,
                        kernels: era.kernels(),
                        profile: name,
                        same_counts: Self::same_counts(name, f),
                        brps: f.num_brps(),
                        wrps: f.num_wrps(),
                        state,
                        round_trip: t,
                        loop_round_trip: loop_t,
                        copy_baseline_ns: base.median_ns,
                        copy_baseline_bytes: CopyBaseline::new(f).bytes(),
                        ratio_to_copy: t.median_ns / base.median_ns,
                        debug_state_moves: c.debug_state_moves(),
                        accesses: c,
                        modelled_cycles: cycles,
                        shares: cost::shares(cycles),
                    });
                }
            }
        }
        Ok(rows)
    }

    /// The n = 2..16 series per flow and state, and the copy baseline's, each fitted.
    fn sweep(&self) -> Result<Vec<SweepSeries>, BenchError> {
        let points_of = |key: &dyn Fn(u8) -> Key| {
            SWEEP
                .map(|n| {
                    self.timing(key(n)).map(|t| SweepPoint {
                        count: n,
                        ns: t.median_ns,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut sweep = Vec::new();
        for era in ERAS {
            for state in SwitchState::ALL {
                let points = points_of(&|n| Key::Sweep(era, n, state))?;
                sweep.push(SweepSeries::fitted(era.name(), state.name(), points));
            }
        }
        let points = points_of(&Key::SweepBaseline)?;
        sweep.push(SweepSeries::fitted("copy", "baseline", points));
        Ok(sweep)
    }
}

impl SweepSeries {
    /// A series with its least-squares line (per register: 4 moves; per move: 16 of a
    /// round trip's registers).
    fn fitted(flow: &'static str, state: &'static str, points: Vec<SweepPoint>) -> Self {
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (f64::from(p.count), p.ns)).collect();
        let fit = least_squares(&xy);
        SweepSeries {
            flow,
            state,
            points,
            fit,
            slope_ns_per_register: fit.map(|f| f.slope / 4.0),
            slope_ns_per_move: fit.map(|f| f.slope / 16.0),
        }
    }
}

/// Measure and build the report.
pub fn run(opts: &Options) -> Result<Report, BenchError> {
    let started = std::time::Instant::now();
    let budget = if opts.quick {
        Budget::QUICK
    } else {
        Budget::NORMAL
    };
    let profiles: Vec<(&'static str, DebugFeatures)> = TABLE_PROFILES
        .iter()
        .map(|&n| Ok((n, by_name(n)?.features()?)))
        .collect::<Result<_, BenchError>>()?;
    let (keys, mut work) = plan(&profiles)?;
    // The checking run of the same code, before timing (on a copy of each workload).
    let mut accesses = Vec::with_capacity(work.len());
    for w in work.iter_mut() {
        accesses.push(w.accesses()?);
    }
    let timings = measure(&mut work, budget)?;
    let min_batches = timings.iter().map(|t| t.batches).min().unwrap_or(0);
    let m = Measured {
        keys,
        timings,
        accesses,
    };
    let rows = m.rows(&profiles)?;
    let sweep = m.sweep()?;
    let targets = targets(&rows, &sweep)?;
    Ok(Report {
        schema: SCHEMA,
        quick: opts.quick,
        machine: Machine::this(),
        method: Method {
            budget_s: budget.total.as_secs_f64(),
            batch_us: budget.batch.as_secs_f64() * 1e6,
            min_batches,
            workloads: work.len(),
            elapsed_s: started.elapsed().as_secs_f64(),
            statistic: "median over interleaved batches of (batch time / iterations), \
                        std::time::Instant, state laundered through black_box every iteration",
        },
        cost_model: CostModel {
            costs: cost::COSTS.to_vec(),
            altra_null_hypercall_ns: cost::ALTRA_NULL_HYPERCALL_NS,
            assumed_clock_ghz: cost::ALTRA_CLOCK_GHZ,
            xgene_hypercall_cycles: cost::XGENE_HYPERCALL_CYCLES,
            note: "modelled cycles = accesses of one round trip (checking run) x per-access \
                   cycles; MRS/MSR/ISB figures are ESTIMATES (src/bench/cost.rs)",
        },
        rows,
        sweep,
        targets,
        real: None,
    })
}

fn row<'a>(
    rows: &'a [Row],
    era: Era,
    profile: &str,
    state: SwitchState,
) -> Result<&'a Row, BenchError> {
    rows.iter()
        .find(|r| r.flow == era && r.profile == profile && r.state == state)
        .ok_or(BenchError::Statistic("a target: a table row is missing"))
}

fn targets(rows: &[Row], sweep: &[SweepSeries]) -> Result<Vec<Target>, BenchError> {
    let mut out = Vec::new();
    for era in ERAS {
        let dirty_min = row(rows, era, "min", SwitchState::Dirty)?;
        let worst_clean = rows
            .iter()
            .filter(|r| r.flow == era && r.state == SwitchState::Clean)
            .max_by(|a, b| a.round_trip.median_ns.total_cmp(&b.round_trip.median_ns))
            .ok_or(BenchError::Statistic("a target: no clean row"))?;
        let share = worst_clean.round_trip.median_ns / dirty_min.round_trip.median_ns;
        out.push(Target {
            name: "clean_vs_dirty_min",
            flow: era,
            value: share,
            limit: TARGET_CLEAN_SHARE,
            met: share <= TARGET_CLEAN_SHARE,
            detail: format!(
                "slowest clean round trip ({}) {:.2} ns = {:.1}% of dirty min (2/2) {:.1} ns (target < {:.0}%)",
                worst_clean.profile,
                worst_clean.round_trip.median_ns,
                100.0 * share,
                dirty_min.round_trip.median_ns,
                100.0 * TARGET_CLEAN_SHARE
            ),
        });
        let s = sweep
            .iter()
            .find(|s| s.flow == era.name() && s.state == "dirty")
            .ok_or(BenchError::Statistic(
                "a target: the dirty sweep is missing",
            ))?;
        let fit = s
            .fit
            .ok_or(BenchError::Statistic("the least-squares line of the sweep"))?;
        out.push(Target {
            name: "linear_growth",
            flow: era,
            value: fit.r2,
            limit: TARGET_LINEAR_R2,
            met: fit.r2 >= TARGET_LINEAR_R2,
            detail: format!(
                "dirty ns = {:.2} x n + {:.1} over n = {}..={} (n breakpoints and n watchpoints): {:.2} ns per count, {:.2} ns per implemented register, {:.3} ns per register move, R^2 = {:.4} (target R^2 >= {TARGET_LINEAR_R2})",
                fit.slope,
                fit.intercept,
                SWEEP.start(),
                SWEEP.end(),
                fit.slope,
                fit.slope / 4.0,
                fit.slope / 16.0,
                fit.r2
            ),
        });
    }
    Ok(out)
}

impl Report {
    /// One JSON document (pretty-printed), stable keys.
    pub fn to_json(&self) -> Result<String, BenchError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The SVG of `--plot`: [`Report::chart`], and below it the real kernels' chart when
    /// there is one.
    pub fn to_svg(&self) -> Result<String, SvgError> {
        let mut charts = vec![self.chart()];
        if let Some(c) = self.real.as_ref().and_then(RealSection::chart) {
            charts.push(c);
        }
        document(&charts)
    }

    /// The simulator's chart: ns per round trip against the implemented count, one line per
    /// flow and state, and the copy baseline dashed.
    pub fn chart(&self) -> Chart {
        Chart {
            title: "Debug world-switch round trip vs implemented registers (simulator)".into(),
            x_label: "implemented breakpoints = watchpoints (n; 4n debug registers)".into(),
            y_label: "ns per round trip (median)".into(),
            series: self
                .sweep
                .iter()
                .map(|s| Series {
                    label: if s.flow == "copy" {
                        "copy_from_slice baseline".into()
                    } else {
                        format!("{} {}", s.flow, s.state)
                    },
                    points: s
                        .points
                        .iter()
                        .map(|p| (f64::from(p.count), p.ns))
                        .collect(),
                    dashed: s.flow == "copy",
                    colour: None,
                })
                .collect(),
            x_ticks: Vec::new(),
            y_from_zero: true,
        }
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        self.text_header(&mut o);
        self.text_tables(&mut o);
        self.text_growth(&mut o);
        self.text_targets_and_costs(&mut o);
        if let Some(r) = &self.real {
            o.push('\n');
            o.push_str(&r.to_text());
        }
        o
    }

    /// The machine, the method and the cost model's caveats.
    fn text_header(&self, o: &mut String) {
        let m = &self.machine;
        let _ = writeln!(
            o,
            "hypdbg bench{}: the debug world switch (switch_to_guest + switch_to_host, PlainAccess)",
            if self.quick { " --quick" } else { "" }
        );
        let _ = writeln!(
            o,
            "machine: {} ({} CPUs, {}/{}); {} workloads, >= {} batches each, {:.1} s",
            m.cpu,
            m.cpus,
            m.arch,
            m.os,
            self.method.workloads,
            self.method.min_batches,
            self.method.elapsed_s
        );
        let _ = writeln!(o, "ns: {}", self.method.statistic);
        let _ = writeln!(
            o,
            "cycles*: modelled = accesses x per-access cost (ESTIMATES, src/bench/cost.rs); \
             %X-Gene* = cycles / {:.0}; %Altra* = cycles at an ASSUMED {:.1} GHz / {:.0} ns",
            self.cost_model.xgene_hypercall_cycles,
            self.cost_model.assumed_clock_ghz,
            self.cost_model.altra_null_hypercall_ns
        );
    }

    /// One table per flow, then which profiles stand for which.
    fn text_tables(&self, o: &mut String) {
        for era in ERAS {
            let _ = writeln!(o);
            let _ = writeln!(o, "{era} ({})", era.kernels());
            let _ = writeln!(
                o,
                "  {:<11} {:>5} {:>5}  {:>9} {:>17}  {:>8} {:>6}  {:>8}  {:>5} {:>6} {:>7} {:>3}  {:>7} {:>8} {:>7}",
                "profile",
                "b/w",
                "state",
                "ns/trip",
                "[p25..p75]",
                "copy ns",
                "ratio",
                "loop ns",
                "reads",
                "writes",
                "mdccint",
                "id",
                "cycles*",
                "%X-Gene*",
                "%Altra*"
            );
            for r in self.rows.iter().filter(|r| r.flow == era) {
                let _ = writeln!(
                    o,
                    "  {:<11} {:>5} {:>5}  {:>9.2} {:>17}  {:>8.2} {:>6.2}  {:>8}  {:>5} {:>6} {:>7} {:>3}  {:>7.0} {:>7.1}% {:>6.1}%",
                    r.profile,
                    format!("{}/{}", r.brps, r.wrps),
                    r.state.name(),
                    r.round_trip.median_ns,
                    format!("[{:.2}..{:.2}]", r.round_trip.p25_ns, r.round_trip.p75_ns),
                    r.copy_baseline_ns,
                    r.ratio_to_copy,
                    r.loop_round_trip
                        .map_or_else(|| "-".to_string(), |t| format!("{:.2}", t.median_ns)),
                    r.accesses.dbg_reads + r.accesses.mdccint_reads,
                    r.accesses.dbg_writes + r.accesses.mdccint_writes,
                    r.accesses.mdccint_reads + r.accesses.mdccint_writes,
                    r.accesses.id_reads,
                    r.modelled_cycles,
                    100.0 * r.shares.of_xgene_hypercall,
                    100.0 * r.shares.of_altra_hypercall
                );
            }
        }
        let same: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.flow == Era::One && r.state == SwitchState::Dirty)
            .filter(|r| !r.same_counts.is_empty())
            .map(|r| format!("{} stands for {}", r.profile, r.same_counts.join(", ")))
            .collect();
        if !same.is_empty() {
            let _ = writeln!(o, "\n(same counts: {})", same.join("; "));
        }
    }

    /// The fitted lines of the count sweep.
    fn text_growth(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\ngrowth with the implemented count n (n breakpoints and n watchpoints, n = {}..={}):",
            SWEEP.start(),
            SWEEP.end()
        );
        for s in &self.sweep {
            match s.fit {
                Some(f) => {
                    let _ = writeln!(
                        o,
                        "  {:<5} {:<8} ns = {:>6.2} x n + {:>6.1}   ({:.2} ns/register, {:.3} ns/move)  R^2 = {:.4}",
                        s.flow,
                        s.state,
                        f.slope,
                        f.intercept,
                        f.slope / 4.0,
                        f.slope / 16.0,
                        f.r2
                    );
                }
                None => {
                    let _ = writeln!(o, "  {:<5} {:<8} (no fit)", s.flow, s.state);
                }
            }
        }
    }

    /// The targets' verdicts, the cost table and the published references.
    fn text_targets_and_costs(&self, o: &mut String) {
        let _ = writeln!(o, "\ntargets:");
        for t in &self.targets {
            let _ = writeln!(
                o,
                "  [{}] {} {}: {}",
                if t.met { "met" } else { "MISSED" },
                t.flow,
                t.name,
                t.detail
            );
        }
        let _ = writeln!(
            o,
            "  (copy_from_slice: measured for scale, no target: each Arm debug register is its \
             own MRS/MSR; the real switch costs about {:.1} instructions per debug register \
             moved, {} {} {}, `hypdbg bench --kernel`)",
            MODEL.per_move, MODEL.fitted_series, MODEL.fitted_mode, MODEL.fitted_state
        );
        let _ = writeln!(o, "\ncost table (cycles per access; * = ESTIMATE):");
        for c in &self.cost_model.costs {
            let _ = writeln!(
                o,
                "  {:<12} {:>5.0}{} {}  [{}]",
                c.key,
                c.cycles,
                if c.estimate { "*" } else { " " },
                c.what,
                c.source
            );
        }
        let _ = writeln!(
            o,
            "published: null hypercall round trip ~{:.0} ns on Ampere Altra (kvm-unit-tests \
             arm/micro-bench, 2024); KVM/ARM hypercall ~{:.0} cycles on X-Gene (Dall et al., \
             ISCA 2016). The simulator's ns are host-CPU time of the flow code, not Arm \
             hardware time; compare them with each other and with the copy baseline.",
            self.cost_model.altra_null_hypercall_ns, self.cost_model.xgene_hypercall_cycles
        );
    }
}
