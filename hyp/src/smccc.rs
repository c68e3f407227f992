//! KVM's HVC handling: `kvm_smccc_call_handler` (arch/arm64/kvm/hypercalls.c) and the part of
//! `kvm_psci_call` (psci.c) a hypdbg guest meets. KVM answers an SMCCC call itself and resumes
//! the guest; only the SMCCC filter (v6.4+) forwards a call to userspace, and PSCI
//! SYSTEM_OFF/RESET stop the VM with a system event.

use hypdbg_model::guest_abi::{
    ARM_SMCCC_VERSION_FUNC_ID, PSCI_0_2_FN_PSCI_VERSION, PSCI_0_2_FN_SYSTEM_OFF,
    PSCI_0_2_FN_SYSTEM_RESET, SMCCC_RET_NOT_SUPPORTED,
};

use crate::context::KvmVcpu;
use crate::fault::KvmError;
use crate::vm::{KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, SmcccAction};

/// ARM_SMCCC_VERSION_1_1, what KVM answers SMCCC_VERSION with.
pub const ARM_SMCCC_VERSION_1_1: u64 = 0x1_0001;
/// KVM_ARM_PSCI_1_1, the PSCI version of a vcpu with KVM_ARM_VCPU_PSCI_0_2 (v5.18..v6.12;
/// measured: 6.18 and 7.3 answer 1.3, `0x1_0003`, KVM_ARM_PSCI_LATEST having moved on). The
/// simulator answers 1.1 in every era: scenarios that compare with a real kernel ask
/// SMCCC_VERSION, which is 1.1 on all of them.
pub const KVM_ARM_PSCI_1_1: u64 = 0x1_0001;
/// PSCI_RET_INTERNAL_FAILURE (-6): what x0 holds if userspace resumes a vcpu after
/// SYSTEM_OFF.
pub const PSCI_RET_INTERNAL_FAILURE: u64 = -6i64 as u64;

/// What the HVC handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvcOutcome {
    /// KVM answered in x0..x3; the guest resumes.
    Resume,
    /// `kvm_prepare_hypercall_exit`: KVM_EXIT_HYPERCALL with this function id.
    Forward(u64),
    /// `kvm_prepare_system_event`: every vcpu stops, KVM_EXIT_SYSTEM_EVENT of this type.
    SystemEvent(u32),
}

/// The SMCCC filter: ranges of function ids and what KVM does with them
/// (KVM_ARM_VM_SMCCC_FILTER).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmcccFilter {
    ranges: Vec<(u32, u32, SmcccAction)>,
}

impl SmcccFilter {
    /// `kvm_smccc_set_filter`: add `[base, base + nr)`. EINVAL for an empty or wrapping
    /// range, EEXIST for one that overlaps an earlier range; nothing changes on error.
    pub fn insert(&mut self, base: u32, nr: u32, action: SmcccAction) -> Result<(), KvmError> {
        let Some(end) = base.checked_add(nr).filter(|_| nr > 0) else {
            return Err(KvmError::Inval(format!(
                "SMCCC filter base {base:#x} nr_functions {nr}: the range is empty or wraps past 2^32"
            )));
        };
        if let Some((b, n, _)) = self
            .ranges
            .iter()
            .find(|(b, n, _)| base < b + n && *b < end)
        {
            return Err(KvmError::Exists(format!(
                "SMCCC filter [{base:#x}, {end:#x}) overlaps [{b:#x}, {:#x})",
                b + n
            )));
        }
        self.ranges.push((base, nr, action));
        Ok(())
    }

    /// `kvm_smccc_get_action`: the action for `func_id` (HANDLE when no range holds it).
    pub fn action(&self, func_id: u32) -> SmcccAction {
        self.ranges
            .iter()
            .find(|(b, n, _)| func_id >= *b && func_id - b < *n)
            .map_or(SmcccAction::Handle, |r| r.2)
    }
}

/// `smccc_set_retval`: x0..x3.
fn set_retval(v: &mut KvmVcpu, vals: [u64; 4]) {
    v.arch.ctxt.regs.regs[..4].copy_from_slice(&vals);
}

