//! The wire protocol between the host and the agent, version 2 (version 1 lacked `bench`'s
//! `step=` and `irqs=` options).
//!
//! One request per line to the agent: `<seq> <command> <args...> [key=value...]`, numbers in
//! decimal or `0x` hex, bytes as hex strings. One reply per request, a single line:
//! `##hypdbg/2 {"seq":<seq>,"ok":true,...}` or
//! `##hypdbg/2 {"seq":<seq>,"ok":false,"op":"KVM_...","errno":22,"error":"..."}`.
//! The prefix carries the protocol version and cannot be mistaken for a kernel message; the
//! serial console adds `\r`, which [`parse_line`] strips. The agent greets with seq 0 (the
//! `hello` reply) as soon as it is up.

use std::fmt::Write as _;
use std::time::Duration;

use hypdbg_model::uapi::KvmGuestDebug;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The protocol version this host speaks.
pub const PROTOCOL_VERSION: u32 = 2;
/// The prefix of every reply line.
pub const REPLY_PREFIX: &str = "##hypdbg/2 ";
/// The largest request line the agent accepts (bytes, newline excluded).
pub const MAX_REQUEST_LINE: usize = (1 << 17) - 2;
/// The most guest memory one `mem_write`/`mem_read` moves.
pub const MAX_MEMORY_CHUNK: usize = 32 * 1024;

/// What the SMCCC filter does with a function-id range (`enum kvm_smccc_filter_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmcccAction {
    /// KVM_SMCCC_FILTER_HANDLE: KVM handles the call.
    Handle = 0,
    /// KVM_SMCCC_FILTER_DENY: the guest gets SMCCC_RET_NOT_SUPPORTED.
    Deny = 1,
    /// KVM_SMCCC_FILTER_FWD_TO_USER: KVM_EXIT_HYPERCALL.
    ForwardToUser = 2,
}

/// What a host perf breakpoint watches in the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PerfKind {
    /// HW_BREAKPOINT_W on an 8-byte variable of the agent (a watchpoint).
    Write,
    /// HW_BREAKPOINT_RW on the same variable.
    ReadWrite,
    /// HW_BREAKPOINT_X on a function of the agent (a breakpoint).
    Execute,
}

impl PerfKind {
    fn token(self) -> &'static str {
        match self {
            PerfKind::Write => "w",
            PerfKind::ReadWrite => "rw",
            PerfKind::Execute => "x",
        }
    }
}

/// Options of one KVM_RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Set `kvm_run.immediate_exit` for this run.
    pub immediate_exit: bool,
    /// The agent kicks the vcpu thread with SIGALRM (KVM_RUN returns -EINTR) after this long.
    pub timeout: Duration,
    /// Bytes copied into `kvm_run.mmio.data` before the run: the data of an MMIO read the
    /// previous exit asked for (at most 8).
    pub mmio_data: Option<Vec<u8>>,
    /// Also read x0..x30 after the exit.
    pub read_gprs: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            immediate_exit: false,
            timeout: Duration::from_secs(2),
            mmio_data: None,
            read_gprs: false,
        }
    }
}

impl RunOptions {
    /// Default options with `immediate_exit` set.
    pub fn immediate_exit() -> Self {
        RunOptions {
            immediate_exit: true,
            ..Default::default()
        }
    }

    fn tokens(&self, out: &mut String, with_mmio: bool) {
        if self.immediate_exit {
            out.push_str(" ie=1");
        }
        let _ = write!(out, " timeout_ms={}", self.timeout.as_millis().max(1));
        if self.read_gprs {
            out.push_str(" regs=1");
        }
        if with_mmio && let Some(d) = &self.mmio_data {
            let _ = write!(out, " mmio={}", hex(d));
        }
    }
}

