//! SMP: era 3's per-physical-CPU host save area, and KVM's vcpu mutex, on state shared between
//! threads through [`crate::sync`] (std's types, or loom's under `--cfg loom`), so that a model
//! checker explores this exact code.
//!
//! On a real host a vcpu thread runs the world switch on whichever physical CPU the scheduler
//! gave it, with preemption disabled from entry to exit. Era 3 saves the host's debug registers
//! into *that* CPU's `kvm_host_data` (`host_data_ptr()`, a per-CPU variable) on entry and
//! restores them from it on exit. Between two runs the thread can be preempted and migrated:
//! the preempt notifiers call `kvm_arch_vcpu_put` on the old CPU and `kvm_arch_vcpu_load` on the
//! new one.
//!
//! Here:
//!
//! - a physical CPU ([`SmpHost::pin`]) is its live registers behind a mutex: holding it (an
//!   [`OnCpu`]) is running on that CPU with preemption disabled, and a thread migrates by
//!   dropping one and pinning another. The CPU's `kvm_host_data` sits behind a second, leaf
//!   mutex taken only for one half of the switch: the correct code only ever takes its own
//!   CPU's, and the lock makes the broken code's cross-CPU access defined Rust (on the real
//!   thing, a data race) that a model checker sees as interleavings;
//! - [`OnCpu::vcpu_load`], [`OnCpu::run`] and [`OnCpu::vcpu_put`] call the real era-3 functions
//!   through [`Era3Engine`]: `kvm_vcpu_load_debug`; `__activate_traps_common` and
//!   `__debug_switch_to_guest_common`; the guest; `__deactivate_traps_common` and
//!   `__debug_switch_to_host_common`; `kvm_vcpu_put_debug`;
//! - [`VcpuFd`] is `struct kvm_vcpu` behind `vcpu->mutex`, which `kvm_vcpu_ioctl` takes for
//!   KVM_RUN and KVM_SET_GUEST_DEBUG alike, so the ioctl's copy of `external_debug_state` is
//!   never seen half done by an entry.
//!
//! The deliberately broken designs the model checks must catch do not ship: the save area
//! picked at `vcpu_load` and used after a migration without a put (`SaveArea::ChosenAtLoad`)
//! exists only with the `broken-designs` feature, which only this crate's tests turn on, and
//! KVM_SET_GUEST_DEBUG without the vcpu mutex (`UnlockedVcpuFd`) lives in the tests
//! (`hyp/tests/common/broken.rs`), built on this module's public API.
//!
//! Memory orderings: every piece of shared state is behind a [`Mutex`] (lock = acquire, unlock
//! = release); no atomics. A thread must not pin a CPU it already holds (it would deadlock, as a real CPU
//! cannot run two things at once); pinning two different CPUs at once is allowed, which a test
//! uses to play a schedule by hand.

use hypdbg_model::uapi::{KvmGuestDebug, KvmGuestDebugArch};
use hypdbg_model::{DbgBank, DebugFeatures};

use crate::access::{PhysRegs, PlainAccess};
use crate::context::{KvmHostData, KvmVcpu};
use crate::fault::KvmError;
use crate::flow::{Era3, Era3Engine, EraEngine};
use crate::pcpu::{HostSnapshot, Pcpu};
use crate::sync::{Mutex, MutexGuard, lock};

/// Which CPU's `kvm_host_data` the world switch saves the host's registers into and restores
/// them from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SaveArea {
    /// The CPU the switch runs on (`host_data_ptr()`, era 3): right whatever the vcpu's load
    /// history, because entry and exit run on one CPU with preemption disabled.
    #[default]
    CurrentCpu,
    /// **Broken, for model checking** (feature `broken-designs`, which only this crate's own
    /// tests turn on): the CPU the vcpu was last loaded on, remembered at `vcpu_load`. Right as long as every migration is a put and a load; after a migration
    /// without a put, the switch on one CPU saves into and restores from another CPU's area,
    /// which that CPU's own vcpus use at the same time.
    #[cfg(feature = "broken-designs")]
    ChosenAtLoad,
}

impl SaveArea {
    /// The CPU whose save area a switch on `current` uses, for a vcpu loaded on `loaded`.
    fn cpu(self, current: usize, _loaded: usize) -> usize {
        match self {
            SaveArea::CurrentCpu => current,
            #[cfg(feature = "broken-designs")]
            SaveArea::ChosenAtLoad => _loaded,
        }
    }
}

/// One physical CPU of an [`SmpHost`].
struct PhysCpu {
    /// The per-CPU `mdcr_el2` read at init (what `vcpu_load` computes MDCR_EL2 from).
    mdcr_el2_boot: u64,
    /// The host's registers as booted: what every exit must give back.
    boot: HostSnapshot,
    /// The live registers: held = running on this CPU, preemption disabled.
    regs: Mutex<PhysRegs>,
    /// `kvm_host_data` of this CPU (leaf lock, held for one half of a switch).
    host_data: Mutex<KvmHostData>,
}

