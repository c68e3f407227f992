//! `hypdbg bench`: being written (issue 7).

use clap::Args;

/// `hypdbg bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Run the quick benchmark report.
pub fn run(_a: &BenchArgs) -> i32 {
    super::usage_error("hypdbg bench is not available yet")
}
