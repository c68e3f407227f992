//! `hypdbg run FILE`: being written (issue 8).

use clap::Args;

/// `hypdbg run` options.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The scenario file.
    pub file: std::path::PathBuf,
}

/// Run a scenario file.
pub fn run(a: &RunArgs) -> i32 {
    super::usage_error(format!("{}: scenario files are not supported yet", a.file.display()))
}
