//! `hypdbg run FILE [--trace] [--json] [--flow NAME | --kernel KERNEL [--mode MODE]]`: play a
//! scenario file, check its expectations and the nine invariants, print a summary (and with
//! `--trace` every world switch). With `--kernel` the file plays on a real kernel instead of
//! the simulator (its expectations, and the invariants a userspace observer can check).
//! Exit status 0 when everything holds, 1 when not, 2 for a bad file or argument, a kernel
//! that cannot be fetched or booted, or a scenario a real kernel cannot run, 3 when stopped
//! by `--timeout`.

use std::io::{IsTerminal, LineWriter, Write as _};
use std::time::{Duration, Instant};

use clap::Args;
use hypdbg::play::trace::{Record, TextRenderer};
use hypdbg::play::{PlayOptions, play};
use hypdbg::scenario::lint::Limits;
use hypdbg::scenario::source::ScenarioFile;
use hypdbg_hyp::variants;

use super::check::EXIT_TIMEOUT;
use super::kernel::KernelArgs;
use super::{num_arg, usage_error};

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
    #[arg(long, value_name = "NAME", conflicts_with = "kernel")]
    pub flow: Option<String>,
    /// A real kernel to play the file on instead of the simulator.
    #[command(flatten)]
    pub real: KernelArgs,
    /// Stop after this many seconds (exit status 3); no limit by default.
    #[arg(long, value_name = "SECONDS", value_parser = num_arg::<u64>)]
    pub timeout: Option<u64>,
    /// The largest scenario file read, in bytes (default 1 MiB).
    #[arg(long, value_name = "BYTES", value_parser = num_arg::<u64>)]
    pub max_file_bytes: Option<u64>,
    /// The most actions a file may expand to, repeats and counts multiplied out (default
    /// 2000000).
    #[arg(long, value_name = "N", value_parser = num_arg::<u64>)]
    pub max_actions: Option<u64>,
    /// The largest `budget` (guest instructions per KVM_RUN) a file may set (default 1000000).
    #[arg(long, value_name = "N", value_parser = num_arg::<u64>)]
    pub max_budget: Option<u64>,
}

impl RunArgs {
    /// The limits the file is held to: the defaults, raised or lowered by the flags.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            file_bytes: self.max_file_bytes.unwrap_or(d.file_bytes),
            actions: self.max_actions.unwrap_or(d.actions),
            budget: self.max_budget.unwrap_or(d.budget),
        }
    }
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
    let real = match a.real.validate() {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let file = match ScenarioFile::load_with(&a.file, &a.limits()) {
        Ok(f) => f,
        Err(errs) => {
            eprintln!("{errs}");
            return 2;
        }
    };
    let mut suite = match &real {
        None => None,
        Some((spec, mode)) => match KernelArgs::boot(spec, *mode) {
            Ok(s) => Some(s),
            Err(e) => return usage_error(e),
        },
    };
    if let Some(s) = &suite
        && let Err(e) = s.runnable(&file)
    {
        return usage_error(format!("{}: {e}", file.file));
    }
    // Records go out as they happen, a line at a time, so a stuck run shows how far it got.
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = LineWriter::new(stdout.lock());
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
        if terminal {
            let _ = out.flush();
        }
    };
    let opts = PlayOptions {
        flow,
        trace: a.trace,
        deadline: a.timeout.map(|s| Instant::now() + Duration::from_secs(s)),
        progress: std::io::stderr().is_terminal(),
    };
    let played = match suite.as_mut() {
        None => play(&file, &opts, &mut sink).map_err(|e| e.to_string()),
        Some(s) => s
            .play(&file, &opts, &mut sink)
            .map_err(|e| format!("{}: {e}", file.file)),
    };
    let report = match played {
        Ok(r) => r,
        Err(e) => return usage_error(e),
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
    if report.timed_out {
        EXIT_TIMEOUT
    } else if report.passed {
        0
    } else {
        1
    }
}
