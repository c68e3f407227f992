//! The community's tests of this path as guest programs and host drivers: Linux's
//! tools/testing/selftests/kvm/arm64/debug-exceptions.c (guest cases 1-12 and the userspace
//! single-step test) and kvm-unit-tests arm/debug.c (bp, wp, ss, with and without migration).
//! Tests, the validator and the benchmarks all run these.

use std::fmt::Write as _;

use hypdbg_model::esr::{
    ESR_ELX_EC_BREAKPT_CUR, ESR_ELX_EC_BRK64, ESR_ELX_EC_SOFTSTP_CUR, ESR_ELX_EC_SOFTSTP_LOW,
    ESR_ELX_EC_SVC64, ESR_ELX_EC_WATCHPT_CUR,
};
use hypdbg_model::guest_abi::Doorbell;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebug, core_reg};
use hypdbg_model::{DbgBank, DebugFeatures, SysReg};

use crate::events::GuestEvent;
use crate::fault::KvmError;
use crate::guest::Program;
use crate::guest::program::ProgramError;
use crate::vm::{VcpuExit, Vm};

pub use hypdbg_model::guest_abi::{CODE_BASE, DATA_BASE};

/// `reset_debug_state()`: mask D, clear OSDLR/OSLAR, MDSCR = 0, CONTEXTIDR = 0, zero every
/// implemented breakpoint and watchpoint register.
pub fn reset_debug_state(f: &DebugFeatures) -> String {
    let mut s = String::from(
        "msr daifset, #8\nmsr osdlr_el1, xzr\nmsr oslar_el1, xzr\nisb\nmsr mdscr_el1, xzr\nmsr contextidr_el1, xzr\n",
    );
    for i in 0..f.num_brps() {
        let _ = writeln!(s, "msr dbgbcr{i}_el1, xzr\nmsr dbgbvr{i}_el1, xzr");
    }
    for i in 0..f.num_wrps() {
        let _ = writeln!(s, "msr dbgwcr{i}_el1, xzr\nmsr dbgwvr{i}_el1, xzr");
    }
    s.push_str("isb\n");
    s
}

/// Load a 64-bit constant into `xN` (movz + movk).
fn mov64(x: u8, v: u64) -> String {
    let mut s = format!("movz x{x}, #{:#x}\n", v & 0xffff);
    for sh in [16u32, 32, 48] {
        let h = (v >> sh) & 0xffff;
        if h != 0 {
            let _ = writeln!(s, "movk x{x}, #{h:#x}, lsl #{sh}");
        }
    }
    s
}

const ENABLE_MONITOR: &str = "msr daifclr, #8\nmov x0, #0xa000\nmsr mdscr_el1, x0\nisb\n";
const ENABLE_OS_LOCK: &str = "mov x0, #1\nmsr oslar_el1, x0\nisb\nmrs x9, oslsr_el1\n";

/// One expected guest exception: (EC as the guest's EL1 sees it, ELR label, FAR label).
pub type Expected = (u8, &'static str, Option<&'static str>);

/// debug-exceptions.c's `guest_code(bpn, wpn, ctx_bpn)` for one combination, and the
/// exceptions its handlers must record, in order.
pub fn debug_exceptions_program(
    f: &DebugFeatures,
    bpn: usize,
    wpn: usize,
    ctx_bpn: usize,
) -> Result<(Program, Vec<Expected>), ProgramError> {
    let reset = reset_debug_state(f);
    let mut s = debug_exceptions_unlinked(&reset, bpn, wpn);
    s += &debug_exceptions_linked(&reset, bpn, wpn, ctx_bpn);
    let program = Program::assemble(CODE_BASE, &s)?;
    let expected = vec![
        (ESR_ELX_EC_BRK64, "sw_bp", None),
        (ESR_ELX_EC_BREAKPT_CUR, "hw_bp1", None),
        (ESR_ELX_EC_BREAKPT_CUR, "hw_bp2", None),
        (ESR_ELX_EC_SVC64, "hw_bp2+4", None),
        (ESR_ELX_EC_BREAKPT_CUR, "sw_bp2", None),
        (ESR_ELX_EC_BRK64, "sw_bp2", None),
        (ESR_ELX_EC_WATCHPT_CUR, "wp_store", Some("write_data")),
        (ESR_ELX_EC_SOFTSTP_CUR, "ss_start", None),
        (ESR_ELX_EC_SOFTSTP_CUR, "ss_start+4", None),
        (ESR_ELX_EC_SOFTSTP_CUR, "ss_start+8", None),
        (ESR_ELX_EC_BRK64, "os_sw_bp", None),
        (ESR_ELX_EC_BREAKPT_CUR, "hw_bp_ctx", None),
        (ESR_ELX_EC_WATCHPT_CUR, "wp_ctx_store", Some("write_data+8")),
    ];
    Ok((program, expected))
}

