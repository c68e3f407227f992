//! What one KVM_RUN returned, as the userspace observer sees it.

use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::{KVM_DEBUG_ARCH_HSR_HIGH_VALID, KvmDebugExitArch};
use serde::Serialize;

use crate::proto::{RawExit, unhex};

/// KVM_EXIT_HYPERCALL.
pub const KVM_EXIT_HYPERCALL: u32 = 3;
/// KVM_EXIT_DEBUG.
pub const KVM_EXIT_DEBUG: u32 = 4;
/// KVM_EXIT_MMIO.
pub const KVM_EXIT_MMIO: u32 = 6;
/// KVM_EXIT_FAIL_ENTRY.
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
/// KVM_EXIT_INTR.
pub const KVM_EXIT_INTR: u32 = 10;
/// KVM_EXIT_INTERNAL_ERROR.
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
/// KVM_EXIT_SYSTEM_EVENT.
pub const KVM_EXIT_SYSTEM_EVENT: u32 = 24;
/// KVM_SYSTEM_EVENT_SHUTDOWN (PSCI SYSTEM_OFF).
pub const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// KVM_SYSTEM_EVENT_RESET (PSCI SYSTEM_RESET).
pub const KVM_SYSTEM_EVENT_RESET: u32 = 2;
/// KVM_MP_STATE_RUNNABLE.
pub const KVM_MP_STATE_RUNNABLE: u32 = 0;
/// KVM_MP_STATE_STOPPED.
pub const KVM_MP_STATE_STOPPED: u32 = 5;

/// The exit-specific part of a KVM_RUN result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ExitKind {
    /// KVM_EXIT_DEBUG: `kvm_run.debug.arch` (`far` is meaningful for watchpoints only).
    Debug(KvmDebugExitArch),
    /// KVM_EXIT_MMIO.
    Mmio {
        /// Guest-physical address.
        phys_addr: u64,
        /// `kvm_run.mmio.data` (a write's data; for a read, what the host supplies next run).
        data: [u8; 8],
        /// Access size in bytes.
        len: u32,
        /// A store.
        is_write: bool,
    },
    /// KVM_EXIT_HYPERCALL (an HVC/SMC forwarded by the SMCCC filter).
    Hypercall {
        /// The function id.
        nr: u64,
        /// `args` as KVM filled them.
        args: [u64; 6],
        /// KVM_HYPERCALL_EXIT_SMC / _16BIT.
        flags: u64,
    },
    /// KVM_EXIT_SYSTEM_EVENT (PSCI SYSTEM_OFF, SYSTEM_RESET, ...).
    SystemEvent {
        /// KVM_SYSTEM_EVENT_*.
        event_type: u32,
        /// `data[..ndata]`.
        data: Vec<u64>,
    },
    /// KVM_RUN returned -EINTR: `immediate_exit`, or the agent's timeout kick.
    Interrupted {
        /// The agent kicked the vcpu thread because the run outlived its timeout.
        timed_out: bool,
    },
    /// KVM_EXIT_FAIL_ENTRY.
    FailEntry {
        /// hardware_entry_failure_reason.
        reason: u64,
        /// The CPU.
        cpu: u32,
    },
    /// KVM_EXIT_INTERNAL_ERROR.
    InternalError {
        /// The suberror.
        suberror: u32,
    },
    /// Any other exit reason ([`VcpuExit::exit_reason`]).
    Other,
}

/// The result of one KVM_RUN and the registers read right after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VcpuExit {
    /// The exit.
    pub kind: ExitKind,
    /// `kvm_run.exit_reason` as KVM left it.
    pub exit_reason: u32,
    /// `kvm_run.flags`.
    pub run_flags: u16,
    /// PC after the exit.
    pub pc: u64,
    /// PSTATE after the exit.
    pub pstate: u64,
    /// x0..x30 after the exit, when asked for.
    pub gprs: Option<Vec<u64>>,
    /// The physical CPU (of the guest host) the vcpu thread was on.
    pub host_cpu: i32,
}

impl VcpuExit {
    /// Build from the agent's report. KVM_RUN failing with an errno other than EINTR is an
    /// error: `Err(errno)`.
    pub fn from_raw(r: RawExit) -> Result<VcpuExit, i32> {
        const EINTR: i32 = 4;
        let kind = if r.ret < 0 {
            if r.errno != EINTR {
                return Err(r.errno);
            }
            ExitKind::Interrupted {
                timed_out: r.timed_out,
            }
        } else if let Some(d) = r.debug {
            ExitKind::Debug(KvmDebugExitArch {
                hsr: d.hsr,
                hsr_high: d.hsr_high,
                far: d.far,
            })
        } else if let Some(m) = r.mmio {
            let mut data = [0u8; 8];
            if let Some(b) = unhex(&m.data) {
                let n = b.len().min(8);
                data[..n].copy_from_slice(&b[..n]);
            }
            ExitKind::Mmio {
                phys_addr: m.phys_addr,
                data,
                len: m.len,
                is_write: m.is_write != 0,
            }
        } else if let Some(h) = r.hypercall {
            let mut args = [0u64; 6];
            for (a, v) in args.iter_mut().zip(h.args) {
                *a = v;
            }
            ExitKind::Hypercall {
                nr: h.nr,
                args,
                flags: h.flags,
            }
        } else if let Some(s) = r.system_event {
            ExitKind::SystemEvent {
                event_type: s.event_type,
                data: s.data,
            }
        } else if let Some(f) = r.fail_entry {
            ExitKind::FailEntry {
                reason: f.reason,
                cpu: f.cpu,
            }
        } else if let Some(i) = r.internal {
            ExitKind::InternalError {
                suberror: i.suberror,
            }
        } else {
            ExitKind::Other
        };
        Ok(VcpuExit {
            kind,
            exit_reason: r.reason,
            run_flags: r.run_flags as u16,
            pc: r.pc.unwrap_or(0),
            pstate: r.pstate.unwrap_or(0),
            gprs: r.x,
            host_cpu: r.cpu,
        })
    }

