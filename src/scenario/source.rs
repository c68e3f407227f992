//! Scenario files: TOML read with positions, then checked before anything runs.
//!
//! [`ScenarioFile::parse`] deserializes the file into a [`Scenario`] (serde, unknown keys
//! denied; CPU names parsed then), keeps a position tree of the document (every key and value
//! with its byte span), and runs the checks of [`super::lint`] on it: everything that can be
//! checked without running. Every problem is a [`FileError`]: `FILE:LINE:COL: the rule
//! broken`.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::Variant;
use toml::de::{DeTable, DeValue};

use super::lint::{Limits, Lint};
use super::ops::Scenario;
use crate::checker::Invariant;

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

/// The byte offset at which each line of `text` starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
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
/// `` boolean `true` ``, or `'abc'` as this crate's deserializers write it), to find the
/// offending value.
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
    // Our own deserializers quote the value they refuse: `cpu 'cortex-a99': ...`.
    let rest = &msg[msg.find('\'')? + 1..];
    Some(Scalar::Str(rest[..rest.find('\'')?].to_string()))
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
    /// The flow: the file's, or `era3`.
    pub variant: Variant,
    /// The invariants the file expects its own flow to break.
    pub expect_violations: BTreeSet<Invariant>,
    /// The position tree.
    pub tree: Node,
    /// Where each line starts (byte offsets), for locating without rescanning the text.
    line_starts: Vec<usize>,
    /// The actions the file expands to (repeats multiplied out, counts counted).
    pub actions: u64,
}

impl ScenarioFile {
    /// Read and check a file within the default [`Limits`].
    pub fn load(path: &Path) -> Result<Self, SourceErrors> {
        Self::load_with(path, &Limits::default())
    }

    /// Read and check a file within `limits`: at most `limits.file_bytes` are read (a device
    /// or a growing file included), and a longer file is refused before it is parsed.
    pub fn load_with(path: &Path, limits: &Limits) -> Result<Self, SourceErrors> {
        use std::io::Read as _;
        let name = path.display().to_string();
        let whole = |message: String| SourceErrors {
            errors: vec![FileError {
                file: name.clone(),
                line: 1,
                col: 1,
                message,
            }],
        };
        let f =
            std::fs::File::open(path).map_err(|e| whole(format!("cannot read the file: {e}")))?;
        let mut bytes = Vec::new();
        f.take(limits.file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| whole(format!("cannot read the file: {e}")))?;
        if bytes.len() as u64 > limits.file_bytes {
            return Err(whole(format!(
                "the file is longer than {} bytes, the limit for a scenario file (--max-file-bytes raises it)",
                limits.file_bytes
            )));
        }
        Self::parse_bytes_with(&name, &bytes, limits)
    }

    /// Check a file's bytes (UTF-8 TOML) within the default [`Limits`].
    pub fn parse_bytes(name: &str, bytes: &[u8]) -> Result<Self, SourceErrors> {
        Self::parse_bytes_with(name, bytes, &Limits::default())
    }

    /// Check a file's bytes (UTF-8 TOML) within `limits`.
    pub fn parse_bytes_with(
        name: &str,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Self, SourceErrors> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse_with(name, text, limits),
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

    /// Check a file's text within the default [`Limits`].
    pub fn parse(name: &str, text: &str) -> Result<Self, SourceErrors> {
        Self::parse_with(name, text, &Limits::default())
    }

    /// Check a file's text within `limits`.
    pub fn parse_with(name: &str, text: &str, limits: &Limits) -> Result<Self, SourceErrors> {
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
        let mut lint = Lint::new(name, text, &tree, *limits);
        let checked = lint.scenario(&scenario);
        let mut errors = lint.errors;
        errors.sort_by_key(|e| (e.line, e.col));
        match checked {
            Some(c) if errors.is_empty() => Ok(ScenarioFile {
                file: name.to_string(),
                line_starts: line_starts(text),
                text: text.to_string(),
                scenario,
                program: c.program,
                variant: c.variant,
                expect_violations: c.expect_violations,
                actions: c.actions,
                tree,
            }),
            _ => Err(SourceErrors { errors }),
        }
    }

    /// `FILE:LINE:COL` of a path (the deepest part of it the file has).
    pub fn location(&self, path: &[Seg]) -> String {
        let (line, col) = self.line_col(path);
        format!("{}:{line}:{col}", self.file)
    }

    /// `(line, col)` of a path, found through the line index: O(log lines), so locating
    /// every action of a long file stays linear in its length.
    pub fn line_col(&self, path: &[Seg]) -> (usize, usize) {
        let (node, _) = self.tree.walk(path);
        let mut off = node.span.start.min(self.text.len());
        while off > 0 && !self.text.is_char_boundary(off) {
            off -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= off);
        let start = self
            .line_starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        let col = self.text[start..off].chars().count() + 1;
        (line.max(1), col)
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
        let text = "name = \"x\"\ncpus = [\"min\"]\ncode = \"nop\"\n[[ops]]\ndo = \"check\"\nexpect = {}\n";
        let f = ScenarioFile::parse("t.toml", text).unwrap();
        let p = [
            Seg::Key("ops".into()),
            Seg::Index(0),
            Seg::Key("expect".into()),
        ];
        let (node, _) = f.tree.walk(&p);
        assert_eq!(f.line_col(&p), line_col(text, node.span.start));
        assert_eq!(f.location(&p), "t.toml:6:10");
    }
}
