//! A VM on the real kernel, at the ioctl level: memory slots, vcpus, ONE_REG, guest debug,
//! KVM_RUN. Each method is one request to the agent (guest memory writes larger than
//! [`MAX_MEMORY_CHUNK`] are split).

use std::time::Duration;

use hypdbg_model::uapi::KvmGuestDebug;
use serde::Deserialize;

use crate::agent::Agent;
use crate::error::{ErrorKind, Result};
use crate::exit::VcpuExit;
use crate::proto::{
    MAX_MEMORY_CHUNK, PerfKind, RawExit, Request, RunOptions, SmcccAction, data_hash, unhex,
};

/// KVM_ARM_VCPU_PSCI_0_2 in `kvm_vcpu_init.features[0]`.
pub const KVM_ARM_VCPU_PSCI_0_2: u32 = 1 << 2;
/// The most vcpus the agent runs per VM.
pub const MAX_VCPUS: u8 = 2;

/// A vcpu of the current VM (index 0 or 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuId(u8);

impl VcpuId {
    /// The vcpu index (`KVM_CREATE_VCPU`'s argument).
    pub fn index(self) -> u8 {
        self.0
    }
}

/// Whether the SMCCC filter could be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmcccFilter {
    /// Installed.
    Installed,
    /// The kernel has no SMCCC filter (before 6.4): KVM_HAS_DEVICE_ATTR failed with this errno.
    Unsupported {
        /// The errno.
        errno: i32,
    },
}

/// What a host perf breakpoint counted around a touch ([`RealVm::perf_check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct PerfCheck {
    /// The count before the touch.
    pub before: u64,
    /// The count after.
    pub after: u64,
    /// Whether it counted the touch.
    pub fired: bool,
    /// The CPU the vcpu thread was on.
    pub cpu: i32,
}

/// Where the time of a VM's destruction went, measured in the agent (guest CLOCK_MONOTONIC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Stopping the vcpu threads and closing the vcpu fds.
    pub vcpus: Duration,
    /// Closing the VM fd: the kernel's VM teardown (about 1.4 s in protected mode under TCG).
    pub vm_fd: Duration,
    /// Unmapping the memory slots.
    pub unmap: Duration,
}

/// The exit every KVM_RUN of a timed batch must end in ([`RealVm::bench_round_trips`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchExit {
    /// KVM_EXIT_MMIO: a store to `doorbell` (outside every memslot).
    Mmio {
        /// The doorbell's guest-physical address.
        doorbell: u64,
    },
    /// KVM_EXIT_DEBUG with a software-step syndrome (ESR EC 0x32): userspace single-steps the
    /// guest, one instruction per run.
    Step,
}

/// A request for timed batches of round trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchBatches {
    /// KVM_RUN round trips per batch.
    pub runs: u64,
    /// Batches (1..=1000).
    pub batches: u32,
    /// The exit every run must end in.
    pub exit: BenchExit,
    /// Count the guest-host's interrupts during each batch (read outside the timed window).
    pub count_interrupts: bool,
    /// The agent's kick timeout for the whole request.
    pub timeout: Duration,
}

/// One timed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// CLOCK_MONOTONIC ns of the batch in the guest-host (instructions under `-icount
    /// shift=0`).
    pub ns: u64,
    /// Interrupts the guest-host took during the batch, when counted.
    pub interrupts: Option<u64>,
}

/// A VM created by [`Agent::create_vm`]. Dropping it destroys the VM (best effort; use
/// [`RealVm::destroy`] to see errors).
#[derive(Debug)]
pub struct RealVm<'a> {
    agent: &'a mut Agent,
    id: u64,
    vcpus: [bool; MAX_VCPUS as usize],
    destroyed: bool,
}

#[derive(Deserialize)]
struct Value64 {
    value: u64,
}

impl<'a> RealVm<'a> {
    pub(crate) fn new(agent: &'a mut Agent, id: u64) -> Self {
        RealVm {
            agent,
            id,
            vcpus: [false; MAX_VCPUS as usize],
            destroyed: false,
        }
    }

