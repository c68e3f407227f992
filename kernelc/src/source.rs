//! Where the debug save/restore code is in what the user pointed at, and the scratch copy the
//! compiler sees (patched, never the user's files).

use std::path::{Path, PathBuf};

use crate::error::KernelCError;

/// arch/arm64/kvm/hyp/include/hyp/debug-sr.h (v5.9+; eras 2 and 3).
pub const HEADER: &str = "arch/arm64/kvm/hyp/include/hyp/debug-sr.h";
/// arch/arm64/kvm/hyp/nvhe/debug-sr.c (v5.9+): the nVHE wrappers and host buffers.
pub const NVHE: &str = "arch/arm64/kvm/hyp/nvhe/debug-sr.c";
/// arch/arm64/kvm/hyp/vhe/debug-sr.c (v5.9+): the VHE wrappers.
pub const VHE: &str = "arch/arm64/kvm/hyp/vhe/debug-sr.c";
/// arch/arm64/kvm/hyp/debug-sr.c (v4.5..v5.8; era 1 and early era 2).
pub const HYP_C: &str = "arch/arm64/kvm/hyp/debug-sr.c";
/// The include directory `<hyp/debug-sr.h>` is found in.
pub const HYP_INCLUDE: &str = "arch/arm64/kvm/hyp/include";

/// How the source is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// debug-sr.h (a tree's, or given alone), with the tree's nVHE/VHE wrappers when present
    /// (else hypdbg's own wrapper around the `_common` functions).
    Header {
        /// nvhe/debug-sr.c is there: it is the translation unit that runs.
        nvhe: bool,
        /// vhe/debug-sr.c is there: compiled too (not run: same common functions).
        vhe: bool,
    },
    /// One C file that defines the switch functions itself (v4.5..v5.8 hyp/debug-sr.c).
    HypC,
}

/// The files to compile, as paths relative to a kernel tree, and where each came from.
#[derive(Clone, Debug)]
pub struct Sources {
    /// What the user pointed at.
    pub given: PathBuf,
    /// The layout.
    pub shape: Shape,
    /// (path in the tree, the user's file) for every file compiled.
    pub files: Vec<(String, PathBuf)>,
}

fn exists(p: &Path) -> bool {
    p.is_file()
}

impl Sources {
    /// Find the debug save/restore code in a kernel tree, or take the one file given.
    pub fn locate(path: &Path) -> Result<Self, KernelCError> {
        let meta = std::fs::metadata(path).map_err(|e| KernelCError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if meta.is_dir() {
            let header = path.join(HEADER);
            let mut files = Vec::new();
            let shape = if exists(&header) {
                files.push((HEADER.to_string(), header));
                let nvhe = exists(&path.join(NVHE));
                let vhe = exists(&path.join(VHE));
                if nvhe {
                    files.push((NVHE.to_string(), path.join(NVHE)));
                }
                if vhe {
                    files.push((VHE.to_string(), path.join(VHE)));
                }
                Shape::Header { nvhe, vhe }
            } else if exists(&path.join(HYP_C)) {
                files.push((HYP_C.to_string(), path.join(HYP_C)));
                Shape::HypC
            } else {
                return Err(KernelCError::NotAKernelTree(path.to_path_buf()));
            };
            return Ok(Sources {
                given: path.to_path_buf(),
                shape,
                files,
            });
        }
        let (rel, shape) = match path.extension().and_then(|e| e.to_str()) {
            Some("h") => (
                HEADER,
                Shape::Header {
                    nvhe: false,
                    vhe: false,
                },
            ),
            Some("c") => (HYP_C, Shape::HypC),
            _ => return Err(KernelCError::NotDebugSr(path.to_path_buf())),
        };
        Ok(Sources {
            given: path.to_path_buf(),
            shape,
            files: vec![(rel.to_string(), path.to_path_buf())],
        })
    }

    /// Whether the user gave a tree (not one file).
    pub fn is_tree(&self) -> bool {
        self.given.is_dir()
    }

    /// The user's path of a tree-relative path (for messages).
    pub fn user_path(&self, rel: &str) -> PathBuf {
        self.files
            .iter()
            .find(|(r, _)| r == rel)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.given.join(rel))
    }

    /// The paths the patch may name for `rel`: itself, and for a single file its name.
    pub fn matches(&self, patch_path: &str) -> Option<String> {
        let p = patch_path.trim_start_matches("./");
        if let Some((rel, _)) = self.files.iter().find(|(r, _)| r == p) {
            return Some(rel.clone());
        }
        if !self.is_tree() {
            let name = self.given.file_name()?.to_str()?;
            if let Some((rel, _)) = self.files.first()
                && (p == name || p.ends_with(&format!("/{name}")))
            {
                return Some(rel.clone());
            }
        }
        None
    }
}

/// Copy `sources` into `<scratch>/tree/<rel>`; returns the tree root.
pub fn copy_to_scratch(sources: &Sources, scratch: &Path) -> Result<PathBuf, KernelCError> {
    let tree = scratch.join("tree");
    for (rel, from) in &sources.files {
        copy_one(from, &tree.join(rel))?;
    }
    Ok(tree)
}

/// Copy one file, creating its directory.
pub fn copy_one(from: &Path, to: &Path) -> Result<(), KernelCError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| KernelCError::Scratch(format!("{}: {e}", dir.display())))?;
    }
    std::fs::copy(from, to).map_err(|e| KernelCError::Unreadable {
        path: from.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(())
}
