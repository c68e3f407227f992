//! What the simulator records while a VM runs in checking mode: the raw material of the
//! validator's invariants and of `hypdbg run --trace`.

use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebugArch};
use hypdbg_model::{El, SysReg};
use serde::Serialize;

use crate::access::AccessRecord;
use crate::context::{DebugFlags, DebugOwner, DebugPtr};
use crate::pcpu::HostSnapshot;

/// Something the guest did or saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestEvent {
    /// An instruction completed (recorded only when instruction tracing is on).
    Executed {
        /// Its address.
        pc: u64,
        /// Its disassembly.
        insn: String,
    },
    /// The guest took an exception to its EL1 (its runtime logs it and applies its policy).
    Exception {
        /// ESR_EL1 as the guest sees it.
        esr: Esr,
        /// ELR_EL1: the preferred return address.
        elr: u64,
        /// FAR_EL1 for watchpoints.
        far: Option<u64>,
        /// The EL the exception came from.
        from: El,
    },
    /// MSR of a system register (trapped and emulated, or straight to the hardware).
    SysRegWrite {
        /// The register.
        reg: SysReg,
        /// The value.
        value: u64,
        /// Whether it trapped to EL2.
        trapped: bool,
    },
    /// MRS of a system register and the value the guest got.
    SysRegRead {
        /// The register.
        reg: SysReg,
        /// The value.
        value: u64,
        /// Whether it trapped to EL2.
        trapped: bool,
    },
    /// A data access completed.
    Access {
        /// Lowest byte.
        address: u64,
        /// Bytes.
        size: u8,
        /// Store or load.
        is_store: bool,
    },
    /// The architecture permits several outcomes here; the model took "no debug event".
    Unpredictable {
        /// The PC.
        pc: u64,
        /// The Arm ARM rule.
        rule: String,
    },
}

/// A guest data access KVM forwards to userspace as MMIO: the stage-2 abort's syndrome
/// (ESR_EL2.ISV=1: SAS, SRT, WnR) and FAR_EL2/HPFAR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mmio {
    /// The guest-physical address.
    pub addr: u64,
    /// Access size in bytes (SAS).
    pub len: u8,
    /// A store's data (WnR = 1), or `None` for a load.
    pub data: Option<u64>,
    /// The transfer register (SRT): a load's destination.
    pub rt: u8,
}

impl Mmio {
    /// An access of `len` bytes at `addr`: a store of `data`, or a load into `rt`.
    pub fn new(addr: u64, len: u8, data: Option<u64>, rt: u8) -> Self {
        let mask = if len >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * u32::from(len))) - 1
        };
        Mmio {
            addr,
            len,
            data: data.map(|d| d & mask),
            rt,
        }
    }

    /// Whether it is a store.
    pub fn is_write(&self) -> bool {
        self.data.is_some()
    }
}

/// Why a guest run segment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// EC 0x18: a trapped MSR/MRS.
    SysRegTrap {
        /// ESR_EL2.
        esr: Esr,
    },
    /// A debug exception routed to EL2 (MDCR_EL2.TDE).
    Debug {
        /// ESR_EL2.
        esr: Esr,
        /// FAR_EL2.
        far: u64,
    },
    /// HVC.
    Hvc {
        /// Immediate.
        imm: u16,
    },
    /// A host interrupt.
    Irq,
    /// The guest fetched from a page with no code: the program ended.
    ProgramEnd {
        /// The PC.
        pc: u64,
    },
    /// The instruction budget of this KVM_RUN ran out.
    Budget,
    /// A data access outside every memory slot with a valid syndrome (ISV=1): KVM_EXIT_MMIO.
    Mmio(Mmio),
    /// A data access outside every memory slot without a valid syndrome (LDP/STP, DC ZVA):
    /// KVM cannot emulate it and KVM_RUN fails with -ENOSYS.
    MmioNoSyndrome {
        /// The address.
        addr: u64,
    },
}

/// The debug-relevant state at a world-switch boundary, as the flow left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowState {
    /// `vcpu->guest_debug`.
    pub guest_debug: GuestDebugControl,
    /// `debug_flags`.
    pub debug_flags: DebugFlags,
    /// Era 3 owner.
    pub debug_owner: DebugOwner,
    /// Eras 1/2 `debug_ptr`.
    pub debug_ptr: DebugPtr,
    /// `vcpu->arch.mdcr_el2`.
    pub mdcr_el2: u64,
    /// The guest's own MDSCR_EL1 (`__vcpu_sys_reg(vcpu, MDSCR_EL1)`).
    pub guest_mdscr_el1: u64,
    /// The guest's emulated OS lock.
    pub os_lock: bool,
    /// The guest's saved PSTATE.
    pub pstate: u64,
}

