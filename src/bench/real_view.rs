//! The real-kernel part of the report as text and as a chart.

use std::fmt::Write as _;

use hypdbg_real::DebugState;

use super::real::{Estimate, KernelRun, RealSection, StateRow};
use super::svg::{Chart, Series};

fn signed(v: f64) -> String {
    format!("{v:+.1}")
}

fn interval(e: &Estimate, sign: bool) -> String {
    if sign {
        format!("[{}..{}]", signed(e.ci_low), signed(e.ci_high))
    } else {
        format!("[{:.1}..{:.1}]", e.ci_low, e.ci_high)
    }
}

fn extra_cell(r: &StateRow) -> String {
    match &r.extra {
        None => "-".into(),
        Some(e) if r.within_noise => format!("within noise {}", interval(e, true)),
        Some(e) => format!("{} {}", signed(e.median), interval(e, true)),
    }
}

fn verdict_cell(r: &StateRow) -> String {
    let p = &r.simulator;
    match p.reason {
        Some(why) => format!("{}; {why}", p.verdict),
        None => p.verdict.to_string(),
    }
}

impl KernelRun {
    /// `debian:6.1 (6.1.0-57-arm64) nvhe`.
    pub fn title(&self) -> String {
        if self.kernel == self.release {
            format!("{} {}", self.kernel, self.mode)
        } else {
            format!("{} ({}) {}", self.kernel, self.release, self.mode)
        }
    }

    fn text(&self, o: &mut String) {
        let _ = writeln!(o);
        if let Some(e) = &self.error {
            let _ = writeln!(o, "{}: BROKEN, no numbers: {e}", self.title());
            return;
        }
        let _ = writeln!(
            o,
            "{} [simulator: {}], {}/{} breakpoints/watchpoints; {} rounds x {} batches x {} \
             round trips per state; boot {:.1} s, measured in {:.1} s; load average {} -> {}",
            self.title(),
            self.flow.unwrap_or("-"),
            self.brps,
            self.wrps,
            self.rounds,
            self.batches_per_visit,
            self.runs_per_batch,
            self.boot_s,
            self.measure_s,
            self.load_average[0],
            self.load_average[1]
        );
        let _ = writeln!(
            o,
            "  {:<12} {:<4} {:>9} {:<21} {:>5} {:<32} {:>5} {:>11} {:>7}  verdict",
            "state",
            "exit",
            "instr",
            "[95% interval]",
            "quiet",
            "extra [95% interval]",
            "moves",
            "model extra",
            "error"
        );
        for r in &self.states {
            let p = &r.simulator;
            let _ = writeln!(
                o,
                "  {:<12} {:<4} {:>9.1} {:<21} {:>5} {:<32} {:>5} {:>11} {:>7}  {}",
                r.state.name(),
                r.exit,
                r.instructions.median,
                interval(&r.instructions, false),
                format!("{}/{}", r.quiet_batches, r.batches),
                extra_cell(r),
                p.sim.moves,
                if r.extra.is_some() {
                    signed(p.extra)
                } else {
                    "-".into()
                },
                p.error
                    .map_or_else(|| "-".into(), |e| format!("{:+.0}%", 100.0 * e)),
                verdict_cell(r)
            );
        }
        let per_move: Vec<String> = self
            .states
            .iter()
            .filter_map(|r| {
                r.instructions_per_move
                    .map(|v| format!("{v:.2} ({})", r.state.name()))
            })
            .collect();
        if !per_move.is_empty() {
            let _ = writeln!(
                o,
                "  average instructions per debug register moved (extra cost / extra moves, at \
                 {}/{}): {}",
                self.brps,
                self.wrps,
                per_move.join(", ")
            );
        }
    }
}

impl RealSection {
    /// The real kernels as text: the method, then one table per kernel and mode.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "real kernels: instructions per KVM_RUN round trip ({}: one virtual ns per guest \
             instruction; TCG is not silicon: instructions, not cycles)",
            self.method.qemu
        );
        let _ = writeln!(
            o,
            "  per state: median of the batches that took no interrupt [95% interval]; extra: \
             median over rounds of (state - clean), paired by round; an interval containing 0 \
             is within noise"
        );
        let _ = writeln!(
            o,
            "  model: {:.2} instructions per debug register moved x the simulator's extra moves \
             (fitted on {} {} {}: {:.1} instructions / {} moves); goal +-{:.0}%, judged on every \
             other kernel and mode",
            self.model.per_move,
            self.model.fitted_series,
            self.model.fitted_mode,
            self.model.fitted_state,
            self.model.fitted_extra,
            self.model.fitted_moves,
            100.0 * self.model_goal
        );
        for r in &self.runs {
            r.text(&mut o);
        }
        o
    }

    /// Instructions per round trip per state: one solid line per kernel and mode, its
    /// simulator prediction dashed in the same colour. `None` when nothing was measured.
    pub fn chart(&self) -> Option<Chart> {
        let x = |s: DebugState| DebugState::ALL.iter().position(|&a| a == s).unwrap_or(0) as f64;
        let mut series = Vec::new();
        for (i, r) in self.runs.iter().filter(|r| r.error.is_none()).enumerate() {
            let label = format!("{} {}", r.series, r.mode);
            series.push(Series {
                label: label.clone(),
                points: r
                    .states
                    .iter()
                    .map(|s| (x(s.state), s.instructions.median))
                    .collect(),
                dashed: false,
                colour: Some(i),
            });
            series.push(Series {
                label: format!("{label} (simulator)"),
                points: r
                    .states
                    .iter()
                    .map(|s| (x(s.state), s.simulator.round_trip))
                    .collect(),
                dashed: true,
                colour: Some(i),
            });
        }
        if series.is_empty() {
            return None;
        }
        Some(Chart {
            title: "Real kernels: instructions per KVM_RUN round trip (dashed: simulator)".into(),
            x_label: "debug state".into(),
            y_label: "instructions per round trip (median)".into(),
            series,
            x_ticks: DebugState::ALL
                .iter()
                .map(|&s| (x(s), s.name().to_string()))
                .collect(),
            y_from_zero: false,
        })
    }
}