/// Cases 1-10 of `guest_code`: software, hardware and watch points, single step, and the
/// same under the OS lock.
fn debug_exceptions_unlinked(reset: &str, bpn: usize, wpn: usize) -> String {
    let bcr = 0x1fe3u64; // LEN8 | EXEC | EL1 | E, with the RES0 ones the selftest writes
    let wcr = 0x1ffbu64; // LEN8 | RD | WR | EL1 | E
    let mut s = String::new();
    let hw_bp = |s: &mut String, label: &str| {
        let _ = write!(
            s,
            "{}adr x1, {label}\nmsr dbgbvr{bpn}_el1, x1\nmsr dbgbcr{bpn}_el1, x0\nisb\n",
            mov64(0, bcr)
        );
    };
    let wp = |s: &mut String| {
        let _ = write!(
            s,
            "{}{}msr dbgwvr{wpn}_el1, x1\nmsr dbgwcr{wpn}_el1, x0\nisb\n",
            mov64(0, wcr),
            mov64(1, DATA_BASE)
        );
    };
    // 1. sw bp
    let _ = writeln!(s, "{reset}sw_bp: brk #0");
    // 2. hw bp on a nop
    let _ = write!(s, "{reset}");
    hw_bp(&mut s, "hw_bp1");
    let _ = writeln!(s, "{ENABLE_MONITOR}hw_bp1: nop");
    // 3. hw bp on svc
    let _ = write!(s, "{reset}");
    hw_bp(&mut s, "hw_bp2");
    let _ = writeln!(s, "{ENABLE_MONITOR}hw_bp2: svc #0");
    // 4. hw bp on brk
    let _ = write!(s, "{reset}");
    hw_bp(&mut s, "sw_bp2");
    let _ = writeln!(s, "{ENABLE_MONITOR}sw_bp2: brk #0");
    // 5. watchpoint
    let _ = write!(s, "{reset}");
    wp(&mut s);
    let _ = write!(
        s,
        "{ENABLE_MONITOR}mov x2, #0x78\nwp_store: strb w2, [x1]\n"
    );
    // 6. single step
    let _ = write!(
        s,
        "{reset}mov x0, #0x2001\nmsr mdscr_el1, x0\nisb\nmsr daifclr, #8\nss_start: mrs x0, esr_el1\nadd x0, x0, #1\nmsr daifset, #8\nnop\n"
    );
    // 7-10. OS lock: BRK still taken; hw bp, wp and step are not.
    let _ = writeln!(s, "{reset}{ENABLE_OS_LOCK}os_sw_bp: brk #0");
    let _ = write!(s, "{reset}{ENABLE_OS_LOCK}");
    hw_bp(&mut s, "os_hw_bp");
    let _ = writeln!(s, "{ENABLE_MONITOR}os_hw_bp: nop");
    let _ = write!(s, "{reset}{ENABLE_OS_LOCK}");
    wp(&mut s);
    let _ = write!(s, "{ENABLE_MONITOR}mov x2, #0x79\nstrb w2, [x1]\n");
    let _ = write!(
        s,
        "{reset}{ENABLE_OS_LOCK}mov x0, #0x2001\nmsr mdscr_el1, x0\nisb\nmsr daifclr, #8\nnop\nnop\nmsr daifset, #8\n"
    );
    s
}

