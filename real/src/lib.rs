//! hypdbg's real-kernel backend: real arm64 Linux KVM, nested in `qemu-system-aarch64` (TCG)
//! on any machine, driven at the ioctl level by an agent inside the guest.
//!
//! - [`kernel`]: Debian's arm64 kernels through apt with a private state ([`apt`]), or the
//!   user's own `Image` ([`KernelSpec`], [`fetch`]);
//! - [`initramfs`]: the newc cpio that makes the agent `/init`.

pub mod apt;
pub mod cache;
pub mod error;
pub mod initramfs;
pub mod kernel;

pub use cache::Cache;
pub use error::{Error, ErrorKind, Result, Stage};
pub use kernel::{KernelImage, KernelSpec, fetch};
