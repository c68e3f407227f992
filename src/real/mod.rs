//! Scenarios on a real kernel: the [`backend::RealBackend`] (a VM the in-guest agent creates
//! on real arm64 KVM nested in QEMU), what a userspace observer can check there
//! ([`watch`]), which simulator flow a kernel's version and mode correspond to
//! ([`flow_for`]), and which scenarios a real kernel can run at all ([`runnable`]).

pub mod backend;
pub mod session;
pub mod watch;

use hypdbg_hyp::variants::{self, Variant};
use hypdbg_real::Mode;

use crate::scenario::{Op, Scenario};

/// QEMU's breakpoints and watchpoints under `-cpu max` (a53, a57 and a72 alike): the counts
/// of the only CPU model a real run has.
pub const QEMU_BRPS_WRPS: (usize, usize) = (6, 4);

/// The machine's CPUs for scenario suites (`-smp`): enough for two vcpus on two CPUs.
pub const SUITE_SMP: u8 = 2;

/// `6.12` (or `6.12.3-arm64`) as (6, 12).
pub fn series_number(series: &str) -> Option<(u32, u32)> {
    let mut it = series.split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The simulator's flow for a kernel of `series` in `mode`, by the era the version falls in:
/// era 1 before v4.17, era 2 (per-vcpu host area) before v6.10, era 2 per-CPU before v6.14,
/// era 3 from v6.14; VHE hosts as `NAME@vhe`; protected modes of era 3 as pKVM (`era3-pkvm`,
/// the form with `external_mdscr_el1` flushed). The references carry fixes upstream lacks
/// (the catalog's historical variants name them): where a kernel still has the defect
/// (v6.14..v7.2 under pKVM: `pkvm-external-mdscr-not-flushed`), `hypdbg diff` shows it and
/// the expectations file lists it as a kernel defect.
///
/// ```
/// use hypdbg::real::flow_for;
/// use hypdbg_real::Mode;
/// assert_eq!(flow_for("6.1", Mode::Vhe).unwrap().label(), "era2@vhe");
/// assert_eq!(flow_for("6.12", Mode::Nvhe).unwrap().label(), "era2-percpu");
/// assert_eq!(flow_for("7.3", Mode::Protected).unwrap().label(), "era3-pkvm");
/// assert_eq!(flow_for("6.18", Mode::ProtectedNvhe).unwrap().label(), "era3-pkvm");
/// ```
pub fn flow_for(series: &str, mode: Mode) -> Result<Variant, String> {
    let v = series_number(series)
        .ok_or_else(|| format!("kernel series '{series}' is not MAJOR.MINOR"))?;
    let protected = matches!(mode, Mode::Protected | Mode::ProtectedNvhe);
    let name = match v {
        v if v < (4, 17) => "era1",
        v if v < (6, 10) => "era2",
        v if v < (6, 14) => "era2-percpu",
        _ if protected => "era3-pkvm",
        _ => "era3",
    };
    let vhe = mode == Mode::Vhe && name != "era1";
    let label = if vhe {
        format!("{name}@vhe")
    } else {
        name.to_string()
    };
    variants::by_name(&label).ok_or_else(|| format!("no flow named {label}"))
}

/// Why `sc` cannot run on a real kernel of `series` (QEMU's one CPU model with
/// [`QEMU_BRPS_WRPS`], [`SUITE_SMP`] CPUs, the agent's two vcpus), if it cannot.
pub fn runnable(sc: &Scenario, series: &str) -> Result<(), String> {
    let (bps, wps) = QEMU_BRPS_WRPS;
    for c in &sc.cpus {
        let f = c.features();
        if (f.num_brps(), f.num_wrps()) != (bps, wps) {
            return Err(format!(
                "CPU {c} has {} breakpoints and {} watchpoints; QEMU emulates {bps} and {wps}",
                f.num_brps(),
                f.num_wrps()
            ));
        }
    }
    if let Some(first) = sc.cpus.first()
        && let Some(other) = sc.cpus.iter().find(|c| c.features() != first.features())
    {
        return Err(format!(
            "CPUs {first} and {other} differ: QEMU emulates one CPU model per machine"
        ));
    }
    if sc.cpus.len() > usize::from(SUITE_SMP) {
        return Err(format!(
            "{} physical CPUs: the machine has {SUITE_SMP}",
            sc.cpus.len()
        ));
    }
    if sc.vcpus > usize::from(hypdbg_real::vm::MAX_VCPUS) {
        return Err(format!(
            "{} vcpus: the agent runs at most {}",
            sc.vcpus,
            hypdbg_real::vm::MAX_VCPUS
        ));
    }
    let filter_ok = series_number(series).is_some_and(|v| v >= (6, 4));
    ops_runnable(&sc.ops, sc, filter_ok)
}

fn ops_runnable(ops: &[Op], sc: &Scenario, filter_ok: bool) -> Result<(), String> {
    for op in ops {
        match op {
            Op::Irq { every: Some(n), .. } => {
                return Err(format!(
                    "`irq` every {n} instructions: host interrupts at chosen guest instructions are a simulator device"
                ));
            }
            Op::Preempt { .. } => {
                return Err(
                    "`preempt`: a preemption after chosen in-kernel exits is a simulator device"
                        .into(),
                );
            }
            Op::MigrateVm {
                cpus: Some(list), ..
            } => {
                let here = sc.cpus.first().map(|c| *c.features());
                if let Some(c) = list.iter().find(|c| Some(*c.features()) != here) {
                    return Err(format!(
                        "`migrate_vm` to {c}, another CPU model: QEMU emulates one"
                    ));
                }
            }
            Op::RunConcurrently { vcpus, .. } if vcpus.len() != 2 => {
                return Err(format!(
                    "`run_concurrently` of {} vcpus: the agent runs two at once",
                    vcpus.len()
                ));
            }
            Op::SmcccFilter { .. } if !filter_ok => {
                return Err("`smccc_filter`: KVM_ARM_VM_SMCCC_FILTER exists from v6.4".into());
            }
            Op::Repeat { ops, .. } => ops_runnable(ops, sc, filter_ok)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypdbg_model::profiles::CpuSpec;

    #[test]
    fn series_and_flows() {
        assert_eq!(series_number("6.12.3-arm64"), Some((6, 12)));
        assert_eq!(series_number("six"), None);
        assert_eq!(flow_for("6.18", Mode::Nvhe).unwrap().label(), "era3");
        assert_eq!(flow_for("6.9", Mode::Vhe).unwrap().label(), "era2@vhe");
        assert_eq!(flow_for("4.16", Mode::Vhe).unwrap().label(), "era1");
        assert!(flow_for("x", Mode::Vhe).is_err());
    }

    #[test]
    fn what_a_real_kernel_cannot_run() {
        let a57 = "cortex-a57".parse::<CpuSpec>().unwrap();
        let mut sc = Scenario::new("x", vec![a57.clone()], "nop");
        assert_eq!(runnable(&sc, "6.1"), Ok(()));
        sc.ops.push(Op::Irq {
            vcpu: 0,
            every: Some(3),
            expect: None,
        });
        assert!(
            runnable(&sc, "6.1")
                .unwrap_err()
                .contains("simulator device")
        );
        sc.ops.clear();
        sc.cpus = vec!["max".parse::<CpuSpec>().unwrap()];
        assert!(
            runnable(&sc, "6.1")
                .unwrap_err()
                .contains("QEMU emulates 6 and 4")
        );
        sc.cpus = vec![a57];
        sc.ops.push(Op::SmcccFilter {
            base: crate::scenario::Value::Num(1),
            nr: 1,
            action: crate::scenario::ops::FilterAction::Forward,
            expect: None,
        });
        assert!(runnable(&sc, "6.1").unwrap_err().contains("v6.4"));
        assert_eq!(runnable(&sc, "6.12"), Ok(()));
    }
}
