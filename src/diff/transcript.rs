//! What one backend did, action by action, in the terms both backends share
//! ([`Transcript`]): how each action ended (ok or failed, the exit and its syndrome bits a
//! userspace observer sees), the registers and the exceptions the guest took after it. The
//! simulator's and the real kernel's transcripts of one scenario are compared field by field.

use std::collections::BTreeMap;

use hypdbg_hyp::events::GuestEvent;
use hypdbg_model::uapi::core_reg;
use serde::Serialize;

use crate::driver::{ActionInfo, ActionResult, ExitInfo, Observer, Probe};
use crate::scenario::Op;
use crate::scenario::ops::Expect;
use crate::scenario::resolve::RegName;

/// The registers compared after every action: x0..x30, SP_EL1, PC, PSTATE.
pub fn compared_registers() -> Vec<(String, u64)> {
    let mut r: Vec<(String, u64)> = (0..31u8)
        .map(|n| (format!("x{n}"), core_reg::x(n)))
        .collect();
    r.push(("SP_EL1".into(), core_reg::SP_EL1));
    r.push(("PC".into(), core_reg::PC));
    r.push(("PSTATE".into(), core_reg::PSTATE));
    r
}

/// One action as a backend did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The action's number (1-based, repeats counted).
    pub action: u64,
    /// Its `do`.
    pub op: String,
    /// The fields compared, by name, in words: `result`, `exit`, `isv`, `debug.arch.far`, `value`,
    /// `exceptions`, and one per register.
    pub fields: BTreeMap<String, String>,
}

/// Every action of one run, and how it ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Transcript {
    /// The actions in order.
    pub steps: Vec<Step>,
}

/// The observer that writes a [`Transcript`]. Registers and the exceptions the guest took
/// are read after the actions that can change them (the running ones, and those that write
/// registers or move the VM).
#[derive(Default)]
pub struct Recorder {
    /// What it wrote.
    pub transcript: Transcript,
    registers: Vec<(String, u64)>,
    /// Exceptions already reported, per vcpu.
    seen: Vec<usize>,
}

impl Recorder {
    /// A recorder comparing [`compared_registers`].
    pub fn new() -> Self {
        Recorder {
            registers: compared_registers(),
            ..Recorder::default()
        }
    }
}

/// An exit in the words both backends share: the kind, the stop number or MMIO access,
/// the exception class; the ISV bit and FAR (for watchpoints) are fields of their own.
fn exit_fields(x: &ExitInfo, f: &mut BTreeMap<String, String>) {
    f.insert("exit".into(), x.to_string());
    if let Some(isv) = x.isv() {
        f.insert("isv".into(), u8::from(isv).to_string());
    }
    if let Some(far) = x.union_far {
        f.insert("debug.arch.far".into(), format!("{far:#x}"));
    }
}

fn exception_words(e: &GuestEvent) -> String {
    match e {
        GuestEvent::Exception { esr, elr, far, .. } => {
            let mut s = format!(
                "EC {:#x} {} at {elr:#x}",
                esr.ec(),
                hypdbg_model::esr::ec_name(esr.ec())
            );
            if let Some(a) = far {
                s += &format!(" far {a:#x}");
            }
            s
        }
        other => format!("{other:?}"),
    }
}

/// Whether an action can change the registers or the exceptions taken.
fn changes_state(op: &Op) -> bool {
    op.has_exit()
        || matches!(
            op,
            Op::RunConcurrently { .. }
                | Op::SetOneReg { .. }
                | Op::Restore { .. }
                | Op::MigrateVm { .. }
                | Op::Step { .. }
        )
}

impl Observer for Recorder {
    fn outcome(&mut self, a: &ActionInfo<'_>, r: &ActionResult, probe: &mut dyn Probe) {
        let mut f = BTreeMap::new();
        match r {
            Ok(o) => {
                f.insert("result".into(), "ok".into());
                if let Some(x) = &o.exit {
                    exit_fields(x, &mut f);
                }
                if let Some(v) = o.value {
                    f.insert("value".into(), format!("{v:#x}"));
                }
            }
            Err(e) => {
                f.insert("result".into(), format!("failed: {}", error_class(e)));
            }
        }
        if changes_state(a.op) {
            self.read_state(a, probe, &mut f);
        }
        if let Some(e) = a.op.expect() {
            expected_values(a.op.vcpu(), e, probe, &mut f);
        }
        self.transcript.steps.push(Step {
            action: a.number,
            op: a.op.name().to_string(),
            fields: f,
        });
    }
}

