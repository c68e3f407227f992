//! hypdbg: validate, benchmark and model-check the Linux KVM arm64 debug-register world
//! switch and a VMM's handling of guest debugging.
//!
//! This crate is the command-line tool's library: [`scenario`] runs guest programs and
//! userspace actions on the `hypdbg-hyp` simulator, [`validate`] checks the nine invariants of
//! the design notes on every entry and exit, over an exhaustive sweep and random sequences,
//! for every variant of the kernel's logic; [`bench`](mod@bench) measures what the debug world
//! switch costs (`hypdbg bench` and the criterion benches).

pub mod bench;
pub mod scenario;
pub mod validate;
