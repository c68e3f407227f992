//! The differences between the simulator and a real kernel that are known and explained
//! (`scenarios/real-kernel/differences.toml`), each under exactly one category:
//!
//! - `qemu`: an artifact of QEMU's TCG emulation, not of the kernel (with the evidence);
//! - `kernel-defect`: the simulator's reference fixes it; `variant` names the catalog's
//!   historical variant with the upstream behaviour (with `--flow` it agrees with the
//!   kernel, and `hypdbg diff` checks that it does);
//! - `simulator`: a simplification of the simulator; `fidelity` names the row of the
//!   fidelity work that removes it.

use serde::Deserialize;

use hypdbg_hyp::variants;

use super::transcript::Divergence;

/// The category of a known difference.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// A TCG artifact.
    Qemu,
    /// A defect of the kernel the reference fixes.
    KernelDefect,
    /// A simplification of the simulator.
    Simulator,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 3] = [Category::Qemu, Category::KernelDefect, Category::Simulator];

    /// `qemu`, `kernel-defect` or `simulator`.
    pub const fn name(self) -> &'static str {
        match self {
            Category::Qemu => "qemu",
            Category::KernelDefect => "kernel-defect",
            Category::Simulator => "simulator",
        }
    }
}

/// One known difference.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    /// The scenario's `name`.
    pub scenario: String,
    /// The kernel series it shows on (`6.1`, `7.3`, ...), or `all`.
    pub kernels: Vec<String>,
    /// The modes (`vhe`, `nvhe`, `protected`, `protected-nvhe`); all when absent.
    #[serde(default)]
    pub modes: Vec<String>,
    /// The first divergent action.
    pub action: u64,
    /// The divergent field (`exit`, `isv`, `reg PC`, `exceptions`, ...).
    pub field: String,
    /// Which kind of difference.
    pub category: Category,
    /// For `kernel-defect`: the historical variant that behaves as the kernel does.
    #[serde(default)]
    pub variant: Option<String>,
    /// For `simulator`: the fidelity row that removes the simplification.
    #[serde(default)]
    pub fidelity: Option<String>,
    /// What happens and why, with the evidence.
    pub why: String,
}

/// The known differences.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// The entries.
    #[serde(default, rename = "difference")]
    pub known: Vec<Known>,
}

impl Expectations {
    /// Parse and check the file's text: every entry in exactly one category with what that
    /// category needs (a catalog variant for a kernel defect, a fidelity row for the
    /// simulator), known modes. One line per problem.
    pub fn parse(file: &str, text: &str) -> Result<Self, String> {
        let e: Expectations = toml::from_str(text).map_err(|err| {
            format!(
                "{file}: {}",
                err.to_string().lines().collect::<Vec<_>>().join(" ")
            )
        })?;
        let mut problems = Vec::new();
        for (i, k) in e.known.iter().enumerate() {
            let at = format!("{file}: difference {} ({})", i + 1, k.scenario);
            match k.category {
                Category::KernelDefect => match &k.variant {
                    None => problems.push(format!(
                        "{at}: a kernel-defect names the catalog's variant with the upstream behaviour (`variant`)"
                    )),
                    Some(v) if variants::by_name(v).is_none() => {
                        problems.push(format!("{at}: variant '{v}' is not in the catalog"))
                    }
                    Some(_) => {}
                },
                Category::Simulator if k.fidelity.is_none() => problems.push(format!(
                    "{at}: a simulator difference names the fidelity row that removes it (`fidelity`)"
                )),
                _ => {}
            }
            for m in &k.modes {
                if hypdbg_real::Mode::parse(m).is_none() {
                    problems.push(format!(
                        "{at}: mode '{m}' is not vhe, nvhe, protected or protected-nvhe"
                    ));
                }
            }
            if k.kernels.is_empty() {
                problems.push(format!(
                    "{at}: `kernels` lists series (6.1, 7.3, ...) or \"all\""
                ));
            }
        }
        if problems.is_empty() {
            Ok(e)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The entry that explains `d` in scenario `scenario` on a kernel of `series` in `mode`.
    pub fn find(&self, scenario: &str, series: &str, mode: &str, d: &Divergence) -> Option<&Known> {
        self.known.iter().find(|k| {
            k.scenario == scenario
                && k.kernels.iter().any(|s| s == "all" || s == series)
                && (k.modes.is_empty() || k.modes.iter().any(|m| m == mode))
                && k.action == d.action
                && k.field == d.field
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_need_what_their_category_needs() {
        let ok = r#"
[[difference]]
scenario = "s"
kernels = ["6.1"]
action = 3
field = "isv"
category = "kernel-defect"
variant = "immediate-exit-loses-step"
why = "6.1 arms a fresh step"
"#;
        let e = Expectations::parse("x.toml", ok).unwrap();
        let d = Divergence {
            action: 3,
            op: "kvm_run".into(),
            field: "isv".into(),
            simulator: "0".into(),
            kernel: "1".into(),
        };
        assert!(e.find("s", "6.1", "vhe", &d).is_some());
        assert!(e.find("s", "7.3", "vhe", &d).is_none());
        let bad = ok.replace("immediate-exit-loses-step", "nope");
        assert!(
            Expectations::parse("x.toml", &bad)
                .unwrap_err()
                .contains("not in the catalog")
        );
        let bad = ok.replace("category = \"kernel-defect\"", "category = \"simulator\"");
        assert!(
            Expectations::parse("x.toml", &bad)
                .unwrap_err()
                .contains("fidelity")
        );
        let bad = ok.replace("category = \"kernel-defect\"", "category = \"weather\"");
        assert!(Expectations::parse("x.toml", &bad).is_err());
    }
}
