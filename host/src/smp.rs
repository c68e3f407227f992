//! SMP: one set of hardware breakpoints and watchpoints for every vcpu (QEMU's design: gdb
//! treats them as a global pool), updated by the debugger thread and taken by each vcpu
//! thread before it enters the guest.
//!
//! [`SharedHwDebug`] guarantees:
//!
//! 1. **No torn set.** A published set is an immutable [`Published`] behind an `Arc`,
//!    replaced as a whole under the state mutex; a vcpu takes the `Arc` under the same mutex.
//! 2. **Once `update` returns, every vcpu's next entry uses the new set.** `enter` records,
//!    under the mutex, the generation the vcpu enters with; `update` publishes the new
//!    generation and then waits on a condition variable until no vcpu is still in the guest
//!    with an older one (the kick: a vcpu polls [`Entry::kicked`] and leaves; on KVM the
//!    debugger would also signal the vcpu thread so KVM_RUN returns with EINTR). Any `enter`
//!    after the publication reads the new set, because it takes the mutex after it.
//! 3. **Updaters are serialised.** A separate mutex is held for the whole of an update,
//!    publication and wait included, so updates are totally ordered and none is lost.
//!
//! Memory orderings: everything that matters is protected by `std::sync::Mutex` (lock =
//! acquire, unlock = release), so a set published under the lock is fully visible to the
//! next locker. The generation counter is also mirrored in an `AtomicU64` written with
//! `Release` after the publication and read with `Acquire` by [`Entry::kicked`]; it is a
//! hint for leaving early, never the basis of a correctness decision.
//!
//! Every synchronisation type comes from [`crate::sync`] (`std`, or `loom` under
//! `--cfg loom`), so a loom model checks this exact code. That model (`tests/loom_vmm.rs`)
//! also carries the broken design for loom to catch: QEMU's register-by-register copy with no
//! synchronisation, relying on gdb's run control that a VMM does not have.
//!
//! A thread must not call [`SharedHwDebug::update`] while it holds an [`Entry`]: the update
//! would wait for that entry to be dropped.

use hypdbg_model::uapi::{KvmGuestDebug, KvmGuestDebugArch};

use crate::sync::{Arc, AtomicU64, Condvar, Mutex, MutexGuard, Ordering, lock};

use crate::error::{HwDebugError, SmpError};
use crate::hw::{HwDebug, guest_debug_for};

/// One published set: its generation, the pool (for attributing hits), and the block for
/// KVM_SET_GUEST_DEBUG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// 0 for the initial set, then one more per successful update.
    pub generation: u64,
    /// The pool as it was published.
    pub hw: HwDebug,
    /// `hw.arch()`: only live slots, zeros elsewhere.
    pub arch: KvmGuestDebugArch,
}

impl Published {
    /// KVM_SET_GUEST_DEBUG's argument for a vcpu with its own software breakpoints and
    /// stepping state.
    pub fn guest_debug(&self, sw_breakpoints: bool, stepping: bool) -> KvmGuestDebug {
        guest_debug_for(self.arch, sw_breakpoints, stepping)
    }
}

struct State {
    current: Arc<Published>,
    /// Per vcpu: the generation it is in the guest with.
    in_guest: Vec<Option<u64>>,
}

struct Inner {
    state: Mutex<State>,
    left_guest: Condvar,
    updaters: Mutex<()>,
    generation: AtomicU64,
}

/// The pool shared by a debugger thread and the vcpu threads (cheap to clone: all clones
/// are the same pool).
#[derive(Clone)]
pub struct SharedHwDebug {
    inner: Arc<Inner>,
}

/// A vcpu inside the guest with one published set; dropping it (or [`Entry::leave`]) marks
/// the vcpu as out of the guest.
pub struct Entry<'a> {
    shared: &'a SharedHwDebug,
    vcpu: usize,
    published: Arc<Published>,
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match cv.wait(g) {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SharedHwDebug {
    /// A pool starting with `hw` (generation 0) for `vcpus` vcpus.
    pub fn new(hw: HwDebug, vcpus: usize) -> Self {
        let arch = hw.arch();
        let current = Arc::new(Published {
            generation: 0,
            hw,
            arch,
        });
        SharedHwDebug {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    current,
                    in_guest: vec![None; vcpus],
                }),
                left_guest: Condvar::new(),
                updaters: Mutex::new(()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Change the set (debugger thread): `f` edits a copy of the current pool; if it fails,
    /// nothing is published. Otherwise the copy is published as the next generation and the
    /// call returns once no vcpu is in the guest with an older set. Returns the new
    /// generation and `f`'s result.
    pub fn update<R>(
        &self,
        f: impl FnOnce(&mut HwDebug) -> Result<R, HwDebugError>,
    ) -> Result<(u64, R), HwDebugError> {
        let _serial = lock(&self.inner.updaters);
        let mut st = lock(&self.inner.state);
        let mut hw = st.current.hw.clone();
        let r = f(&mut hw)?;
        let generation = st.current.generation + 1;
        let arch = hw.arch();
        st.current = Arc::new(Published {
            generation,
            hw,
            arch,
        });
        self.inner.generation.store(generation, Ordering::Release);
        while st
            .in_guest
            .iter()
            .any(|g| g.is_some_and(|g| g < generation))
        {
            st = wait(&self.inner.left_guest, st);
        }
        Ok((generation, r))
    }

    /// The current set, without entering.
    pub fn snapshot(&self) -> Arc<Published> {
        lock(&self.inner.state).current.clone()
    }

    /// The latest published generation (a lock-free hint: `Acquire` load).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The number of vcpus served.
    pub fn vcpus(&self) -> usize {
        lock(&self.inner.state).in_guest.len()
    }

    /// Vcpu thread, before KVM_RUN: take the current set and mark the vcpu as in the guest
    /// with it (atomically, under the state lock). Hand `entry.published().guest_debug(..)` to
    /// KVM_SET_GUEST_DEBUG, run, then drop the entry.
    pub fn enter(&self, vcpu: usize) -> Result<Entry<'_>, SmpError> {
        let mut st = lock(&self.inner.state);
        let vcpus = st.in_guest.len();
        let current = st.current.clone();
        let slot = st
            .in_guest
            .get_mut(vcpu)
            .ok_or(SmpError::NoSuchVcpu { vcpu, vcpus })?;
        if let Some(generation) = *slot {
            return Err(SmpError::AlreadyEntered { vcpu, generation });
        }
        *slot = Some(current.generation);
        Ok(Entry {
            shared: self,
            vcpu,
            published: current,
        })
    }

    fn leave(&self, vcpu: usize) {
        let mut st = lock(&self.inner.state);
        if let Some(slot) = st.in_guest.get_mut(vcpu) {
            *slot = None;
        }
        drop(st);
        self.inner.left_guest.notify_all();
    }
}

impl Entry<'_> {
    /// The set this vcpu entered with.
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// The generation this vcpu entered with.
    pub fn generation(&self) -> u64 {
        self.published.generation
    }

    /// Whether a newer set has been published: the vcpu should leave the guest (and enter
    /// again) so that the waiting update can return.
    pub fn kicked(&self) -> bool {
        self.shared.inner.generation.load(Ordering::Acquire) != self.published.generation
    }

    /// Leave the guest (same as dropping the entry).
    pub fn leave(self) {}
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.shared.leave(self.vcpu);
    }
}
