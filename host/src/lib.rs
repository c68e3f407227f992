//! The VMM's side of arm64 guest debugging, written against the [`DebugVcpu`] seam (KVM's vcpu
//! ioctls, `kvm-ioctls`-shaped) so that the same logic drives the `hypdbg-hyp` simulator or a
//! real `kvm_ioctls::VcpuFd`; it depends on the architecture model only.
//!
//! - [`encode`]: pure encoders: a breakpoint's DBGBCR/DBGBVR, the fewest DBGWCR/DBGWVR
//!   pairs that watch exactly a byte range, [`WatchAccess`] (what `hypdbg encode` prints);
//! - [`hw`]: [`HwDebug`], the hardware breakpoint/watchpoint pool sized by
//!   KVM_CAP_GUEST_DEBUG_HW_BPS/WPS, and the `struct kvm_guest_debug` it implies;
//! - [`sw`]: software breakpoints (BRK #0 written into guest memory);
//! - [`exit`]: debug exits: whose event, and the guest's view of its own;
//! - [`session`]: [`Debugger`], one vcpu's gdb stub: sync before a run,
//!   [`Debugger::handle_debug_exit`], continue and step with gdb's step-over rules, the guest's
//!   own breakpoints mirrored and reinjected;
//! - [`raw`]: [`RawSession`], a userspace that hands KVM raw blocks (as the kernel's selftests
//!   do), and its exit handling;
//! - [`snapshot`]: the debug registers through ONE_REG as a JSON snapshot (migration);
//! - [`smp`]: [`SharedHwDebug`], one set published to many vcpu threads without tearing
//!   (its loom model, `tests/loom_vmm.rs`, also carries QEMU's unsynchronised copy for loom
//!   to catch);
//! - [`sync`]: the synchronisation types (`std`, or `loom` under `--cfg loom`).

pub mod encode;
pub mod error;
pub mod exit;
mod hex;
pub mod hw;
pub mod raw;
pub mod session;
pub mod smp;
pub mod snapshot;
pub mod sw;
pub mod vcpu;

/// The synchronisation types [`smp`] uses: `hypdbg_model::sync` (std's, or loom's under
/// `--cfg loom`).
pub use hypdbg_model::sync;

pub use encode::{
    BpSlot, Slots, WatchAccess, WatchRequest, WpSlot, encode_breakpoint, encode_watchpoint,
};
pub use error::{DebugError, Errno, HwDebugError, SmpError, SnapshotError, SwBpError, VcpuError};
pub use exit::{DebugStop, GuestDebugEvent, GuestView};
pub use hw::HwDebug;
pub use raw::{RawSession, RawStop};
pub use session::{Debugger, Stop};
pub use smp::SharedHwDebug;
pub use snapshot::DebugSnapshot;
pub use sw::SwBreakpoints;
pub use vcpu::{DebugVcpu, RunExit};
