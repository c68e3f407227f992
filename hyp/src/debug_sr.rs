//! The shared save/restore core of arch/arm64/kvm/hyp/include/hyp/debug-sr.h: the
//! fall-through copy of `nr + 1` breakpoint/watchpoint registers, written once and generic
//! over [`RegAccess`].

use hypdbg_model::DbgBank;

use crate::access::RegAccess;
use crate::fault::HypFault;

/// `switch (nr) { case 15: ...; case 14: ...; ... default: ... }` with C fall-through:
/// runs `$body` for n = nr, nr - 1, ..., 0, and for nr > 15 only the `default:` arm (n = 0),
/// exactly as the kernel's `save_debug` / `restore_debug` macros do.
macro_rules! fall_through {
    ($nr:expr, |$n:ident| $body:expr) => {{
        let nr: u8 = $nr;
        'c0: {
            'c1: {
                'c2: {
                    'c3: {
                        'c4: {
                            'c5: {
                                'c6: {
                                    'c7: {
                                        'c8: {
                                            'c9: {
                                                'c10: {
                                                    'c11: {
                                                        'c12: {
                                                            'c13: {
                                                                'c14: {
                                                                    'c15: {
                                                                        match nr {
                                                                            15 => break 'c15,
                                                                            14 => break 'c14,
                                                                            13 => break 'c13,
                                                                            12 => break 'c12,
                                                                            11 => break 'c11,
                                                                            10 => break 'c10,
                                                                            9 => break 'c9,
                                                                            8 => break 'c8,
                                                                            7 => break 'c7,
                                                                            6 => break 'c6,
                                                                            5 => break 'c5,
                                                                            4 => break 'c4,
                                                                            3 => break 'c3,
                                                                            2 => break 'c2,
                                                                            1 => break 'c1,
                                                                            _ => break 'c0,
                                                                        }
                                                                    }
                                                                    {
                                                                        let $n: usize = 15;
                                                                        $body;
                                                                    }
                                                                }
                                                                {
                                                                    let $n: usize = 14;
                                                                    $body;
                                                                }
                                                            }
                                                            {
                                                                let $n: usize = 13;
                                                                $body;
                                                            }
                                                        }
                                                        {
                                                            let $n: usize = 12;
                                                            $body;
                                                        }
                                                    }
                                                    {
                                                        let $n: usize = 11;
                                                        $body;
                                                    }
                                                }
                                                {
                                                    let $n: usize = 10;
                                                    $body;
                                                }
                                            }
                                            {
                                                let $n: usize = 9;
                                                $body;
                                            }
                                        }
                                        {
                                            let $n: usize = 8;
                                            $body;
                                        }
                                    }
                                    {
                                        let $n: usize = 7;
                                        $body;
                                    }
                                }
                                {
                                    let $n: usize = 6;
                                    $body;
                                }
                            }
                            {
                                let $n: usize = 5;
                                $body;
                            }
                        }
                        {
                            let $n: usize = 4;
                            $body;
                        }
                    }
                    {
                        let $n: usize = 3;
                        $body;
                    }
                }
                {
                    let $n: usize = 2;
                    $body;
                }
            }
            {
                let $n: usize = 1;
                $body;
            }
        }
        {
            let $n: usize = 0;
            $body;
        }
    }};
}

/// `save_debug(ptr, reg, nr)`: read DBG\<reg>\<n>_EL1 into `ptr[n]` for n = nr..=0.
#[inline(always)]
pub fn save_debug<A: RegAccess>(
    a: &mut A,
    ptr: &mut [u64; 16],
    reg: DbgBank,
    nr: u8,
) -> Result<(), HypFault> {
    fall_through!(nr, |n| ptr[n] = a.read_dbg(reg, n)?);
    Ok(())
}

/// `restore_debug(ptr, reg, nr)`: write `ptr[n]` to DBG\<reg>\<n>_EL1 for n = nr..=0.
#[inline(always)]
pub fn restore_debug<A: RegAccess>(
    a: &mut A,
    ptr: &[u64; 16],
    reg: DbgBank,
    nr: u8,
) -> Result<(), HypFault> {
    fall_through!(nr, |n| a.write_dbg(reg, n, ptr[n])?);
    Ok(())
}

/// A loop doing what `save_debug` does, for the benchmark that compares the two shapes.
#[inline(always)]
pub fn save_debug_loop<A: RegAccess>(
    a: &mut A,
    ptr: &mut [u64; 16],
    reg: DbgBank,
    nr: u8,
) -> Result<(), HypFault> {
    let top = if nr > 15 { 0 } else { usize::from(nr) };
    for n in (0..=top).rev() {
        ptr[n] = a.read_dbg(reg, n)?;
    }
    Ok(())
}

