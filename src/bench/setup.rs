//! What the benchmarks run: a debug world-switch round trip through the real flow code on a
//! vcpu set up clean or dirty, the `copy_from_slice` baseline that moves the same bytes, a
//! flow whose copy is a loop instead of the kernel's fall-through, and a tiny VM for whole
//! KVM_RUNs. Shared by `hypdbg bench` and the criterion benches (`benches/`).

use std::hint::black_box;

use hypdbg_hyp::access::{AccessRecord, CheckingAccess, PhysRegs, PlainAccess, RegAccess};
use hypdbg_hyp::context::{DebugFlags, KvmHostData, KvmVcpu};
use hypdbg_hyp::debug_sr;
use hypdbg_hyp::flow::{
    Common, DebugDirty, DynFlow, Era1, Era1Engine, Era1Reference, Era2, Era2Engine, Era2Reference,
    Era3, Era3Engine, Era3Reference, EraEngine,
};
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::pcpu::Pcpu;
use hypdbg_hyp::vm::AccessMode;
use hypdbg_hyp::workloads::CODE_BASE;
use hypdbg_hyp::{Era, HypFault, Vm, VmConfig};
use hypdbg_model::ctrl::{DBG_MDSCR_KDE, DBG_MDSCR_MDE};
use hypdbg_model::{DbgBank, DebugFeatures, KVM_ARM_MAX_DBG_REGS, SysReg};
use serde::Serialize;

use super::BenchError;

/// Whether the round trip has debug state to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchState {
    /// Nobody uses the debug registers: the switch moves nothing (era 1/2 DEBUG_DIRTY clear,
    /// era 3 VCPU_DEBUG_FREE).
    Clean,
    /// The guest uses its debug registers (MDSCR_EL1.MDE|KDE): era 1/2 DEBUG_DIRTY, era 3
    /// VCPU_DEBUG_GUEST_OWNED. Every implemented register is saved and restored both ways.
    Dirty,
}

impl SwitchState {
    /// Both.
    pub const ALL: [SwitchState; 2] = [SwitchState::Clean, SwitchState::Dirty];
    /// `clean` or `dirty`.
    pub const fn name(self) -> &'static str {
        match self {
            SwitchState::Clean => "clean",
            SwitchState::Dirty => "dirty",
        }
    }
}

/// How `save_debug` / `restore_debug` copy the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyShape {
    /// The kernel's `switch (nr)` with fall-through (the reference flows).
    FallThrough,
    /// A counted loop ([`LoopCopy`]).
    Loop,
}

impl CopyShape {
    /// `fall_through` or `loop`.
    pub const fn name(self) -> &'static str {
        match self {
            CopyShape::FallThrough => "fall_through",
            CopyShape::Loop => "loop",
        }
    }
}

/// The three eras, in order.
pub const ERAS: [Era; 3] = [Era::One, Era::Two, Era::Three];

/// A flow of every era whose `save_debug` / `restore_debug` are
/// [`debug_sr::save_debug_loop`] / [`debug_sr::restore_debug_loop`] instead of the
/// fall-through; everything else is the reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopCopy;

impl Common for LoopCopy {
    #[inline(always)]
    fn save_debug<A: RegAccess>(
        &self,
        a: &mut A,
        ptr: &mut [u64; 16],
        reg: DbgBank,
        nr: u8,
    ) -> Result<(), HypFault> {
        debug_sr::save_debug_loop(a, ptr, reg, nr)
    }
    #[inline(always)]
    fn restore_debug<A: RegAccess>(
        &self,
        a: &mut A,
        ptr: &[u64; 16],
        reg: DbgBank,
        nr: u8,
    ) -> Result<(), HypFault> {
        debug_sr::restore_debug_loop(a, ptr, reg, nr)
    }
}
impl DebugDirty for LoopCopy {}
impl Era1 for LoopCopy {}
impl Era2 for LoopCopy {}
impl Era3 for LoopCopy {}

/// One CPU, one vcpu and one engine, set up so that `switch_to_guest` + `switch_to_host` is
/// a steady-state round trip: save host, restore guest, save guest, restore host (dirty), or
/// nothing moved (clean).
#[derive(Clone, Debug)]
pub struct RoundTrip<E> {
    engine: E,
    vcpu: KvmVcpu,
    host: KvmHostData,
    regs: PhysRegs,
    /// Flags `kvm_arm_setup_debug` would set before each entry (era 2 DEBUG_DIRTY, which the
    /// exit clears).
    rearm: DebugFlags,
}

