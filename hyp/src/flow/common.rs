//! What every era shares.

use hypdbg_model::ctrl::{DBG_SPSR_SS, OSLAR_EL1_OSLK, OSLSR_EL1_OSLK};
use hypdbg_model::dfr0::IdAa64dfr0El1;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebugArch};
use hypdbg_model::{DbgBank, SysReg};
use serde::Serialize;

use crate::access::RegAccess;
use crate::context::{KvmCpuContext, KvmVcpu};
use crate::debug_sr;
use crate::fault::{HypFault, KvmError};

/// The raw BRPs/WRPs fields the copy switches on (`nr`: count minus one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct DebugCounts {
    /// Raw BRPs.
    pub brps: u8,
    /// Raw WRPs.
    pub wrps: u8,
}

/// `struct sys_reg_params`: a trapped MSR/MRS being emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SysRegParams {
    /// The register.
    pub reg: SysReg,
    /// MSR (true) or MRS.
    pub is_write: bool,
    /// The value written, or the value read back.
    pub regval: u64,
}

/// What the trap handler did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TrapOutcome {
    /// Emulated: skip the instruction (`kvm_incr_pc`).
    Handled,
    /// UNDEFINED for the guest: inject an undefined-instruction exception.
    Undef,
}

/// `kvm_arch_vcpu_ioctl_set_guest_debug`'s first check: any bit outside
/// KVM_GUESTDBG_VALID_MASK is -EINVAL.
pub fn valid_control(control: u32) -> Result<GuestDebugControl, KvmError> {
    GuestDebugControl::from_bits(control).ok_or_else(|| {
        KvmError::Inval(format!(
            "control {control:#x} has bits outside KVM_GUESTDBG_VALID_MASK {:#x}",
            GuestDebugControl::all().bits()
        ))
    })
}

/// The MDCR_EL2 bits every v5.x+ vcpu runs with: the host's HPMN, and TPM, TPMS, TTRF,
/// TPMCR, TDRA, TDOSA (`kvm_arm_setup_mdcr_el2`'s first two lines); the flow adds TDE/TDA.
pub fn mdcr_el2_base(host_mdcr_el2: u64) -> u64 {
    use hypdbg_model::ctrl::{
        MDCR_EL2_HPMN_MASK, MDCR_EL2_TDOSA, MDCR_EL2_TDRA, MDCR_EL2_TPM, MDCR_EL2_TPMCR,
        MDCR_EL2_TPMS, MDCR_EL2_TTRF,
    };
    (host_mdcr_el2 & MDCR_EL2_HPMN_MASK)
        | MDCR_EL2_TPM
        | MDCR_EL2_TPMS
        | MDCR_EL2_TTRF
        | MDCR_EL2_TPMCR
        | MDCR_EL2_TDRA
        | MDCR_EL2_TDOSA
}

