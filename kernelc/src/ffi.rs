//! The one module that uses `unsafe`: load the compiled library with `libloading`, check its
//! layout, and call its two entry points, passing `extern "C"` callbacks through which every
//! `read_sysreg` / `write_sysreg` of the C comes back into Rust ([`crate::route`]).
//!
//! Each call hands the C a pointer to a stack [`Exchange`] block and a pointer to a
//! [`CallCtx`] borrowed for exactly the duration of the call; the C keeps neither after it
//! returns (its per-call state lives in thread-local storage of the library, so calls on
//! different threads do not share anything). A faulting access makes the callback return
//! non-zero and the C `_longjmp`s back to its own entry point: no Rust frame is ever unwound
//! or jumped over by C.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;

use hypdbg_hyp::access::RegAccess;
use hypdbg_hyp::fault::HypFault;
use hypdbg_model::uapi::KvmGuestDebugArch;
use libloading::Library;

use crate::error::KernelCError;
use crate::route::{CallCtx, Direction};

/// The block passed to the C (`struct hypdbg_exchange` in shim/hypdbg/glue.c; same order, same
/// types, `#[repr(C)]`): the vcpu's and the CPU's debug state before the call, after it on
/// return. The four register blocks are not copied in: [`CLib::call`] points the C at the
/// simulator's own ([`Blocks`]).
#[repr(C)]
#[derive(Debug)]
pub struct Exchange {
    abi_version: u32,
    size: u32,
    vcpu_debug_state: *mut KvmGuestDebugArch,
    external_debug_state: *mut KvmGuestDebugArch,
    vcpu_host_regs: *mut KvmGuestDebugArch,
    cpu_host_regs: *mut KvmGuestDebugArch,
    /// The guest context's MDSCR_EL1.
    pub guest_mdscr_el1: u64,
    /// The guest context's MDCCINT_EL1.
    pub guest_mdccint_el1: u64,
    /// The host context's MDSCR_EL1.
    pub host_mdscr_el1: u64,
    /// The host context's MDCCINT_EL1.
    pub host_mdccint_el1: u64,
    /// `vcpu->arch.external_mdscr_el1` (era 3).
    pub external_mdscr_el1: u64,
    /// The vcpu's flag word (bit 0: DEBUG_DIRTY).
    pub vcpu_flags: u64,
    /// `vcpu->arch.debug_ptr`: 0 vcpu_debug_state, 1 external_debug_state, 2 elsewhere.
    pub debug_ptr: u32,
    /// `vcpu->arch.debug_owner`.
    pub debug_owner: u32,
    /// `host_data->debug_brps`.
    pub debug_brps: u32,
    /// `host_data->debug_wrps`.
    pub debug_wrps: u32,
}

impl Default for Exchange {
    fn default() -> Self {
        let null = std::ptr::null_mut();
        Exchange {
            abi_version: 0,
            size: 0,
            vcpu_debug_state: null,
            external_debug_state: null,
            vcpu_host_regs: null,
            cpu_host_regs: null,
            guest_mdscr_el1: 0,
            guest_mdccint_el1: 0,
            host_mdscr_el1: 0,
            host_mdccint_el1: 0,
            external_mdscr_el1: 0,
            vcpu_flags: 0,
            debug_ptr: 0,
            debug_owner: 0,
            debug_brps: 0,
            debug_wrps: 0,
        }
    }
}

/// The simulator's register blocks the C reads on entry and writes back on success, borrowed
/// for exactly one call.
pub struct Blocks<'a> {
    /// `vcpu->arch.vcpu_debug_state`.
    pub vcpu_debug_state: &'a mut KvmGuestDebugArch,
    /// `vcpu->arch.external_debug_state`.
    pub external_debug_state: &'a mut KvmGuestDebugArch,
    /// `vcpu->arch.host_debug_state` (eras 1 and 2 up to v6.9).
    pub vcpu_host_regs: &'a mut KvmGuestDebugArch,
    /// `host_data->host_debug_state.regs` (v6.10+).
    pub cpu_host_regs: &'a mut KvmGuestDebugArch,
}

/// `HYPDBG_ABI_VERSION` in glue.c.
const ABI_VERSION: u32 = 2;

/// `struct hypdbg_ops` in shim.h.
#[repr(C)]
struct Ops {
    read: extern "C" fn(*mut c_void, u32, *mut u64) -> c_int,
    write: extern "C" fn(*mut c_void, u32, u64) -> c_int,
}

type SwitchFn = unsafe extern "C" fn(*mut Exchange, *const Ops, *mut c_void) -> c_int;
type AbiFn = unsafe extern "C" fn() -> u32;
type MissingFn = unsafe extern "C" fn() -> *const c_char;

/// The loaded library and its two entry points.
pub struct CLib {
    to_guest: SwitchFn,
    to_host: SwitchFn,
    // Last: the entry points above point into its mapping, which must outlive them.
    _lib: Library,
}

impl std::fmt::Debug for CLib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CLib").finish_non_exhaustive()
    }
}

fn load_err(e: impl std::fmt::Display) -> KernelCError {
    KernelCError::Load(e.to_string())
}

