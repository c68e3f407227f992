//! `hypdbg bench [--quick] [--json] [--plot FILE]`: the quick benchmark report
//! (library code in `hypdbg::bench`).

use std::path::PathBuf;

use clap::Args;
use hypdbg::bench::{BenchError, Options, Report};

use super::usage_error;

/// `hypdbg bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// About 1-2 s instead of about 10 s (fewer batches; same workloads).
    #[arg(long)]
    pub quick: bool,
    /// One JSON document (schema `hypdbg-bench/1`) instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG chart of cost against the implemented register count.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// Check the arguments before spending seconds measuring.
fn validate(a: &BenchArgs) -> Result<(), String> {
    match &a.plot {
        Some(p) => super::output::writable_file("--plot", p),
        None => Ok(()),
    }
}

fn write_plot(report: &Report, path: &std::path::Path) -> Result<(), BenchError> {
    let svg = report.chart().to_svg()?;
    std::fs::write(path, svg).map_err(|source| BenchError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Run the quick benchmark report: 0 on success (whether or not the targets are met: they
/// are benchmarks, not tests), 2 for bad arguments, 1 when measuring or writing fails.
pub fn run(a: &BenchArgs) -> i32 {
    if let Err(e) = validate(a) {
        return usage_error(e);
    }
    let report = match hypdbg::bench::run(&Options { quick: a.quick }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hypdbg: error: {e}");
            return 1;
        }
    };
    if let Some(p) = &a.plot
        && let Err(e) = write_plot(&report, p)
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
