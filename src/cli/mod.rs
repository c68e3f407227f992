//! The `hypdbg` command line.

pub mod bench;
pub mod check;
pub mod decode;
pub mod encode;
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
}

/// Run the CLI; returns the exit status.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() && args.get(1).is_some_and(|a| a == "bench") => {
            // `hypdbg bench` promises a one-line error for bad arguments.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            return usage_error(first.trim_start_matches("error: "));
        }
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
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
    }
}

/// Print a one-line error and return exit status 2 (bad input).
pub fn usage_error(msg: impl std::fmt::Display) -> i32 {
    eprintln!("hypdbg: error: {msg}");
    2
}