impl Recorder {
    /// The registers of the action's vcpu (each vcpu's for a concurrent run) and the
    /// exceptions taken since the last read.
    fn read_state(
        &mut self,
        a: &ActionInfo<'_>,
        probe: &mut dyn Probe,
        f: &mut BTreeMap<String, String>,
    ) {
        let vcpus = match a.op {
            Op::RunConcurrently { vcpus, .. } => vcpus.clone(),
            op => vec![op.vcpu()],
        };
        let ids: Vec<u64> = self.registers.iter().map(|(_, id)| *id).collect();
        for v in vcpus {
            let prefix = if matches!(a.op, Op::RunConcurrently { .. }) {
                format!("vcpu {v} ")
            } else {
                String::new()
            };
            match probe.get_one_regs(v, &ids) {
                Ok(vals) => {
                    for ((name, _), val) in self.registers.iter().zip(vals) {
                        f.insert(format!("{prefix}reg {name}"), format!("{val:#x}"));
                    }
                }
                Err(e) => {
                    f.insert(format!("{prefix}registers"), format!("unreadable ({e})"));
                }
            }
            if self.seen.len() <= v {
                self.seen.resize(v + 1, 0);
            }
            match probe.exceptions(v) {
                Ok(all) => {
                    let new: Vec<String> =
                        all.iter().skip(self.seen[v]).map(exception_words).collect();
                    self.seen[v] = all.len();
                    if !new.is_empty() {
                        f.insert(format!("{prefix}exceptions"), new.join("; "));
                    }
                }
                Err(e) => {
                    f.insert(format!("{prefix}exceptions"), format!("unreadable ({e})"));
                }
            }
        }
    }
}

/// The registers and memory an action's expectations name, as both backends hold them
/// (so a value one backend gets right and the other wrong is a divergence even where the
/// registers compared after every run do not show it).
fn expected_values(v: usize, e: &Expect, probe: &mut dyn Probe, f: &mut BTreeMap<String, String>) {
    for name in e.regs.keys() {
        let val = match RegName::parse(name) {
            Ok(r) => probe
                .get_one_reg(v, r.id())
                .map_or_else(|err| format!("unreadable ({err})"), |x| format!("{x:#x}")),
            Err(err) => format!("unknown ({err})"),
        };
        f.insert(format!("reg {name}"), val);
    }
    for m in &e.memory {
        let Some(addr) = probe.resolver().resolve(&m.addr) else {
            continue;
        };
        let mut buf = vec![0u8; m.bytes.len()];
        let val = match probe.read_memory(addr, &mut buf) {
            Ok(()) => format!("{buf:02x?}"),
            Err(err) => format!("unreadable ({err})"),
        };
        f.insert(format!("memory {addr:#x}"), val);
    }
}

/// What kind of failure an action error is, in words both backends share (the wording of
/// the messages differs: the simulator's ioctl errors and the agent's).
fn error_class(e: &crate::driver::ActionError) -> String {
    let s = e.to_string();
    for errno in [
        "EINVAL", "ENOENT", "EBUSY", "EEXIST", "EFAULT", "ENOSYS", "E2BIG", "ENXIO", "EPERM",
    ] {
        if s.contains(errno) {
            return errno.to_string();
        }
    }
    match e {
        crate::driver::ActionError::NotRunnable { .. } => "not runnable".into(),
        crate::driver::ActionError::Deadline => "timed out".into(),
        _ => "an error".into(),
    }
}

/// The first place two transcripts part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The action number.
    pub action: u64,
    /// Its `do`.
    pub op: String,
    /// The field (`exit`, `isv`, `reg PC`, `exceptions`, ... or `actions` when one run
    /// stopped earlier).
    pub field: String,
    /// The simulator's value.
    pub simulator: String,
    /// The real kernel's value.
    pub kernel: String,
}