    /// `kvm_run.debug.arch` of a debug exit.
    pub fn debug(&self) -> Option<KvmDebugExitArch> {
        match self.kind {
            ExitKind::Debug(d) => Some(d),
            _ => None,
        }
    }

    /// The low 32 bits of the ESR of a debug exit (`hsr`).
    pub fn hsr(&self) -> Option<u32> {
        self.debug().map(|d| d.hsr)
    }

    /// The ESR of a debug exit; bits 63:32 only when `kvm_run.flags` says they are valid.
    pub fn esr(&self) -> Option<Esr> {
        self.debug().map(|d| {
            let high = if u32::from(self.run_flags) & KVM_DEBUG_ARCH_HSR_HIGH_VALID != 0 {
                u64::from(d.hsr_high) << 32
            } else {
                0
            };
            Esr::from_bits(high | u64::from(d.hsr))
        })
    }

    /// The exception class of a debug exit (0x30 breakpoint, 0x32 step, 0x34 watchpoint, 0x3c
    /// BRK).
    pub fn ec(&self) -> Option<u8> {
        self.esr().map(|e| e.ec())
    }

    /// Whether this is an MMIO exit at `addr`.
    pub fn is_mmio_at(&self, addr: u64) -> bool {
        matches!(self.kind, ExitKind::Mmio { phys_addr, .. } if phys_addr == addr)
    }

    /// The value of an MMIO write (little-endian, `len` bytes).
    pub fn mmio_value(&self) -> Option<u64> {
        match self.kind {
            ExitKind::Mmio { data, len, .. } => {
                let n = (len as usize).min(8);
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&data[..n]);
                Some(u64::from_le_bytes(b))
            }
            _ => None,
        }
    }

    /// One short line: `debug hsr=0xc2000022 far=0x0 pc=0x40000008`, `mmio w 0x10000000 len 8
    /// pc=...`, ...
    pub fn summary(&self) -> String {
        let tail = format!("pc={:#x}", self.pc);
        match &self.kind {
            ExitKind::Debug(d) => format!("debug hsr={:#x} far={:#x} {tail}", d.hsr, d.far),
            ExitKind::Mmio {
                phys_addr,
                len,
                is_write,
                ..
            } => format!(
                "mmio {} {phys_addr:#x} len {len} {tail}",
                if *is_write { "w" } else { "r" }
            ),
            ExitKind::Hypercall { nr, flags, .. } => {
                format!("hypercall nr={nr:#x} flags={flags:#x} {tail}")
            }
            ExitKind::SystemEvent { event_type, .. } => {
                format!("system_event type={event_type} {tail}")
            }
            ExitKind::Interrupted { timed_out } => {
                format!("eintr{} {tail}", if *timed_out { " (timeout)" } else { "" })
            }
            ExitKind::FailEntry { reason, .. } => format!("fail_entry reason={reason:#x} {tail}"),
            ExitKind::InternalError { suberror } => format!("internal_error {suberror} {tail}"),
            ExitKind::Other => format!("exit_reason {} {tail}", self.exit_reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{RawDebug, RawMmio};

    fn raw() -> RawExit {
        RawExit {
            ret: 0,
            errno: 0,
            reason: 0,
            run_flags: 0,
            timed_out: false,
            debug: None,
            mmio: None,
            hypercall: None,
            system_event: None,
            fail_entry: None,
            internal: None,
            pc: Some(0x4000_0004),
            pstate: Some(0x3c5),
            x: None,
            cpu: 0,
        }
    }

    #[test]
    fn debug_exit_decoding() {
        let mut r = raw();
        r.reason = KVM_EXIT_DEBUG;
        r.debug = Some(RawDebug {
            hsr: 0xcb00_0022,
            hsr_high: 0xdead,
            far: 0,
        });
        let e = VcpuExit::from_raw(r.clone()).unwrap();
        assert_eq!(e.hsr(), Some(0xcb00_0022));
        assert_eq!(e.ec(), Some(0x32));
        assert_eq!(e.esr().unwrap().bits(), 0xcb00_0022, "hsr_high not valid");
        r.run_flags = 1;
        let e = VcpuExit::from_raw(r).unwrap();
        assert_eq!(e.esr().unwrap().bits(), 0xdead_cb00_0022);
        assert_eq!(e.summary(), "debug hsr=0xcb000022 far=0x0 pc=0x40000004");
    }

    #[test]
    fn mmio_intr_and_errors() {
        let mut r = raw();
        r.reason = KVM_EXIT_MMIO;
        r.mmio = Some(RawMmio {
            phys_addr: 0x1000_0000,
            len: 4,
            is_write: 1,
            data: "78563412ffffffff".into(),
        });
        let e = VcpuExit::from_raw(r).unwrap();
        assert!(e.is_mmio_at(0x1000_0000));
        assert_eq!(e.mmio_value(), Some(0x1234_5678));

        let mut r = raw();
        r.ret = -1;
        r.errno = 4;
        r.reason = KVM_EXIT_INTR;
        r.timed_out = true;
        let e = VcpuExit::from_raw(r).unwrap();
        assert_eq!(e.kind, ExitKind::Interrupted { timed_out: true });

        let mut r = raw();
        r.ret = -1;
        r.errno = 8;
        assert_eq!(VcpuExit::from_raw(r), Err(8));
    }
}
