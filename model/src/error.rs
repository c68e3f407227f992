//! Errors of the architectural model, in the words of the Arm ARM.

use crate::sysreg::SysReg;

/// Everything the model refuses, with the value and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A number that does not parse.
    #[error("'{text}' is not a number (write 0x-hex, 0b-binary or decimal that fits in 64 bits)")]
    BadNumber {
        /// The text as given.
        text: String,
    },
    /// A field or argument out of its range.
    #[error("{what} = {value:#x} is out of range: {rule}")]
    BadField {
        /// What was given.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An ID_AA64DFR0_EL1 value that no architecturally valid CPU reports.
    #[error("ID_AA64DFR0_EL1 = {value:#x} is not architecturally valid: {rule}")]
    InvalidDfr0 {
        /// The raw value.
        value: u64,
        /// The rule it breaks.
        rule: String,
    },
    /// A CPU profile name that is not in the built-in table.
    #[error(
        "unknown CPU '{name}': use one of {known}, 'all', or a raw ID_AA64DFR0_EL1 value such as 0x10305106"
    )]
    UnknownCpu {
        /// The name given.
        name: String,
        /// The known names, comma separated.
        known: String,
    },
    /// A register name that the model does not know.
    #[error("unknown register '{name}': {hint}")]
    UnknownRegister {
        /// The name given.
        name: String,
        /// What would be accepted.
        hint: &'static str,
    },
    /// An access that is UNDEFINED on the hardware (an unimplemented breakpoint or watchpoint
    /// index, a write to a read-only register, a read of a write-only one).
    #[error("access to {reg} is UNDEFINED: {why}")]
    Undefined {
        /// The register accessed.
        reg: SysReg,
        /// Why it is UNDEFINED.
        why: &'static str,
    },
    /// A KVM_{GET,SET}_ONE_REG id that is not one of the debug registers.
    #[error(
        "ONE_REG id {id:#x} is not an arm64 debug system register (ARM64_SYS_REG(2, 0, 0|1, CRm, op2))"
    )]
    UnknownOneRegId {
        /// The id given.
        id: u64,
    },
}
