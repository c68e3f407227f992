//! Scenario files: TOML read with positions, then checked before anything runs.
//!
//! [`ScenarioFile::parse`] deserializes the file into a [`Scenario`] (serde, unknown keys
//! denied), keeps a position tree of the document (every key and value with its byte span),
//! assembles the guest program and checks everything that can be checked without running:
//! CPU names, counts, vcpu and CPU indices, labels and symbols, register names, snapshot
//! names, expectations that cannot be evaluated on their action. Every problem is a
//! [`FileError`]: `FILE:LINE:COL: the rule broken`.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use hypdbg_host::{encode_breakpoint, encode_watchpoint};
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::{self, Variant};
use hypdbg_hyp::workloads::CODE_BASE;
use hypdbg_model::DebugFeatures;
use toml::de::{DeTable, DeValue};

use super::ops::{ExceptionExpect, ExitKind, Expect, Op, Scenario, Value};
use super::runner::{RegName, Resolver, parse_one_cpu};
use crate::validate::Invariant;

/// One problem in a scenario file, located.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct FileError {
    /// The file, as named on the command line.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// The rule broken.
    pub message: String,
}

/// Every problem found in a scenario file (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceErrors {
    /// The problems, in file order.
    pub errors: Vec<FileError>,
}

impl fmt::Display for SourceErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SourceErrors {}

/// A scalar of the position tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// An integer (as written; `None` when it does not fit).
    Int(Option<i128>),
    /// A string's content.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A float, as written.
    Float(String),
    /// A date-time.
    Datetime,
}

/// A node of the position tree: a value with its byte span.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where it is (for an array-of-tables element: its `[[header]]`).
    pub span: Range<usize>,
    /// What it is.
    pub kind: NodeKind,
}

/// The kinds of node.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A table: (key, key span, value), in document order.
    Table(Vec<(String, Range<usize>, Node)>),
    /// An array.
    Array(Vec<Node>),
    /// A scalar.
    Scalar(Scalar),
}

/// A step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Self {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// A path into the document.
pub type Path2 = Vec<Seg>;

/// Build a path: `path!["ops", 3, "expect", "pc"]`.
macro_rules! path {
    ($($s:expr),* $(,)?) => { [$(Seg::from($s)),*] };
}

fn int_value(i: &toml::de::DeInteger<'_>) -> Option<i128> {
    let s = i.as_str().replace('_', "");
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b.to_string()),
        None => (false, s.trim_start_matches('+').to_string()),
    };
    let body = match i.radix() {
        16 => body.trim_start_matches("0x").to_string(),
        8 => body.trim_start_matches("0o").to_string(),
        2 => body.trim_start_matches("0b").to_string(),
        _ => body,
    };
    let v = i128::from_str_radix(&body, i.radix()).ok()?;
    Some(if neg { -v } else { v })
}

fn node_of(v: &toml::Spanned<DeValue<'_>>) -> Node {
    let span = v.span();
    let kind = match v.get_ref() {
        DeValue::Table(t) => NodeKind::Table(table_entries(t)),
        DeValue::Array(a) => NodeKind::Array(a.iter().map(node_of).collect()),
        DeValue::String(s) => NodeKind::Scalar(Scalar::Str(s.to_string())),
        DeValue::Integer(i) => NodeKind::Scalar(Scalar::Int(int_value(i))),
        DeValue::Float(f) => NodeKind::Scalar(Scalar::Float(f.as_str().to_string())),
        DeValue::Boolean(b) => NodeKind::Scalar(Scalar::Bool(*b)),
        DeValue::Datetime(_) => NodeKind::Scalar(Scalar::Datetime),
    };
    Node { span, kind }
}

fn table_entries(t: &DeTable<'_>) -> Vec<(String, Range<usize>, Node)> {
    let mut v: Vec<(String, Range<usize>, Node)> = t
        .iter()
        .map(|(k, val)| (k.get_ref().to_string(), k.span(), node_of(val)))
        .collect();
    v.sort_by_key(|(_, ks, _)| ks.start);
    v
}

