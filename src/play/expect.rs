//! Evaluating an action's expectations against what happened: the first difference, and
//! which field of the `expect` table it is about (for its line and column).

use hypdbg_hyp::events::GuestEvent;
use hypdbg_model::esr::ec_name;
use hypdbg_model::uapi::core_reg;

use crate::driver::{ActionResult, ExitInfo, Probe};
use crate::scenario::ops::{ExceptionExpect, ExitKind, Expect, Value};
use crate::scenario::resolve::RegName;
use crate::scenario::source::Seg;

/// One expectation not met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The field of the `expect` table (`["pc"]`, `["regs", "x0"]`, `["exceptions", 2]`).
    pub field: Vec<Seg>,
    /// Expected and found, in words.
    pub message: String,
}

fn diff(field: Vec<Seg>, message: String) -> Difference {
    Difference { field, message }
}

fn key(k: &str) -> Vec<Seg> {
    vec![Seg::Key(k.to_string())]
}

/// `0x10040 <hw_bp1>`.
fn addr_words(probe: &dyn Probe, a: u64) -> String {
    probe.resolver().describe(a)
}

/// `hw_bp1 (0x10040)` or `0x10040`.
fn want_words(v: &Value, a: u64) -> String {
    match v {
        Value::Num(_) => format!("{a:#x}"),
        Value::Label(l) => format!("{l} ({a:#x})"),
    }
}

fn ec_words(ec: u8) -> String {
    format!("{ec:#x} {}", ec_name(ec))
}

fn resolve(probe: &dyn Probe, field: &[Seg], v: &Value) -> Result<u64, Difference> {
    probe
        .resolver()
        .resolve(v)
        .ok_or_else(|| diff(field.to_vec(), format!("'{v}' names no label or symbol")))
}

/// The guest's exceptions as (EC, ELR, FAR).
pub fn exception_tuples(events: &[GuestEvent]) -> Vec<(u8, u64, Option<u64>)> {
    events
        .iter()
        .filter_map(|e| match e {
            GuestEvent::Exception { esr, elr, far, .. } => Some((esr.ec(), *elr, *far)),
            _ => None,
        })
        .collect()
}

fn compare_exceptions(
    probe: &dyn Probe,
    field: &str,
    want: &[ExceptionExpect],
    got: &[(u8, u64, Option<u64>)],
    what: &str,
) -> Result<(), Difference> {
    for (i, w) in want.iter().enumerate() {
        let f = vec![Seg::Key(field.to_string()), Seg::Index(i)];
        let Some(&(ec, elr, far)) = got.get(i) else {
            return Err(diff(
                f,
                format!(
                    "{what}: expected exception {i} (EC {}), but the guest took only {}",
                    ec_words(w.ec),
                    got.len()
                ),
            ));
        };
        if ec != w.ec {
            return Err(diff(
                f,
                format!(
                    "{what}: exception {i}: expected EC {}, got EC {} at {}",
                    ec_words(w.ec),
                    ec_words(ec),
                    addr_words(probe, elr)
                ),
            ));
        }
        if let Some(v) = &w.elr {
            let a = resolve(probe, &f, v)?;
            if a != elr {
                return Err(diff(
                    f,
                    format!(
                        "{what}: exception {i} (EC {}): expected ELR {}, got {}",
                        ec_words(ec),
                        want_words(v, a),
                        addr_words(probe, elr)
                    ),
                ));
            }
        }
        if let Some(v) = &w.far {
            let a = resolve(probe, &f, v)?;
            if Some(a) != far {
                return Err(diff(
                    f,
                    format!(
                        "{what}: exception {i} (EC {}): expected FAR {}, got {}",
                        ec_words(ec),
                        want_words(v, a),
                        far.map_or("none".to_string(), |x| addr_words(probe, x))
                    ),
                ));
            }
        }
    }
    if got.len() > want.len() {
        let (ec, elr, _) = got[want.len()];
        return Err(diff(
            key(field),
            format!(
                "{what}: expected {} exception(s), the guest took {}; the first extra is EC {} at {}",
                want.len(),
                got.len(),
                ec_words(ec),
                addr_words(probe, elr)
            ),
        ));
    }
    Ok(())
}

/// Check `e` after an action on vcpu `v` that ended with `outcome`; `exceptions_before` is
/// how many exceptions the guest had taken before the action (or why the log could not be
/// read then).
pub fn evaluate(
    probe: &mut dyn Probe,
    v: usize,
    e: &Expect,
    outcome: &ActionResult,
    exceptions_before: &Result<usize, String>,
) -> Result<(), Difference> {
    check_error(e, outcome)?;
    check_exit(probe, e, outcome)?;
    check_registers(probe, v, e)?;
    check_memory(probe, e)?;
    check_all_exceptions(probe, v, e, exceptions_before)
}

