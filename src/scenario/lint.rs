//! The checks a scenario file passes before anything runs: the VM (flow, CPUs, vcpus,
//! budget), the guest program and its symbols, every action (vcpu and CPU indices, labels,
//! register names, snapshot names, encodable breakpoints and watchpoints, action counts) and
//! every expectation (only those its action can meet). Each problem is a [`FileError`] at the
//! key or value it is about.

use std::collections::BTreeSet;

use hypdbg_host::{encode_breakpoint, encode_watchpoint};
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::{self, Variant};
use hypdbg_hyp::workloads::CODE_BASE;
use hypdbg_model::DebugFeatures;

use super::ops::{ExceptionExpect, ExitKind, Expect, Op, Scenario, Value};
use super::resolve::{RegName, Resolver};
use super::source::{FileError, Node, Path2, Seg, line_col, one_line, op_path, string_line_offset};
use crate::checker::Invariant;

/// The flow a file runs when neither it nor the command line names one.
pub const DEFAULT_FLOW: &str = "era3";

/// The bounds every scenario is held to before anything runs, so that no accepted file can
/// run without end or eat the machine. Each has a default and a command-line flag that
/// raises it (`hypdbg run --max-...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a scenario file may have (`--max-file-bytes`).
    pub file_bytes: u64,
    /// Actions a file may expand to: repeats multiplied out, each `count` counted
    /// (`--max-actions`).
    pub actions: u64,
    /// Guest instructions one KVM_RUN may execute before KVM_EXIT_INTR (`--max-budget`).
    pub budget: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_bytes: 1 << 20,
            actions: 2_000_000,
            budget: 1_000_000,
        }
    }
}

/// Build a path: `path!["ops", 3, "expect", "pc"]`.
macro_rules! path {
    ($($s:expr),* $(,)?) => { [$(Seg::from($s)),*] };
}

fn with(p: &[Seg], more: &[Seg]) -> Path2 {
    let mut v = p.to_vec();
    v.extend_from_slice(more);
    v
}

/// What a checked file yields besides its scenario.
pub struct Checked {
    /// The assembled guest program.
    pub program: Program,
    /// The flow.
    pub variant: Variant,
    /// The invariants the file expects its own flow to break.
    pub expect_violations: BTreeSet<Invariant>,
    /// The actions the file expands to.
    pub actions: u64,
}

/// The checker of one file.
pub struct Lint<'a> {
    file: &'a str,
    text: &'a str,
    tree: &'a Node,
    limits: Limits,
    /// The problems found.
    pub errors: Vec<FileError>,
}

/// What the action checks know about the VM.
struct Ctx<'a> {
    vcpus: usize,
    features: DebugFeatures,
    ncpus: usize,
    resolver: &'a Resolver,
    names: String,
    snapshots: BTreeSet<String>,
    /// Actions so far, repeats multiplied out.
    total: u64,
}

