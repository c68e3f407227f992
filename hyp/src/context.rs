//! The kernel's per-vcpu and per-CPU state, with the kernel's names
//! (arch/arm64/include/asm/kvm_host.h).

use bitflags::bitflags;
use hypdbg_model::SysReg;
use hypdbg_model::ctrl::{
    DBG_SPSR_SS, OSLSR_EL1_OSLK, OSLSR_EL1_OSLM_IMPLEMENTED, VCPU_RESET_PSTATE_EL1,
};
use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebugArch};
use serde::Serialize;

bitflags! {
    /// `vcpu->arch.debug_flags` / the vcpu's single flags, as far as debug is concerned.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
    pub struct DebugFlags: u32 {
        /// Eras 1 and 2: switch the debug registers on this run. `KVM_ARM64_DEBUG_DIRTY` in
        /// `vcpu->arch.debug_flags` (v4.5..v4.17) and `vcpu->arch.flags` (v4.18..v5.19),
        /// `DEBUG_DIRTY` in `iflags` (v6.0+).
        const DEBUG_DIRTY = 1 << 0;
        /// DBG_SS_ACTIVE_PENDING in `sflags` (era 2, v6.1..v6.13): the step state was
        /// active-pending at exit.
        const DBG_SS_ACTIVE_PENDING = 1 << 5;
        /// HOST_SS_ACTIVE_PENDING (era 3): userspace's step state, kept across put/load.
        const HOST_SS_ACTIVE_PENDING = 1 << 6;
        /// GUEST_SS_ACTIVE_PENDING (era 3): the guest's own step state while userspace steps.
        const GUEST_SS_ACTIVE_PENDING = 1 << 7;
        /// INCREMENT_PC: skip the emulated instruction on the next entry (`kvm_incr_pc`).
        const INCREMENT_PC = 1 << 8;
    }
}

/// `enum debug_owner` (era 3), in the kernel's order: FREE, HOST_OWNED, GUEST_OWNED.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum DebugOwner {
    /// VCPU_DEBUG_FREE: nobody uses the debug registers; accesses trap.
    #[default]
    VcpuDebugFree,
    /// VCPU_DEBUG_HOST_OWNED: userspace's registers (or the OS lock) own the hardware.
    VcpuDebugHostOwned,
    /// VCPU_DEBUG_GUEST_OWNED: the guest's registers are loaded; no traps.
    VcpuDebugGuestOwned,
}

impl DebugOwner {
    /// The kernel's spelling.
    pub const fn kernel_name(self) -> &'static str {
        match self {
            DebugOwner::VcpuDebugFree => "VCPU_DEBUG_FREE",
            DebugOwner::VcpuDebugGuestOwned => "VCPU_DEBUG_GUEST_OWNED",
            DebugOwner::VcpuDebugHostOwned => "VCPU_DEBUG_HOST_OWNED",
        }
    }
}

/// What `vcpu->arch.debug_ptr` points at (eras 1 and 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum DebugPtr {
    /// `&vcpu->arch.vcpu_debug_state`.
    #[default]
    VcpuDebugState,
    /// `&vcpu->arch.external_debug_state`.
    ExternalDebugState,
}

/// The EL1 system registers a context holds, as far as this model needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SysRegs {
    /// MDSCR_EL1.
    pub mdscr_el1: u64,
    /// MDCCINT_EL1.
    pub mdccint_el1: u64,
    /// OSLSR_EL1 (guest: the emulated OS lock status).
    pub oslsr_el1: u64,
    /// OSDLR_EL1.
    pub osdlr_el1: u64,
    /// DBGPRCR_EL1.
    pub dbgprcr_el1: u64,
    /// CONTEXTIDR_EL1.
    pub contextidr_el1: u64,
    /// SPSR_EL1.
    pub spsr_el1: u64,
    /// ELR_EL1.
    pub elr_el1: u64,
    /// ESR_EL1.
    pub esr_el1: u64,
    /// FAR_EL1.
    pub far_el1: u64,
    /// DBGVCR32_EL2 (ONE_REG only: `reset_val`, no guest access from AArch64 EL1).
    pub dbgvcr32_el2: u64,
}

