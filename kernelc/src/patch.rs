//! `--patch`: a unified diff applied to the scratch copy, as `git apply` would (each hunk's
//! context must match, at its line or moved), with the hunk that does not apply named.

use std::path::{Path, PathBuf};

use crate::error::KernelCError;
use crate::source::{Sources, copy_one};

/// One file's part of a unified diff.
#[derive(Debug, PartialEq, Eq)]
pub struct FilePatch {
    /// The path the `+++` line names, without its `b/` prefix.
    pub path: String,
    /// The text from its `---` line on.
    pub text: String,
}

fn strip_prefix(p: &str) -> String {
    let p = p.split('\t').next().unwrap_or(p).trim();
    p.strip_prefix("a/")
        .or_else(|| p.strip_prefix("b/"))
        .unwrap_or(p)
        .to_string()
}

/// Split a (possibly multi-file, possibly `git format-patch`) diff into its files.
pub fn split(text: &str) -> Vec<FilePatch> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("--- ") && lines.get(i + 1).is_some_and(|l| l.starts_with("+++ ")) {
            let path = strip_prefix(&lines[i + 1][4..]);
            let start = i;
            i += 2;
            while i < lines.len() {
                let l = lines[i];
                let next_file = l.starts_with("diff ")
                    || (l.starts_with("--- ")
                        && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")));
                if next_file || l.starts_with("-- \n") {
                    break;
                }
                i += 1;
            }
            out.push(FilePatch {
                path,
                text: lines[start..i].concat(),
            });
        } else {
            i += 1;
        }
    }
    out
}

/// The `@@ -a,b +c,d @@` line of hunk `n` (from 1) of `text`.
fn hunk_header(text: &str, n: usize) -> String {
    text.lines()
        .filter(|l| l.starts_with("@@"))
        .nth(n.saturating_sub(1))
        .map(|l| match l[2..].find("@@") {
            Some(e) => l[..e + 4].to_string(),
            None => l.to_string(),
        })
        .unwrap_or_else(|| "?".into())
}

/// Apply `patch_file` to the scratch tree; returns the tree paths patched that are not
/// compiled (a patch may touch debug.c too: the simulator's reference stays in effect there).
pub fn apply(
    patch_file: &Path,
    sources: &Sources,
    tree: &Path,
) -> Result<Vec<String>, KernelCError> {
    let err = |reason: String| KernelCError::Patch {
        patch: patch_file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(patch_file).map_err(|e| err(e.to_string()))?;
    let files = split(&text);
    if files.is_empty() {
        return Err(err("no unified diff in it (no ---/+++ file header)".into()));
    }
    let mut not_compiled = Vec::new();
    for fp in &files {
        let rel = match sources.matches(&fp.path) {
            Some(rel) => rel,
            None => {
                let in_tree = sources.given.join(&fp.path);
                if sources.is_tree() && in_tree.is_file() {
                    copy_one(&in_tree, &tree.join(&fp.path))?;
                    not_compiled.push(fp.path.clone());
                    fp.path.clone()
                } else {
                    return Err(err(format!(
                        "{}: not in {} (a patch may only change existing files)",
                        fp.path,
                        sources.given.display()
                    )));
                }
            }
        };
        let target: PathBuf = tree.join(&rel);
        let base = std::fs::read_to_string(&target).map_err(|e| err(format!("{rel}: {e}")))?;
        let parsed = diffy::Patch::from_str(&fp.text)
            .map_err(|e| err(format!("{}: malformed diff: {e}", fp.path)))?;
        let patched = diffy::apply(&base, &parsed).map_err(|e| {
            // diffy says "error applying hunk #N".
            let n = e
                .to_string()
                .rsplit('#')
                .next()
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            KernelCError::PatchHunk {
                patch: patch_file.to_path_buf(),
                file: fp.path.clone(),
                hunk: n,
                header: hunk_header(&fp.text, n),
            }
        })?;
        std::fs::write(&target, patched).map_err(|e| err(format!("{rel}: {e}")))?;
    }
    Ok(not_compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "diff --git a/x/a.h b/x/a.h\nindex 1..2 100644\n--- a/x/a.h\n+++ b/x/a.h\n@@ -1,2 +1,2 @@\n one\n-two\n+deux\ndiff --git a/y.c b/y.c\n--- a/y.c\n+++ b/y.c\n@@ -3 +3 @@\n-x\n+y\n";

    #[test]
    fn splits_a_git_diff_by_file() {
        let f = split(TWO);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].path, "x/a.h");
        assert!(f[0].text.starts_with("--- a/x/a.h\n"));
        assert!(f[0].text.ends_with("+deux\n"));
        assert_eq!(f[1].path, "y.c");
        assert_eq!(hunk_header(&f[1].text, 1), "@@ -3 +3 @@");
    }
}
