//! A userspace that hands KVM raw `struct kvm_guest_debug` blocks, as the kernel's selftests
//! (`debug-exceptions.c`) and kvm-unit-tests do, instead of managing a breakpoint pool:
//! [`RawSession`] remembers the last block KVM accepted and handles KVM_EXIT_DEBUG the way a
//! gdb stub would for it. The validator's sweep drives guests through it.
//!
//! On a debug exit ([`RawSession::handle_debug_exit`]):
//! - a step while SINGLESTEP is set is the session's own: nothing to do;
//! - a breakpoint or watchpoint while USE_HW is set is the session's own: it is stepped over
//!   with the hardware off (one KVM_RUN with ENABLE|SINGLESTEP only) and the block re-armed;
//! - anything else is the guest's own event ([`GuestDebugEvent`]): given back with the
//!   syndrome the guest's EL1 would have recorded when the guest's own gating lets it through
//!   ([`GuestView::deliver`]), otherwise (TDE routed an event the guest had masked) stepped
//!   over with the guest's enabled breakpoints and watchpoints switched off through ONE_REG.

use hypdbg_model::SysReg;
use hypdbg_model::esr::{ESR_ELX_EC_BREAKPT_LOW, ESR_ELX_EC_SOFTSTP_LOW, ESR_ELX_EC_WATCHPT_LOW};
use hypdbg_model::sysreg::DbgBank;
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS, KvmDebugExitArch,
    KvmGuestDebug,
};

use crate::error::{DebugError, VcpuError};
use crate::exit::{GuestDebugEvent, GuestView, exit_syndrome};
use crate::vcpu::{DebugVcpu, RunExit};

/// What [`RawSession::handle_debug_exit`] did with a debug exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawStop {
    /// A step the session asked for (SINGLESTEP).
    Step,
    /// One of the session's breakpoints or watchpoints (USE_HW), stepped over.
    SteppedOver,
    /// The guest's own event, injected with the guest's view of it.
    Reinjected,
    /// The guest's own event that the guest had masked, stepped over with its registers off.
    Suppressed,
}

/// KVM_RUNs a step over an event may take before it is declared stuck.
const STEP_TRIES: usize = 16;

/// The raw KVM_SET_GUEST_DEBUG state of one vcpu and its exit handling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawSession {
    dbg: KvmGuestDebug,
}

impl RawSession {
    /// A session that has set nothing (control 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The block KVM last accepted.
    pub const fn guest_debug(&self) -> &KvmGuestDebug {
        &self.dbg
    }

    /// KVM_SET_GUEST_DEBUG; the block is remembered only if KVM accepts it.
    pub fn set_guest_debug<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        dbg: &KvmGuestDebug,
    ) -> Result<(), VcpuError> {
        vcpu.set_guest_debug(dbg)?;
        self.dbg = *dbg;
        Ok(())
    }

    fn control(&self) -> GuestDebugControl {
        GuestDebugControl::from_bits_truncate(self.dbg.control)
    }

    /// Handle KVM_EXIT_DEBUG (see the module documentation).
    pub fn handle_debug_exit<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        arch: &KvmDebugExitArch,
        flags: u32,
    ) -> Result<RawStop, DebugError> {
        let esr = exit_syndrome(arch, flags);
        let control = self.control();
        let ours = match esr.ec() {
            ESR_ELX_EC_SOFTSTP_LOW => control.contains(GuestDebugControl::SINGLESTEP),
            ESR_ELX_EC_BREAKPT_LOW | ESR_ELX_EC_WATCHPT_LOW => {
                control.contains(GuestDebugControl::USE_HW)
            }
            _ => false,
        };
        if ours {
            if esr.ec() == ESR_ELX_EC_SOFTSTP_LOW {
                return Ok(RawStop::Step);
            }
            // Step over our breakpoint/watchpoint with the hardware off, then re-arm.
            self.step_once(vcpu)?;
            vcpu.set_guest_debug(&self.dbg)?;
            return Ok(RawStop::SteppedOver);
        }
        if let Some(event) = GuestDebugEvent::from_exit(esr, arch)
            && deliver(vcpu, event)?
        {
            return Ok(RawStop::Reinjected);
        }
        // The guest's own breakpoint or watchpoint fired only because MDCR_EL2.TDE routes it
        // to EL2 (the guest has PSTATE.D set, or no KDE): step over it with the guest's
        // registers disabled, then give them back.
        self.step_with_guest_registers_off(vcpu)?;
        vcpu.set_guest_debug(&self.dbg)?;
        Ok(RawStop::Suppressed)
    }

    /// One guest instruction with ENABLE|SINGLESTEP and nothing else. Another debug exit on
    /// the way is the guest's own (USE_HW is off, so only its registers are live): it is
    /// given back with its same-EL class (FAR for watchpoints) without consulting the guest's
    /// gating, as the selftests' exception handlers expect to see it.
    fn step_once<V: DebugVcpu + ?Sized>(&self, vcpu: &mut V) -> Result<(), DebugError> {
        let step = KvmGuestDebug {
            control: (GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP).bits(),
            ..Default::default()
        };
        vcpu.set_guest_debug(&step)?;
        for _ in 0..STEP_TRIES {
            match vcpu.run()? {
                RunExit::Debug { arch, flags } => {
                    let esr = exit_syndrome(&arch, flags);
                    if esr.ec() == ESR_ELX_EC_SOFTSTP_LOW {
                        return Ok(());
                    }
                    let far = (esr.ec() == ESR_ELX_EC_WATCHPT_LOW).then_some(arch.far);
                    vcpu.inject_debug_exception(esr.to_same_el(), far)?;
                }
                other => {
                    return Err(DebugError::StepInterrupted {
                        exit: other.to_string(),
                    });
                }
            }
        }
        Err(DebugError::StepNoProgress)
    }

    /// [`Self::step_once`] with the guest's enabled DBGBCR/DBGWCR switched off through
    /// ONE_REG for the step.
    fn step_with_guest_registers_off<V: DebugVcpu + ?Sized>(
        &self,
        vcpu: &mut V,
    ) -> Result<(), DebugError> {
        let mut saved = Vec::new();
        for (bank, cap) in [
            (DbgBank::Bcr, KVM_CAP_GUEST_DEBUG_HW_BPS),
            (DbgBank::Wcr, KVM_CAP_GUEST_DEBUG_HW_WPS),
        ] {
            let n = usize::try_from(vcpu.check_extension(cap)).unwrap_or(0);
            for i in 0..n.min(hypdbg_model::KVM_ARM_MAX_DBG_REGS) {
                let id = SysReg::Dbg(bank, i as u8).one_reg_id();
                let val = vcpu.get_one_reg(id)?;
                if val & 1 != 0 {
                    vcpu.set_one_reg(id, val & !1)?;
                    saved.push((id, val));
                }
            }
        }
        self.step_once(vcpu)?;
        for (id, val) in saved {
            vcpu.set_one_reg(id, val)?;
        }
        Ok(())
    }
}

/// Give the guest `event` with its own view of it, if its gating lets it through; whether it
/// was injected.
fn deliver<V: DebugVcpu + ?Sized>(vcpu: &mut V, event: GuestDebugEvent) -> Result<bool, VcpuError> {
    match GuestView::read(vcpu)?.deliver(event) {
        Some((esr, far)) => {
            vcpu.inject_debug_exception(esr, far)?;
            Ok(true)
        }
        None => Ok(false),
    }
}
