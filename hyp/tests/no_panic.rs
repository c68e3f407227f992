//! No Rust panic is reachable from the public API: random guest code, random control words,
//! random ONE_REG traffic, random migrations and injections, for every variant in the catalog.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants;
use hypdbg_hyp::vm::{AccessMode, Vm, VmConfig};
use hypdbg_model::esr::Esr;
use hypdbg_model::profiles::PROFILES;
use hypdbg_model::uapi::{KvmGuestDebug, KvmGuestDebugArch};
use hypdbg_model::{DbgBank, SysReg};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Run,
    SetGuestDebug(u32, u64, u64),
    SetOneReg(u8, u64),
    GetOneReg(u8),
    RawOneReg(u64, u64),
    Migrate(usize),
    Inject(u64, Option<u64>),
    Irq(Option<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Run),
        2 => (prop_oneof![any::<u32>(), Just(1u32), Just(3), Just(0x2_0001), Just(0x3_0003)], any::<u64>(), any::<u64>())
            .prop_map(|(c, a, b)| Op::SetGuestDebug(c, a, b)),
        1 => (any::<u8>(), any::<u64>()).prop_map(|(r, v)| Op::SetOneReg(r, v)),
        1 => any::<u8>().prop_map(Op::GetOneReg),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(i, v)| Op::RawOneReg(i, v)),
        1 => (0usize..3).prop_map(Op::Migrate),
        1 => (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(e, f)| Op::Inject(e, f)),
        1 => proptest::option::of(1u64..5).prop_map(Op::Irq),
    ]
}

fn reg(r: u8) -> SysReg {
    match r % 8 {
        0..=3 => SysReg::Dbg(DbgBank::ALL[usize::from(r % 4)], (r / 8) % 16),
        4 => SysReg::MdscrEl1,
        5 => SysReg::MdccintEl1,
        6 => SysReg::OslsrEl1,
        _ => SysReg::OslarEl1,
    }
}

/// Guest code: a mix of valid debug-path instructions and random words.
fn guest_word() -> impl Strategy<Value = u32> {
    let valid = [
        "nop",
        "brk #0",
        "svc #0",
        "stop #3",
        "msr daifclr, #8",
        "msr daifset, #8",
        "eret",
        "mov x0, #0xa001",
        "msr mdscr_el1, x0",
        "mrs x1, mdscr_el1",
        "msr dbgbcr0_el1, x0",
        "msr dbgbvr0_el1, x2",
        "mrs x3, dbgwcr1_el1",
        "msr dbgwcr1_el1, x0",
        "msr oslar_el1, x0",
        "msr oslsr_el1, x0",
        "mrs x4, oslsr_el1",
        "msr mdccint_el1, x0",
        "str x0, [x2]",
        "ldr x0, [x2]",
        "stp x0, x1, [x2]",
        "dc zva, x2",
        "mov x2, #0x10000",
        "msr dbgbcr15_el1, x0",
        "mrs x0, dbgwvr15_el1",
        "msr contextidr_el1, x0",
        "mov x0, #0x1fe3",
        "mov x0, #0x1ffb",
        "msr s2_0_c0_c0_3, x0",
    ]
    .map(|t| Program::assemble(0, t).map(|p| p.words[0]).unwrap_or(0));
    prop_oneof![3 => proptest::sample::select(valid.to_vec()), 1 => any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]
    #[test]
    fn random_sessions_never_panic(
        variant in 0usize..64,
        profile in 0usize..PROFILES.len(),
        code in proptest::collection::vec(guest_word(), 1..40),
        ops in proptest::collection::vec(op(), 1..30),
        mode in any::<bool>(),
    ) {
        let all = variants::all();
        let v = &all[variant % all.len()];
        let f = PROFILES[profile].features().unwrap();
        let config = VmConfig {
            pcpus: vec![f; 3],
            vcpus: 1,
            mode: if mode { AccessMode::Checking } else { AccessMode::Plain },
            trace_instructions: mode,
            budget_per_run: 500,
            host_mode: hypdbg_hyp::HostMode::Nvhe,
        };
        let mut vm = Vm::new((v.make)(), config).unwrap();
        vm.load_program(&Program { base: 0x1_0000, words: code, labels: Default::default() });
        for op in ops {
            let r = match op {
                Op::Run => vm.run(0).map(|_| ()),
                Op::SetGuestDebug(control, a, b) => {
                    let mut arch = KvmGuestDebugArch::default();
                    arch.dbg_bcr[(a % 16) as usize] = a;
                    arch.dbg_wvr[(b % 16) as usize] = b;
                    vm.set_guest_debug(0, &KvmGuestDebug { control, pad: 0, arch })
                }
                Op::SetOneReg(r, v) => vm.set_one_reg(0, reg(r).one_reg_id(), v),
                Op::GetOneReg(r) => vm.get_one_reg(0, reg(r).one_reg_id()).map(|_| ()),
                Op::RawOneReg(id, v) => vm.set_one_reg(0, id, v),
                Op::Migrate(cpu) => vm.set_vcpu_cpu(0, cpu),
                Op::Inject(esr, far) => vm.inject_exception(0, Esr::from_bits(esr), far),
                Op::Irq(n) => { vm.vcpu_mut(0).unwrap().irq_every = n; Ok(()) }
            };
            if let Err(e) = r {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