impl Node {
    /// The node at `path`, or the deepest node on the way.
    pub fn walk(&self, path: &[Seg]) -> (&Node, bool) {
        let mut cur = self;
        for s in path {
            let next = match (&cur.kind, s) {
                (NodeKind::Table(t), Seg::Key(k)) => {
                    t.iter().find(|(n, _, _)| n == k).map(|e| &e.2)
                }
                (NodeKind::Array(a), Seg::Index(i)) => a.get(*i),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => return (cur, false),
            }
        }
        (cur, true)
    }

    /// The span of the key `path` ends with (for errors about a key), if present.
    pub fn key_span(&self, path: &[Seg]) -> Option<Range<usize>> {
        let (last, parent) = path.split_last()?;
        let (node, found) = self.walk(parent);
        match (&node.kind, last, found) {
            (NodeKind::Table(t), Seg::Key(k), true) => {
                t.iter().find(|(n, _, _)| n == k).map(|e| e.1.clone())
            }
            _ => None,
        }
    }

    fn deepest_with_span(&self, span: &Range<usize>) -> Option<&Node> {
        let children: Vec<&Node> = match &self.kind {
            NodeKind::Table(t) => t.iter().map(|e| &e.2).collect(),
            NodeKind::Array(a) => a.iter().collect(),
            NodeKind::Scalar(_) => Vec::new(),
        };
        for c in children {
            if let Some(n) = c.deepest_with_span(span) {
                return Some(n);
            }
        }
        (self.span == *span).then_some(self)
    }

    /// Every (key, key span) and scalar in the subtree, in document order.
    fn visit<'a>(&'a self, keys: &mut Vec<(&'a str, Range<usize>)>, scalars: &mut Vec<&'a Node>) {
        match &self.kind {
            NodeKind::Table(t) => {
                for (k, ks, v) in t {
                    keys.push((k, ks.clone()));
                    v.visit(keys, scalars);
                }
            }
            NodeKind::Array(a) => a.iter().for_each(|n| n.visit(keys, scalars)),
            NodeKind::Scalar(_) => scalars.push(self),
        }
    }
}

/// A message on one line: control characters (a newline inside a quoted value) escaped.
pub fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// `(line, column)`, both 1-based, of a byte offset (columns count characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while off > 0 && !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..off].chars().count() + 1;
    (line, col)
}

/// The byte offset in the file of line `line` (1-based) of a string value whose literal
/// (quotes included) is at `span`: TOML trims the newline right after `"""`/`'''`, and in
/// basic strings `\n` escapes start lines and a line-ending backslash joins them. Points at
/// the line's first non-blank character.
pub fn string_line_offset(text: &str, span: &Range<usize>, line: usize) -> usize {
    let Some(lit) = text.get(span.clone()) else {
        return span.start;
    };
    let (delim, basic) = if lit.starts_with("\"\"\"") {
        (3, true)
    } else if lit.starts_with("'''") {
        (3, false)
    } else if lit.starts_with('"') {
        (1, true)
    } else if lit.starts_with('\'') {
        (1, false)
    } else {
        return span.start;
    };
    let mut i = delim;
    let bytes = lit.as_bytes();
    if delim == 3 {
        if lit[i..].starts_with("\r\n") {
            i += 2;
        } else if lit[i..].starts_with('\n') {
            i += 1;
        }
    }
    let end = lit.len().saturating_sub(delim);
    let mut cur = 1usize;
    let mut line_start = i;
    while cur < line && i < end {
        match bytes[i] {
            b'\n' => {
                cur += 1;
                i += 1;
                line_start = i;
            }
            b'\\' if basic => {
                let next = bytes.get(i + 1).copied().unwrap_or(b' ');
                if next == b'n' {
                    cur += 1;
                    i += 2;
                    line_start = i;
                } else if next == b' ' || next == b'\t' || next == b'\n' || next == b'\r' {
                    // A line-ending backslash: the newline and the whitespace after it vanish.
                    let mut j = i + 1;
                    while j < end && matches!(bytes[j], b' ' | b'\t' | b'\r' | b'\n') {
                        j += 1;
                    }
                    i = j;
                } else {
                    i += 2;
                }
            }
            _ => i += 1,
        }
    }
    let mut j = line_start;
    while j < end && matches!(bytes[j], b' ' | b'\t') {
        j += 1;
    }
    span.start + j.min(lit.len())
}

