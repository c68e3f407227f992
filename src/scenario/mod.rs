//! Scenarios: a VM (flow, physical CPUs), a guest program and a sequence of userspace
//! actions with their expectations.
//!
//! - [`ops`]: the types (a scenario, its actions, their expectations);
//! - [`resolve`]: labels and symbols, and the registers ONE_REG reaches;
//! - [`source`]: scenario files: TOML with positions, every error as `FILE:LINE:COL: rule`;
//! - [`lint`]: the checks a file passes before anything runs.
//!
//! Playing a scenario is the driver's (`driver`); `hypdbg run` is `play`. The file
//! format is described in `scenarios/README.md`.

pub mod lint;
pub mod ops;
pub mod resolve;
pub mod source;

pub use ops::{Expect, Op, Scenario, Value};

/// The scenario as a TOML file.
pub fn to_toml(s: &Scenario) -> Result<String, toml::ser::Error> {
    toml::to_string_pretty(s)
}