/// `kvm_smccc_call_handler` for the HVC the guest just made (its PC is already past it).
pub fn kvm_smccc_call_handler(v: &mut KvmVcpu, filter: &SmcccFilter) -> HvcOutcome {
    // smccc_get_function: the low 32 bits of x0.
    let func_id = v.arch.ctxt.regs.regs[0] as u32;
    match filter.action(func_id) {
        SmcccAction::ForwardToUser => return HvcOutcome::Forward(u64::from(func_id)),
        SmcccAction::Deny => {
            set_retval(v, [SMCCC_RET_NOT_SUPPORTED, 0, 0, 0]);
            return HvcOutcome::Resume;
        }
        SmcccAction::Handle => {}
    }
    let (x0, outcome) = match u64::from(func_id) {
        ARM_SMCCC_VERSION_FUNC_ID => (ARM_SMCCC_VERSION_1_1, HvcOutcome::Resume),
        // kvm_psci_0_2_call
        PSCI_0_2_FN_PSCI_VERSION => (KVM_ARM_PSCI_1_1, HvcOutcome::Resume),
        PSCI_0_2_FN_SYSTEM_OFF => (
            PSCI_RET_INTERNAL_FAILURE,
            HvcOutcome::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN),
        ),
        PSCI_0_2_FN_SYSTEM_RESET => (
            PSCI_RET_INTERNAL_FAILURE,
            HvcOutcome::SystemEvent(KVM_SYSTEM_EVENT_RESET),
        ),
        _ => (SMCCC_RET_NOT_SUPPORTED, HvcOutcome::Resume),
    };
    set_retval(v, [x0, 0, 0, 0]);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypdbg_model::guest_abi::HYPDBG_FORWARDED_FID;

    fn call(fid: u64, filter: &SmcccFilter) -> (HvcOutcome, [u64; 4]) {
        let mut v = KvmVcpu::new(0);
        v.arch.ctxt.regs.regs[..4].copy_from_slice(&[fid, 1, 2, 3]);
        let o = kvm_smccc_call_handler(&mut v, filter);
        let mut r = [0; 4];
        r.copy_from_slice(&v.arch.ctxt.regs.regs[..4]);
        (o, r)
    }

    #[test]
    fn unknown_calls_return_not_supported_and_zero_x1_to_x3() {
        let f = SmcccFilter::default();
        assert_eq!(
            call(0x1234, &f),
            (HvcOutcome::Resume, [SMCCC_RET_NOT_SUPPORTED, 0, 0, 0])
        );
        assert_eq!(
            call(PSCI_0_2_FN_SYSTEM_OFF, &f),
            (
                HvcOutcome::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN),
                [PSCI_RET_INTERNAL_FAILURE, 0, 0, 0]
            )
        );
        assert_eq!(call(ARM_SMCCC_VERSION_FUNC_ID, &f).1[0], 0x1_0001);
    }

    #[test]
    fn the_filter_forwards_denies_and_refuses_overlaps() {
        let mut f = SmcccFilter::default();
        let fid = HYPDBG_FORWARDED_FID as u32;
        f.insert(fid, 1, SmcccAction::ForwardToUser).unwrap();
        let (o, regs) = call(HYPDBG_FORWARDED_FID, &f);
        assert_eq!(o, HvcOutcome::Forward(HYPDBG_FORWARDED_FID));
        assert_eq!(regs, [HYPDBG_FORWARDED_FID, 1, 2, 3], "registers untouched");
        f.insert(0x100, 0x10, SmcccAction::Deny).unwrap();
        assert_eq!(call(0x10f, &f).1[0], SMCCC_RET_NOT_SUPPORTED);
        let before = f.clone();
        assert!(matches!(
            f.insert(0x108, 0x20, SmcccAction::Handle),
            Err(KvmError::Exists(_))
        ));
        assert!(matches!(
            f.insert(u32::MAX, 2, SmcccAction::Handle),
            Err(KvmError::Inval(_))
        ));
        assert!(matches!(
            f.insert(5, 0, SmcccAction::Handle),
            Err(KvmError::Inval(_))
        ));
        assert_eq!(f, before, "a refused range changes nothing");
    }
}