/// The functions every era shares. Default methods are the reference.
pub trait Common: Send + Sync + 'static {
    /// The raw `(BRPs, WRPs)` fields the world switch counts with: `(aa64dfr0 >> 12) & 0xf`
    /// and `(aa64dfr0 >> 20) & 0xf` (era 1/2 debug-sr.c, era 3 `kvm_init_host_debug_data`),
    /// decoded by `arm-sysregs`.
    fn read_debug_counts(&self, id_aa64dfr0: u64) -> DebugCounts {
        let r = IdAa64dfr0El1::from_bits_retain(id_aa64dfr0);
        DebugCounts {
            brps: r.brps(),
            wrps: r.wrps(),
        }
    }

    /// `save_debug(ptr, reg, nr)`.
    fn save_debug<A: RegAccess>(
        &self,
        a: &mut A,
        ptr: &mut [u64; 16],
        reg: DbgBank,
        nr: u8,
    ) -> Result<(), HypFault> {
        debug_sr::save_debug(a, ptr, reg, nr)
    }

    /// `restore_debug(ptr, reg, nr)`.
    fn restore_debug<A: RegAccess>(
        &self,
        a: &mut A,
        ptr: &[u64; 16],
        reg: DbgBank,
        nr: u8,
    ) -> Result<(), HypFault> {
        debug_sr::restore_debug(a, ptr, reg, nr)
    }

    /// `__debug_save_state(dbg, ctxt)`: bcr and bvr (brps), wcr and wvr (wrps), then
    /// MDCCINT_EL1 into the context (hyp/include/hyp/debug-sr.h).
    fn __debug_save_state<A: RegAccess>(
        &self,
        a: &mut A,
        dbg: &mut KvmGuestDebugArch,
        ctxt: &mut KvmCpuContext,
        c: DebugCounts,
    ) -> Result<(), HypFault> {
        self.save_debug(a, &mut dbg.dbg_bcr, DbgBank::Bcr, c.brps)?;
        self.save_debug(a, &mut dbg.dbg_bvr, DbgBank::Bvr, c.brps)?;
        self.save_debug(a, &mut dbg.dbg_wcr, DbgBank::Wcr, c.wrps)?;
        self.save_debug(a, &mut dbg.dbg_wvr, DbgBank::Wvr, c.wrps)?;
        ctxt.sys_regs.mdccint_el1 = a.read_sys(SysReg::MdccintEl1)?;
        Ok(())
    }

    /// `__debug_restore_state(dbg, ctxt)`: the mirror image.
    fn __debug_restore_state<A: RegAccess>(
        &self,
        a: &mut A,
        dbg: &KvmGuestDebugArch,
        ctxt: &KvmCpuContext,
        c: DebugCounts,
    ) -> Result<(), HypFault> {
        self.restore_debug(a, &dbg.dbg_bcr, DbgBank::Bcr, c.brps)?;
        self.restore_debug(a, &dbg.dbg_bvr, DbgBank::Bvr, c.brps)?;
        self.restore_debug(a, &dbg.dbg_wcr, DbgBank::Wcr, c.wrps)?;
        self.restore_debug(a, &dbg.dbg_wvr, DbgBank::Wvr, c.wrps)?;
        a.write_sys(SysReg::MdccintEl1, ctxt.sys_regs.mdccint_el1)
    }

    /// `__activate_traps_common`: keep the host's MDCR_EL2 (all 64 bits, v5.15+) and load the
    /// vcpu's.
    fn __activate_traps_common<A: RegAccess>(
        &self,
        a: &mut A,
        host_mdcr: &mut u64,
        vcpu_mdcr: u64,
    ) {
        *host_mdcr = a.read_mdcr_el2();
        a.write_mdcr_el2(vcpu_mdcr);
    }

    /// `__deactivate_traps_common`: give the host its MDCR_EL2 back.
    fn __deactivate_traps_common<A: RegAccess>(&self, a: &mut A, host_mdcr: u64) {
        a.write_mdcr_el2(host_mdcr);
    }

    /// `demux_wb_reg` / the DBG{B,W}{C,V}R accessors: the slot of `vcpu_debug_state` a trapped
    /// or ONE_REG access to `reg` means, indexed by the encoding's CRm (the 2021 fix).
    fn demux_wb_reg<'a>(&self, dbg: &'a mut KvmGuestDebugArch, reg: SysReg) -> Option<&'a mut u64> {
        let (bank, crm) = reg.bank_index()?;
        dbg.bank_mut(bank).get_mut(usize::from(crm))
    }

    /// `trap_oslar_el1`: a write sets OSLSR_EL1.OSLK from OSLAR_EL1.OSLK (v5.18); a read is
    /// UNDEFINED (write-only register).
    fn trap_oslar_el1(&self, vcpu: &mut KvmVcpu, p: &mut SysRegParams) -> TrapOutcome {
        if !p.is_write {
            return TrapOutcome::Undef;
        }
        let oslsr = &mut vcpu.arch.ctxt.sys_regs.oslsr_el1;
        *oslsr &= !OSLSR_EL1_OSLK;
        if p.regval & OSLAR_EL1_OSLK != 0 {
            *oslsr |= OSLSR_EL1_OSLK;
        }
        TrapOutcome::Handled
    }

    /// `trap_oslsr_el1`: a write is UNDEFINED (read-only register, v5.18 fix); a read returns
    /// the emulated status.
    fn trap_oslsr_el1(&self, vcpu: &mut KvmVcpu, p: &mut SysRegParams) -> TrapOutcome {
        if p.is_write {
            return TrapOutcome::Undef;
        }
        p.regval = vcpu.arch.ctxt.sys_regs.oslsr_el1;
        TrapOutcome::Handled
    }

    /// `kvm_skip_instr`: PC += 4 and advance the single-step state machine (clear SPSR.SS,
    /// v5.0+), so a stepped emulated instruction counts as one.
    fn kvm_skip_instr(&self, vcpu: &mut KvmVcpu) {
        vcpu.arch.ctxt.regs.pc = vcpu.arch.ctxt.regs.pc.wrapping_add(4);
        *vcpu.cpsr_mut() &= !DBG_SPSR_SS;
    }
}
