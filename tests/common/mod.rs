//! Running the `hypdbg` binary from the integration tests: plainly, or under a memory and
//! time cap (`prlimit`, `timeout`), as the fuzz suite does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

/// The address-space cap every fuzzed invocation runs under: 2 GiB. hypdbg's own peak is
/// about 200 MB of address space (check, rayon's threads included); an input that made it
/// grow without bound fails the allocation and aborts, which the fuzz suite reports.
pub const MEMORY_CAP_BYTES: u64 = 2 << 30;

/// The wall-clock cap of a fuzzed invocation, in seconds (`timeout` kills it after that).
pub const TIME_CAP_S: u64 = 20;

fn result(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Run `hypdbg args`: (exit status, stdout, stderr); -1 when killed by a signal.
pub fn hypdbg(args: &[&str]) -> (i32, String, String) {
    result(
        Command::new(env!("CARGO_BIN_EXE_hypdbg"))
            .args(args)
            .output()
            .expect("run hypdbg"),
    )
}

/// Run `hypdbg args` under [`MEMORY_CAP_BYTES`] of address space and [`TIME_CAP_S`]: the
/// exit status is `timeout`'s 124 when the time ran out, -1 or 134 when the memory cap
/// killed it.
pub fn hypdbg_capped(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={MEMORY_CAP_BYTES}"))
        .arg("timeout")
        .arg(format!("{TIME_CAP_S}"))
        .arg(env!("CARGO_BIN_EXE_hypdbg"))
        .args(args);
    result(
        cmd.output()
            .expect("run prlimit (util-linux) and timeout (coreutils)"),
    )
}

/// Write `text` to a fresh file in a per-process temporary directory.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hypdbg-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
