//! **Broken, for model checking**: KVM_SET_GUEST_DEBUG without `vcpu->mutex`, built on the
//! public API of `hypdbg_hyp::smp` so that it does not ship in the library. Shared by the std
//! test (`smp.rs`) and the loom model (`loom_set_guest_debug.rs`).

use hypdbg_hyp::KvmError;
use hypdbg_hyp::access::PhysRegs;
use hypdbg_hyp::context::KvmVcpu;
use hypdbg_hyp::flow::Era3;
use hypdbg_hyp::smp::{SmpHost, SmpVcpu};
use hypdbg_hyp::sync::{AtomicU64, Ordering};
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebug};
use hypdbg_model::{DbgBank, DebugFeatures};

/// **Broken, for model checking**: KVM_SET_GUEST_DEBUG without `vcpu->mutex`. What the ioctl
/// writes and KVM_RUN reads, `vcpu->guest_debug` and the implemented registers of
/// `external_debug_state`, is shared as one `AtomicU64` per field accessed `Relaxed`: the
/// race is defined Rust, and a model checker sees every field of the copy as a step of its own,
/// so an entry can load a half-copied block. The ioctl and the run call the same real
/// functions as `VcpuFd` on a private `KvmVcpu` built from the shared fields; everything
/// else in that vcpu starts from reset on each call, and a run publishes nothing back.
pub struct UnlockedVcpuFd {
    vcpu_id: usize,
    control: AtomicU64,
    /// Per bank (DbgBank::ALL order), one atomic per implemented register.
    banks: [Vec<AtomicU64>; 4],
}

impl UnlockedVcpuFd {
    /// Vcpu `vcpu_id` after reset, on CPUs with `features` (which size the banks).
    pub fn new(vcpu_id: usize, features: &DebugFeatures) -> Self {
        let bank = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        let (b, w) = (features.num_brps(), features.num_wrps());
        UnlockedVcpuFd {
            vcpu_id,
            control: AtomicU64::new(0),
            banks: [bank(b), bank(b), bank(w), bank(w)],
        }
    }

    /// Read the shared fields one by one into a fresh vcpu.
    fn read(&self) -> KvmVcpu {
        let mut v = KvmVcpu::new(self.vcpu_id);
        let control = self.control.load(Ordering::Relaxed);
        v.guest_debug = GuestDebugControl::from_bits_retain(control as u32);
        for (bank, cells) in DbgBank::ALL.into_iter().zip(&self.banks) {
            let dst = v.arch.external_debug_state.bank_mut(bank);
            for (d, c) in dst.iter_mut().zip(cells) {
                *d = c.load(Ordering::Relaxed);
            }
        }
        v
    }

    /// Write the shared fields one by one: the block, then the control word.
    fn write(&self, v: &KvmVcpu) {
        for (bank, cells) in DbgBank::ALL.into_iter().zip(&self.banks) {
            let src = v.arch.external_debug_state.bank(bank);
            for (s, c) in src.iter().zip(cells) {
                c.store(*s, Ordering::Relaxed);
            }
        }
        self.control
            .store(u64::from(v.guest_debug.bits()), Ordering::Relaxed);
    }

    /// KVM_SET_GUEST_DEBUG without the vcpu mutex: the real
    /// `kvm_arch_vcpu_ioctl_set_guest_debug`, its result copied out field by field.
    pub fn set_guest_debug<F: Era3>(
        &self,
        host: &SmpHost<F>,
        dbg: &KvmGuestDebug,
    ) -> Result<(), KvmError> {
        let mut v = self.read();
        host.flow()
            .kvm_arch_vcpu_ioctl_set_guest_debug(&mut v, dbg)?;
        self.write(&v);
        Ok(())
    }

    /// KVM_RUN without the vcpu mutex: read the shared fields, then as `VcpuFd::run`.
    pub fn run<F: Era3, R>(
        &self,
        host: &SmpHost<F>,
        cpu: usize,
        guest: impl FnOnce(&mut PhysRegs) -> R,
    ) -> Result<R, KvmError> {
        host.run_once(cpu, &mut SmpVcpu::new(self.read()), guest)
    }
}