    /// The agent's serial number of this VM (1, 2, ... per boot).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The agent, for machine-wide requests.
    pub fn agent(&mut self) -> &mut Agent {
        self.agent
    }

    fn vcpu(&self, v: VcpuId) -> Result<u8> {
        if self.vcpus.get(v.0 as usize) == Some(&true) {
            Ok(v.0)
        } else {
            Err(self
                .agent
                .err(ErrorKind::Rejected(format!("vcpu {} does not exist", v.0))))
        }
    }

    /// KVM_CHECK_EXTENSION on the VM fd.
    pub fn check_extension(&mut self, cap: u32) -> Result<i32> {
        let b = self
            .agent
            .request(&Request::VmCheckExtension(u64::from(cap)))?;
        Ok(self.agent.field_u64(&b, "value")? as i32)
    }

    /// Back guest-physical `[gpa, gpa + size)` with fresh anonymous memory in slot `slot`
    /// (KVM_SET_USER_MEMORY_REGION). Page aligned.
    pub fn map_memory(&mut self, slot: u32, gpa: u64, size: u64) -> Result<()> {
        self.agent
            .request(&Request::MapMemory { slot, gpa, size })
            .map(|_| ())
    }

    /// Copy `data` into guest memory at `gpa` (inside one slot): through the shared buffer
    /// when the machine has one, else as hex over the serial line.
    pub fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        if let Some(cap) = self.agent.shared_capacity() {
            for (i, chunk) in data.chunks(cap).enumerate() {
                self.agent.shared_write(chunk)?;
                self.agent.request(&Request::WriteMemoryShared {
                    gpa: gpa + (i * cap) as u64,
                    len: chunk.len() as u64,
                    hash: data_hash(chunk),
                })?;
            }
            return Ok(());
        }
        for (i, chunk) in data.chunks(MAX_MEMORY_CHUNK).enumerate() {
            self.agent.request(&Request::WriteMemory {
                gpa: gpa + (i * MAX_MEMORY_CHUNK) as u64,
                data: chunk.to_vec(),
            })?;
        }
        Ok(())
    }

    /// Write A64 instruction words (little-endian) at `gpa`.
    pub fn write_words(&mut self, gpa: u64, words: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write_memory(gpa, &bytes)
    }

    /// Read `len` bytes of guest memory at `gpa` (through the shared buffer when there is
    /// one).
    pub fn read_memory(&mut self, gpa: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        if let Some(cap) = self.agent.shared_capacity() {
            let mut off = 0;
            while off < len {
                let n = (len - off).min(cap);
                let b = self.agent.request(&Request::ReadMemoryShared {
                    gpa: gpa + off as u64,
                    len: n as u64,
                })?;
                let hash = self.agent.field_u64(&b, "hash")?;
                let d = self.agent.shared_read(n)?;
                if data_hash(&d) != hash {
                    return Err(self.agent.err(ErrorKind::Protocol(
                        "the shared buffer does not hold what the agent put there (hash)".into(),
                    )));
                }
                out.extend_from_slice(&d);
                off += n;
            }
            return Ok(out);
        }
        let mut off = 0;
        while off < len {
            let n = (len - off).min(MAX_MEMORY_CHUNK);
            let b = self.agent.request(&Request::ReadMemory {
                gpa: gpa + off as u64,
                len: n as u64,
            })?;
            let data = b.get("data").and_then(|d| d.as_str()).and_then(unhex);
            match data {
                Some(d) if d.len() == n => out.extend_from_slice(&d),
                _ => {
                    return Err(self.agent.err(ErrorKind::Protocol(
                        "mem_read reply without the bytes asked for".into(),
                    )));
                }
            }
            off += n;
        }
        Ok(out)
    }

    /// Install the SMCCC filter for `[base, base + nr_functions)` (before the first KVM_RUN).
    /// On kernels without it (before 6.4) this is `Ok(Unsupported)`, not an error.
    pub fn set_smccc_filter(
        &mut self,
        base: u32,
        nr_functions: u32,
        action: SmcccAction,
    ) -> Result<SmcccFilter> {
        let b = self.agent.request(&Request::SmcccFilter {
            base,
            nr_functions,
            action,
        })?;
        if b.get("supported").and_then(|v| v.as_bool()) == Some(true) {
            Ok(SmcccFilter::Installed)
        } else {
            let errno = b.get("errno").and_then(|v| v.as_i64()).unwrap_or(0) as i32;
            Ok(SmcccFilter::Unsupported { errno })
        }
    }

    /// KVM_CREATE_VCPU (index 0 or 1) with its own thread in the agent.
    pub fn create_vcpu(&mut self, index: u8) -> Result<VcpuId> {
        if index >= MAX_VCPUS {
            return Err(self.agent.err(ErrorKind::Rejected(format!(
                "vcpu {index}: the agent runs at most {MAX_VCPUS} vcpus"
            ))));
        }
        self.agent.request(&Request::CreateVcpu(index))?;
        self.vcpus[index as usize] = true;
        Ok(VcpuId(index))
    }

    /// KVM_ARM_PREFERRED_TARGET + KVM_ARM_VCPU_INIT with `features` ORed into features\[0\]
    /// (e.g. [`KVM_ARM_VCPU_PSCI_0_2`]); the target.
    pub fn vcpu_init(&mut self, vcpu: VcpuId, features: u32) -> Result<u32> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::VcpuInit { vcpu, features })?;
        Ok(self.agent.field_u64(&b, "target")? as u32)
    }

    /// KVM_GET_ONE_REG of a 64-bit register.
    pub fn get_one_reg(&mut self, vcpu: VcpuId, id: u64) -> Result<u64> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::GetOneReg { vcpu, id })?;
        Ok(self.agent.decode::<Value64>(&b)?.value)
    }

    /// KVM_SET_ONE_REG of a 64-bit register.
    pub fn set_one_reg(&mut self, vcpu: VcpuId, id: u64, value: u64) -> Result<()> {
        let vcpu = self.vcpu(vcpu)?;
        self.agent
            .request(&Request::SetOneReg { vcpu, id, value })
            .map(|_| ())
    }

    /// Several KVM_SET_ONE_REG in order, in one round trip; stops at the first failure.
    pub fn set_one_regs(&mut self, vcpu: VcpuId, regs: &[(u64, u64)]) -> Result<()> {
        let vcpu = self.vcpu(vcpu)?;
        for chunk in regs.chunks(64) {
            self.agent.request(&Request::SetOneRegs {
                vcpu,
                regs: chunk.to_vec(),
            })?;
        }
        Ok(())
    }

    /// Several KVM_GET_ONE_REG in one round trip.
    pub fn get_one_regs(&mut self, vcpu: VcpuId, ids: &[u64]) -> Result<Vec<u64>> {
        let vcpu = self.vcpu(vcpu)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(64) {
            let b = self.agent.request(&Request::GetOneRegs {
                vcpu,
                ids: chunk.to_vec(),
            })?;
            #[derive(Deserialize)]
            struct Values {
                values: Vec<u64>,
            }
            out.extend(self.agent.decode::<Values>(&b)?.values);
        }
        Ok(out)
    }

    /// KVM_GET_REG_LIST.
    pub fn get_reg_list(&mut self, vcpu: VcpuId) -> Result<Vec<u64>> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::GetRegList(vcpu))?;
        #[derive(Deserialize)]
        struct Ids {
            ids: Vec<u64>,
        }
        Ok(self.agent.decode::<Ids>(&b)?.ids)
    }

    /// KVM_SET_GUEST_DEBUG.
    pub fn set_guest_debug(&mut self, vcpu: VcpuId, debug: &KvmGuestDebug) -> Result<()> {
        let vcpu = self.vcpu(vcpu)?;
        self.agent
            .request(&Request::SetGuestDebug {
                vcpu,
                debug: Box::new(*debug),
            })
            .map(|_| ())
    }

    /// KVM_SET_MP_STATE (e.g. [`crate::exit::KVM_MP_STATE_RUNNABLE`]).
    pub fn set_mp_state(&mut self, vcpu: VcpuId, state: u32) -> Result<()> {
        let vcpu = self.vcpu(vcpu)?;
        self.agent
            .request(&Request::SetMpState { vcpu, state })
            .map(|_| ())
    }

    /// KVM_GET_MP_STATE.
    pub fn get_mp_state(&mut self, vcpu: VcpuId) -> Result<u32> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::GetMpState(vcpu))?;
        Ok(self.agent.field_u64(&b, "mp_state")? as u32)
    }

    /// KVM_RUN with default options (2 s timeout, no immediate_exit).
    pub fn run(&mut self, vcpu: VcpuId) -> Result<VcpuExit> {
        self.run_with(vcpu, &RunOptions::default())
    }

    /// KVM_RUN; the exit with PC and PSTATE read right after it. -EINTR is
    /// [`crate::ExitKind::Interrupted`]; another errno is an error.
    pub fn run_with(&mut self, vcpu: VcpuId, opts: &RunOptions) -> Result<VcpuExit> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::Run {
            vcpu,
            opts: opts.clone(),
        })?;
        let raw: RawExit = self.agent.decode(&b)?;
        self.exit_from(raw)
    }

    fn exit_from(&mut self, raw: RawExit) -> Result<VcpuExit> {
        VcpuExit::from_raw(raw).map_err(|errno| {
            self.agent.err(ErrorKind::Kvm {
                op: "KVM_RUN".into(),
                errno,
                message: String::new(),
            })
        })
    }

    /// KVM_RUN on two vcpus at once (each on its own thread); both exits, in the order given.
    pub fn run_both(&mut self, vcpus: [VcpuId; 2], opts: &RunOptions) -> Result<[VcpuExit; 2]> {
        let a = self.vcpu(vcpus[0])?;
        let b = self.vcpu(vcpus[1])?;
        let body = self.agent.request(&Request::RunBoth {
            vcpus: [a, b],
            opts: opts.clone(),
        })?;
        #[derive(Deserialize)]
        struct Both {
            exits: Vec<serde_json::Value>,
        }
        let both: Both = self.agent.decode(&body)?;
        let mut out = Vec::with_capacity(2);
        for e in both.exits {
            if let Some(msg) = e.get("error").and_then(|m| m.as_str()) {
                return Err(self.agent.err(ErrorKind::Rejected(msg.to_string())));
            }
            let map = match e {
                serde_json::Value::Object(m) => m,
                _ => {
                    return Err(self
                        .agent
                        .err(ErrorKind::Protocol("run2 exit is not an object".into())));
                }
            };
            let raw: RawExit = self.agent.decode(&map)?;
            out.push(self.exit_from(raw)?);
        }
        match <[VcpuExit; 2]>::try_from(out) {
            Ok(pair) => Ok(pair),
            Err(_) => Err(self
                .agent
                .err(ErrorKind::Protocol("run2 did not report two exits".into()))),
        }
    }

    /// Pin the vcpu's thread to physical CPU `cpu` (sched_setaffinity); the CPU it is on after.
    pub fn migrate(&mut self, vcpu: VcpuId, cpu: u32) -> Result<i32> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::Migrate { vcpu, cpu })?;
        Ok(self.agent.field_u64(&b, "cpu")? as i32)
    }

    /// Arm a host hardware breakpoint/watchpoint (perf_event_open, PERF_TYPE_BREAKPOINT) on
    /// the agent's own variable or function, for the vcpu's thread; its address.
    pub fn perf_arm(&mut self, vcpu: VcpuId, kind: PerfKind) -> Result<u64> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::PerfArm { vcpu, kind })?;
        self.agent.field_u64(&b, "addr")
    }

    /// On the vcpu's thread, touch the variable and call the function the perf breakpoint
    /// watches; whether it still counts (the host's debug registers came back after the guest
    /// ran).
    pub fn perf_check(&mut self, vcpu: VcpuId) -> Result<PerfCheck> {
        let vcpu = self.vcpu(vcpu)?;
        let b = self.agent.request(&Request::PerfCheck(vcpu))?;
        self.agent.decode(&b)
    }

    /// `batches` times, `runs` KVM_RUN round trips that each must exit with an MMIO write to
    /// `doorbell` (the guest loops on a store to it); CLOCK_MONOTONIC ns per batch, measured in
    /// the agent. Under `-icount shift=0` those are guest instructions.
    pub fn bench_mmio_round_trips(
        &mut self,
        vcpu: VcpuId,
        runs: u64,
        batches: u32,
        doorbell: u64,
        timeout: Duration,
    ) -> Result<Vec<u64>> {
        let b = BenchBatches {
            runs,
            batches,
            exit: BenchExit::Mmio { doorbell },
            count_interrupts: false,
            timeout,
        };
        Ok(self
            .bench_round_trips(vcpu, &b)?
            .into_iter()
            .map(|s| s.ns)
            .collect())
    }

    /// Timed batches of KVM_RUN round trips, each run ending in the exit `b.exit` asks for (any
    /// other exit fails the request: [`ErrorKind::Kvm`] naming the batch and the run).
    pub fn bench_round_trips(&mut self, vcpu: VcpuId, b: &BenchBatches) -> Result<Vec<Batch>> {
        let vcpu = self.vcpu(vcpu)?;
        let (doorbell, step) = match b.exit {
            BenchExit::Mmio { doorbell } => (doorbell, false),
            BenchExit::Step => (0, true),
        };
        let body = self.agent.request(&Request::Bench {
            vcpu,
            runs: b.runs,
            batches: b.batches,
            doorbell,
            step,
            irqs: b.count_interrupts,
            timeout: b.timeout,
        })?;
        #[derive(Deserialize)]
        struct Reply {
            ns: Vec<u64>,
            #[serde(default)]
            irqs: Option<Vec<u64>>,
        }
        let r: Reply = self.agent.decode(&body)?;
        let n = r.ns.len();
        if n != b.batches as usize || r.irqs.as_ref().is_some_and(|i| i.len() != n) {
            return Err(self.agent.err(ErrorKind::Protocol(format!(
                "bench: {n} batch times for {} batches",
                b.batches
            ))));
        }
        let irqs = r.irqs.unwrap_or_default();
        Ok(r.ns
            .iter()
            .enumerate()
            .map(|(i, &ns)| Batch {
                ns,
                interrupts: irqs.get(i).copied(),
            })
            .collect())
    }

    /// Destroy this VM and create a fresh one in its place (the agent runs one VM at a time):
    /// the destination of a live migration on the same machine. Its vcpus and memory slots
    /// are to be created again; how long the teardown took.
    pub fn recreate(&mut self) -> Result<Teardown> {
        let b = self.agent.request(&Request::DestroyVm)?;
        let teardown = teardown_of(&b);
        self.vcpus = [false; MAX_VCPUS as usize];
        let c = self.agent.request(&Request::CreateVm { vm_type: 0 })?;
        self.id = self.agent.field_u64(&c, "vm")?;
        Ok(teardown)
    }

    /// Destroy the VM: vcpu threads joined, fds closed, memory unmapped; how long each part
    /// took in the agent.
    pub fn destroy(mut self) -> Result<Teardown> {
        self.destroyed = true;
        let b = self.agent.request(&Request::DestroyVm)?;
        Ok(teardown_of(&b))
    }
}

/// The agent's timings of a VM's destruction.
fn teardown_of(b: &serde_json::Map<String, serde_json::Value>) -> Teardown {
    let ns = |k: &str| Duration::from_nanos(b.get(k).and_then(|v| v.as_u64()).unwrap_or(0));
    Teardown {
        vcpus: ns("vcpus_ns"),
        vm_fd: ns("vm_fd_ns"),
        unmap: ns("unmap_ns"),
    }
}

impl Drop for RealVm<'_> {
    fn drop(&mut self) {
        if !self.destroyed && !self.agent.is_poisoned() {
            let _ = self.agent.request(&Request::DestroyVm);
        }
    }
}
