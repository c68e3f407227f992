//! The `hypdbg` command line.

pub mod bench;
pub mod check;
pub mod decode;
pub mod diff;
pub mod encode;
mod kernel;
pub mod output;
pub mod run;

use clap::{Parser, Subcommand};

/// Validate, benchmark and model-check the KVM arm64 debug-register world switch.
#[derive(Parser, Debug)]
#[command(name = "hypdbg", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: `check` over the built-in defaults).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate variants of the kernel's debug save/restore logic against the nine invariants.
    Check(check::CheckArgs),
    /// Explain a register value in words.
    Decode(decode::DecodeArgs),
    /// Evaluate a breakpoint or watchpoint match as the Arm ARM defines it.
    #[command(name = "match", subcommand)]
    Match(decode::MatchCommand),
    /// The DBGBCR/DBGBVR or DBGWCR/DBGWVR slots a debugger programs for a request.
    #[command(subcommand)]
    Encode(encode::EncodeCommand),
    /// Run a scenario file and check its expectations (`--trace` shows every register move).
    Run(run::RunArgs),
    /// What the debug world switch costs: a quick report of each flow and profile.
    Bench(bench::BenchArgs),
    /// Run scenarios on the simulator and on a real kernel (nested in QEMU) and show where
    /// they part.
    Diff(diff::DiffArgs),
}

/// Run the CLI; returns the exit status.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    // `hypdbg --variant era1` is `hypdbg check --variant era1`: the main job's options work
    // without naming it.
    if args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with("--") && !matches!(a, "--help" | "--version"))
    {
        args.insert(1, "check".into());
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            // Every bad argument is one line: the parser's first, with the usage left out.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            return usage_error(first.trim_start_matches("error: "));
        }
        Err(e) => {
            let _ = e.print();
            return 0;
        }
    };
    match cli.command {
        None => check::run(&check::CheckArgs::default()),
        Some(Command::Check(a)) => check::run(&a),
        Some(Command::Decode(a)) => decode::decode(&a),
        Some(Command::Match(m)) => decode::run_match(&m),
        Some(Command::Encode(e)) => encode::run(&e),
        Some(Command::Run(a)) => run::run(&a),
        Some(Command::Bench(a)) => bench::run(&a),
        Some(Command::Diff(a)) => diff::run(&a),
    }
}

/// A number on the command line: 0x-hex, 0b-binary or decimal, as everywhere else.
pub fn num_arg<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let n = hypdbg_model::parse_u64(s).map_err(|e| e.to_string())?;
    T::try_from(n).map_err(|_| format!("{s} is too large ({n})"))
}

/// Print a one-line error and return exit status 2 (bad input).
pub fn usage_error(msg: impl std::fmt::Display) -> i32 {
    eprintln!("hypdbg: error: {msg}");
    2
}
