//! The synchronisation types the shared-state code uses: `std`'s normally, `loom`'s when
//! built with `--cfg loom`, so that model checking explores this exact code.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
#[cfg(loom)]
pub use loom::thread;

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
#[cfg(not(loom))]
pub use std::thread;

/// Lock a mutex, recovering the data if another thread panicked while holding it (a
/// poisoned lock must not turn into a second panic).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What every loom model shares (only under `--cfg loom`).
#[cfg(loom)]
#[allow(clippy::panic, clippy::print_stdout)]
pub mod model {
    //! What every loom model shares: run a model exhaustively under a preemption bound and count
    //! the interleavings it explored, or run a deliberately broken variant and require that loom
    //! catches it with the expected message.
    //!
    //! The bound is the model's own unless `LOOM_MAX_PREEMPTIONS` is set (loom reads it). Loom's
    //! other early stops (`LOOM_MAX_PERMUTATIONS`, `LOOM_MAX_DURATION`) are switched off so that a
    //! model is always explored exhaustively within its bound: a model that stopped exploring
    //! would show up as a count below the test's floor, or as a broken variant not caught.

    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// What one exploration did.
    #[derive(Clone, Copy, Debug)]
    pub struct Explored {
        /// Executions (interleavings) run, the failing one included.
        pub interleavings: usize,
        /// The preemption bound used.
        pub bound: usize,
        /// Wall-clock time.
        pub elapsed: Duration,
    }

    fn explore(
        bound: usize,
        f: impl Fn() + Sync + Send + 'static,
    ) -> (std::thread::Result<()>, Explored) {
        let mut builder = loom::model::Builder::new();
        let bound = *builder.preemption_bound.get_or_insert(bound);
        builder.max_permutations = None;
        builder.max_duration = None;
        // A plain std counter outside loom's world: counts executions, invisible to the model.
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            builder.check(move || {
                c.fetch_add(1, Ordering::Relaxed);
                f();
            })
        }));
        let explored = Explored {
            interleavings: count.load(Ordering::Relaxed),
            bound,
            elapsed: start.elapsed(),
        };
        (result, explored)
    }

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else {
            "<non-string panic payload>".to_owned()
        }
    }

    /// Explore `f` exhaustively under `bound` preemptions; every execution must pass, and at
    /// least `floor` executions must have been explored at that bound (the model still branches).
    pub fn check(name: &str, bound: usize, floor: usize, f: impl Fn() + Sync + Send + 'static) {
        let (result, e) = explore(bound, f);
        if let Err(payload) = result {
            println!(
                "loom model {name}: FAILED after {} interleavings (preemption bound {}) in {:.2?}",
                e.interleavings, e.bound, e.elapsed
            );
            std::panic::resume_unwind(payload);
        }
        println!(
            "loom model {name}: passed, {} interleavings explored (preemption bound {}) in {:.2?}",
            e.interleavings, e.bound, e.elapsed
        );
        // The floor holds at the model's own bound; a smaller LOOM_MAX_PREEMPTIONS explores less.
        assert!(
            e.bound < bound || e.interleavings >= floor,
            "{name}: only {} interleavings explored, expected at least {floor}: the model stopped exploring",
            e.interleavings
        );
    }

    /// Explore the broken variant `f`: loom must find an execution that panics with a message
    /// containing `expected`.
    pub fn expect_caught(
        name: &str,
        bound: usize,
        expected: &str,
        f: impl Fn() + Sync + Send + 'static,
    ) {
        let (result, e) = explore(bound, f);
        match result {
            Ok(()) => panic!(
                "{name}: the broken variant was NOT caught: {} interleavings explored (preemption bound {}) without the expected failure '{expected}'",
                e.interleavings, e.bound
            ),
            Err(payload) => {
                let msg = panic_message(payload.as_ref());
                println!(
                    "loom model {name}: broken variant caught after {} interleavings (preemption bound {}) in {:.2?}: {msg}",
                    e.interleavings, e.bound, e.elapsed
                );
                assert!(
                    msg.contains(expected),
                    "{name}: loom failed the broken variant, but not with '{expected}': {msg}"
                );
            }
        }
    }
}