/// The live debug registers while the guest runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveState {
    /// Registers, MDSCR_EL1, MDCCINT_EL1, CONTEXTIDR_EL1, MDCR_EL2.
    pub regs: HostSnapshot,
}

/// One event of a simulation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// KVM_SET_GUEST_DEBUG.
    SetGuestDebug {
        /// vcpu.
        vcpu: usize,
        /// control.
        control: u32,
        /// The block userspace passed.
        arch: Box<KvmGuestDebugArch>,
        /// Whether KVM accepted it.
        ok: bool,
    },
    /// KVM_SET_ONE_REG of a debug register (or MDSCR/MDCCINT/OSLSR).
    SetOneReg {
        /// vcpu.
        vcpu: usize,
        /// The register.
        reg: SysReg,
        /// The value.
        value: u64,
    },
    /// KVM_GET_ONE_REG.
    GetOneReg {
        /// vcpu.
        vcpu: usize,
        /// The register.
        reg: SysReg,
        /// The value KVM returned.
        value: u64,
    },
    /// `kvm_arch_vcpu_load` on a physical CPU.
    Load {
        /// vcpu.
        vcpu: usize,
        /// physical CPU.
        pcpu: usize,
        /// The flow's state after load.
        state: FlowState,
        /// VHE: the host's registers before the load wrote MDCR_EL2 and the EL1 registers.
        host: Option<Box<crate::pcpu::HostSnapshot>>,
    },
    /// `kvm_arch_vcpu_put`.
    Put {
        /// vcpu.
        vcpu: usize,
        /// physical CPU.
        pcpu: usize,
        /// The state userspace sees until the next run.
        state: FlowState,
        /// VHE: the host's registers after the put gave MDCR_EL2 and the EL1 registers back.
        host: Option<Box<crate::pcpu::HostSnapshot>>,
    },
    /// Userspace made the guest take an exception (a reinjected debug event).
    Inject {
        /// vcpu.
        vcpu: usize,
        /// The syndrome the guest's EL1 sees.
        esr: Esr,
        /// FAR_EL1.
        far: Option<u64>,
    },
    /// The hyp is about to enter the guest: setup is done.
    BeforeEntry {
        /// vcpu.
        vcpu: usize,
        /// physical CPU.
        pcpu: usize,
        /// The host's registers before the switch.
        host: Box<HostSnapshot>,
        /// The flow's state after setup.
        state: FlowState,
    },
    /// The guest is running: the switch to the guest is done.
    Entered {
        /// vcpu.
        vcpu: usize,
        /// physical CPU.
        pcpu: usize,
        /// Live registers the guest runs with.
        live: Box<LiveState>,
        /// Register accesses of the switch (entry side).
        accesses: Vec<AccessRecord>,
    },
    /// Something the guest did.
    Guest {
        /// vcpu.
        vcpu: usize,
        /// What.
        what: GuestEvent,
    },
    /// The guest stopped running; the switch back to the host is done.
    Exited {
        /// vcpu.
        vcpu: usize,
        /// physical CPU.
        pcpu: usize,
        /// Why.
        reason: ExitReason,
        /// Guest instructions completed in this segment (the EL1 handler counts as one).
        instructions: u64,
        /// The host's registers after the switch.
        host: Box<HostSnapshot>,
        /// Register accesses of the switch (exit side).
        accesses: Vec<AccessRecord>,
        /// The flow's state after the exit switch.
        state: FlowState,
    },
    /// The hyp faulted (a hyp panic): the VM is dead.
    HypPanic {
        /// vcpu.
        vcpu: usize,
        /// physical CPU.
        pcpu: usize,
        /// The fault, in words.
        fault: String,
        /// Register accesses up to and including the faulting one.
        accesses: Vec<AccessRecord>,
    },
    /// `kvm_handle_mmio_return`: KVM_RUN completed the MMIO access of the last exit (a load's
    /// data written to its register) and will skip the instruction on entry: an emulated
    /// instruction.
    MmioComplete {
        /// vcpu.
        vcpu: usize,
        /// The access.
        mmio: Mmio,
        /// The value a load got (a store's value for a store).
        value: u64,
    },
    /// A trapped access emulated by KVM.
    Trap {
        /// vcpu.
        vcpu: usize,
        /// The register.
        reg: Option<SysReg>,
        /// MSR.
        is_write: bool,
        /// The value written or read back.
        value: u64,
        /// UNDEF injected instead.
        undef: bool,
    },
    /// KVM_RUN returned to userspace.
    UserExit {
        /// vcpu.
        vcpu: usize,
        /// The exit, in words.
        exit: String,
    },
}