impl<E: EraEngine> RoundTrip<E> {
    /// A CPU of `features` whose host uses its own breakpoints ([`Pcpu::new`]), and a vcpu
    /// with distinctive breakpoint/watchpoint values, `state` as asked.
    pub fn new(engine: E, features: DebugFeatures, state: SwitchState) -> Self {
        let pcpu = Pcpu::new(0, features);
        let mut host = pcpu.host_data;
        engine.init_host_data(&mut host, features.raw());
        let mut vcpu = KvmVcpu::new(0);
        let d = &mut vcpu.arch.vcpu_debug_state;
        for n in 0..KVM_ARM_MAX_DBG_REGS {
            d.dbg_bcr[n] = 0x1e5;
            d.dbg_bvr[n] = 0x4000_0000 + 4 * n as u64;
            d.dbg_wcr[n] = 0x1ff5;
            d.dbg_wvr[n] = 0x8_0000 + 8 * n as u64;
        }
        vcpu.arch.ctxt.sys_regs.mdccint_el1 = 1 << 30;
        let mut rearm = DebugFlags::empty();
        if state == SwitchState::Dirty {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 = DBG_MDSCR_MDE | DBG_MDSCR_KDE;
            if engine.era() != Era::Three {
                rearm = DebugFlags::DEBUG_DIRTY;
            }
        }
        // vcpu_load (era 3 decides the owner from MDSCR_EL1 here) and the per-entry setup.
        engine.vcpu_load(&mut vcpu, pcpu.mdcr_el2_boot);
        engine.setup_debug(&mut vcpu, pcpu.mdcr_el2_boot);
        RoundTrip {
            engine,
            vcpu,
            host,
            regs: pcpu.regs,
            rearm,
        }
    }

    /// One round trip with [`PlainAccess`]: the hyp's debug switch on entry, then on exit.
    #[inline(always)]
    pub fn round_trip(&mut self) -> Result<(), HypFault> {
        let RoundTrip {
            engine,
            vcpu,
            host,
            regs,
            rearm,
        } = self;
        vcpu.arch.debug_flags |= *rearm;
        let mut a = PlainAccess::new(regs);
        engine.switch_to_guest(&mut a, vcpu, host)?;
        engine.switch_to_host(&mut a, vcpu, host)
    }

    /// One round trip with [`CheckingAccess`]: the same code, every access recorded.
    pub fn checking_round_trip(&mut self) -> Result<Vec<AccessRecord>, HypFault> {
        let RoundTrip {
            engine,
            vcpu,
            host,
            regs,
            rearm,
        } = self;
        vcpu.arch.debug_flags |= *rearm;
        let mut log = Vec::with_capacity(160);
        let mut a = CheckingAccess::new(regs, &mut log);
        engine.switch_to_guest(&mut a, vcpu, host)?;
        engine.switch_to_host(&mut a, vcpu, host)?;
        Ok(log)
    }

    /// `iters` round trips; the state is laundered through [`black_box`] before each one so
    /// that nothing can be hoisted out of the loop or proved idempotent.
    #[inline(never)]
    pub fn run(&mut self, iters: u64) -> Result<(), HypFault> {
        for _ in 0..iters {
            let this = black_box(&mut *self);
            this.round_trip()?;
        }
        Ok(())
    }

    /// The physical registers.
    pub fn regs(&self) -> &PhysRegs {
        &self.regs
    }

    /// The vcpu.
    pub fn vcpu(&self) -> &KvmVcpu {
        &self.vcpu
    }
}

/// The physical limit of the same work in this simulator: the bytes a dirty round trip moves
/// (`2 * BRPs + 2 * WRPs` registers plus MDCCINT_EL1, four times), moved by four
/// `copy_from_slice` calls between a "register file" buffer and the host and guest save
/// areas, in the switch's order.
#[derive(Clone, Debug)]
pub struct CopyBaseline {
    n: usize,
    regs: [u64; Self::MAX],
    host: [u64; Self::MAX],
    guest: [u64; Self::MAX],
}

impl CopyBaseline {
    /// The largest state: 16 of each bank plus MDCCINT_EL1.
    pub const MAX: usize = 4 * KVM_ARM_MAX_DBG_REGS + 1;

    /// The registers one phase of a dirty switch of `features` moves.
    pub fn registers(features: &DebugFeatures) -> usize {
        2 * features.num_brps() + 2 * features.num_wrps() + 1
    }