/// The literal an error message quotes (`` integer `70000` ``, `string "abc"`,
/// `` boolean `true` ``), to find the offending value.
fn quoted_literal(msg: &str) -> Option<Scalar> {
    let grab = |prefix: &str, open: char, close: char| -> Option<String> {
        let at = msg.find(prefix)? + prefix.len();
        let rest = msg[at..].strip_prefix(open)?;
        let end = rest.find(close)?;
        Some(rest[..end].to_string())
    };
    if let Some(i) = grab("integer ", '`', '`') {
        return Some(Scalar::Int(i.parse::<i128>().ok()));
    }
    if let Some(s) = grab("string ", '"', '"') {
        return Some(Scalar::Str(s));
    }
    if let Some(b) = grab("boolean ", '`', '`') {
        return Some(Scalar::Bool(b == "true"));
    }
    if let Some(f) = grab("floating point ", '`', '`') {
        return Some(Scalar::Float(f));
    }
    None
}

fn scalar_matches(want: &Scalar, got: &Scalar) -> bool {
    match (want, got) {
        (Scalar::Float(a), Scalar::Float(b)) => a.parse::<f64>().ok() == b.parse::<f64>().ok(),
        (a, b) => a == b,
    }
}

/// Point a serde error that toml located at an enclosing table (internally tagged actions
/// are buffered, so the span is their `[[ops]]` header) at the key or value it is about.
fn refine_span(root: &Node, span: Range<usize>, msg: &str) -> Range<usize> {
    let Some(node) = root.deepest_with_span(&span) else {
        return span;
    };
    if matches!(node.kind, NodeKind::Scalar(_)) {
        return span;
    }
    let mut keys = Vec::new();
    let mut scalars = Vec::new();
    node.visit(&mut keys, &mut scalars);
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some(name) = rest.split('`').next()
        && let Some((_, ks)) = keys.iter().find(|(k, _)| *k == name)
    {
        return ks.clone();
    }
    if let Some(lit) = quoted_literal(msg)
        && let Some(n) = scalars.iter().find(|n| match &n.kind {
            NodeKind::Scalar(s) => scalar_matches(&lit, s),
            _ => false,
        })
    {
        return n.span.clone();
    }
    span
}

/// A scenario file, read and checked.
#[derive(Clone, Debug)]
pub struct ScenarioFile {
    /// The file's name as given.
    pub file: String,
    /// Its text.
    pub text: String,
    /// The scenario.
    pub scenario: Scenario,
    /// The assembled guest program.
    pub program: Program,
    /// The physical CPUs.
    pub cpus: Vec<(String, DebugFeatures)>,
    /// The flow: the file's, or `era3`.
    pub variant: Variant,
    /// The invariants the file expects its own flow to break.
    pub expect_violations: BTreeSet<Invariant>,
    /// The position tree.
    pub tree: Node,
}

/// The flow a file runs when neither it nor the command line names one.
pub const DEFAULT_FLOW: &str = "era3";

/// Expanded actions a file may ask for (repeats multiplied out).
pub const MAX_ACTIONS: u64 = 2_000_000;

/// An invariant by `inv3`, `3`, `guest-reads-back` or `inv3:guest-reads-back`.
pub fn parse_invariant(s: &str) -> Option<Invariant> {
    let t = s.trim().to_ascii_lowercase();
    Invariant::ALL.into_iter().find(|i| {
        let num = i.number().to_string();
        t == i.label()
            || t == i.name()
            || t == num
            || t.strip_prefix("inv").is_some_and(|n| n == num)
    })
}