/// A request to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The agent's greeting again (kernel, KVM, log lines).
    Hello,
    /// Does nothing: a round trip.
    Ping,
    /// KVM_CHECK_EXTENSION on `/dev/kvm`.
    CheckExtension(u64),
    /// KVM_CHECK_EXTENSION on the VM fd.
    VmCheckExtension(u64),
    /// Kernel log lines (`klogctl`), those containing `matching`, the last `max`.
    Dmesg {
        /// Only lines containing this (no spaces).
        matching: Option<String>,
        /// At most this many, from the end.
        max: u32,
    },
    /// KVM_CREATE_VM (any VM of an earlier request is destroyed first).
    CreateVm {
        /// The machine type argument (0: default IPA size).
        vm_type: u64,
    },
    /// Close the VM, its vcpus (threads joined) and its memory.
    DestroyVm,
    /// mmap anonymous memory and KVM_SET_USER_MEMORY_REGION.
    MapMemory {
        /// The slot, 0..8.
        slot: u32,
        /// Guest-physical base (page aligned).
        gpa: u64,
        /// Size (page multiple).
        size: u64,
    },
    /// Copy bytes into guest memory.
    WriteMemory {
        /// Guest-physical address.
        gpa: u64,
        /// The bytes (at most [`MAX_MEMORY_CHUNK`]).
        data: Vec<u8>,
    },
    /// Copy `len` bytes the host put in the shared buffer into guest memory at `gpa`;
    /// `hash` is [`data_hash`] of them.
    WriteMemoryShared {
        /// Guest-physical address.
        gpa: u64,
        /// Bytes (at most the shared buffer).
        len: u64,
        /// [`data_hash`] of the bytes.
        hash: u64,
    },
    /// Copy guest memory into the shared buffer; the reply has their [`data_hash`].
    ReadMemoryShared {
        /// Guest-physical address.
        gpa: u64,
        /// Bytes (at most the shared buffer).
        len: u64,
    },
    /// Read guest memory.
    ReadMemory {
        /// Guest-physical address.
        gpa: u64,
        /// Bytes (at most [`MAX_MEMORY_CHUNK`]).
        len: u64,
    },
    /// KVM_SET_DEVICE_ATTR(KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER) after
    /// KVM_HAS_DEVICE_ATTR.
    SmcccFilter {
        /// First function id.
        base: u32,
        /// Number of function ids.
        nr_functions: u32,
        /// What to do with them.
        action: SmcccAction,
    },
    /// KVM_CREATE_VCPU, mmap of its kvm_run, and its thread.
    CreateVcpu(u8),
    /// KVM_ARM_PREFERRED_TARGET + KVM_ARM_VCPU_INIT with `features` (features\[0\] bits).
    VcpuInit {
        /// The vcpu.
        vcpu: u8,
        /// features\[0\], ORed into the preferred target's.
        features: u32,
    },
    /// KVM_GET_ONE_REG (64-bit).
    GetOneReg {
        /// The vcpu.
        vcpu: u8,
        /// The register id.
        id: u64,
    },
    /// KVM_SET_ONE_REG (64-bit).
    SetOneReg {
        /// The vcpu.
        vcpu: u8,
        /// The register id.
        id: u64,
        /// The value.
        value: u64,
    },
    /// Several KVM_SET_ONE_REG in one round trip, in order; stops at the first failure.
    SetOneRegs {
        /// The vcpu.
        vcpu: u8,
        /// (id, value) pairs.
        regs: Vec<(u64, u64)>,
    },
    /// Several KVM_GET_ONE_REG in one round trip.
    GetOneRegs {
        /// The vcpu.
        vcpu: u8,
        /// Register ids.
        ids: Vec<u64>,
    },
    /// KVM_GET_REG_LIST.
    GetRegList(u8),
    /// KVM_SET_GUEST_DEBUG.
    SetGuestDebug {
        /// The vcpu.
        vcpu: u8,
        /// Control and the register arrays (zero entries are not sent).
        debug: Box<KvmGuestDebug>,
    },
    /// KVM_SET_MP_STATE.
    SetMpState {
        /// The vcpu.
        vcpu: u8,
        /// KVM_MP_STATE_*.
        state: u32,
    },
    /// KVM_GET_MP_STATE.
    GetMpState(u8),
    /// KVM_RUN on the vcpu's thread.
    Run {
        /// The vcpu.
        vcpu: u8,
        /// Options.
        opts: RunOptions,
    },
    /// KVM_RUN on two vcpu threads at once; both exits.
    RunBoth {
        /// The two vcpus.
        vcpus: [u8; 2],
        /// Options for both (no MMIO data).
        opts: RunOptions,
    },
    /// sched_setaffinity of the vcpu thread to one CPU.
    Migrate {
        /// The vcpu.
        vcpu: u8,
        /// The physical CPU of the (guest) host.
        cpu: u32,
    },
    /// perf_event_open(PERF_TYPE_BREAKPOINT) for the vcpu thread on the agent's own variable or
    /// function.
    PerfArm {
        /// The vcpu whose thread it is attached to.
        vcpu: u8,
        /// What it watches.
        kind: PerfKind,
    },
    /// Touch the variable and call the function on the vcpu thread; the counter before and
    /// after.
    PerfCheck(u8),
    /// `batches` times: `runs` KVM_RUNs that must each exit with an MMIO write to `doorbell`
    /// (or, with `step`, with a software-step debug exit); CLOCK_MONOTONIC ns per batch.
    Bench {
        /// The vcpu.
        vcpu: u8,
        /// KVM_RUN round trips per batch.
        runs: u64,
        /// Number of batches (1..=1000).
        batches: u32,
        /// The doorbell's guest-physical address.
        doorbell: u64,
        /// Expect a software-step exit (ESR EC 0x32) from every run instead of the doorbell
        /// (`step=1`, protocol 2).
        step: bool,
        /// Also report the interrupts the guest-host took during each batch (`irqs=1`,
        /// protocol 2).
        irqs: bool,
        /// The agent's kick timeout for the whole command.
        timeout: Duration,
    },
    /// sync(); reboot(RB_POWER_OFF).
    PowerOff,
}