impl CLib {
    /// Load `path` (built by [`crate::compile`] from the shim's glue and the kernel source),
    /// check its exchange layout, and name the first switch function the source lacks.
    pub fn open(path: &Path, source_name: &str) -> Result<Self, KernelCError> {
        // SAFETY: `path` is the shared object hypdbg just compiled from its shim and the user's
        // kernel source. Loading it runs no initialisers of ours (the shim defines none); the
        // user's own code could, as it could when they build their kernel, and it is theirs.
        let lib = unsafe { Library::new(path) }.map_err(load_err)?;
        // SAFETY: glue.c defines `u32 hypdbg_abi(void)`; the type below is that signature.
        let abi: AbiFn = unsafe { *lib.get::<AbiFn>(b"hypdbg_abi\0").map_err(load_err)? };
        // SAFETY: a call to the C function above: no arguments, returns a value.
        let got = unsafe { abi() };
        let want = (ABI_VERSION << 16) | std::mem::size_of::<Exchange>() as u32;
        if got != want {
            return Err(KernelCError::Load(format!(
                "exchange layout {got:#x}, hypdbg expects {want:#x} (shim and loader out of step)"
            )));
        }
        // SAFETY: glue.c defines `const char *hypdbg_missing(void)`.
        let missing: MissingFn = unsafe {
            *lib.get::<MissingFn>(b"hypdbg_missing\0")
                .map_err(load_err)?
        };
        // SAFETY: a call to the C function above; it returns NULL or a pointer to a string
        // literal of the library, valid while the library is loaded (it is, here).
        let name = unsafe { missing() };
        if !name.is_null() {
            // SAFETY: non-null, NUL-terminated string literal (see above).
            let function = unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            return Err(KernelCError::MissingFunction {
                source_name: source_name.to_string(),
                function,
            });
        }
        // SAFETY: glue.c defines both with exactly the `SwitchFn` signature.
        let to_guest: SwitchFn = unsafe {
            *lib.get::<SwitchFn>(b"hypdbg_switch_to_guest\0")
                .map_err(load_err)?
        };
        // SAFETY: as above.
        let to_host: SwitchFn = unsafe {
            *lib.get::<SwitchFn>(b"hypdbg_switch_to_host\0")
                .map_err(load_err)?
        };
        Ok(CLib {
            to_guest,
            to_host,
            _lib: lib,
        })
    }

    /// Run the C half of the world switch `dir` on `x` and `blocks`, its register accesses
    /// through `a`. On a faulting access the C stops there and nothing is written back.
    pub fn call<A: RegAccess>(
        &self,
        dir: Direction,
        a: &mut A,
        x: &mut Exchange,
        blocks: Blocks<'_>,
    ) -> Result<(), HypFault> {
        x.abi_version = ABI_VERSION;
        x.size = std::mem::size_of::<Exchange>() as u32;
        x.vcpu_debug_state = blocks.vcpu_debug_state;
        x.external_debug_state = blocks.external_debug_state;
        x.vcpu_host_regs = blocks.vcpu_host_regs;
        x.cpu_host_regs = blocks.cpu_host_regs;
        let mut ctx = CallCtx::new(a, dir);
        let ops = Ops {
            read: read_cb::<A>,
            write: write_cb::<A>,
        };
        let f = match dir {
            Direction::ToGuest => self.to_guest,
            Direction::ToHost => self.to_host,
        };
        let ctx_ptr: *mut CallCtx<'_, A> = &mut ctx;
        // SAFETY: `x`, `ops` and `ctx` outlive the call and nothing else touches them while it
        // runs; the four block pointers in `x` come from the distinct `&mut` borrows in
        // `blocks`, alive (and otherwise unused) until this function returns, and each points
        // at a `#[repr(C)]` `KvmGuestDebugArch`, the layout of `struct kvm_guest_debug_arch`.
        // The C uses them only during the call and passes `ctx` back only to the callbacks
        // below, typed for this very `A`. The library is loaded (self holds it).
        let rc = unsafe { f(x, &ops, ctx_ptr.cast()) };
        if rc != 0 {
            return Err(ctx
                .fault
                .unwrap_or(HypFault::Bug("the loaded debug-sr code stopped (BUG_ON)")));
        }
        Ok(())
    }
}

/// `ops->read`: MRS of the shim's register `reg`.
extern "C" fn read_cb<A: RegAccess>(ctx: *mut c_void, reg: u32, val: *mut u64) -> c_int {
    // SAFETY: `ctx` is the `&mut CallCtx<A>` `CLib::call` passed for this call: live, of this
    // type, and not otherwise borrowed while the C runs. `val` points at the C caller's local.
    let ctx = unsafe { &mut *ctx.cast::<CallCtx<'_, A>>() };
    match ctx.read(reg) {
        Ok(v) => {
            // SAFETY: see above: a valid, aligned `u64` of the caller.
            unsafe { val.write(v) };
            0
        }
        Err(e) => {
            ctx.fault.get_or_insert(e);
            1
        }
    }
}

/// `ops->write`: MSR of `v` to the shim's register `reg`.
extern "C" fn write_cb<A: RegAccess>(ctx: *mut c_void, reg: u32, v: u64) -> c_int {
    // SAFETY: as in `read_cb`.
    let ctx = unsafe { &mut *ctx.cast::<CallCtx<'_, A>>() };
    match ctx.write(reg, v) {
        Ok(()) => 0,
        Err(e) => {
            ctx.fault.get_or_insert(e);
            1
        }
    }
}