fn known_flows() -> String {
    variants::all()
        .iter()
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ScenarioFile {
    /// Read and check a file.
    pub fn load(path: &Path) -> Result<Self, SourceErrors> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| SourceErrors {
            errors: vec![FileError {
                file: name.clone(),
                line: 1,
                col: 1,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::parse_bytes(&name, &bytes)
    }

    /// Check a file's bytes (UTF-8 TOML).
    pub fn parse_bytes(name: &str, bytes: &[u8]) -> Result<Self, SourceErrors> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(name, text),
            Err(e) => {
                let good = &bytes[..e.valid_up_to()];
                let text = String::from_utf8_lossy(good);
                let (line, col) = line_col(&text, text.len());
                Err(SourceErrors {
                    errors: vec![FileError {
                        file: name.to_string(),
                        line,
                        col,
                        message: "the file is not UTF-8: TOML files are UTF-8 text".into(),
                    }],
                })
            }
        }
    }

    /// Check a file's text.
    pub fn parse(name: &str, text: &str) -> Result<Self, SourceErrors> {
        let one = |offset: usize, message: String| {
            let (line, col) = line_col(text, offset);
            SourceErrors {
                errors: vec![FileError {
                    file: name.to_string(),
                    line,
                    col,
                    message: one_line(&message),
                }],
            }
        };
        let doc = DeTable::parse(text).map_err(|e| {
            one(
                e.span().map_or(0, |s| s.start),
                format!("TOML syntax: {}", e.message().trim()),
            )
        })?;
        let tree = Node {
            span: doc.span(),
            kind: NodeKind::Table(table_entries(doc.get_ref())),
        };
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            let span = e.span().unwrap_or(0..0);
            let span = refine_span(&tree, span, &msg);
            one(span.start, msg)
        })?;
        let mut lint = Lint {
            file: name,
            text,
            tree: &tree,
            errors: Vec::new(),
        };
        let checked = lint.scenario(&scenario);
        let mut errors = lint.errors;
        errors.sort_by_key(|e| (e.line, e.col));
        match checked {
            Some((program, cpus, variant, expect_violations)) if errors.is_empty() => {
                Ok(ScenarioFile {
                    file: name.to_string(),
                    text: text.to_string(),
                    scenario,
                    program,
                    cpus,
                    variant,
                    expect_violations,
                    tree,
                })
            }
            _ => Err(SourceErrors { errors }),
        }
    }

    /// `FILE:LINE:COL` of a path (the deepest part of it the file has).
    pub fn location(&self, path: &[Seg]) -> String {
        let (node, _) = self.tree.walk(path);
        let (line, col) = line_col(&self.text, node.span.start);
        format!("{}:{line}:{col}", self.file)
    }

    /// `(line, col)` of a path.
    pub fn line_col(&self, path: &[Seg]) -> (usize, usize) {
        let (node, _) = self.tree.walk(path);
        line_col(&self.text, node.span.start)
    }
}

/// The path of an action: `ops[i]`, `ops[i].ops[j]`, ...
pub fn op_path(indices: &[usize]) -> Path2 {
    let mut p = Vec::with_capacity(indices.len() * 2);
    for &i in indices {
        p.push(Seg::Key("ops".into()));
        p.push(Seg::Index(i));
    }
    p
}

fn with(p: &[Seg], more: &[Seg]) -> Path2 {
    let mut v = p.to_vec();
    v.extend_from_slice(more);
    v
}

type Checked = (
    Program,
    Vec<(String, DebugFeatures)>,
    Variant,
    BTreeSet<Invariant>,
);

struct Lint<'a> {
    file: &'a str,
    text: &'a str,
    tree: &'a Node,
    errors: Vec<FileError>,
}

/// What the action checks know about the VM.
struct Ctx<'a> {
    vcpus: usize,
    features: DebugFeatures,
    ncpus: usize,
    resolver: &'a Resolver,
    names: String,
    snapshots: BTreeSet<String>,
}