/// Cases 11 and 12 of `guest_code`: a breakpoint and a watchpoint linked to a context
/// breakpoint on CONTEXTIDR_EL1.
fn debug_exceptions_linked(reset: &str, bpn: usize, wpn: usize, ctx_bpn: usize) -> String {
    let ctx = 0xabcdefu64;
    let mut s = String::new();
    // 11. linked context breakpoint
    let _ = write!(
        s,
        "{reset}{}msr dbgbvr{ctx_bpn}_el1, x1\n{}msr dbgbcr{ctx_bpn}_el1, x0\nadr x1, hw_bp_ctx\nmsr dbgbvr{bpn}_el1, x1\n{}msr dbgbcr{bpn}_el1, x0\n{}msr contextidr_el1, x1\nisb\n{ENABLE_MONITOR}hw_bp_ctx: nop\n",
        mov64(1, ctx),
        mov64(0, 0x30_1fe3),
        mov64(0, 0x10_1fe3 | (ctx_bpn as u64) << 16),
        mov64(1, ctx)
    );
    // 12. linked watchpoint
    let _ = write!(
        s,
        "{reset}{}msr dbgbvr{ctx_bpn}_el1, x1\n{}msr dbgbcr{ctx_bpn}_el1, x0\n{}msr dbgwvr{wpn}_el1, x1\n{}msr dbgwcr{wpn}_el1, x0\n{}msr contextidr_el1, x1\nisb\n{ENABLE_MONITOR}mov x2, #0x7a\nwp_ctx_store: strb w2, [x3]\nstop #0\n",
        mov64(1, ctx),
        mov64(0, 0x30_1fe3),
        mov64(1, DATA_BASE + 8),
        mov64(0, 0x10_1ffb | (ctx_bpn as u64) << 16),
        mov64(1, ctx),
    );
    s.replace(
        "wp_ctx_store: strb w2, [x3]",
        &format!("{}wp_ctx_store: strb w2, [x3]", mov64(3, DATA_BASE + 8)),
    )
}

/// Resolve `label`, `label+N` and the data labels of [`debug_exceptions_program`].
pub fn resolve(p: &Program, name: &str) -> Option<u64> {
    let (base, off) = match name.split_once('+') {
        Some((b, o)) => (b, o.parse::<u64>().ok()?),
        None => (name, 0),
    };
    let addr = if base == "write_data" {
        DATA_BASE
    } else {
        p.label(base)?
    };
    Some(addr + off)
}

/// Compare the guest's recorded exceptions with the expected ones; `Err` says the first
/// difference.
pub fn check_exceptions(p: &Program, got: &[GuestEvent], want: &[Expected]) -> Result<(), String> {
    let got: Vec<(u8, u64, Option<u64>)> = got
        .iter()
        .filter_map(|e| match e {
            GuestEvent::Exception { esr, elr, far, .. } => Some((esr.ec(), *elr, *far)),
            _ => None,
        })
        .collect();
    for (i, (ec, elr, far)) in want.iter().enumerate() {
        let want_elr = resolve(p, elr).ok_or_else(|| format!("unknown label {elr}"))?;
        let want_far = match far {
            Some(f) => Some(resolve(p, f).ok_or_else(|| format!("unknown label {f}"))?),
            None => None,
        };
        match got.get(i) {
            Some(&(gec, gelr, gfar))
                if gec == *ec && gelr == want_elr && (want_far.is_none() || gfar == want_far) => {}
            Some(&(gec, gelr, gfar)) => {
                return Err(format!(
                    "exception {i}: expected EC {ec:#x} at {elr} ({want_elr:#x}){}, got EC {gec:#x} at {gelr:#x} far {gfar:?}",
                    want_far.map(|f| format!(" far {f:#x}")).unwrap_or_default()
                ));
            }
            None => {
                return Err(format!(
                    "exception {i}: expected EC {ec:#x} at {elr}, got none ({} in all)",
                    got.len()
                ));
            }
        }
    }
    if got.len() > want.len() {
        return Err(format!(
            "unexpected extra exception: {:x?}",
            &got[want.len()..]
        ));
    }
    Ok(())
}

/// Every (breakpoint, watchpoint, context breakpoint) combination debug-exceptions.c loops
/// over: c in the context-aware units, b below them, w any watchpoint.
pub fn debug_exceptions_combinations(f: &DebugFeatures) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for c in f.first_ctx_cmp()..f.num_brps() {
        for b in 0..f.first_ctx_cmp() {
            for w in 0..f.num_wrps() {
                v.push((b, w, c));
            }
        }
    }
    v
}