/// The first divergence of `real` from `sim`, if they part.
pub fn first_divergence(sim: &Transcript, real: &Transcript) -> Option<Divergence> {
    divergences(sim, real).into_iter().next()
}

/// Every action where `real` parts from `sim`, in order: one divergence per action (its
/// first field: the result and the exit before what follows from them), and a last one when
/// one run stopped before the other.
pub fn divergences(sim: &Transcript, real: &Transcript) -> Vec<Divergence> {
    let mut out = Vec::new();
    let n = sim.steps.len().max(real.steps.len());
    for i in 0..n {
        let (s, r) = match (sim.steps.get(i), real.steps.get(i)) {
            (Some(s), Some(r)) => (s, r),
            (Some(s), None) => {
                out.push(Divergence {
                    action: s.action,
                    op: s.op.clone(),
                    field: "actions".into(),
                    simulator: format!("action {} ran", s.action),
                    kernel: "the run stopped before it".into(),
                });
                break;
            }
            (None, Some(r)) => {
                out.push(Divergence {
                    action: r.action,
                    op: r.op.clone(),
                    field: "actions".into(),
                    simulator: "the run stopped before it".into(),
                    kernel: format!("action {} ran", r.action),
                });
                break;
            }
            (None, None) => break,
        };
        // The result and the exit first: a register differs because the exit did.
        let order = [
            "result",
            "exit",
            "isv",
            "debug.arch.far",
            "value",
            "exceptions",
        ];
        let mut keys: Vec<&String> = s.fields.keys().chain(r.fields.keys()).collect();
        keys.sort_by_key(|k| (order.iter().position(|o| o == k).unwrap_or(order.len()), *k));
        keys.dedup();
        if let Some(k) = keys
            .into_iter()
            .find(|k| s.fields.get(*k) != r.fields.get(*k))
        {
            let none = || "(none)".to_string();
            out.push(Divergence {
                action: s.action,
                op: s.op.clone(),
                field: k.clone(),
                simulator: s.fields.get(k).cloned().unwrap_or_else(none),
                kernel: r.fields.get(k).cloned().unwrap_or_else(none),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(action: u64, pairs: &[(&str, &str)]) -> Step {
        Step {
            action,
            op: "kvm_run".into(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_first_field_that_differs_is_reported_exit_before_registers() {
        let sim = Transcript {
            steps: vec![
                step(1, &[("exit", "stop #1"), ("reg PC", "0x10000")]),
                step(2, &[("exit", "step"), ("isv", "0"), ("reg PC", "0x10008")]),
            ],
        };
        let mut real = sim.clone();
        assert_eq!(first_divergence(&sim, &real), None);
        real.steps[1].fields.insert("isv".into(), "1".into());
        real.steps[1]
            .fields
            .insert("reg PC".into(), "0x1000c".into());
        let d = first_divergence(&sim, &real).unwrap();
        assert_eq!((d.action, d.field.as_str()), (2, "isv"));
        assert_eq!((d.simulator.as_str(), d.kernel.as_str()), ("0", "1"));
        real.steps.pop();
        let d = first_divergence(&sim, &real).unwrap();
        assert_eq!(d.field, "actions");
    }

    #[test]
    fn every_divergent_action_is_reported_once_in_order() {
        let sim = Transcript {
            steps: (1..=4)
                .map(|a| step(a, &[("exit", "step"), ("debug.arch.far", "0x0")]))
                .collect(),
        };
        let mut real = sim.clone();
        real.steps[1]
            .fields
            .insert("exceptions".into(), "EC 0x33".into());
        real.steps[1].fields.insert("exit".into(), "stop #0".into());
        real.steps[3]
            .fields
            .insert("debug.arch.far".into(), "0x1122".into());
        let d = divergences(&sim, &real);
        let got: Vec<(u64, &str)> = d.iter().map(|x| (x.action, x.field.as_str())).collect();
        assert_eq!(got, [(2, "exit"), (4, "debug.arch.far")]);
        real.steps.truncate(3);
        let d = divergences(&sim, &real);
        assert_eq!(
            d.last().map(|x| (x.action, x.field.as_str())),
            Some((4, "actions"))
        );
    }
}
