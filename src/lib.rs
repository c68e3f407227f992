//! hypdbg: validate, benchmark and model-check the Linux KVM arm64 debug-register world
//! switch and a VMM's handling of guest debugging.
//!
//! This crate is the command-line tool's library, in layers that only look down:
//!
//! - [`checker`]: the nine invariants, checked event by event (it knows no scenario);
//! - [`scenario`]: the scenario format: actions, expectations, files and their checks;
//! - [`driver`]: the one scenario driver, [`driver::Engine::play`], over a backend (the
//!   simulator, or a real kernel) reporting to observers;
//! - [`play`]: `hypdbg run`: expectations, the checker and the trace as observers;
//! - [`diff`]: `hypdbg diff`: each scenario on the simulator and on a real kernel, compared;
//! - [`real`]: the same scenarios on a real kernel (arm64 KVM nested in QEMU) as a second
//!   backend, and what a userspace observer can check there;
//! - [`validate`]: `hypdbg check`: every variant over the sweep and random sequences;
//! - [`bench`](mod@bench): what the debug world switch costs (`hypdbg bench` and the
//!   criterion benches).

pub mod bench;
pub mod checker;
pub mod diff;
pub mod driver;
pub mod play;
pub mod real;
pub mod scenario;
pub mod validate;