/// `guest_code_ss(test_cnt)`: per iteration, a bare ucall (stop #0), then between
/// `iter_ss_begin` and `iter_ss_end` write DBGBVR0/DBGWVR0 = i << 2 and read them back;
/// a mismatch is a BRK #0xbad; stop #1 when done.
pub fn single_step_program(iterations: u16) -> Result<Program, ProgramError> {
    let text = format!(
        "mov x19, #{iterations}\nloop:\nlsl x20, x19, #2\nstop #0\niter_ss_begin: nop\nmsr dbgbvr0_el1, x20\nmsr dbgwvr0_el1, x20\nmrs x21, dbgbvr0_el1\nmrs x22, dbgwvr0_el1\niter_ss_end: sub x23, x21, x20\ncbnz x23, fail\nsub x23, x22, x20\ncbnz x23, fail\nsub x19, x19, #1\ncbnz x19, loop\nstop #1\nfail: brk #0xbad\n"
    );
    Program::assemble(CODE_BASE, &text)
}

/// What the userspace single-step test saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SingleStepReport {
    /// Iterations completed.
    pub iterations: u32,
    /// KVM_EXIT_DEBUG exits taken.
    pub steps: u64,
}

/// `test_single_step_from_userspace`: drive [`single_step_program`]; every KVM_EXIT_DEBUG
/// inside the window must land exactly 4 bytes after the previous one, stepping stops just
/// before `iter_ss_end` and no debug exit may come while it is off.
pub fn run_userspace_single_step(
    vm: &mut Vm,
    vcpu: usize,
    p: &Program,
) -> Result<SingleStepReport, String> {
    let (begin, end) = match (p.label("iter_ss_begin"), p.label("iter_ss_end")) {
        (Some(b), Some(e)) => (b, e),
        _ => return Err("program lacks iter_ss_begin/iter_ss_end".into()),
    };
    let kvm = |e: KvmError| e.to_string();
    let mut report = SingleStepReport::default();
    let mut ss_enable = false;
    let mut test_pc = 0u64;
    for _ in 0..10_000_000u64 {
        let exit = vm.run(vcpu).map_err(kvm)?;
        match exit {
            VcpuExit::Debug { arch, .. } => {
                if !ss_enable {
                    return Err(format!(
                        "unexpected KVM_EXIT_DEBUG (hsr {:#x}) with single-step off",
                        arch.hsr
                    ));
                }
                if (arch.hsr >> 26) as u8 != ESR_ELX_EC_SOFTSTP_LOW {
                    return Err(format!(
                        "expected a software step exit, got hsr {:#x}",
                        arch.hsr
                    ));
                }
                report.steps += 1;
                let pc = vm.get_one_reg(vcpu, core_reg::PC).map_err(kvm)?;
                if test_pc != 0 && pc != test_pc {
                    return Err(format!(
                        "step exit at {pc:#x}, expected {test_pc:#x} (exactly one instruction per step)"
                    ));
                }
                if pc + 4 == end {
                    test_pc = 0;
                    ss_enable = false;
                    let dbg = KvmGuestDebug {
                        control: GuestDebugControl::ENABLE.bits(),
                        ..Default::default()
                    };
                    vm.set_guest_debug(vcpu, &dbg).map_err(kvm)?;
                    continue;
                }
                test_pc = if (begin..end).contains(&pc) {
                    pc + 4
                } else {
                    0
                };
            }
            e if e.doorbell() == Some(Doorbell::Stop(0)) => {
                report.iterations += 1;
                ss_enable = true;
                let control = GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP;
                vm.set_guest_debug(
                    vcpu,
                    &KvmGuestDebug {
                        control: control.bits(),
                        ..Default::default()
                    },
                )
                .map_err(kvm)?;
            }
            e if e.doorbell() == Some(Doorbell::Stop(1)) => return Ok(report),
            other => return Err(format!("unexpected exit: {other}")),
        }
    }
    Err("the single-step test did not finish".into())
}

