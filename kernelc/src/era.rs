//! Which era of the kernel's debug switch a source is, from what it defines.

use std::str::FromStr;

use hypdbg_hyp::flow::Era;

use crate::error::KernelCError;

/// The layout the shim compiles the source against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelEra {
    /// v4.5..v4.16: `__debug_cond_save_host_state`, `vcpu->arch.debug_flags`.
    One,
    /// v4.17..v6.9: DEBUG_DIRTY, the host's registers saved per vcpu.
    Two,
    /// v6.10..v6.13: DEBUG_DIRTY, the host's registers saved per CPU (`host_data_ptr`).
    TwoPerCpu,
    /// v6.14+: `debug_owner`.
    Three,
}

impl KernelEra {
    /// The `--era` spelling.
    pub const fn name(self) -> &'static str {
        match self {
            KernelEra::One => "1",
            KernelEra::Two => "2",
            KernelEra::TwoPerCpu => "2-percpu",
            KernelEra::Three => "3",
        }
    }

    /// The simulator's era whose reference runs around the C.
    pub const fn flow_era(self) -> Era {
        match self {
            KernelEra::One => Era::One,
            KernelEra::Two | KernelEra::TwoPerCpu => Era::Two,
            KernelEra::Three => Era::Three,
        }
    }

    /// In words, with the kernels it covers.
    pub const fn words(self) -> &'static str {
        match self {
            KernelEra::One => "era 1 (v4.5..v4.16: DIRTY decided in the world switch)",
            KernelEra::Two => "era 2 (v4.17..v6.9: DEBUG_DIRTY, host registers per vcpu)",
            KernelEra::TwoPerCpu => {
                "era 2, per-CPU layout (v6.10..v6.13: DEBUG_DIRTY, host registers in kvm_host_data)"
            }
            KernelEra::Three => "era 3 (v6.14+: debug_owner, host registers in kvm_host_data)",
        }
    }

    /// The shim's `-DHYPDBG_ERA=` and `-DHYPDBG_PERCPU=` values.
    pub(crate) const fn defines(self) -> (u8, u8) {
        match self {
            KernelEra::One => (1, 0),
            KernelEra::Two => (2, 0),
            KernelEra::TwoPerCpu => (2, 1),
            KernelEra::Three => (3, 1),
        }
    }
}

impl FromStr for KernelEra {
    type Err = KernelCError;
    fn from_str(s: &str) -> Result<Self, KernelCError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "era1" => Ok(KernelEra::One),
            "2" | "era2" => Ok(KernelEra::Two),
            "2-percpu" | "era2-percpu" => Ok(KernelEra::TwoPerCpu),
            "3" | "era3" => Ok(KernelEra::Three),
            _ => Err(KernelCError::BadEra(s.to_string())),
        }
    }
}

/// `text` without its C comments (so a comment naming `debug_owner` decides nothing).
pub(crate) fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        let take_block = match (block, line) {
            (Some(b), Some(l)) => b < l,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let (true, Some(b)) = (take_block, block) {
            out.push_str(&rest[..b]);
            match rest[b + 2..].find("*/") {
                Some(e) => rest = &rest[b + 2 + e + 2..],
                None => return out,
            }
        } else if let Some(l) = line {
            out.push_str(&rest[..l]);
            match rest[l..].find('\n') {
                Some(e) => rest = &rest[l + e..],
                None => return out,
            }
        } else {
            out.push_str(rest);
            return out;
        }
    }
}

/// The era `text` (the compiled sources, comments stripped) is written for, and the word that
/// decided it: `debug_owner` (era 3); `__debug_cond_save_host_state` or `debug_flags` (era 1);
/// DEBUG_DIRTY with `host_data_ptr` (era 2, v6.10+ per-CPU layout); DEBUG_DIRTY (era 2).
pub fn detect(text: &str) -> Option<(KernelEra, &'static str)> {
    let has = |w: &str| text.contains(w);
    if has("debug_owner") || has("kvm_debug_regs_in_use") {
        Some((KernelEra::Three, "debug_owner"))
    } else if has("__debug_cond_save_host_state") {
        Some((KernelEra::One, "__debug_cond_save_host_state"))
    } else if has("debug_flags") {
        Some((KernelEra::One, "debug_flags"))
    } else if has("DEBUG_DIRTY") && has("host_data_ptr") {
        Some((KernelEra::TwoPerCpu, "DEBUG_DIRTY with host_data_ptr"))
    } else if has("DEBUG_DIRTY") {
        Some((KernelEra::Two, "DEBUG_DIRTY with per-vcpu host state"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_era_by_its_words() {
        assert_eq!(
            detect("if (!kvm_debug_regs_in_use(vcpu)) vcpu->arch.debug_owner").map(|d| d.0),
            Some(KernelEra::Three)
        );
        assert_eq!(
            detect("void __debug_cond_save_host_state(struct kvm_vcpu *vcpu)").map(|d| d.0),
            Some(KernelEra::One)
        );
        assert_eq!(
            detect("vcpu_get_flag(vcpu, DEBUG_DIRTY); host_data_ptr(host_ctxt)").map(|d| d.0),
            Some(KernelEra::TwoPerCpu)
        );
        assert_eq!(
            detect("vcpu_get_flag(vcpu, DEBUG_DIRTY); this_cpu_ptr(&kvm_host_data)").map(|d| d.0),
            Some(KernelEra::Two)
        );
        assert_eq!(detect("int main(void) { return 0; }"), None);
    }

    #[test]
    fn comments_decide_nothing() {
        let t = strip_comments("/* debug_owner */ x // debug_owner\n DEBUG_DIRTY");
        assert!(!t.contains("debug_owner"));
        assert_eq!(detect(&t).map(|d| d.0), Some(KernelEra::Two));
    }

    #[test]
    fn era_names_round_trip() {
        for e in [
            KernelEra::One,
            KernelEra::Two,
            KernelEra::TwoPerCpu,
            KernelEra::Three,
        ] {
            assert_eq!(e.name().parse::<KernelEra>().ok(), Some(e));
        }
        assert!("4".parse::<KernelEra>().is_err());
    }
}
