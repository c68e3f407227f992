//! Software breakpoints: BRK #0 (0xd4200000) written over a guest instruction, the original
//! kept and written back on removal only if our BRK is still there (QEMU's
//! `kvm_arch_insert_sw_breakpoint` / `kvm_arch_remove_sw_breakpoint`).

use std::collections::BTreeMap;

use hypdbg_model::insn::BRK0;
use hypdbg_model::va::is_sign_extended;

use crate::error::SwBpError;
use crate::vcpu::DebugVcpu;

/// The software breakpoints one debugger has planted: address -> the instruction replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwBreakpoints {
    saved: BTreeMap<u64, u32>,
}

fn read_word<V: DebugVcpu + ?Sized>(vcpu: &mut V, addr: u64) -> Result<u32, SwBpError> {
    let mut b = [0u8; 4];
    vcpu.read_memory(addr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn write_word<V: DebugVcpu + ?Sized>(vcpu: &mut V, addr: u64, w: u32) -> Result<(), SwBpError> {
    vcpu.write_memory(addr, &w.to_le_bytes())?;
    Ok(())
}

impl SwBreakpoints {
    /// None planted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plant BRK #0 at `addr` (canonical, word aligned), keeping the instruction it replaces.
    pub fn insert<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        addr: u64,
    ) -> Result<(), SwBpError> {
        if !is_sign_extended(addr) {
            return Err(SwBpError::NonCanonical { addr });
        }
        if addr & 3 != 0 {
            return Err(SwBpError::Misaligned { addr });
        }
        if self.saved.contains_key(&addr) {
            return Err(SwBpError::Duplicate { addr });
        }
        let original = read_word(vcpu, addr)?;
        write_word(vcpu, addr, BRK0)?;
        let found = read_word(vcpu, addr)?;
        if found != BRK0 {
            return Err(SwBpError::NotWritable { addr, found });
        }
        self.saved.insert(addr, original);
        Ok(())
    }

    /// Remove the breakpoint at `addr`: write the saved instruction back if memory still
    /// holds our BRK #0. If it does not (the guest or another tool overwrote it), memory is
    /// left alone, the breakpoint is forgotten and the error says what was found.
    pub fn remove<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        addr: u64,
    ) -> Result<(), SwBpError> {
        let saved = *self.saved.get(&addr).ok_or(SwBpError::NotFound { addr })?;
        let found = read_word(vcpu, addr)?;
        self.saved.remove(&addr);
        if found != BRK0 {
            return Err(SwBpError::Overwritten { addr, found, saved });
        }
        write_word(vcpu, addr, saved)
    }

    /// Remove every breakpoint (all are attempted; the first error is returned).
    pub fn remove_all<V: DebugVcpu + ?Sized>(&mut self, vcpu: &mut V) -> Result<(), SwBpError> {
        let mut first = Ok(());
        for addr in self.addresses() {
            let r = self.remove(vcpu, addr);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Whether we planted a breakpoint at `addr`.
    pub fn contains(&self, addr: u64) -> bool {
        self.saved.contains_key(&addr)
    }

    /// The instruction our breakpoint at `addr` replaced.
    pub fn saved_instruction(&self, addr: u64) -> Option<u32> {
        self.saved.get(&addr).copied()
    }

    /// The addresses, ascending.
    pub fn addresses(&self) -> Vec<u64> {
        self.saved.keys().copied().collect()
    }

    /// Whether any is planted.
    pub fn is_empty(&self) -> bool {
        self.saved.is_empty()
    }

    /// Put the original instruction back for a moment (to step over the breakpoint); the
    /// breakpoint stays registered. Returns whether there was one of ours at `addr`.
    pub(crate) fn lift<V: DebugVcpu + ?Sized>(
        &self,
        vcpu: &mut V,
        addr: u64,
    ) -> Result<bool, SwBpError> {
        match self.saved.get(&addr) {
            Some(&orig) => {
                write_word(vcpu, addr, orig)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Re-plant BRK #0 after [`SwBreakpoints::lift`].
    pub(crate) fn replant<V: DebugVcpu + ?Sized>(
        &self,
        vcpu: &mut V,
        addr: u64,
    ) -> Result<(), SwBpError> {
        if self.saved.contains_key(&addr) {
            write_word(vcpu, addr, BRK0)?;
        }
        Ok(())
    }
}