/// A vcpu as the thread running it holds it: the kernel's `struct kvm_vcpu` and the physical
/// CPU it is loaded on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmpVcpu {
    /// The kernel's vcpu.
    pub kvm: KvmVcpu,
    loaded: Option<usize>,
}

impl SmpVcpu {
    /// A vcpu not loaded anywhere.
    pub fn new(kvm: KvmVcpu) -> Self {
        SmpVcpu { kvm, loaded: None }
    }

    /// The CPU of the last `vcpu_load` not followed by a `vcpu_put`.
    pub fn loaded(&self) -> Option<usize> {
        self.loaded
    }
}

/// The physical CPUs of a host running era 3's world switch with the flow `F` (the reference
/// [`crate::flow::Era3Reference`], or a variant), shared by the vcpu threads (put it in an
/// [`crate::sync::Arc`]).
pub struct SmpHost<F: Era3> {
    engine: Era3Engine<F>,
    save_area: SaveArea,
    cpus: Vec<PhysCpu>,
}

impl<F: Era3> SmpHost<F> {
    /// `cpus` physical CPUs with `features`, each booted as [`Pcpu::new`] does (the host's own
    /// breakpoints and watchpoints in use, with values distinct per CPU) and its
    /// `kvm_host_data` initialised by `kvm_init_host_debug_data`.
    pub fn new(flow: F, features: DebugFeatures, cpus: usize, save_area: SaveArea) -> Self {
        let engine = Era3Engine(flow);
        let cpus = (0..cpus)
            .map(|id| {
                let mut p = Pcpu::new(id, features);
                let raw = p.features().raw();
                engine.init_host_data(&mut p.host_data, raw);
                PhysCpu {
                    mdcr_el2_boot: p.mdcr_el2_boot,
                    boot: p.host_snapshot(),
                    regs: Mutex::new(p.regs),
                    host_data: Mutex::new(p.host_data),
                }
            })
            .collect();
        SmpHost {
            engine,
            save_area,
            cpus,
        }
    }

    /// The era-3 flow (for its ioctls).
    pub fn flow(&self) -> &F {
        &self.engine.0
    }

    /// Where the switch saves the host's registers.
    pub fn save_area(&self) -> SaveArea {
        self.save_area
    }

    /// One KVM_RUN of `vcpu` on `cpu` with one entry and exit: pin the CPU, `vcpu_load`,
    /// run `guest`, `vcpu_put`.
    pub fn run_once<R>(
        &self,
        cpu: usize,
        vcpu: &mut SmpVcpu,
        guest: impl FnOnce(&mut PhysRegs) -> R,
    ) -> Result<R, KvmError> {
        let mut on = self.pin(cpu)?;
        on.vcpu_load(vcpu);
        let r = on.run(vcpu, guest);
        on.vcpu_put(vcpu);
        r
    }

    /// The number of physical CPUs.
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    /// The host's registers on `cpu` as booted, which every exit on `cpu` must restore.
    pub fn boot_snapshot(&self, cpu: usize) -> Option<HostSnapshot> {
        self.cpus.get(cpu).map(|c| c.boot)
    }

    /// The CPU whose boot-time breakpoint and watchpoint registers are exactly `snap`'s, if
    /// any: names the CPU a wrong restore came from.
    pub fn boot_owner(&self, snap: &HostSnapshot) -> Option<usize> {
        self.cpus.iter().position(|c| c.boot.banks == snap.banks)
    }

    /// Run on `cpu` with preemption disabled: blocks while another thread runs there. Drop the
    /// result to allow preemption (and migration).
    pub fn pin(&self, cpu: usize) -> Result<OnCpu<'_, F>, KvmError> {
        let c = self.cpu(cpu)?;
        Ok(OnCpu {
            host: self,
            cpu,
            regs: lock(&c.regs),
        })
    }

    fn cpu(&self, cpu: usize) -> Result<&PhysCpu, KvmError> {
        self.cpus.get(cpu).ok_or_else(|| {
            KvmError::Inval(format!(
                "no physical CPU {cpu}: the host has {}",
                self.cpus.len()
            ))
        })
    }
}

/// A thread running on one physical CPU with preemption disabled (the CPU's register lock).
pub struct OnCpu<'a, F: Era3> {
    host: &'a SmpHost<F>,
    cpu: usize,
    regs: MutexGuard<'a, PhysRegs>,
}