/// FNV-1a (64 bits) of bytes moved through the shared buffer, as the agent computes it.
pub fn data_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decode lower- or upper-case hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Request {
    /// The command word on the wire.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::Ping => "ping",
            Request::CheckExtension(_) => "cap",
            Request::VmCheckExtension(_) => "vm_cap",
            Request::Dmesg { .. } => "dmesg",
            Request::CreateVm { .. } => "vm_create",
            Request::DestroyVm => "vm_destroy",
            Request::MapMemory { .. } => "mem_map",
            Request::WriteMemory { .. } => "mem_write",
            Request::ReadMemory { .. } => "mem_read",
            Request::WriteMemoryShared { .. } => "mem_write_shm",
            Request::ReadMemoryShared { .. } => "mem_read_shm",
            Request::SmcccFilter { .. } => "smccc_filter",
            Request::CreateVcpu(_) => "vcpu_create",
            Request::VcpuInit { .. } => "vcpu_init",
            Request::GetOneReg { .. } => "get_reg",
            Request::SetOneReg { .. } => "set_reg",
            Request::SetOneRegs { .. } => "set_regs",
            Request::GetOneRegs { .. } => "get_regs",
            Request::GetRegList(_) => "reg_list",
            Request::SetGuestDebug { .. } => "guest_debug",
            Request::SetMpState { .. } => "set_mp_state",
            Request::GetMpState(_) => "get_mp_state",
            Request::Run { .. } => "run",
            Request::RunBoth { .. } => "run2",
            Request::Migrate { .. } => "migrate",
            Request::PerfArm { .. } => "perf_arm",
            Request::PerfCheck(_) => "perf_check",
            Request::Bench { .. } => "bench",
            Request::PowerOff => "poweroff",
        }
    }

    /// The request line (without the newline).
    pub fn encode(&self, seq: u64) -> String {
        let mut s = format!("{seq} {}", self.command());
        let w = &mut s;
        match self {
            Request::Hello | Request::Ping | Request::DestroyVm | Request::PowerOff => {}
            Request::CheckExtension(c) | Request::VmCheckExtension(c) => {
                let _ = write!(w, " {c}");
            }
            Request::Dmesg { matching, max } => {
                if let Some(m) = matching {
                    let _ = write!(w, " match={m}");
                }
                let _ = write!(w, " max={max}");
            }
            Request::CreateVm { vm_type } => {
                let _ = write!(w, " type={vm_type}");
            }
            Request::MapMemory { slot, gpa, size } => {
                let _ = write!(w, " {slot} {gpa:#x} {size:#x}");
            }
            Request::WriteMemory { gpa, data } => {
                let _ = write!(w, " {gpa:#x} {}", hex(data));
            }
            Request::ReadMemory { gpa, len } | Request::ReadMemoryShared { gpa, len } => {
                let _ = write!(w, " {gpa:#x} {len}");
            }
            Request::WriteMemoryShared { gpa, len, hash } => {
                let _ = write!(w, " {gpa:#x} {len} {hash:#x}");
            }
            Request::SmcccFilter {
                base,
                nr_functions,
                action,
            } => {
                let _ = write!(w, " {base:#x} {nr_functions} {}", *action as u8);
            }
            Request::CreateVcpu(v) | Request::GetRegList(v) | Request::GetMpState(v) => {
                let _ = write!(w, " {v}");
            }
            Request::PerfCheck(v) => {
                let _ = write!(w, " {v}");
            }
            Request::VcpuInit { vcpu, features } => {
                let _ = write!(w, " {vcpu} features={features:#x}");
            }
            Request::GetOneReg { vcpu, id } => {
                let _ = write!(w, " {vcpu} {id:#x}");
            }
            Request::SetOneReg { vcpu, id, value } => {
                let _ = write!(w, " {vcpu} {id:#x} {value:#x}");
            }
            Request::SetOneRegs { vcpu, regs } => {
                let _ = write!(w, " {vcpu}");
                for (id, v) in regs {
                    let _ = write!(w, " {id:#x}={v:#x}");
                }
            }
            Request::GetOneRegs { vcpu, ids } => {
                let _ = write!(w, " {vcpu}");
                for id in ids {
                    let _ = write!(w, " {id:#x}");
                }
            }
            Request::SetGuestDebug { vcpu, debug } => {
                let _ = write!(w, " {vcpu} {:#x}", debug.control);
                let banks = [
                    ("bcr", &debug.arch.dbg_bcr),
                    ("bvr", &debug.arch.dbg_bvr),
                    ("wcr", &debug.arch.dbg_wcr),
                    ("wvr", &debug.arch.dbg_wvr),
                ];
                for (name, regs) in banks {
                    for (i, v) in regs.iter().enumerate() {
                        if *v != 0 {
                            let _ = write!(w, " {name}{i}={v:#x}");
                        }
                    }
                }
            }
            Request::SetMpState { vcpu, state } => {
                let _ = write!(w, " {vcpu} {state}");
            }
            Request::Run { vcpu, opts } => {
                let _ = write!(w, " {vcpu}");
                opts.tokens(w, true);
            }
            Request::RunBoth { vcpus, opts } => {
                let _ = write!(w, " {} {}", vcpus[0], vcpus[1]);
                opts.tokens(w, false);
            }
            Request::Migrate { vcpu, cpu } => {
                let _ = write!(w, " {vcpu} {cpu}");
            }
            Request::PerfArm { vcpu, kind } => {
                let _ = write!(w, " {vcpu} {}", kind.token());
            }
            Request::Bench {
                vcpu,
                runs,
                batches,
                doorbell,
                step,
                irqs,
                timeout,
            } => {
                let _ = write!(w, " {vcpu} {runs} {batches} {doorbell:#x}");
                if *step {
                    w.push_str(" step=1");
                }
                if *irqs {
                    w.push_str(" irqs=1");
                }
                let _ = write!(w, " timeout_ms={}", timeout.as_millis().max(1));
            }
        }
        s
    }

    /// How long the agent itself may take before the host gives up, beyond the round trip:
    /// a run's or a benchmark's own timeout (after which the agent kicks the vcpu).
    pub fn agent_time(&self) -> Duration {
        match self {
            Request::Run { opts, .. } | Request::RunBoth { opts, .. } => opts.timeout,
            Request::Bench { timeout, .. } => *timeout,
            _ => Duration::ZERO,
        }
    }
}

