//! `hypdbg diff FILE|DIR... --kernel KERNEL [--mode MODE] [--flow NAME] [--json]
//! [--expectations FILE]`: every scenario on the simulator (the flow of the kernel's version
//! and mode, or `--flow`) and on the real kernel, compared action by action; per scenario
//! `agree`, a known difference (its category), `DIFFERS` with the first divergence, or
//! `not-runnable` with the reason; then the counts. Exit status 0 when every runnable
//! scenario agrees or its difference is known, 1 when an unknown difference remains, 2 for
//! bad input (a file, an argument, a kernel that cannot be fetched or booted).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use hypdbg::diff::expectations::Expectations;
use hypdbg::diff::{DiffOptions, diff};
use hypdbg::scenario::lint::Limits;
use hypdbg::scenario::source::ScenarioFile;
use hypdbg_hyp::variants;

use super::kernel::KernelArgs;
use super::{num_arg, usage_error};

/// Where the known differences are, relative to a scenario directory.
pub const EXPECTATIONS_FILE: &str = "real-kernel/differences.toml";

/// `hypdbg diff` options.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Scenario files, or directories of them (`*.toml`).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
    /// The real kernel.
    #[command(flatten)]
    pub real: KernelArgs,
    /// The simulator's flow instead of the one the kernel's version and mode name.
    #[arg(long, value_name = "NAME")]
    pub flow: Option<String>,
    /// The known differences (default: `real-kernel/differences.toml` beside the first
    /// scenario directory or file given that has one).
    #[arg(long, value_name = "FILE")]
    pub expectations: Option<PathBuf>,
    /// JSON lines: one object per scenario, then a summary.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds (the scenario being played reports it).
    #[arg(long, value_name = "SECONDS", value_parser = num_arg::<u64>)]
    pub timeout: Option<u64>,
}

/// The scenario files named by `paths` (directories: their `*.toml`, sorted).
fn scenario_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p)
                .map_err(|e| format!("{}: cannot read the directory: {e}", p.display()))?;
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(format!("{}: no scenario files (*.toml)", p.display()));
            }
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn expectations(a: &DiffArgs) -> Result<Expectations, String> {
    let path = match &a.expectations {
        Some(p) => Some(p.clone()),
        None => a
            .paths
            .iter()
            .filter_map(|p| {
                if p.is_dir() {
                    Some(p.as_path())
                } else {
                    p.parent()
                }
            })
            .map(|d| d.join(EXPECTATIONS_FILE))
            .find(|p| p.is_file()),
    };
    let Some(path) = path else {
        return Ok(Expectations::default());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    Expectations::parse(&path.display().to_string(), &text)
}

/// Run `hypdbg diff`.
pub fn run(a: &DiffArgs) -> i32 {
    let Some((spec, mode)) = (match a.real.validate() {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    }) else {
        return usage_error("diff needs --kernel KERNEL (an arm64 Image, or debian:SERIES)");
    };
    let flow = match &a.flow {
        None => None,
        Some(name) => match variants::by_name(name) {
            Some(v) => Some(v),
            None => {
                return usage_error(format!(
                    "--flow {name}: unknown flow (see `hypdbg check --list`)"
                ));
            }
        },
    };
    let known = match expectations(a) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let paths = match scenario_paths(&a.paths) {
        Ok(p) => p,
        Err(e) => return usage_error(e),
    };
    let mut files = Vec::with_capacity(paths.len());
    for p in &paths {
        match ScenarioFile::load_with(Path::new(p), &Limits::default()) {
            Ok(f) => files.push(f),
            Err(errs) => {
                eprintln!("{errs}");
                return 2;
            }
        }
    }
    let mut suite = match KernelArgs::boot(&spec, mode) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let opts = DiffOptions {
        flow,
        expectations: &known,
        deadline: a.timeout.map(|s| Instant::now() + Duration::from_secs(s)),
    };
    let report = diff(&mut suite, &files, &opts);
    if a.json {
        for s in &report.scenarios {
            if let Ok(line) = serde_json::to_string(s) {
                println!("{line}");
            }
        }
        let summary = serde_json::json!({
            "type": "summary",
            "kernel": report.kernel,
            "flow": report.flow,
            "boot_ms": report.boot_ms,
            "scenarios_per_s": report.scenarios_per_s,
            "counts": report.counts(),
            "differences": report.differences_by_category(),
            "clean": report.clean(),
        });
        println!("{summary}");
    } else {
        print!("{}", report.text());
    }
    if report.clean() { 0 } else { 1 }
}
