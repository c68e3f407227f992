use hypdbg_hyp::flow::{Era3Engine, Era3Reference, Era1Engine, Era1Reference};
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::{Vm, VmConfig, VcpuExit};
use hypdbg_model::profiles::by_name;

#[test]
fn smoke() {
    for era in 0..2 {
        let f = by_name("cortex-a57").unwrap().features().unwrap();
        let flow: Box<dyn hypdbg_hyp::flow::DynFlow> = if era == 0 { Box::new(Era1Engine(Era1Reference)) } else { Box::new(Era3Engine(Era3Reference)) };
        let mut vm = Vm::new(flow, VmConfig::new(f)).unwrap();
        let p = Program::assemble(0x1000, "
            mov x0, #0x1e7
            msr dbgbcr3_el1, x0
            mov x1, #0x2000
            msr dbgbvr3_el1, x1
            mrs x2, dbgbcr3_el1
            mov x0, #0x8000
            msr mdscr_el1, x0
            nop
            hvc #1
        ").unwrap();
        vm.load_program(&p);
        let e = vm.run(0).unwrap();
        assert_eq!(e, VcpuExit::Hvc { imm: 1 });
        let v = vm.vcpu(0).unwrap();
        assert_eq!(v.kvm.arch.ctxt.regs.regs[2], 0x1e7);
        for ev in vm.events() {
            println!("{}", serde_json::to_string(ev).unwrap());
        }
    }
}