impl<F: Era3> OnCpu<'_, F> {
    /// The CPU this thread runs on.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The host's registers on this CPU now (between runs: what the host kernel sees).
    pub fn host_snapshot(&self) -> HostSnapshot {
        HostSnapshot::of(&self.regs)
    }

    /// `kvm_arch_vcpu_load` on this CPU (its debug part, `kvm_vcpu_load_debug`, with this
    /// CPU's boot MDCR_EL2).
    pub fn vcpu_load(&mut self, vcpu: &mut SmpVcpu) {
        let mdcr = self.host.cpus.get(self.cpu).map_or(0, |c| c.mdcr_el2_boot);
        self.host.engine.vcpu_load(&mut vcpu.kvm, mdcr);
        vcpu.loaded = Some(self.cpu);
    }

    /// `kvm_arch_vcpu_put` on this CPU (its debug part, `kvm_vcpu_put_debug`).
    pub fn vcpu_put(&mut self, vcpu: &mut SmpVcpu) {
        self.host.engine.vcpu_put(&mut vcpu.kvm);
        vcpu.loaded = None;
    }

    /// One world switch of a loaded vcpu on this CPU: `__activate_traps_common` and
    /// `__debug_switch_to_guest_common` (saving the host's registers into the save area),
    /// `guest` on the live registers, then `__deactivate_traps_common` and
    /// `__debug_switch_to_host_common` (restoring them from the same area). Returns `guest`'s
    /// result; fails if the vcpu is not loaded or the switch faults.
    pub fn run<R>(
        &mut self,
        vcpu: &mut SmpVcpu,
        guest: impl FnOnce(&mut PhysRegs) -> R,
    ) -> Result<R, KvmError> {
        let Some(loaded) = vcpu.loaded else {
            return Err(KvmError::Inval(format!(
                "vcpu {} runs on CPU {} without vcpu_load",
                vcpu.kvm.vcpu_id, self.cpu
            )));
        };
        let area = self.host.save_area.cpu(self.cpu, loaded);
        let save = self.host.cpu(area)?;
        let engine = &self.host.engine;
        {
            let mut host = lock(&save.host_data);
            let mut a = PlainAccess::new(&mut self.regs);
            engine.activate_traps(&mut a, &mut vcpu.kvm, &mut host);
            engine.switch_to_guest(&mut a, &mut vcpu.kvm, &mut host)?;
        }
        let r = guest(&mut self.regs);
        {
            let mut host = lock(&save.host_data);
            let mut a = PlainAccess::new(&mut self.regs);
            engine.deactivate_traps(&mut a, &mut vcpu.kvm, &mut host);
            engine.switch_to_host(&mut a, &mut vcpu.kvm, &mut host)?;
        }
        Ok(r)
    }
}

/// The breakpoint and watchpoint registers the CPU implements, as a block (zeros above the
/// implemented counts): what the guest runs with.
pub fn live_block(regs: &PhysRegs) -> KvmGuestDebugArch {
    let mut block = KvmGuestDebugArch::default();
    for bank in DbgBank::ALL {
        for (dst, src) in block.bank_mut(bank).iter_mut().zip(regs.file.bank(bank)) {
            *dst = *src;
        }
    }
    block
}

/// `struct kvm_vcpu` behind `vcpu->mutex`: `kvm_vcpu_ioctl` takes the mutex for every vcpu
/// ioctl, so KVM_SET_GUEST_DEBUG and KVM_RUN (the whole run: load, entries, exits, put) never
/// overlap, and an entry sees the ioctl's block whole or not at all.
pub struct VcpuFd {
    vcpu: Mutex<SmpVcpu>,
}

impl VcpuFd {
    /// Share `kvm`.
    pub fn new(kvm: KvmVcpu) -> Self {
        VcpuFd {
            vcpu: Mutex::new(SmpVcpu::new(kvm)),
        }
    }

    /// KVM_SET_GUEST_DEBUG: `kvm_arch_vcpu_ioctl_set_guest_debug` under the vcpu mutex.
    pub fn set_guest_debug<F: Era3>(
        &self,
        host: &SmpHost<F>,
        dbg: &KvmGuestDebug,
    ) -> Result<(), KvmError> {
        let mut v = lock(&self.vcpu);
        host.flow()
            .kvm_arch_vcpu_ioctl_set_guest_debug(&mut v.kvm, dbg)
    }

    /// KVM_RUN with one entry and exit on `cpu`, under the vcpu mutex: pin the CPU, load, run
    /// `guest`, put.
    pub fn run<F: Era3, R>(
        &self,
        host: &SmpHost<F>,
        cpu: usize,
        guest: impl FnOnce(&mut PhysRegs) -> R,
    ) -> Result<R, KvmError> {
        let mut v = lock(&self.vcpu);
        host.run_once(cpu, &mut v, guest)
    }

    /// A copy of the vcpu as it is now.
    pub fn vcpu(&self) -> SmpVcpu {
        lock(&self.vcpu).clone()
    }
}
