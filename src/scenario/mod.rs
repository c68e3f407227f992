//! Scenarios: a VM (flow, physical CPUs), a guest program and a sequence of userspace
//! actions, run on the simulator with every register access recorded.
//!
//! - [`ops`]: the types (a scenario, its actions, their expectations);
//! - [`runner`]: the engine that applies actions to a VM (the validator's entry point is
//!   [`run_assembled`]);
//! - [`source`]: scenario files: TOML with positions, checked before anything runs, every
//!   error as `FILE:LINE:COL: rule`;
//! - [`play`]: `hypdbg run`: a file's actions with their expectations and the invariant
//!   checker, streaming [`trace`] records.
//!
//! The file format is described in `scenarios/README.md`.

pub mod expect;
pub mod ops;
pub mod play;
pub mod runner;
pub mod source;
pub mod trace;

pub use ops::{Expect, Op, Scenario, Value};
pub use runner::{RunOutput, run_assembled, run_scenario};

/// The scenario as a TOML file.
pub fn to_toml(s: &Scenario) -> Result<String, String> {
    toml::to_string_pretty(s).map_err(|e| e.to_string())
}
