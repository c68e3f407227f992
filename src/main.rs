//! The `hypdbg` command: `cargo run --release` runs the patch-validation report.

mod cli;

fn main() {
    std::process::exit(cli::main_with(std::env::args_os()));
}