/// kvm-unit-tests `test_hw_bp`: program every breakpoint i at hw_bp0 + 4i, enable, stop #0 (a
/// migration point), then 16 `msr daifclr, #8` from hw_bp0.
pub fn kut_bp_program(f: &DebugFeatures) -> Result<Program, ProgramError> {
    let mut s = reset_debug_state(f);
    for i in 0..f.num_brps() {
        let _ = write!(
            s,
            "adr x1, hw_bp0\nadd x1, x1, #{}\nmsr dbgbvr{i}_el1, x1\nmov x0, #0x1fe3\nmsr dbgbcr{i}_el1, x0\n",
            4 * i
        );
    }
    s.push_str("isb\nmsr daifclr, #8\nmov x0, #0xa000\nmsr mdscr_el1, x0\nisb\nstop #0\nhw_bp0:\n");
    for _ in 0..16 {
        s.push_str("msr daifclr, #8\n");
    }
    s.push_str("stop #1\n");
    Program::assemble(CODE_BASE, &s)
}

/// kvm-unit-tests `test_wp`: program every watchpoint i on &write_data\[i\], enable, stop #0,
/// then `write_data[i] = i; msr daifclr, #8` for each.
pub fn kut_wp_program(f: &DebugFeatures) -> Result<Program, ProgramError> {
    let mut s = reset_debug_state(f);
    let _ = write!(s, "{}", mov64(1, DATA_BASE));
    for i in 0..f.num_wrps() {
        let _ = write!(
            s,
            "add x2, x1, #{i}\nmsr dbgwvr{i}_el1, x2\nmov x0, #0x1ffb\nmsr dbgwcr{i}_el1, x0\n"
        );
    }
    s.push_str("isb\nmov x0, #0xa000\nmsr mdscr_el1, x0\nisb\nstop #0\nmsr daifclr, #8\n");
    for i in 0..f.num_wrps() {
        let _ = write!(
            s,
            "mov x2, #{i}\nwp{i}: strb w2, [x1, #{i}]\nmsr daifclr, #8\n"
        );
    }
    s.push_str("stop #1\n");
    Program::assemble(CODE_BASE, &s)
}

/// kvm-unit-tests `test_ss`: MDSCR |= KDE|SS with D masked, stop #0, then unmask and step.
pub fn kut_ss_program(f: &DebugFeatures) -> Result<Program, ProgramError> {
    let mut s = reset_debug_state(f);
    s.push_str("mov x0, #0x2001\nmsr mdscr_el1, x0\nisb\nstop #0\nmsr daifclr, #8\nss_start: mrs x0, esr_el1\nadd x0, x0, #1\nmsr daifset, #8\nstop #1\n");
    Program::assemble(CODE_BASE, &s)
}

/// The registers a migration carries through KVM_GET/SET_ONE_REG: every implemented
/// DBG{B,W}{C,V}R\<n>, MDSCR_EL1, MDCCINT_EL1, OSLSR_EL1, and the core registers.
pub fn migration_registers(f: &DebugFeatures) -> Vec<u64> {
    let mut ids = Vec::new();
    for bank in DbgBank::ALL {
        ids.extend((0..f.count(bank)).map(|i| SysReg::Dbg(bank, i as u8).one_reg_id()));
    }
    ids.extend([SysReg::MdscrEl1, SysReg::MdccintEl1, SysReg::OslsrEl1].map(|r| r.one_reg_id()));
    ids.extend((0..31).map(core_reg::x));
    ids.extend([
        core_reg::SP,
        core_reg::PC,
        core_reg::PSTATE,
        core_reg::SP_EL1,
        core_reg::ELR_EL1,
        core_reg::SPSR_EL1,
    ]);
    ids
}

/// Migrate vcpu `from_vcpu` of `from` into vcpu `to_vcpu` of `to` through ONE_REG, after
/// completing an MMIO access the last exit left pending (the state of one is not visible to
/// userspace).
pub fn migrate(
    from: &mut Vm,
    from_vcpu: usize,
    to: &mut Vm,
    to_vcpu: usize,
) -> Result<(), KvmError> {
    from.complete_pending_io(from_vcpu)?;
    for id in migration_registers(from.guest_features()) {
        let v = from.get_one_reg(from_vcpu, id)?;
        to.set_one_reg(to_vcpu, id, v)?;
    }
    Ok(())
}