impl SysRegs {
    /// `__vcpu_sys_reg(vcpu, reg)`.
    pub fn get(&self, reg: SysReg) -> Option<u64> {
        Some(match reg {
            SysReg::MdscrEl1 => self.mdscr_el1,
            SysReg::MdccintEl1 => self.mdccint_el1,
            SysReg::OslsrEl1 => self.oslsr_el1,
            SysReg::OsdlrEl1 => self.osdlr_el1,
            SysReg::DbgprcrEl1 => self.dbgprcr_el1,
            SysReg::ContextidrEl1 => self.contextidr_el1,
            SysReg::SpsrEl1 => self.spsr_el1,
            SysReg::ElrEl1 => self.elr_el1,
            SysReg::EsrEl1 => self.esr_el1,
            SysReg::FarEl1 => self.far_el1,
            SysReg::Dbgvcr32El2 => self.dbgvcr32_el2,
            _ => return None,
        })
    }
    /// `__vcpu_sys_reg(vcpu, reg) = v`.
    pub fn set(&mut self, reg: SysReg, v: u64) -> bool {
        let slot = match reg {
            SysReg::MdscrEl1 => &mut self.mdscr_el1,
            SysReg::MdccintEl1 => &mut self.mdccint_el1,
            SysReg::OslsrEl1 => &mut self.oslsr_el1,
            SysReg::OsdlrEl1 => &mut self.osdlr_el1,
            SysReg::DbgprcrEl1 => &mut self.dbgprcr_el1,
            SysReg::ContextidrEl1 => &mut self.contextidr_el1,
            SysReg::SpsrEl1 => &mut self.spsr_el1,
            SysReg::ElrEl1 => &mut self.elr_el1,
            SysReg::EsrEl1 => &mut self.esr_el1,
            SysReg::FarEl1 => &mut self.far_el1,
            SysReg::Dbgvcr32El2 => &mut self.dbgvcr32_el2,
            _ => return false,
        };
        *slot = v;
        true
    }
}

/// `struct user_pt_regs`: x0..x30, sp, pc, pstate (the guest's SPSR_EL2 image).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UserPtRegs {
    /// x0..x30.
    pub regs: [u64; 31],
    /// SP_EL0 (`regs.sp` of `struct user_pt_regs`).
    pub sp: u64,
    /// PC.
    pub pc: u64,
    /// PSTATE: M\[3:0\], D (bit 9), SS (bit 21), ...
    pub pstate: u64,
}

impl Default for UserPtRegs {
    fn default() -> Self {
        UserPtRegs {
            regs: [0; 31],
            sp: 0,
            pc: 0,
            pstate: VCPU_RESET_PSTATE_EL1,
        }
    }
}

/// `struct kvm_cpu_context`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmCpuContext {
    /// General-purpose registers and PSTATE.
    pub regs: UserPtRegs,
    /// SP_EL1 (`sp_el1` of `struct kvm_regs`).
    pub sp_el1: u64,
    /// EL1 system registers.
    pub sys_regs: SysRegs,
}

/// `vcpu->arch.guest_debug_preserved`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuestDebugPreserved {
    /// The guest's own MDSCR_EL1.
    pub mdscr_el1: u64,
    /// The guest's own PSTATE.SS (v6.1+).
    pub pstate_ss: bool,
}

/// An exception KVM will inject into the guest on the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PendingException {
    /// The syndrome the guest's EL1 sees.
    pub esr: Esr,
    /// FAR_EL1, for watchpoints.
    pub far: Option<u64>,
}

/// `struct kvm_vcpu_arch`, the debug-related part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmVcpuArch {
    /// The guest's context.
    pub ctxt: KvmCpuContext,
    /// Debug flags.
    pub debug_flags: DebugFlags,
    /// Era 3: who owns the debug registers.
    pub debug_owner: DebugOwner,
    /// The guest's own breakpoints and watchpoints.
    pub vcpu_debug_state: KvmGuestDebugArch,
    /// Userspace's, from KVM_SET_GUEST_DEBUG with USE_HW.
    pub external_debug_state: KvmGuestDebugArch,
    /// Eras 1 and 2: the host's registers while this vcpu runs.
    pub host_debug_state: KvmGuestDebugArch,
    /// Eras 1 and 2: the block the hyp switches to.
    pub debug_ptr: DebugPtr,
    /// Eras 1 and 2: the guest's MDSCR_EL1 and PSTATE.SS while userspace debugs.
    pub guest_debug_preserved: GuestDebugPreserved,
    /// Era 3: the MDSCR_EL1 the guest runs with while the host owns debug.
    pub external_mdscr_el1: u64,
    /// The MDCR_EL2 value for this vcpu.
    pub mdcr_el2: u64,
    /// Eras 1 and 2 (v5.15 to v6.9): the host's MDCR_EL2 while this vcpu runs.
    pub mdcr_el2_host: u64,
    /// An exception to inject on the next entry.
    pub pending_exception: Option<PendingException>,
}