    /// A baseline for `features`.
    pub fn new(features: &DebugFeatures) -> Self {
        let n = Self::registers(features).min(Self::MAX);
        let mut regs = [0u64; Self::MAX];
        let mut guest = [0u64; Self::MAX];
        for i in 0..Self::MAX {
            regs[i] = 0xffff_8000_1000_0000 + 8 * i as u64;
            guest[i] = 0x4000_0000 + 8 * i as u64;
        }
        CopyBaseline {
            n,
            regs,
            host: [0; Self::MAX],
            guest,
        }
    }

    /// Bytes moved per round trip.
    pub fn bytes(&self) -> usize {
        4 * self.n * 8
    }

    /// One round trip: save host, restore guest, save guest, restore host.
    #[inline(always)]
    pub fn round_trip(&mut self) {
        let n = self.n.min(Self::MAX);
        let CopyBaseline {
            regs, host, guest, ..
        } = self;
        let (regs, host, guest) = (&mut regs[..n], &mut host[..n], &mut guest[..n]);
        host.copy_from_slice(regs);
        regs.copy_from_slice(guest);
        guest.copy_from_slice(regs);
        regs.copy_from_slice(host);
    }

    /// `iters` round trips, laundered through [`black_box`] like [`RoundTrip::run`].
    #[inline(never)]
    pub fn run(&mut self, iters: u64) {
        for _ in 0..iters {
            black_box(&mut *self).round_trip();
        }
    }
}

/// Something the report can time in batches.
pub trait Workload {
    /// Run `iters` iterations.
    fn run_batch(&mut self, iters: u64) -> Result<(), BenchError>;
    /// The accesses of one iteration, recorded by the checking implementation (`None` when
    /// the workload is not a world switch).
    fn accesses(&mut self) -> Result<Option<Vec<AccessRecord>>, BenchError>;
}

impl<E: EraEngine + Clone> Workload for RoundTrip<E> {
    fn run_batch(&mut self, iters: u64) -> Result<(), BenchError> {
        self.run(iters).map_err(BenchError::Hyp)
    }
    fn accesses(&mut self) -> Result<Option<Vec<AccessRecord>>, BenchError> {
        // On a copy, so the timed state is untouched.
        let mut c = self.clone();
        c.checking_round_trip().map(Some).map_err(BenchError::Hyp)
    }
}

impl Workload for CopyBaseline {
    fn run_batch(&mut self, iters: u64) -> Result<(), BenchError> {
        self.run(iters);
        Ok(())
    }
    fn accesses(&mut self) -> Result<Option<Vec<AccessRecord>>, BenchError> {
        Ok(None)
    }
}

/// A boxed round trip of `era`'s reference flow (or its [`LoopCopy`] twin).
pub fn round_trip(
    era: Era,
    shape: CopyShape,
    features: DebugFeatures,
    state: SwitchState,
) -> Box<dyn Workload + Send> {
    match (era, shape) {
        (Era::One, CopyShape::FallThrough) => {
            Box::new(RoundTrip::new(Era1Engine(Era1Reference), features, state))
        }
        (Era::Two, CopyShape::FallThrough) => {
            Box::new(RoundTrip::new(Era2Engine(Era2Reference), features, state))
        }
        (Era::Three, CopyShape::FallThrough) => {
            Box::new(RoundTrip::new(Era3Engine(Era3Reference), features, state))
        }
        (Era::One, CopyShape::Loop) => {
            Box::new(RoundTrip::new(Era1Engine(LoopCopy), features, state))
        }
        (Era::Two, CopyShape::Loop) => {
            Box::new(RoundTrip::new(Era2Engine(LoopCopy), features, state))
        }
        (Era::Three, CopyShape::Loop) => {
            Box::new(RoundTrip::new(Era3Engine(LoopCopy), features, state))
        }
    }
}

/// The reference engine of `era` behind a `dyn` (what a [`Vm`] holds).
pub fn reference_flow(era: Era) -> Box<dyn DynFlow> {
    match era {
        Era::One => Box::new(Era1Engine(Era1Reference)),
        Era::Two => Box::new(Era2Engine(Era2Reference)),
        Era::Three => Box::new(Era3Engine(Era3Reference)),
    }
}

/// The guest of the `vcpu_run` benchmark: `stop #0` in a loop, so every KVM_RUN makes one
/// MMIO exit to userspace (the next run completes the store and resumes at the branch back).
pub const TINY_GUEST: &str = "top: stop #0\n b top";