/// The agent's report of a failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The ioctl or system call that failed, if one did.
    pub op: Option<String>,
    /// Its errno (0 when the request itself was rejected).
    pub errno: i32,
    /// The message.
    pub error: String,
}

/// A reply line, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The request's sequence number (-1: not tied to a request).
    pub seq: i64,
    /// The reply's members besides `seq` and `ok`, or the failure.
    pub body: Result<Map<String, Value>, Failure>,
}

/// The payload after [`REPLY_PREFIX`] that says "the reply is in the reply mailbox".
pub const MAILBOX_MARK: &str = "@";
/// The request line that says "the request is in the request mailbox".
pub const MAILBOX_REQUEST: &str = "@\n";

/// A console line split into what the kernel (or anything else) printed and the agent's reply.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedLine {
    /// Text that is not part of a reply (a kernel message), if any.
    pub console: Option<String>,
    /// The reply on this line, if any, or why it could not be decoded.
    pub reply: Option<Result<Reply, String>>,
    /// The line says the reply is in the reply mailbox.
    pub mailbox: bool,
}

/// Split one console line (`\r` stripped) into console text and a reply.
pub fn parse_line(line: &str) -> ParsedLine {
    let line = line.trim_end_matches(['\r', '\n']).replace('\r', "");
    let Some(at) = line.find(REPLY_PREFIX) else {
        return ParsedLine {
            console: Some(line),
            reply: None,
            mailbox: false,
        };
    };
    let before = line[..at].trim();
    let console = (!before.is_empty()).then(|| before.to_string());
    let payload = line[at + REPLY_PREFIX.len()..].trim();
    if payload == MAILBOX_MARK {
        return ParsedLine {
            console,
            reply: None,
            mailbox: true,
        };
    }
    ParsedLine {
        console,
        reply: Some(decode_reply(payload)),
        mailbox: false,
    }
}

