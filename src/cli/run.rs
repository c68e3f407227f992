//! `hypdbg run FILE [--trace] [--json] [--flow NAME]`: play a scenario file, check its
//! expectations and the nine invariants, print a summary (and with `--trace` every world
//! switch). Exit status 0 when everything holds, 1 when not, 2 for a bad file or argument.

use std::io::Write as _;

use clap::Args;
use hypdbg::play::trace::{Record, TextRenderer};
use hypdbg::play::{PlayOptions, play};
use hypdbg::scenario::source::ScenarioFile;
use hypdbg_hyp::variants;

use super::usage_error;

/// `hypdbg run` options.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The scenario file (TOML; the format is described in scenarios/README.md).
    pub file: std::path::PathBuf,
    /// Print an ftrace-like log of every world switch: vcpu load/put, entry and exit with the
    /// flow's decisions, every debug register read and write, guest events, userspace
    /// actions, and invariant violations where they happen.
    #[arg(long)]
    pub trace: bool,
    /// JSON lines: the trace records (with --trace), then one summary object.
    #[arg(long)]
    pub json: bool,
    /// Run this flow (variant) instead of the file's (see `hypdbg check --list`).
    #[arg(long, value_name = "NAME")]
    pub flow: Option<String>,
}

/// Run a scenario file.
pub fn run(a: &RunArgs) -> i32 {
    let flow = match &a.flow {
        None => None,
        Some(name) => match variants::by_name(name) {
            Some(v) => Some(v),
            None => {
                let names: Vec<&str> = variants::all().iter().map(|v| v.name).collect();
                return usage_error(format!(
                    "--flow {name}: unknown flow; known: {}",
                    names.join(", ")
                ));
            }
        },
    };
    let file = match ScenarioFile::load(&a.file) {
        Ok(f) => f,
        Err(errs) => {
            eprintln!("{errs}");
            return 2;
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut text = TextRenderer::new();
    let json = a.json;
    let mut sink = |r: Record| {
        if json {
            if let Ok(line) = serde_json::to_string(&r) {
                let _ = writeln!(out, "{line}");
            }
        } else if a.trace {
            let _ = write!(out, "{}", text.render(&r));
        }
    };
    let opts = PlayOptions {
        flow,
        trace: a.trace,
    };
    let report = match play(&file, &opts, &mut sink) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), "summary".into());
        }
        let _ = writeln!(out, "{v}");
    } else {
        if a.trace {
            let _ = writeln!(out);
        }
        let _ = write!(out, "{}", report.text());
    }
    let _ = out.flush();
    if report.passed { 0 } else { 1 }
}
