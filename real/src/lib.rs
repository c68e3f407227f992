//! hypdbg's real-kernel backend: real arm64 Linux KVM, nested in `qemu-system-aarch64` (TCG)
//! on any machine, driven at the ioctl level by an agent inside the guest.
//!
//! - [`kernel`]: Debian's arm64 kernels through apt with a private state ([`apt`]), or the
//!   user's own `Image` ([`KernelSpec`], [`fetch`]);
//! - [`agent`]: the agent (C, built with `aarch64-linux-gnu-gcc -static` on first use and
//!   cached) and the host's end of its serial protocol ([`proto`]);
//! - [`initramfs`]: the newc cpio that makes the agent `/init`;
//! - [`machine`]: QEMU with hard timeouts, killed on drop, the KVM mode verified;
//! - [`vm`]: a VM at the ioctl level ([`RealVm`]): memory, vcpus, ONE_REG, guest debug,
//!   KVM_RUN and its exits ([`VcpuExit`]);
//! - [`roundtrip`]: instructions per KVM_RUN round trip in each debug state (clean,
//!   guest-owned, USE_HW, SINGLESTEP, the OS lock), interleaved batches timed in the agent.
//!
//! Nothing here models the hypervisor: it reports what the real kernel did.
//!
//! ```no_run
//! use hypdbg_real::{BootOptions, Cache, KernelSpec, Machine, Mode, fetch};
//! # fn main() -> Result<(), hypdbg_real::Error> {
//! let cache = Cache::from_env()?;
//! let kernel = fetch(&KernelSpec::parse("debian:6.1")?, &cache)?;
//! let mut m = Machine::boot(&kernel, Mode::Vhe, &BootOptions::new(cache))?;
//! let bps = m.agent().check_extension(hypdbg_model::uapi::KVM_CAP_GUEST_DEBUG_HW_BPS)?;
//! let mut vm = m.agent().create_vm()?;
//! vm.map_memory(0, 0x4000_0000, 0x1_0000)?;
//! let vcpu = vm.create_vcpu(0)?;
//! vm.vcpu_init(vcpu, hypdbg_real::vm::KVM_ARM_VCPU_PSCI_0_2)?;
//! # Ok(()) }
//! ```

pub mod agent;
pub mod apt;
pub mod cache;
pub mod error;
pub mod exit;
pub mod initramfs;
pub mod kernel;
pub mod machine;
pub mod proto;
mod qemu;
pub mod roundtrip;
mod shm;
pub mod vm;

pub use agent::Agent;
pub use cache::Cache;
pub use error::{Error, ErrorKind, Result, Stage};
pub use exit::{ExitKind, VcpuExit};
pub use kernel::{KernelImage, KernelSpec, fetch};
pub use machine::{BootOptions, Machine, Mode};
pub use proto::{PerfKind, RunOptions, SmcccAction};
pub use roundtrip::{DebugState, Plan, StateBatches, StatesMeasurement, measure_states};
pub use vm::{Batch, BenchBatches, BenchExit, PerfCheck, RealVm, SmcccFilter, Teardown, VcpuId};
