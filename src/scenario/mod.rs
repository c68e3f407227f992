//! Scenarios: a VM (flow, physical CPUs), a guest program and a sequence of userspace
//! actions, run on the simulator with every register access recorded.

pub mod ops;
pub mod runner;

pub use ops::{Op, Scenario, Value};
pub use runner::{RunOutput, run_assembled, run_scenario};

/// The scenario as a TOML file.
pub fn to_toml(s: &Scenario) -> Result<String, String> {
    toml::to_string_pretty(s).map_err(|e| e.to_string())
}