fn known_flows() -> String {
    variants::all()
        .iter()
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names a label may be, for an error message (at most 12 shown).
fn names_words(resolver: &Resolver) -> String {
    let names: Vec<&str> = resolver.names().collect();
    let shown = names
        .iter()
        .take(12)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.is_empty() {
        "no label and no symbol".to_string()
    } else if names.len() > 12 {
        format!("{shown}, ... ({} names)", names.len())
    } else {
        shown
    }
}

impl<'a> Lint<'a> {
    /// A checker for `text` (named `file`) whose position tree is `tree`.
    pub fn new(file: &'a str, text: &'a str, tree: &'a Node, limits: Limits) -> Self {
        Lint {
            file,
            text,
            tree,
            limits,
            errors: Vec::new(),
        }
    }

    fn at_offset(&mut self, offset: usize, message: String) {
        let (line, col) = line_col(self.text, offset);
        self.errors.push(FileError {
            file: self.file.to_string(),
            line,
            col,
            message: one_line(&message),
        });
    }

    /// An error about the value at `path` (or the deepest part of the path the file has).
    fn err(&mut self, path: &[Seg], message: String) {
        let (node, _) = self.tree.walk(path);
        self.at_offset(node.span.start, message);
    }

    /// An error about the key `path` ends with.
    fn err_key(&mut self, path: &[Seg], message: String) {
        match self.tree.key_span(path) {
            Some(s) => self.at_offset(s.start, message),
            None => self.err(path, message),
        }
    }

    /// Check the whole scenario; `None` when it cannot run (the errors say why).
    pub fn scenario(&mut self, sc: &Scenario) -> Option<Checked> {
        let variant = self.flow(sc);
        self.vm(sc);
        let expect_violations = self.expect_violations(sc);
        let program = self.program(sc);
        let program_ok = program.is_some();
        let program = program.unwrap_or_default();
        self.symbols(sc, &program);
        let resolver = Resolver::new(&program, &sc.symbols);
        let features = sc
            .cpus
            .first()
            .map(|c| *c.features())
            .or_else(|| DebugFeatures::new(0x0010_1006).ok())?;
        let mut ctx = Ctx {
            vcpus: sc.vcpus.max(1),
            features,
            ncpus: sc.cpus.len().max(1),
            resolver: &resolver,
            names: names_words(&resolver),
            snapshots: BTreeSet::new(),
            total: 0,
        };
        if program_ok {
            self.ops(&sc.ops, &[], &mut ctx, 1);
        }
        if !program_ok || sc.cpus.is_empty() {
            return None;
        }
        Some(Checked {
            program,
            variant: variant?,
            expect_violations,
            actions: ctx.total,
        })
    }

    fn flow(&mut self, sc: &Scenario) -> Option<Variant> {
        let Some(f) = &sc.flow else {
            return variants::by_name(DEFAULT_FLOW);
        };
        let v = variants::by_name(f);
        if v.is_none() {
            self.err(
                &path!["flow"],
                format!("unknown flow '{f}': known flows are {}", known_flows()),
            );
        }
        v
    }

    /// The physical CPUs (one guest view: equal counts), vcpus, where they start, budget.
    fn vm(&mut self, sc: &Scenario) {
        if sc.cpus.is_empty() {
            self.err(
                &path!["cpus"],
                "a scenario needs at least one physical CPU (a profile name or an ID_AA64DFR0_EL1 value)".into(),
            );
        }
        if let Some(first) = sc.cpus.first() {
            for (i, c) in sc.cpus.iter().enumerate() {
                let (f, g) = (c.features(), first.features());
                if !f.same_counts(g) {
                    self.err(
                        &path!["cpus", i],
                        format!(
                            "CPU {i} ('{c}') has {}/{} breakpoints/watchpoints but CPU 0 has {}/{}: a guest sees one ID_AA64DFR0_EL1, so every physical CPU of a VM must implement the same counts",
                            f.num_brps(),
                            f.num_wrps(),
                            g.num_brps(),
                            g.num_wrps()
                        ),
                    );
                }
            }
        }
        if sc.vcpus == 0 || sc.vcpus > hypdbg_model::guest_abi::MAX_VCPUS {
            self.err(
                &path!["vcpus"],
                format!("vcpus = {}: a scenario has 1 to 64 vcpus", sc.vcpus),
            );
        }
        if !sc.vcpu_cpus.is_empty() && sc.vcpu_cpus.len() != sc.vcpus {
            self.err(
                &path!["vcpu_cpus"],
                format!(
                    "vcpu_cpus lists {} entries but the VM has {} vcpu(s): give every vcpu its physical CPU, or none",
                    sc.vcpu_cpus.len(),
                    sc.vcpus
                ),
            );
        }
        for (i, &c) in sc.vcpu_cpus.iter().enumerate() {
            if !sc.cpus.is_empty() && c >= sc.cpus.len() {
                self.err(
                    &path!["vcpu_cpus", i],
                    format!(
                        "vcpu {i} starts on physical CPU {c} but the VM has {} (0..={})",
                        sc.cpus.len(),
                        sc.cpus.len() - 1
                    ),
                );
            }
        }
        let max = self.limits.budget;
        if let Some(b) = sc.budget
            && !(1..=max).contains(&b)
        {
            self.err(
                &path!["budget"],
                format!(
                    "budget = {b}: a KVM_RUN executes 1 to {max} guest instructions (the limit; --max-budget raises it)"
                ),
            );
        }
    }

    fn expect_violations(&mut self, sc: &Scenario) -> BTreeSet<Invariant> {
        let mut out = BTreeSet::new();
        for (i, s) in sc.expect_violations.iter().enumerate() {
            match Invariant::parse(s) {
                Some(inv) => {
                    out.insert(inv);
                }
                None => self.err(
                    &path!["expect_violations", i],
                    format!(
                        "'{s}' is not an invariant: use inv1..inv9 or a name ({})",
                        Invariant::ALL.map(|i| i.name()).join(", ")
                    ),
                ),
            }
        }
        out
    }

    fn program(&mut self, sc: &Scenario) -> Option<Program> {
        match Program::assemble(CODE_BASE, &sc.code) {
            Ok(p) if p.words.is_empty() => {
                self.err(
                    &path!["code"],
                    "the guest program has no instruction".into(),
                );
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                let (node, _) = self.tree.walk(&path!["code"]);
                let off = string_line_offset(self.text, &node.span, e.line);
                self.at_offset(
                    off,
                    format!(
                        "guest code line {}: `{}`: {}",
                        e.line, e.error.text, e.error.why
                    ),
                );
                None
            }
        }
    }

    /// Symbols are numbers, named like labels, and not labels of the program.
    fn symbols(&mut self, sc: &Scenario, program: &Program) {
        for (name, v) in &sc.symbols {
            let p = path!["symbols", name.as_str()];
            if !matches!(v, Value::Num(_)) {
                self.err(
                    &p,
                    format!(
                        "symbol '{name}' = '{v}': a symbol is a number (write addresses above i64::MAX as strings, \"0xffff...\")"
                    ),
                );
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                self.err_key(
                    &p,
                    format!(
                        "symbol '{name}': a name is letters, digits, '_' and '.' (it is used as `{name}+8`)"
                    ),
                );
            } else if program.label(name).is_some() {
                self.err_key(
                    &p,
                    format!("symbol '{name}' is also a label of the guest program"),
                );
            }
        }
    }

    fn value(&mut self, ctx: &Ctx<'_>, p: &[Seg], v: &Value) -> Option<u64> {
        let r = ctx.resolver.resolve(v);
        if r.is_none() {
            self.err(p, ctx.resolver.why_not(v, &ctx.names));
        }
        r
    }

    /// A PC is 4-byte aligned: A64 instructions are words (a misaligned PC faults).
    fn aligned_pc(&mut self, p: &[Seg], pc: u64) {
        if !pc.is_multiple_of(4) {
            self.err(
                p,
                format!("pc {pc:#x} is not 4-byte aligned: A64 instructions are words"),
            );
        }
    }

    /// `len` bytes at `a` stay below 2^64.
    fn fits(&mut self, p: &[Seg], a: u64, len: u64, what: &str) {
        if a.checked_add(len - 1).is_none() {
            self.err(
                p,
                format!(
                    "{what} of {len} bytes at {a:#x} runs past the top of the 64-bit address space"
                ),
            );
        }
    }

    fn vcpu(&mut self, ctx: &Ctx<'_>, p: &[Seg], v: usize) {
        if v >= ctx.vcpus {
            self.err(
                &with(p, &path!["vcpu"]),
                format!(
                    "vcpu {v} does not exist: the VM has {} vcpu(s) (0..={})",
                    ctx.vcpus,
                    ctx.vcpus - 1
                ),
            );
        }
    }

    fn cpu(&mut self, ctx: &Ctx<'_>, p: &[Seg], key: &str, c: usize) {
        if c >= ctx.ncpus {
            self.err(
                &with(p, &path![key]),
                format!(
                    "physical CPU {c} does not exist: the VM has {} (0..={})",
                    ctx.ncpus,
                    ctx.ncpus - 1
                ),
            );
        }
    }

    fn reg(&mut self, ctx: &Ctx<'_>, p: &[Seg], name: &str, as_key: bool) -> Option<RegName> {
        let problem = match RegName::parse(name) {
            Ok(r) if r.implemented(&ctx.features) => return Some(r),
            Ok(r) => format!(
                "{r} is not implemented: the guest's CPU has {} breakpoints and {} watchpoints",
                ctx.features.num_brps(),
                ctx.features.num_wrps()
            ),
            Err(e) => e,
        };
        if as_key {
            self.err_key(p, problem);
        } else {
            self.err(p, problem);
        }
        None
    }

    fn ops(&mut self, ops: &[Op], parent: &[usize], ctx: &mut Ctx<'_>, mult: u64) {
        for (i, op) in ops.iter().enumerate() {
            let mut idx = parent.to_vec();
            idx.push(i);
            let p = op_path(&idx);
            self.op(op, &idx, &p, ctx, mult);
        }
    }

    fn op(&mut self, op: &Op, idx: &[usize], p: &[Seg], ctx: &mut Ctx<'_>, mult: u64) {
        let before = ctx.total;
        ctx.total = ctx.total.saturating_add(mult);
        match op {
            Op::Repeat { times, ops } => return self.repeat(*times, ops, idx, p, ctx, mult),
            Op::RunConcurrently { vcpus, .. } => self.run_concurrently(vcpus, p, ctx),
            Op::MigrateVm { cpus, .. } => self.migrate_vm(cpus.as_deref(), p, ctx),
            Op::WriteMemory { addr, bytes, .. } => {
                let a = self.value(ctx, &with(p, &path!["addr"]), addr);
                if bytes.is_empty() || bytes.len() > 4096 {
                    self.err(
                        &with(p, &path!["bytes"]),
                        format!("write_memory writes 1 to 4096 bytes, not {}", bytes.len()),
                    );
                } else if let Some(a) = a {
                    self.fits(
                        &with(p, &path!["addr"]),
                        a,
                        bytes.len() as u64,
                        "write_memory",
                    );
                }
            }
            other => self.vcpu(ctx, p, other.vcpu()),
        }
        self.op_fields(op, p, ctx, mult);
        if mult == 1 {
            // Inside a repeat, the repeat reports the limit (at its `times`).
            self.actions_limit(op, p, before, ctx.total);
        }
        if let Some(e) = op.expect() {
            self.expect(op, e, &with(p, &path!["expect"]), ctx);
        }
    }

    /// The action that takes the expanded total past the limit is the one reported.
    fn actions_limit(&mut self, op: &Op, p: &[Seg], before: u64, total: u64) {
        let max = self.limits.actions;
        if total > max && before <= max {
            let key = if matches!(
                op,
                Op::Run { count: Some(_), .. } | Op::Step { count: Some(_), .. }
            ) {
                "count"
            } else {
                "do"
            };
            self.err(
                &with(p, &[Seg::Key(key.to_string())]),
                format!(
                    "the scenario expands to {total} actions here (repeats and counts multiplied out); the limit is {max} (--max-actions raises it)"
                ),
            );
        }
    }

    fn repeat(
        &mut self,
        times: u32,
        ops: &[Op],
        idx: &[usize],
        p: &[Seg],
        ctx: &mut Ctx<'_>,
        mult: u64,
    ) {
        if times == 0 {
            self.err(
                &with(p, &path!["times"]),
                "repeat times = 0: a repeat runs its actions at least once".into(),
            );
        }
        if ops.is_empty() {
            self.err(p, "repeat has no actions (add [[ops.ops]] tables)".into());
        }
        let m = mult.saturating_mul(u64::from(times.max(1)));
        let before = ctx.total;
        let max = self.limits.actions;
        self.ops(ops, idx, ctx, m);
        if ctx.total > max && before <= max {
            self.err(
                &with(p, &path!["times"]),
                format!(
                    "this repeat expands the scenario to {} actions; the limit is {max} (--max-actions raises it)",
                    ctx.total
                ),
            );
        }
    }

    fn run_concurrently(&mut self, vcpus: &[usize], p: &[Seg], ctx: &Ctx<'_>) {
        if vcpus.is_empty() {
            self.err(
                &with(p, &path!["vcpus"]),
                "run_concurrently needs at least one vcpu".into(),
            );
        }
        let mut seen = BTreeSet::new();
        for (k, &v) in vcpus.iter().enumerate() {
            if v >= ctx.vcpus {
                self.err(
                    &with(p, &path!["vcpus", k]),
                    format!("vcpu {v} does not exist: the VM has {} vcpu(s)", ctx.vcpus),
                );
            } else if !seen.insert(v) {
                self.err(
                    &with(p, &path!["vcpus", k]),
                    format!("vcpu {v} is listed twice: a vcpu makes one KVM_RUN at a time"),
                );
            }
        }
    }

    fn migrate_vm(
        &mut self,
        cpus: Option<&[hypdbg_model::profiles::CpuSpec]>,
        p: &[Seg],
        ctx: &mut Ctx<'_>,
    ) {
        let Some(list) = cpus else {
            return;
        };
        if list.is_empty() {
            self.err(
                &with(p, &path!["cpus"]),
                "the destination needs at least one physical CPU".into(),
            );
        }
        for (k, c) in list.iter().enumerate() {
            let f = c.features();
            if !f.same_counts(&ctx.features) {
                self.err(
                    &with(p, &path!["cpus", k]),
                    format!(
                        "'{c}' has {}/{} breakpoints/watchpoints but the guest sees {}/{}: a migration keeps the guest's ID_AA64DFR0_EL1 counts",
                        f.num_brps(),
                        f.num_wrps(),
                        ctx.features.num_brps(),
                        ctx.features.num_wrps()
                    ),
                );
            }
        }
        if !list.is_empty() {
            ctx.ncpus = list.len();
        }
    }

    /// The fields of the actions that name registers, addresses, CPUs, snapshots, counts.
    fn op_fields(&mut self, op: &Op, p: &[Seg], ctx: &mut Ctx<'_>, mult: u64) {
        let expects_error = op.expect().is_some_and(|e| e.error.is_some());
        match op {
            Op::SetGuestDebug {
                bcr, bvr, wcr, wvr, ..
            } => {
                for (key, list) in [("bcr", bcr), ("bvr", bvr), ("wcr", wcr), ("wvr", wvr)] {
                    for (k, (n, v)) in list.iter().enumerate() {
                        if *n > 15 {
                            self.err(
                                &with(p, &path![key, k, 0]),
                                format!(
                                    "{key} index {n}: struct kvm_guest_debug_arch has 16 registers per bank (0..=15)"
                                ),
                            );
                        }
                        self.value(ctx, &with(p, &path![key, k, 1]), v);
                    }
                }
            }
            Op::Migrate { cpu, .. } | Op::Preempt { cpu, .. } => self.cpu(ctx, p, "cpu", *cpu),
            Op::Irq { every: Some(0), .. } => self.err(
                &with(p, &path!["every"]),
                "every = 0: a host interrupt comes after 1 or more guest instructions (0 would interrupt every entry before the guest runs anything); leave `every` out for no interrupts".into(),
            ),
            Op::Run { count, .. } | Op::Step { count, .. } => {
                if *count == Some(0) {
                    self.err(
                        &with(p, &path!["count"]),
                        "count = 0: the action runs at least once".into(),
                    );
                }
                // The action itself is counted already: `count` more runs, one of them it.
                let n = mult.saturating_mul(u64::from(count.unwrap_or(1).saturating_sub(1)));
                ctx.total = ctx.total.saturating_add(n);
            }
            Op::Break { addr, .. }
            | Op::DeleteBreak { addr, .. }
            | Op::SwBreak { addr, .. }
            | Op::DeleteSwBreak { addr, .. }
            | Op::Watch { addr, .. }
            | Op::DeleteWatch { addr, .. } => {
                let ap = with(p, &path!["addr"]);
                if let Some(a) = self.value(ctx, &ap, addr)
                    && !expects_error
                    && let Err(e) = encodable(op, a)
                {
                    self.err(&ap, e);
                }
            }
            Op::Snapshot { name, .. } => {
                ctx.snapshots.insert(name.clone());
            }
            Op::Restore { name, .. } if !ctx.snapshots.contains(name) && !expects_error => {
                self.err(
                    &with(p, &path!["name"]),
                    format!("no snapshot named '{name}' is taken before this action"),
                );
            }
            Op::SetOneReg { reg, value, .. } => {
                let r = self.reg(ctx, &with(p, &path!["reg"]), reg, false);
                let v = self.value(ctx, &with(p, &path!["value"]), value);
                if let (Some(RegName::Core(_, "pc")), Some(v)) = (r, v) {
                    self.aligned_pc(&with(p, &path!["value"]), v);
                }
            }
            Op::GetOneReg { reg, value, .. } => {
                self.reg(ctx, &with(p, &path!["reg"]), reg, false);
                if let Some(v) = value {
                    self.value(ctx, &with(p, &path!["value"]), v);
                }
            }
            Op::RunUntilExit { exit, .. } if exit.is_debug() || *exit == ExitKind::Intr => {
                self.err(
                    &with(p, &path!["exit"]),
                    format!("run_until_exit handles debug exits and cannot wait for one: exit = \"{exit}\"; use kvm_run, run or step for those (and `stop`, `mmio`, `hypercall`, `system_event`, `guest_abort` or `program_end` here)"),
                );
            }
            Op::KvmRun {
                mmio_data: Some(v), ..
            } => {
                self.value(ctx, &with(p, &path!["mmio_data"]), v);
            }
            Op::SmcccFilter { base, nr, .. } => {
                let bp = with(p, &path!["base"]);
                if let Some(b) = self.value(ctx, &bp, base)
                    && (b > u64::from(u32::MAX) || b + u64::from(*nr) > 1 << 32 || *nr == 0)
                {
                    self.err(
                        &bp,
                        format!("smccc_filter [{b:#x}, +{nr}): SMCCC function ids are 32 bits and the range holds at least one"),
                    );
                }
            }
            _ => {}
        }
    }

    fn expect(&mut self, op: &Op, e: &Expect, p: &[Seg], ctx: &Ctx<'_>) {
        if op.has_exit() {
            self.expect_exit(op, e, p);
        } else {
            self.expect_no_exit(op, e, p);
        }
        self.expect_values(e, p, ctx);
    }

    /// Exit expectations on an action that does not run the guest.
    fn expect_no_exit(&mut self, op: &Op, e: &Expect, p: &[Seg]) {
        let exit_fields = [
            ("exit", e.exit.is_some()),
            ("stop", e.stop.is_some()),
            ("ec", e.ec.is_some()),
            ("isv", e.isv.is_some()),
            ("far", e.far.is_some()),
            ("mmio", e.mmio.is_some()),
            ("hypercall", e.hypercall.is_some()),
            ("system_event", e.system_event.is_some()),
            ("stops", e.stops.is_some()),
        ];
        for (k, present) in exit_fields {
            if present {
                self.err_key(
                    &with(p, &[Seg::Key(k.to_string())]),
                    format!(
                        "expect.{k} cannot be evaluated on a `{}` action: only run, kvm_run, step and run_until_stop end with an exit",
                        op.name()
                    ),
                );
            }
        }
    }

    /// Exit expectations that cannot hold together, or cannot hold for this action.
    fn expect_exit(&mut self, op: &Op, e: &Expect, p: &[Seg]) {
        let kp = |k: &str| with(p, &[Seg::Key(k.to_string())]);
        let stops_ok = matches!(
            op,
            Op::Run {
                until_stop: Some(_),
                ..
            } | Op::RunUntilStop { .. }
                | Op::RunUntilExit { .. }
        );
        if e.stops.is_some() && !stops_ok {
            self.err_key(
                &kp("stops"),
                "expect.stops counts the debug stops passed on the way to a stop: it applies to `run` with `until_stop` and to `run_until_stop`".into(),
            );
        }
        for (key, present, kind) in [
            ("stop", e.stop.is_some(), ExitKind::Stop),
            ("mmio", e.mmio.is_some(), ExitKind::Mmio),
            ("hypercall", e.hypercall.is_some(), ExitKind::Hypercall),
            (
                "system_event",
                e.system_event.is_some(),
                ExitKind::SystemEvent,
            ),
        ] {
            if let Some(k) = e.exit
                && present
                && k != kind
                && !(kind == ExitKind::Mmio && k == ExitKind::Stop)
            {
                self.err_key(
                    &kp(key),
                    format!("expect.{key} cannot hold together with exit = \"{k}\": it belongs to a {kind} exit"),
                );
            }
        }
        for (key, present) in [
            ("ec", e.ec.is_some()),
            ("isv", e.isv.is_some()),
            ("far", e.far.is_some()),
        ] {
            if let Some(k) = e.exit
                && present
                && !k.is_debug()
            {
                self.err_key(
                    &kp(key),
                    format!("expect.{key} cannot hold together with exit = \"{k}\": only debug exits have a syndrome and FAR"),
                );
            }
        }
        let ends_at = match op {
            Op::RunUntilStop { stop, .. } => Some((*stop, "run_until_stop ends at stop #")),
            Op::Run {
                until_stop: Some(n),
                ..
            } => Some((*n, "this run ends at stop #")),
            _ => None,
        };
        let Some((n, words)) = ends_at else {
            return;
        };
        if let (Op::RunUntilStop { .. }, Some(k)) = (op, e.exit)
            && k != ExitKind::Stop
        {
            self.err_key(
                &kp("exit"),
                format!("{words}{n} or fails: exit = \"{k}\" cannot be met"),
            );
        }
        if let Some(h) = e.stop
            && h != n
        {
            let how = if matches!(op, Op::Run { .. }) {
                " (until_stop)"
            } else {
                ""
            };
            self.err_key(
                &kp("stop"),
                format!("{words}{n}{how}: stop = {h} cannot be met"),
            );
        }
    }

    /// Addresses, registers and byte strings of the expectations.
    fn expect_values(&mut self, e: &Expect, p: &[Seg], ctx: &Ctx<'_>) {
        let kp = |k: &str| with(p, &[Seg::Key(k.to_string())]);
        if let Some(v) = &e.far {
            self.value(ctx, &kp("far"), v);
        }
        if let Some(v) = &e.pc
            && let Some(a) = self.value(ctx, &kp("pc"), v)
        {
            self.aligned_pc(&kp("pc"), a);
        }
        for (name, v) in &e.regs {
            let rp = with(p, &path!["regs", name.as_str()]);
            self.reg(ctx, &rp, name, true);
            self.value(ctx, &rp, v);
        }
        for (k, m) in e.memory.iter().enumerate() {
            let ap = with(p, &path!["memory", k, "addr"]);
            let a = self.value(ctx, &ap, &m.addr);
            if m.bytes.is_empty() || m.bytes.len() > 4096 {
                self.err(
                    &with(p, &path!["memory", k, "bytes"]),
                    format!(
                        "a memory expectation compares 1 to 4096 bytes, not {}",
                        m.bytes.len()
                    ),
                );
            } else if let Some(a) = a {
                self.fits(&ap, a, m.bytes.len() as u64, "a memory expectation");
            }
        }
        let lists: [(&str, Option<&Vec<ExceptionExpect>>); 2] = [
            ("exceptions", e.exceptions.as_ref()),
            ("all_exceptions", e.all_exceptions.as_ref()),
        ];
        for (key, list) in lists {
            for (k, x) in list.into_iter().flatten().enumerate() {
                if let Some(v) = &x.elr {
                    self.value(ctx, &with(p, &path![key, k, "elr"]), v);
                }
                if let Some(v) = &x.far {
                    self.value(ctx, &with(p, &path![key, k, "far"]), v);
                }
            }
        }
        if let Some(s) = &e.error
            && s.trim().is_empty()
        {
            self.err(
                &kp("error"),
                "expect.error is the text the action's error message contains: it cannot be empty"
                    .into(),
            );
        }
    }
}

/// Whether a breakpoint, software breakpoint or watch request at `a` can be programmed.
fn encodable(op: &Op, a: u64) -> Result<(), String> {
    match op {
        Op::Break { .. } | Op::DeleteBreak { .. } => {
            encode_breakpoint(a).map(|_| ()).map_err(|e| e.to_string())
        }
        Op::SwBreak { .. } | Op::DeleteSwBreak { .. } if !a.is_multiple_of(4) => Err(format!(
            "software breakpoint at {a:#x}: A64 instructions are 4-byte aligned"
        )),
        Op::Watch { len, access, .. } | Op::DeleteWatch { len, access, .. } => {
            encode_watchpoint(a, *len, *access)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}
