//! `hypdbg bench [--quick] [--json] [--plot FILE] [--kernel KERNEL]... [--mode MODE,...]
//! [--state STATE,...]`: the benchmark report (library code in `hypdbg::bench`).

use std::path::PathBuf;

use clap::Args;
use hypdbg::bench::real::{RealError, RealOptions};
use hypdbg::bench::{BenchError, Options, Report};
use hypdbg_real::{Cache, DebugState, KernelSpec, Mode, Plan};

use super::usage_error;

/// The modes booted when `--kernel` is given without `--mode`.
pub const DEFAULT_MODES: [Mode; 2] = [Mode::Vhe, Mode::Nvhe];

/// `hypdbg bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// About 1-2 s instead of about 10 s for the simulator's timings (fewer batches; same
    /// workloads; the real kernels are measured in full).
    #[arg(long)]
    pub quick: bool,
    /// One JSON document (schema `hypdbg-bench/2`) instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG chart of cost against the implemented register count (and, with
    /// `--kernel`, of instructions per round trip per state).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Also measure a real arm64 kernel under QEMU (`debian:SERIES`, `debian:latest` or a
    /// path to an arm64 Image); may be repeated.
    #[arg(long = "kernel", value_name = "KERNEL")]
    pub kernels: Vec<String>,
    /// The KVM modes to boot each kernel in: vhe, nvhe, protected, protected-nvhe (comma
    /// separated or repeated; default vhe,nvhe).
    #[arg(long = "mode", value_name = "MODE", value_delimiter = ',')]
    pub modes: Vec<String>,
    /// The debug states to measure: clean, guest_owned, use_hw, single_step, os_lock (comma
    /// separated or repeated; default all; clean is always measured).
    #[arg(long = "state", value_name = "STATE", value_delimiter = ',')]
    pub states: Vec<String>,
}

/// Check the arguments before spending seconds measuring; the real-kernel options, if any.
fn validate(a: &BenchArgs) -> Result<Option<RealOptions>, String> {
    if let Some(p) = &a.plot {
        super::output::writable_file("--plot", p)?;
    }
    if a.kernels.is_empty() {
        if !a.modes.is_empty() {
            return Err("--mode needs --kernel".into());
        }
        if !a.states.is_empty() {
            return Err("--state needs --kernel".into());
        }
        return Ok(None);
    }
    let kernels = a
        .kernels
        .iter()
        .map(|k| KernelSpec::parse(k).map_err(|e| format!("--kernel {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut modes = Vec::new();
    for m in &a.modes {
        let mode = Mode::parse(m).ok_or_else(|| {
            format!("--mode {m}: unknown mode: use vhe, nvhe, protected or protected-nvhe")
        })?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    if modes.is_empty() {
        modes = DEFAULT_MODES.to_vec();
    }
    let states = a
        .states
        .iter()
        .map(|s| {
            DebugState::parse(s).ok_or_else(|| {
                format!(
                    "--state {s}: unknown state: use clean, guest_owned, use_hw, single_step or \
                     os_lock"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cache = Cache::from_env().map_err(|e| e.to_string())?;
    Ok(Some(RealOptions {
        kernels,
        modes,
        states: if states.is_empty() {
            DebugState::ALL.to_vec()
        } else {
            states
        },
        plan: Plan::standard(),
        cache,
    }))
}

fn write_plot(report: &Report, path: &std::path::Path) -> Result<(), BenchError> {
    let svg = report.to_svg()?;
    std::fs::write(path, svg).map_err(|source| BenchError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Print the report; 1 when writing it fails.
fn output(a: &BenchArgs, report: &Report) -> i32 {
    if let Some(p) = &a.plot
        && let Err(e) = write_plot(report, p)
    {
        eprintln!("hypdbg: error: {e}");
        return 1;
    }
    if a.json {
        match report.to_json() {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("hypdbg: error: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", report.to_text());
        if let Some(p) = &a.plot {
            println!("plot: {}", p.display());
        }
    }
    0
}

/// Run the benchmark report: 0 on success (whether or not the simulator's targets are met:
/// they are benchmarks, not tests); 2 for bad arguments or a kernel that cannot be fetched or
/// booted in a mode; 1 when a real-kernel measurement is broken (it is reported, without
/// numbers) or measuring or writing fails.
pub fn run(a: &BenchArgs) -> i32 {
    let real_opts = match validate(a) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let real = match real_opts.as_ref().map(hypdbg::bench::real::run) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(RealError::Kernel(e))) => return usage_error(e),
        Some(Err(e)) => {
            eprintln!("hypdbg: error: {e}");
            return 1;
        }
    };
    let mut report = match hypdbg::bench::run(&Options { quick: a.quick }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hypdbg: error: {e}");
            return 1;
        }
    };
    report.real = real;
    let status = output(a, &report);
    if status != 0 {
        return status;
    }
    let mut broken = false;
    for r in report.real.iter().flat_map(|s| &s.runs) {
        if let Some(e) = &r.error {
            eprintln!("hypdbg: error: {}: {e}", r.title());
            broken = true;
        }
    }
    i32::from(broken)
}