/// `struct kvm_vcpu`, the debug-related part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmVcpu {
    /// vcpu index.
    pub vcpu_id: usize,
    /// `vcpu->guest_debug`: the KVM_GUESTDBG_* control userspace set.
    pub guest_debug: GuestDebugControl,
    /// Architecture state.
    pub arch: KvmVcpuArch,
    /// `vcpu->run->debug.arch`: the part of `struct kvm_run`'s exit union a debug exit
    /// fills. It lives as long as the vcpu: a field an exit does not write keeps what the
    /// union held (`far` is written for watchpoints only).
    pub run_debug_arch: hypdbg_model::uapi::KvmDebugExitArch,
    /// `kvm_read_vm_id_reg(vcpu->kvm, SYS_ID_AA64DFR0_EL1)`: the VM's ID_AA64DFR0_EL1, what the
    /// guest reads (sanitised; WRPs possibly lowered by userspace, v6.7+). The world switch
    /// never uses it: it moves the hardware's registers.
    pub id_aa64dfr0_el1: u64,
}

impl KvmVcpu {
    /// A vcpu after KVM_ARM_VCPU_INIT: registers reset (OSLSR_EL1 = OSLM implemented,
    /// unlocked), PSTATE = EL1h with D, A, I, F masked (`VCPU_RESET_PSTATE_EL1`).
    pub fn new(vcpu_id: usize) -> Self {
        let mut v = KvmVcpu {
            vcpu_id,
            ..Default::default()
        };
        v.arch.ctxt.sys_regs.oslsr_el1 = OSLSR_EL1_OSLM_IMPLEMENTED;
        v
    }
    /// `*vcpu_cpsr(vcpu)`.
    pub fn cpsr(&self) -> u64 {
        self.arch.ctxt.regs.pstate
    }
    /// `*vcpu_cpsr(vcpu)`, mutable.
    pub fn cpsr_mut(&mut self) -> &mut u64 {
        &mut self.arch.ctxt.regs.pstate
    }
    /// `vcpu_read_sys_reg(vcpu, MDSCR_EL1)`.
    pub fn mdscr_el1(&self) -> u64 {
        self.arch.ctxt.sys_regs.mdscr_el1
    }
    /// `kvm_vcpu_os_lock_enabled(vcpu)`: the guest's emulated OSLSR_EL1.OSLK.
    pub fn os_lock_enabled(&self) -> bool {
        self.arch.ctxt.sys_regs.oslsr_el1 & OSLSR_EL1_OSLK != 0
    }
    /// `vcpu_get_flag` on the debug flags.
    pub fn flag(&self, f: DebugFlags) -> bool {
        self.arch.debug_flags.contains(f)
    }
    /// `vcpu_set_flag` / `vcpu_clear_flag`.
    pub fn set_flag(&mut self, f: DebugFlags, on: bool) {
        self.arch.debug_flags.set(f, on);
    }
    /// PSTATE.SS in the saved PSTATE.
    pub fn pstate_ss(&self) -> bool {
        self.cpsr() & DBG_SPSR_SS != 0
    }
    /// Set or clear PSTATE.SS in the saved PSTATE.
    pub fn set_pstate_ss(&mut self, on: bool) {
        if on {
            *self.cpsr_mut() |= DBG_SPSR_SS;
        } else {
            *self.cpsr_mut() &= !DBG_SPSR_SS;
        }
    }
}

/// `kvm_host_data.host_debug_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostDebugState {
    /// Era 3: the host's breakpoint/watchpoint registers while a guest runs on this CPU.
    pub regs: KvmGuestDebugArch,
    /// The host's MDCR_EL2 while a guest runs (v6.10+ location).
    pub mdcr_el2: u64,
}

/// `struct kvm_host_data`: per physical CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmHostData {
    /// The host's EL1 context while a guest runs on this CPU.
    pub host_ctxt: KvmCpuContext,
    /// The host's debug registers (era 3) and MDCR_EL2.
    pub host_debug_state: HostDebugState,
    /// Era 3: raw BRPs, read once at init (`kvm_init_host_debug_data`).
    pub debug_brps: u8,
    /// Era 3: raw WRPs.
    pub debug_wrps: u8,
}