/// Decode a reply's JSON (what follows [`REPLY_PREFIX`], or the reply mailbox).
pub fn decode_reply(json: &str) -> Result<Reply, String> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| format!("bad reply JSON ({e}): {json}"))?;
    let Value::Object(mut m) = v else {
        return Err(format!("reply is not a JSON object: {json}"));
    };
    let seq = m
        .remove("seq")
        .and_then(|s| s.as_i64())
        .ok_or_else(|| format!("reply without seq: {json}"))?;
    let ok = m
        .remove("ok")
        .and_then(|s| s.as_bool())
        .ok_or_else(|| format!("reply without ok: {json}"))?;
    let body = if ok {
        Ok(m)
    } else {
        Err(Failure {
            op: m.get("op").and_then(|v| v.as_str()).map(str::to_string),
            errno: m.get("errno").and_then(|v| v.as_i64()).unwrap_or(0) as i32,
            error: m
                .get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        })
    };
    Ok(Reply { seq, body })
}

/// Decode a reply body into a typed structure.
pub fn body_as<T: for<'de> Deserialize<'de>>(body: &Map<String, Value>) -> Result<T, String> {
    T::deserialize(Value::Object(body.clone())).map_err(|e| {
        format!(
            "reply does not have the expected shape ({e}): {}",
            Value::Object(body.clone())
        )
    })
}

/// The `hello` reply.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Hello {
    /// The agent's protocol version.
    pub proto: u32,
    /// The hash of the agent's source it was built from.
    pub agent: String,
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `uname -m`.
    pub machine: String,
    /// Online CPUs.
    pub cpus: i64,
    /// Guest uptime (CLOCK_BOOTTIME) when the reply was made, ms.
    pub uptime_ms: u64,
    /// `/dev/kvm`, if it opened.
    pub kvm: Option<KvmInfo>,
    /// The shared buffer's physical pages, if the agent could lock and find them.
    #[serde(default)]
    pub shm: Option<SharedPages>,
    /// Why there is no shared buffer.
    #[serde(default)]
    pub shm_why: Option<String>,
    /// errno of open("/dev/kvm") when it failed.
    #[serde(default)]
    pub kvm_errno: Option<i32>,
    /// The kernel log lines that contain "kvm".
    pub kvm_log: Vec<String>,
}