/// `error`: the action failed with that text, or (absent) it succeeded.
fn check_error(e: &Expect, outcome: &ActionResult) -> Result<(), Difference> {
    match (&e.error, outcome) {
        (Some(want), Ok(o)) => Err(diff(
            key("error"),
            format!(
                "expected the action to fail with \"{want}\", but it succeeded: {}",
                o.text
            ),
        )),
        (Some(want), Err(f)) => {
            let msg = f.to_string();
            if msg.contains(want.as_str()) {
                Ok(())
            } else {
                Err(diff(
                    key("error"),
                    format!("expected an error containing \"{want}\", got: {msg}"),
                ))
            }
        }
        (None, Err(f)) => Err(diff(Vec::new(), format!("the action failed: {f}"))),
        (None, Ok(_)) => Ok(()),
    }
}

/// `exit`, `stop`, `ec`, `isv`, `far`, `mmio`, `hypercall`, `system_event`, `stops`: how the
/// running action ended.
fn check_exit(probe: &dyn Probe, e: &Expect, outcome: &ActionResult) -> Result<(), Difference> {
    let exit = outcome.as_ref().ok().and_then(|o| o.exit);
    let exit_words = exit.map_or("no exit".to_string(), |x| x.to_string());
    if let Some(k) = e.exit
        && !exit.is_some_and(|x| k.accepts(x.kind))
    {
        return Err(diff(
            key("exit"),
            format!("expected exit {k}, got {exit_words}"),
        ));
    }
    if let Some(n) = e.stop
        && exit.and_then(|x| x.stop_n) != Some(n)
    {
        return Err(diff(
            key("stop"),
            format!("expected stop #{n}, got {exit_words}"),
        ));
    }
    if let Some(ec) = e.ec {
        let got = exit.and_then(|x| x.esr).map(|s| s.ec());
        if got != Some(ec) {
            return Err(diff(
                key("ec"),
                format!(
                    "expected EC {}, got {}",
                    ec_words(ec),
                    got.map_or(exit_words.clone(), ec_words)
                ),
            ));
        }
    }
    if let Some(want) = e.isv {
        let got = exit.and_then(|x| x.isv());
        if got != Some(want) {
            return Err(diff(
                key("isv"),
                format!(
                    "expected ISV={} ({}), got {}",
                    u8::from(want),
                    isv_words(want),
                    got.map_or(exit_words.clone(), |g| format!(
                        "ISV={} ({})",
                        u8::from(g),
                        isv_words(g)
                    ))
                ),
            ));
        }
    }
    check_exit_payload(probe, e, exit, &exit_words)?;
    if let Some(fv) = &e.far {
        let want = resolve(probe, &key("far"), fv)?;
        let got = exit.and_then(|x| x.far);
        if got != Some(want) {
            return Err(diff(
                key("far"),
                format!(
                    "expected FAR {}, got {}",
                    want_words(fv, want),
                    got.map_or(format!("none ({exit_words})"), |a| addr_words(probe, a))
                ),
            ));
        }
    }
    if let Some(n) = e.stops {
        let got = outcome.as_ref().map_or(0, |o| o.stops);
        if got != n {
            return Err(diff(
                key("stops"),
                format!("expected {n} stop(s) on the way, got {got}"),
            ));
        }
    }
    Ok(())
}

/// What ISV of a software-step syndrome says.
fn isv_words(isv: bool) -> &'static str {
    if isv {
        "an instruction executed"
    } else {
        "nothing executed: KVM completed an emulated instruction, or the step was pending"
    }
}