/// A loop doing what `restore_debug` does.
#[inline(always)]
pub fn restore_debug_loop<A: RegAccess>(
    a: &mut A,
    ptr: &[u64; 16],
    reg: DbgBank,
    nr: u8,
) -> Result<(), HypFault> {
    let top = if nr > 15 { 0 } else { usize::from(nr) };
    for n in (0..=top).rev() {
        a.write_dbg(reg, n, ptr[n])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessRecord, CheckingAccess, HypReg, PhysRegs};
    use hypdbg_model::{DebugFeatures, DebugRegFile, SysReg};

    fn regs(b: u8, w: u8) -> PhysRegs {
        let mut file = DebugRegFile::new(DebugFeatures::from_counts(b, w, 1).unwrap());
        for bank in DbgBank::ALL {
            for n in 0..file.implemented(bank) {
                file.write_dbg(bank, n, 0x100 * bank as u64 + n as u64)
                    .unwrap();
            }
        }
        PhysRegs { file, mdcr_el2: 0 }
    }

    #[test]
    fn fall_through_moves_nr_plus_one_in_descending_order() {
        for nr in 0..=15u8 {
            let mut r = regs(16, 16);
            let mut log: Vec<AccessRecord> = Vec::new();
            let mut ptr = [0u64; 16];
            save_debug(
                &mut CheckingAccess::new(&mut r, &mut log),
                &mut ptr,
                DbgBank::Wcr,
                nr,
            )
            .unwrap();
            let order: Vec<usize> = log
                .iter()
                .map(|a| match a.reg {
                    HypReg::Sys(SysReg::Dbg(DbgBank::Wcr, n)) => usize::from(n),
                    other => panic!("{other:?}"),
                })
                .collect();
            let want: Vec<usize> = (0..=usize::from(nr)).rev().collect();
            assert_eq!(order, want);
            for (n, got) in ptr.iter().enumerate() {
                let expect = if n <= usize::from(nr) {
                    0x200 + n as u64
                } else {
                    0
                };
                assert_eq!(*got, expect);
            }
            let mut ptr2 = [0u64; 16];
            save_debug_loop(
                &mut CheckingAccess::new(&mut r, &mut log),
                &mut ptr2,
                DbgBank::Wcr,
                nr,
            )
            .unwrap();
            assert_eq!(ptr, ptr2);
        }
    }

    /// The indices and values a restore wrote, in order.
    fn written(log: &[AccessRecord]) -> Vec<(usize, u64)> {
        log.iter()
            .filter(|a| a.write)
            .map(|a| match a.reg {
                HypReg::Sys(SysReg::Dbg(DbgBank::Bvr, n)) => (usize::from(n), a.value),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn restore_writes_nr_plus_one_in_descending_order_in_both_shapes() {
        let ptr: [u64; 16] = core::array::from_fn(|n| 0xaa00 + n as u64);
        for nr in 0..=16u8 {
            // nr > 15 is the switch's default arm: index 0 only.
            let want: Vec<(usize, u64)> = if nr > 15 {
                vec![(0, ptr[0])]
            } else {
                (0..=usize::from(nr)).rev().map(|n| (n, ptr[n])).collect()
            };
            type Restore =
                fn(&mut CheckingAccess<'_>, &[u64; 16], DbgBank, u8) -> Result<(), HypFault>;
            let shapes: [(&str, Restore); 2] = [
                ("restore_debug", |a, p, b, n| restore_debug(a, p, b, n)),
                ("restore_debug_loop", |a, p, b, n| {
                    restore_debug_loop(a, p, b, n)
                }),
            ];
            for (name, restore) in shapes {
                let mut r = regs(16, 16);
                let mut log = Vec::new();
                restore(
                    &mut CheckingAccess::new(&mut r, &mut log),
                    &ptr,
                    DbgBank::Bvr,
                    nr,
                )
                .unwrap();
                assert_eq!(written(&log), want, "{name} nr={nr}");
                for n in 0..16 {
                    let expect = want
                        .iter()
                        .find(|(i, _)| *i == n)
                        .map_or(0x100 * DbgBank::Bvr as u64 + n as u64, |(_, v)| *v);
                    let got = r.file.read_dbg(DbgBank::Bvr, n).unwrap();
                    assert_eq!(got, expect, "DBGBVR{n}_EL1 after {name} nr={nr}");
                }
            }
        }
    }

    #[test]
    fn nr_above_15_is_the_default_arm_only() {
        let mut r = regs(16, 16);
        let mut log = Vec::new();
        let mut ptr = [0u64; 16];
        save_debug(
            &mut CheckingAccess::new(&mut r, &mut log),
            &mut ptr,
            DbgBank::Bcr,
            16,
        )
        .unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(ptr[0], 0);
        assert_eq!(ptr[1], 0);
    }

    #[test]
    fn unimplemented_index_is_a_fault_not_a_panic() {
        let mut r = regs(6, 4);
        let mut log = Vec::new();
        let ptr = [7u64; 16];
        let e = restore_debug(
            &mut CheckingAccess::new(&mut r, &mut log),
            &ptr,
            DbgBank::Wvr,
            4,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                HypFault::Undefined {
                    reg: SysReg::Dbg(DbgBank::Wvr, 4),
                    index: 4,
                    ..
                }
            ),
            "{e:?}"
        );
        // Nothing was written: the faulting access is the first one (index 4, descending).
        assert_eq!(log.len(), 1);
        assert_eq!(r.file.read_dbg(DbgBank::Wvr, 0).unwrap(), 0x300);
    }
}