/// A one-CPU, one-vcpu VM in [`AccessMode::Plain`] running [`TINY_GUEST`]; dirty means the
/// guest's MDSCR_EL1 has MDE|KDE set (through KVM_SET_ONE_REG), so every run switches the
/// debug registers.
pub fn tiny_vm(era: Era, features: DebugFeatures, state: SwitchState) -> Result<Vm, BenchError> {
    let mut config = VmConfig::new(features);
    config.mode = AccessMode::Plain;
    let mut vm = Vm::new(reference_flow(era), config)?;
    let p = Program::assemble(CODE_BASE, TINY_GUEST)?;
    vm.load_program(&p);
    if state == SwitchState::Dirty {
        vm.set_one_reg(
            0,
            SysReg::MdscrEl1.one_reg_id(),
            DBG_MDSCR_MDE | DBG_MDSCR_KDE,
        )?;
    }
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypdbg_hyp::access::SwitchStats;
    use hypdbg_hyp::pcpu::HostSnapshot;
    use hypdbg_hyp::vm::VcpuExit;
    use hypdbg_model::profiles::by_name;

    fn features(name: &str) -> DebugFeatures {
        by_name(name).unwrap().features().unwrap()
    }

    #[test]
    fn dirty_cortex_a57_moves_every_register_both_ways_and_clean_moves_none() {
        let f = features("cortex-a57");
        for era in ERAS {
            for shape in [CopyShape::FallThrough, CopyShape::Loop] {
                let mut w = round_trip(era, shape, f, SwitchState::Dirty);
                let log = w.accesses().unwrap().unwrap();
                let s = SwitchStats::of(&log);
                // save host + restore guest + save guest + restore host of bcr, bvr (6 each)
                // and wcr, wvr (4 each): 2 x (6 + 6 + 4 + 4) reads and as many writes, plus
                // MDCCINT_EL1 once per phase.
                assert_eq!(s.dbg_reads, 2 * (6 + 6 + 4 + 4), "{era} {shape:?}");
                assert_eq!(s.dbg_writes, 2 * (6 + 6 + 4 + 4), "{era} {shape:?}");
                assert_eq!(s.mdccint, 4, "{era} {shape:?}");
                assert_eq!(s.debug_state_moves(), 2 * (6 + 6 + 4 + 4) * 2 + 4);
                let mut w = round_trip(era, shape, f, SwitchState::Clean);
                let s = SwitchStats::of(&w.accesses().unwrap().unwrap());
                assert_eq!(s.debug_state_moves(), 0, "{era} {shape:?}");
                assert_eq!(
                    s,
                    SwitchStats::default(),
                    "{era}: a clean switch touches nothing"
                );
            }
        }
    }

    #[test]
    fn steady_state_round_trips_keep_the_host_and_guest_registers() {
        for name in ["min", "cortex-a57", "max"] {
            let f = features(name);
            for state in SwitchState::ALL {
                let mut rt = RoundTrip::new(Era1Engine(Era1Reference), f, state);
                let before = HostSnapshot::of(rt.regs());
                rt.run(3).unwrap();
                assert_eq!(HostSnapshot::of(rt.regs()), before, "{name} {state:?}");
                let mut rt = RoundTrip::new(Era2Engine(LoopCopy), f, state);
                rt.run(3).unwrap();
                assert_eq!(HostSnapshot::of(rt.regs()), before, "{name} {state:?}");
                let mut rt = RoundTrip::new(Era3Engine(Era3Reference), f, state);
                let guest = rt.vcpu().arch.vcpu_debug_state;
                rt.run(3).unwrap();
                assert_eq!(HostSnapshot::of(rt.regs()), before, "{name} {state:?}");
                assert_eq!(rt.vcpu().arch.vcpu_debug_state, guest);
                // And every round trip of a dirty state moves the same, not just the first.
                let n = rt.checking_round_trip().unwrap().len();
                let m = rt.checking_round_trip().unwrap().len();
                assert_eq!(n, m);
                assert_eq!(n > 0, state == SwitchState::Dirty, "{name} {state:?}");
            }
        }
    }

    #[test]
    fn copy_baseline_moves_the_same_bytes() {
        let f = features("cortex-a57");
        let mut b = CopyBaseline::new(&f);
        assert_eq!(CopyBaseline::registers(&f), 21);
        assert_eq!(b.bytes(), 4 * 21 * 8);
        let before = b.regs;
        b.run(2);
        assert_eq!(b.regs, before, "the register buffer ends as it started");
        assert_eq!(b.host[..21], before[..21]);
        assert_eq!(CopyBaseline::new(&features("max")).bytes(), 4 * 65 * 8);
    }

    #[test]
    fn tiny_vm_exits_on_its_stop_every_run() {
        for era in ERAS {
            for state in SwitchState::ALL {
                let mut vm = tiny_vm(era, features("cortex-a57"), state).unwrap();
                for _ in 0..3 {
                    assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0));
                }
            }
        }
    }
}