/// `mmio`, `hypercall`, `system_event`: the payload of a non-debug exit.
fn check_exit_payload(
    probe: &dyn Probe,
    e: &Expect,
    exit: Option<ExitInfo>,
    exit_words: &str,
) -> Result<(), Difference> {
    if let Some(m) = &e.mmio {
        let got = exit.and_then(|x| x.mmio);
        let Some(g) = got else {
            return Err(diff(
                key("mmio"),
                format!("expected an MMIO exit, got {exit_words}"),
            ));
        };
        let want = resolve(
            probe,
            &[Seg::Key("mmio".into()), Seg::Key("addr".into())],
            &m.addr,
        )?;
        let data = match &m.data {
            Some(d) => Some(resolve(
                probe,
                &[Seg::Key("mmio".into()), Seg::Key("data".into())],
                d,
            )?),
            None => None,
        };
        let ok = g.addr == want
            && m.write.is_none_or(|w| w == g.write)
            && m.len.is_none_or(|l| l == g.len)
            && data.is_none_or(|d| d == g.data);
        if !ok {
            return Err(diff(
                key("mmio"),
                format!(
                    "expected an MMIO {} at {}{}{}, got {exit_words}",
                    match m.write {
                        Some(true) => "write",
                        Some(false) => "read",
                        None => "access",
                    },
                    want_words(&m.addr, want),
                    m.len.map_or(String::new(), |l| format!(" len {l}")),
                    data.map_or(String::new(), |d| format!(" data {d:#x}")),
                ),
            ));
        }
    }
    if let Some(hv) = &e.hypercall {
        let want = resolve(probe, &key("hypercall"), hv)?;
        let got = exit
            .filter(|x| x.kind == ExitKind::Hypercall)
            .and_then(|x| x.code);
        if got != Some(want) {
            return Err(diff(
                key("hypercall"),
                format!("expected KVM_EXIT_HYPERCALL nr {want:#x}, got {exit_words}"),
            ));
        }
    }
    if let Some(ev) = e.system_event {
        let got = exit
            .filter(|x| x.kind == ExitKind::SystemEvent)
            .and_then(|x| x.code);
        if got != Some(u64::from(ev.event_type())) {
            return Err(diff(
                key("system_event"),
                format!("expected system_event {}, got {exit_words}", ev.name()),
            ));
        }
    }
    Ok(())
}

/// `pc` and `regs`, read with KVM_GET_ONE_REG.
fn check_registers(probe: &mut dyn Probe, v: usize, e: &Expect) -> Result<(), Difference> {
    if let Some(pv) = &e.pc {
        let want = resolve(probe, &key("pc"), pv)?;
        let got = probe
            .get_one_reg(v, core_reg::PC)
            .map_err(|err| diff(key("pc"), format!("KVM_GET_ONE_REG PC: {err}")))?;
        if got != want {
            return Err(diff(
                key("pc"),
                format!(
                    "expected PC {}, got {}",
                    want_words(pv, want),
                    addr_words(probe, got)
                ),
            ));
        }
    }
    for (name, rv) in &e.regs {
        let f = vec![Seg::Key("regs".into()), Seg::Key(name.clone())];
        let r = RegName::parse(name).map_err(|m| diff(f.clone(), m))?;
        let want = resolve(probe, &f, rv)?;
        let got = probe
            .get_one_reg(v, r.id())
            .map_err(|err| diff(f.clone(), format!("KVM_GET_ONE_REG {r}: {err}")))?;
        if got != want {
            return Err(diff(
                f,
                format!("expected {r} = {}, got {got:#x}", want_words(rv, want)),
            ));
        }
    }
    Ok(())
}

/// `memory`: guest bytes.
fn check_memory(probe: &mut dyn Probe, e: &Expect) -> Result<(), Difference> {
    for (k, m) in e.memory.iter().enumerate() {
        let f = vec![Seg::Key("memory".into()), Seg::Index(k)];
        let a = resolve(probe, &f, &m.addr)?;
        let mut got = vec![0u8; m.bytes.len()];
        probe
            .read_memory(a, &mut got)
            .map_err(|err| diff(f.clone(), format!("reading guest memory: {err}")))?;
        if let Some(i) = (0..got.len()).find(|&i| got[i] != m.bytes[i]) {
            return Err(diff(
                f,
                format!(
                    "memory at {}: expected {:02x?}, got {:02x?} (first difference at byte {i}, {:#x})",
                    want_words(&m.addr, a),
                    m.bytes,
                    got,
                    a.wrapping_add(i as u64)
                ),
            ));
        }
    }
    Ok(())
}

/// `exceptions` (during this action) and `all_exceptions` (since the start).
fn check_all_exceptions(
    probe: &mut dyn Probe,
    v: usize,
    e: &Expect,
    exceptions_before: &Result<usize, String>,
) -> Result<(), Difference> {
    if e.exceptions.is_none() && e.all_exceptions.is_none() {
        return Ok(());
    }
    let list = probe.exceptions(v).map_err(|err| {
        diff(
            key(if e.exceptions.is_some() {
                "exceptions"
            } else {
                "all_exceptions"
            }),
            format!("the guest's exception log cannot be read: {err}"),
        )
    })?;
    let all = exception_tuples(&list);
    if let Some(want) = &e.exceptions {
        let before = exceptions_before.as_ref().map_err(|err| {
            diff(
                key("exceptions"),
                format!("the guest's exception log could not be read before the action: {err}"),
            )
        })?;
        let new = all.get(*before..).unwrap_or(&[]);
        compare_exceptions(probe, "exceptions", want, new, "during this action")?;
    }
    if let Some(want) = &e.all_exceptions {
        compare_exceptions(probe, "all_exceptions", want, &all, "since the start")?;
    }
    Ok(())
}