impl Lint<'_> {
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

    fn scenario(&mut self, sc: &Scenario) -> Option<Checked> {
        let variant = match &sc.flow {
            Some(f) => match variants::by_name(f) {
                Some(v) => Some(v),
                None => {
                    self.err(
                        &path!["flow"],
                        format!("unknown flow '{f}': known flows are {}", known_flows()),
                    );
                    None
                }
            },
            None => variants::by_name(DEFAULT_FLOW),
        };
        let mut cpus = Vec::new();
        if sc.cpus.is_empty() {
            self.err(
                &path!["cpus"],
                "a scenario needs at least one physical CPU (a profile name or an ID_AA64DFR0_EL1 value)".into(),
            );
        }
        for (i, c) in sc.cpus.iter().enumerate() {
            match parse_one_cpu(c) {
                Ok(cpu) => {
                    if let Some((_, first)) = cpus.first() {
                        let first: &DebugFeatures = first;
                        let f = cpu.1;
                        if (f.num_brps(), f.num_wrps()) != (first.num_brps(), first.num_wrps()) {
                            self.err(
                                &path!["cpus", i],
                                format!(
                                    "CPU {i} ('{c}') has {}/{} breakpoints/watchpoints but CPU 0 has {}/{}: a guest sees one ID_AA64DFR0_EL1, so every physical CPU of a VM must implement the same counts",
                                    f.num_brps(),
                                    f.num_wrps(),
                                    first.num_brps(),
                                    first.num_wrps()
                                ),
                            );
                        }
                    }
                    cpus.push(cpu);
                }
                Err(e) => self.err(&path!["cpus", i], e.to_string()),
            }
        }
        if sc.vcpus == 0 || sc.vcpus > 64 {
            self.err(
                &path!["vcpus"],
                format!("vcpus = {}: a scenario has 1 to 64 vcpus", sc.vcpus),
            );
        }
        if sc.vcpu_cpus.len() > sc.vcpus {
            self.err(
                &path!["vcpu_cpus"],
                format!(
                    "vcpu_cpus lists {} entries but the VM has {} vcpu(s)",
                    sc.vcpu_cpus.len(),
                    sc.vcpus
                ),
            );
        }
        for (i, &c) in sc.vcpu_cpus.iter().enumerate() {
            if !cpus.is_empty() && c >= sc.cpus.len() {
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
        if let Some(b) = sc.budget
            && !(1..=100_000_000).contains(&b)
        {
            self.err(
                &path!["budget"],
                format!("budget = {b}: a KVM_RUN executes 1 to 100000000 guest instructions"),
            );
        }
        let mut expect_violations = BTreeSet::new();
        for (i, s) in sc.expect_violations.iter().enumerate() {
            match parse_invariant(s) {
                Some(inv) => {
                    expect_violations.insert(inv);
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
        let program = self.program(sc);
        let program_ok = program.is_some();
        let program = program.unwrap_or_default();
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
        let resolver = Resolver::new(&program, &sc.symbols);
        let mut names: Vec<&str> = program.labels.keys().map(String::as_str).collect();
        names.extend(sc.symbols.keys().map(String::as_str));
        let shown = names
            .iter()
            .take(12)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let names = if names.is_empty() {
            "no label and no symbol".to_string()
        } else if names.len() > 12 {
            format!("{shown}, ... ({} names)", names.len())
        } else {
            shown
        };
        let features = cpus
            .first()
            .map(|(_, f)| *f)
            .or_else(|| DebugFeatures::new(0x0010_1006).ok());
        let features = features?;
        let mut ctx = Ctx {
            vcpus: sc.vcpus.max(1),
            features,
            ncpus: sc.cpus.len().max(1),
            resolver: &resolver,
            names,
            snapshots: BTreeSet::new(),
        };
        if program_ok {
            let mut total = 0u64;
            self.ops(&sc.ops, &[], &mut ctx, 1, &mut total);
        }
        if !program_ok || cpus.len() != sc.cpus.len() || cpus.is_empty() {
            return None;
        }
        Some((program, cpus, variant?, expect_violations))
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

    fn value(&mut self, ctx: &Ctx<'_>, p: &[Seg], v: &Value) -> Option<u64> {
        let r = ctx.resolver.resolve(v);
        if r.is_none() {
            self.err(
                p,
                format!(
                    "unknown label '{v}': the program and the symbols define {}",
                    ctx.names
                ),
            );
        }
        r
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
        let report = |s: &mut Self, m: String| {
            if as_key {
                s.err_key(p, m);
            } else {
                s.err(p, m);
            }
        };
        match RegName::parse(name) {
            Ok(r) if !r.implemented(&ctx.features) => {
                report(
                    self,
                    format!(
                        "{r} is not implemented: the guest's CPU has {} breakpoints and {} watchpoints",
                        ctx.features.num_brps(),
                        ctx.features.num_wrps()
                    ),
                );
                None
            }
            Ok(r) => Some(r),
            Err(e) => {
                report(self, e);
                None
            }
        }
    }

    fn ops(&mut self, ops: &[Op], parent: &[usize], ctx: &mut Ctx<'_>, mult: u64, total: &mut u64) {
        for (i, op) in ops.iter().enumerate() {
            let mut idx = parent.to_vec();
            idx.push(i);
            let p = op_path(&idx);
            self.op(op, &idx, &p, ctx, mult, total);
        }
    }

    fn op(
        &mut self,
        op: &Op,
        idx: &[usize],
        p: &[Seg],
        ctx: &mut Ctx<'_>,
        mult: u64,
        total: &mut u64,
    ) {
        *total = total.saturating_add(mult);
        let expects_error = op.expect().is_some_and(|e| e.error.is_some());
        match op {
            Op::Repeat { times, ops } => {
                if *times == 0 {
                    self.err(
                        &with(p, &path!["times"]),
                        "repeat times = 0: a repeat runs its actions at least once".into(),
                    );
                }
                if ops.is_empty() {
                    self.err(p, "repeat has no actions (add [[ops.ops]] tables)".into());
                }
                let m = mult.saturating_mul(u64::from((*times).max(1)));
                let before = *total;
                self.ops(ops, idx, ctx, m, total);
                if *total > MAX_ACTIONS && before <= MAX_ACTIONS {
                    self.err(
                        &with(p, &path!["times"]),
                        format!(
                            "this repeat expands the scenario to {} actions; the limit is {MAX_ACTIONS}",
                            *total
                        ),
                    );
                }
                return;
            }
            Op::RunConcurrently { vcpus, .. } => {
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
            Op::MigrateVm { cpus, .. } => {
                if let Some(list) = cpus {
                    if list.is_empty() {
                        self.err(
                            &with(p, &path!["cpus"]),
                            "the destination needs at least one physical CPU".into(),
                        );
                    }
                    for (k, c) in list.iter().enumerate() {
                        match parse_one_cpu(c) {
                            Ok((_, f)) => {
                                if (f.num_brps(), f.num_wrps())
                                    != (ctx.features.num_brps(), ctx.features.num_wrps())
                                {
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
                            Err(e) => self.err(&with(p, &path!["cpus", k]), e.to_string()),
                        }
                    }
                    if !list.is_empty() {
                        ctx.ncpus = list.len();
                    }
                }
            }
            Op::WriteMemory { addr, bytes, .. } => {
                self.value(ctx, &with(p, &path!["addr"]), addr);
                if bytes.is_empty() || bytes.len() > 4096 {
                    self.err(
                        &with(p, &path!["bytes"]),
                        format!("write_memory writes 1 to 4096 bytes, not {}", bytes.len()),
                    );
                }
            }
            other => self.vcpu(ctx, p, other.vcpu()),
        }
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
            Op::Run { count, .. } | Op::Step { count, .. } => {
                if *count == Some(0) {
                    self.err(
                        &with(p, &path!["count"]),
                        "count = 0: the action runs at least once".into(),
                    );
                }
                *total = total.saturating_add(mult.saturating_mul(u64::from(count.unwrap_or(1))));
            }
            Op::Break { addr, .. } | Op::DeleteBreak { addr, .. } => {
                let ap = with(p, &path!["addr"]);
                if let Some(a) = self.value(ctx, &ap, addr)
                    && !expects_error
                    && let Err(e) = encode_breakpoint(a)
                {
                    self.err(&ap, e.to_string());
                }
            }
            Op::SwBreak { addr, .. } | Op::DeleteSwBreak { addr, .. } => {
                let ap = with(p, &path!["addr"]);
                if let Some(a) = self.value(ctx, &ap, addr)
                    && !expects_error
                    && a % 4 != 0
                {
                    self.err(
                        &ap,
                        format!(
                            "software breakpoint at {a:#x}: A64 instructions are 4-byte aligned"
                        ),
                    );
                }
            }
            Op::Watch {
                addr, len, access, ..
            }
            | Op::DeleteWatch {
                addr, len, access, ..
            } => {
                let ap = with(p, &path!["addr"]);
                if let Some(a) = self.value(ctx, &ap, addr)
                    && !expects_error
                    && let Err(e) = encode_watchpoint(a, *len, *access)
                {
                    self.err(&ap, e.to_string());
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
                self.reg(ctx, &with(p, &path!["reg"]), reg, false);
                self.value(ctx, &with(p, &path!["value"]), value);
            }
            Op::GetOneReg { reg, value, .. } => {
                self.reg(ctx, &with(p, &path!["reg"]), reg, false);
                if let Some(v) = value {
                    self.value(ctx, &with(p, &path!["value"]), v);
                }
            }
            _ => {}
        }
        if let Some(e) = op.expect() {
            self.expect(op, e, &with(p, &path!["expect"]), ctx);
        }
    }

    fn expect(&mut self, op: &Op, e: &Expect, p: &[Seg], ctx: &Ctx<'_>) {
        let kp = |k: &str| with(p, &[Seg::Key(k.to_string())]);
        let exit_fields = [
            ("exit", e.exit.is_some()),
            ("hvc", e.hvc.is_some()),
            ("ec", e.ec.is_some()),
            ("far", e.far.is_some()),
            ("stops", e.stops.is_some()),
        ];
        if !op.has_exit() {
            for (k, present) in exit_fields {
                if present {
                    self.err_key(
                        &kp(k),
                        format!(
                            "expect.{k} cannot be evaluated on a `{}` action: only run, kvm_run, step and run_until_hvc end with an exit",
                            op.name()
                        ),
                    );
                }
            }
        } else {
            let stops_ok = matches!(
                op,
                Op::Run {
                    until_hvc: Some(_),
                    ..
                } | Op::RunUntilHvc { .. }
            );
            if e.stops.is_some() && !stops_ok {
                self.err_key(
                    &kp("stops"),
                    "expect.stops counts the stops passed on the way to an HVC: it applies to `run` with `until_hvc` and to `run_until_hvc`".into(),
                );
            }
            if let (Some(k), Some(_)) = (e.exit, e.hvc)
                && k != ExitKind::Hvc
            {
                self.err_key(
                    &kp("hvc"),
                    format!("expect.hvc cannot hold together with exit = \"{k}\": an hvc number belongs to an hvc exit"),
                );
            }
            for (key, present) in [("ec", e.ec.is_some()), ("far", e.far.is_some())] {
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
            if let Op::RunUntilHvc { imm, .. } = op {
                if let Some(k) = e.exit
                    && k != ExitKind::Hvc
                {
                    self.err_key(
                        &kp("exit"),
                        format!("run_until_hvc ends at hvc #{imm} or fails: exit = \"{k}\" cannot be met"),
                    );
                }
                if let Some(h) = e.hvc
                    && h != *imm
                {
                    self.err_key(
                        &kp("hvc"),
                        format!("run_until_hvc ends at hvc #{imm}: hvc = {h} cannot be met"),
                    );
                }
            }
            if let (
                Op::Run {
                    until_hvc: Some(n), ..
                },
                Some(h),
            ) = (op, e.hvc)
                && h != *n
            {
                self.err_key(
                    &kp("hvc"),
                    format!("this run ends at hvc #{n} (until_hvc): hvc = {h} cannot be met"),
                );
            }
        }
        if let Some(v) = &e.far {
            self.value(ctx, &kp("far"), v);
        }
        if let Some(v) = &e.pc {
            self.value(ctx, &kp("pc"), v);
        }
        for (name, v) in &e.regs {
            let rp = with(p, &path!["regs", name.as_str()]);
            self.reg(ctx, &rp, name, true);
            self.value(ctx, &rp, v);
        }
        for (k, m) in e.memory.iter().enumerate() {
            self.value(ctx, &with(p, &path!["memory", k, "addr"]), &m.addr);
            if m.bytes.is_empty() || m.bytes.len() > 4096 {
                self.err(
                    &with(p, &path!["memory", k, "bytes"]),
                    format!(
                        "a memory expectation compares 1 to 4096 bytes, not {}",
                        m.bytes.len()
                    ),
                );
            }
        }
        for key in ["exceptions", "all_exceptions"] {
            let list: Option<&Vec<ExceptionExpect>> = if key == "exceptions" {
                e.exceptions.as_ref()
            } else {
                e.all_exceptions.as_ref()
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_lines_map_to_file_lines() {
        let text = "code = \"\"\"\nnop\n  frob\n\"\"\"\n";
        let start = text.find("\"\"\"").unwrap();
        let end = text.rfind("\"\"\"").unwrap() + 3;
        let off = string_line_offset(text, &(start..end), 2);
        assert_eq!(line_col(text, off), (3, 3));
        let text = "code = \"nop\\nfrob\"";
        let off = string_line_offset(text, &(7..text.len()), 2);
        assert_eq!(&text[off..off + 4], "frob");
        assert_eq!(line_col("a\nbé", 5), (2, 3));
        assert_eq!(
            line_col("a\nbé", 4),
            (2, 2),
            "inside a character: its start"
        );
    }
}