/// The agent's shared buffer: physical frames, in buffer order: `data_pages` for guest memory,
/// then `req_pages` of request mailbox, then `rep_pages` of reply mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SharedPages {
    /// The page size.
    pub page: u64,
    /// Pages for guest memory transfers.
    pub data_pages: usize,
    /// Pages of the request mailbox.
    pub req_pages: usize,
    /// Pages of the reply mailbox.
    pub rep_pages: usize,
    /// The page frame numbers.
    pub pfns: Vec<u64>,
}

/// What `/dev/kvm` reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct KvmInfo {
    /// KVM_GET_API_VERSION.
    pub api: i32,
    /// KVM_GET_VCPU_MMAP_SIZE.
    pub run_size: i32,
}

/// A KVM_RUN result as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RawExit {
    /// The ioctl's return value.
    pub ret: i32,
    /// Its errno when negative.
    pub errno: i32,
    /// `kvm_run.exit_reason`.
    pub reason: u32,
    /// `kvm_run.flags`.
    pub run_flags: u32,
    /// Whether the agent kicked the thread because the run outlived its timeout.
    pub timed_out: bool,
    /// KVM_EXIT_DEBUG.
    pub debug: Option<RawDebug>,
    /// KVM_EXIT_MMIO.
    pub mmio: Option<RawMmio>,
    /// KVM_EXIT_HYPERCALL.
    pub hypercall: Option<RawHypercall>,
    /// KVM_EXIT_SYSTEM_EVENT.
    pub system_event: Option<RawSystemEvent>,
    /// KVM_EXIT_FAIL_ENTRY.
    pub fail_entry: Option<RawFailEntry>,
    /// KVM_EXIT_INTERNAL_ERROR.
    pub internal: Option<RawInternal>,
    /// PC after the exit (ONE_REG).
    pub pc: Option<u64>,
    /// PSTATE after the exit (ONE_REG).
    pub pstate: Option<u64>,
    /// x0..x30 when asked for.
    pub x: Option<Vec<u64>>,
    /// The CPU the vcpu thread was on after the exit.
    pub cpu: i32,
}

/// `kvm_run.debug.arch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct RawDebug {
    /// ESR bits 31:0.
    pub hsr: u32,
    /// ESR bits 63:32.
    pub hsr_high: u32,
    /// FAR.
    pub far: u64,
}

/// `kvm_run.mmio`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RawMmio {
    /// Guest-physical address.
    pub phys_addr: u64,
    /// Access size.
    pub len: u32,
    /// Write (1) or read (0).
    pub is_write: u32,
    /// The 8 data bytes, hex.
    pub data: String,
}

/// `kvm_run.hypercall`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RawHypercall {
    /// The function id (x0).
    pub nr: u64,
    /// x1..x6... as KVM fills them (arm64: zero; userspace reads registers).
    pub args: Vec<u64>,
    /// `ret`.
    pub ret: u64,
    /// KVM_HYPERCALL_EXIT_* flags.
    pub flags: u64,
}

/// `kvm_run.system_event`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RawSystemEvent {
    /// KVM_SYSTEM_EVENT_*.
    #[serde(rename = "type")]
    pub event_type: u32,
    /// Valid entries of data.
    pub ndata: u32,
    /// data\[..ndata\].
    pub data: Vec<u64>,
    /// The old `flags` (= data\[0\]).
    pub flags: u64,
}

/// `kvm_run.fail_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct RawFailEntry {
    /// hardware_entry_failure_reason.
    pub reason: u64,
    /// cpu.
    pub cpu: u32,
}

