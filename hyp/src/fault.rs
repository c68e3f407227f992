//! Faults are values: what would be a hyp panic or an ioctl error on the real thing.

use hypdbg_model::{ModelError, SysReg};

/// Something went wrong at EL2: on hardware, a hyp panic. The run stops with this error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypFault {
    /// MSR/MRS of a register the CPU does not implement (a breakpoint or watchpoint index
    /// above ID_AA64DFR0_EL1.BRPs/WRPs): UNDEFINED at EL2, a hyp panic.
    #[error("hyp panic: UNDEFINED access to {reg} (index {index}) at EL2: {why}")]
    Undefined {
        /// The register.
        reg: SysReg,
        /// The index the code used.
        index: usize,
        /// Why it is UNDEFINED.
        why: &'static str,
    },
    /// A KVM_BUG_ON / BUG_ON in the kernel's logic.
    #[error("KVM_BUG_ON: {0}")]
    Bug(&'static str),
}

impl From<ModelError> for HypFault {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Undefined { reg, why } => {
                let index = reg.bank_index().map_or(0, |(_, n)| usize::from(n));
                HypFault::Undefined { reg, index, why }
            }
            _ => HypFault::Bug("unexpected model error at EL2"),
        }
    }
}

/// An ioctl's error, as the kernel would return it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvmError {
    /// -EINVAL.
    #[error("EINVAL: {0}")]
    Inval(String),
    /// -ENOENT.
    #[error("ENOENT: {0}")]
    NoEnt(String),
    /// -EBUSY.
    #[error("EBUSY: {0}")]
    Busy(String),
    /// -EEXIST.
    #[error("EEXIST: {0}")]
    Exists(String),
    /// -EFAULT (guest memory outside every memory slot).
    #[error("EFAULT: {0}")]
    Fault(String),
    /// -ENOSYS (KVM_RUN: an MMIO access KVM cannot emulate).
    #[error("ENOSYS: {0}")]
    NoSys(String),
    /// -E2BIG: an ID register value the host cannot give the guest.
    #[error("E2BIG: {0}")]
    TooBig(String),
    /// The hypervisor panicked while running the vcpu (the VM is dead).
    #[error("{0}")]
    Hyp(#[from] HypFault),
}