/// `kvm_run.internal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct RawInternal {
    /// suberror.
    pub suberror: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypdbg_model::uapi::GuestDebugControl;

    #[test]
    fn request_lines() {
        assert_eq!(Request::Hello.encode(0), "0 hello");
        assert_eq!(Request::CheckExtension(119).encode(3), "3 cap 119");
        assert_eq!(
            Request::MapMemory {
                slot: 0,
                gpa: 0x4000_0000,
                size: 0x10000
            }
            .encode(4),
            "4 mem_map 0 0x40000000 0x10000"
        );
        assert_eq!(
            Request::WriteMemory {
                gpa: 0x1000,
                data: vec![0x1f, 0x20, 0x03, 0xd5]
            }
            .encode(5),
            "5 mem_write 0x1000 1f2003d5"
        );
        assert_eq!(
            Request::SmcccFilter {
                base: 0xef00_0000,
                nr_functions: 16,
                action: SmcccAction::ForwardToUser
            }
            .encode(6),
            "6 smccc_filter 0xef000000 16 2"
        );
        assert_eq!(
            Request::VcpuInit {
                vcpu: 1,
                features: 4
            }
            .encode(7),
            "7 vcpu_init 1 features=0x4"
        );
        assert_eq!(
            Request::SetOneRegs {
                vcpu: 0,
                regs: vec![(0x6030_0000_0010_0040, 0x4000_0000), (1, 2)]
            }
            .encode(8),
            "8 set_regs 0 0x6030000000100040=0x40000000 0x1=0x2"
        );
        let mut dbg = KvmGuestDebug {
            control: (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits(),
            ..Default::default()
        };
        dbg.arch.dbg_bcr[0] = 0x1e7;
        dbg.arch.dbg_bvr[0] = 0x4000_0008;
        dbg.arch.dbg_wcr[3] = 0x1ff7;
        dbg.arch.dbg_wvr[3] = 0x4000_1000;
        assert_eq!(
            Request::SetGuestDebug {
                vcpu: 0,
                debug: Box::new(dbg)
            }
            .encode(9),
            "9 guest_debug 0 0x20001 bcr0=0x1e7 bvr0=0x40000008 wcr3=0x1ff7 wvr3=0x40001000"
        );
        assert_eq!(
            Request::Run {
                vcpu: 0,
                opts: RunOptions {
                    immediate_exit: true,
                    timeout: Duration::from_millis(500),
                    mmio_data: Some(vec![1, 2]),
                    read_gprs: true
                }
            }
            .encode(10),
            "10 run 0 ie=1 timeout_ms=500 regs=1 mmio=0102"
        );
        assert_eq!(
            Request::RunBoth {
                vcpus: [0, 1],
                opts: RunOptions::default()
            }
            .encode(11),
            "11 run2 0 1 timeout_ms=2000"
        );
        assert_eq!(
            Request::Bench {
                vcpu: 0,
                runs: 100,
                batches: 5,
                doorbell: 0x1000_0000,
                step: false,
                irqs: false,
                timeout: Duration::from_secs(30)
            }
            .encode(12),
            "12 bench 0 100 5 0x10000000 timeout_ms=30000"
        );
        assert_eq!(
            Request::Bench {
                vcpu: 0,
                runs: 10,
                batches: 2,
                doorbell: 0,
                step: true,
                irqs: true,
                timeout: Duration::from_secs(1)
            }
            .encode(12),
            "12 bench 0 10 2 0x0 step=1 irqs=1 timeout_ms=1000"
        );
        assert_eq!(
            Request::PerfArm {
                vcpu: 1,
                kind: PerfKind::Execute
            }
            .encode(13),
            "13 perf_arm 1 x"
        );
        assert_eq!(
            Request::Dmesg {
                matching: Some("kvm".into()),
                max: 20
            }
            .encode(14),
            "14 dmesg match=kvm max=20"
        );
        assert_eq!(Request::PowerOff.encode(15), "15 poweroff");
        assert_eq!(
            Request::WriteMemoryShared {
                gpa: 0x4000_0000,
                len: 4096,
                hash: data_hash(b"")
            }
            .encode(16),
            "16 mem_write_shm 0x40000000 4096 0xcbf29ce484222325"
        );
        assert_eq!(
            Request::ReadMemoryShared {
                gpa: 0x4000_0000,
                len: 8
            }
            .encode(17),
            "17 mem_read_shm 0x40000000 8"
        );
    }

    #[test]
    fn data_hash_is_plain_fnv1a() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(data_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(data_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(data_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hex_round_trip() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert_eq!(unhex("ABcd").unwrap(), vec![0xab, 0xcd]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn reply_lines() {
        let p = parse_line("##hypdbg/2 {\"seq\":3,\"ok\":true,\"value\":6}\r");
        assert_eq!(p.console, None);
        let r = p.reply.unwrap().unwrap();
        assert_eq!(r.seq, 3);
        assert_eq!(r.body.unwrap()["value"], 6);

        let p = parse_line(
            "##hypdbg/2 {\"seq\":4,\"ok\":false,\"op\":\"KVM_SET_ONE_REG\",\"errno\":22,\"error\":\"Invalid argument\"}",
        );
        let r = p.reply.unwrap().unwrap();
        assert_eq!(
            r.body.unwrap_err(),
            Failure {
                op: Some("KVM_SET_ONE_REG".into()),
                errno: 22,
                error: "Invalid argument".into()
            }
        );

        // A kernel message that got in front of a reply on the same line.
        let p = parse_line("[   12.3] kvm: something##hypdbg/2 {\"seq\":5,\"ok\":true}");
        assert_eq!(p.console.as_deref(), Some("[   12.3] kvm: something"));
        assert_eq!(p.reply.unwrap().unwrap().seq, 5);

        // Kernel messages are console text.
        let p =
            parse_line("[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]\r");
        assert!(p.reply.is_none());
        assert_eq!(
            p.console.as_deref(),
            Some("[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]")
        );

        // The reply is in the mailbox.
        let p = parse_line("##hypdbg/2 @\r");
        assert!(p.mailbox && p.reply.is_none() && p.console.is_none());
        assert!(!parse_line("##hypdbg/2 {\"seq\":1,\"ok\":true}").mailbox);

        // A reply cut short is an error, not console text.
        let p = parse_line("##hypdbg/2 {\"seq\":6,\"ok\":tr");
        assert!(p.reply.unwrap().is_err());
        assert!(
            parse_line("##hypdbg/2 [1]")
                .reply
                .unwrap()
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn exit_bodies_decode() {
        let line = "##hypdbg/2 {\"seq\":9,\"ok\":true,\"ret\":0,\"errno\":0,\"reason\":4,\"run_flags\":0,\
                    \"timed_out\":false,\"debug\":{\"hsr\":3254779938,\"hsr_high\":0,\"far\":0},\
                    \"pc\":1073741832,\"pstate\":965,\"cpu\":0}";
        let body = parse_line(line).reply.unwrap().unwrap().body.unwrap();
        let e: RawExit = body_as(&body).unwrap();
        assert_eq!(e.debug.unwrap().hsr, 0xc200_0022);
        assert_eq!(e.pc, Some(0x4000_0008));
        assert!(e.mmio.is_none());
        let hello = "##hypdbg/2 {\"seq\":0,\"ok\":true,\"proto\":2,\"agent\":\"abc\",\"release\":\"6.1.0-57-arm64\",\
                     \"version\":\"#1 SMP\",\"machine\":\"aarch64\",\"cpus\":1,\"uptime_ms\":1500,\"kvm\":null,\"kvm_errno\":2,\
                     \"kvm_log\":[\"kvm [1]: VHE mode initialized successfully\"]}";
        let body = parse_line(hello).reply.unwrap().unwrap().body.unwrap();
        let h: Hello = body_as(&body).unwrap();
        assert_eq!(h.kvm, None);
        assert_eq!(h.kvm_errno, Some(2));
        assert!(body_as::<RawExit>(&body).is_err());
    }
}
