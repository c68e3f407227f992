//! Your own variants: a patch under test.
//!
//! 1. Add a module here (copy [`example`]): a type implementing `Common` and the era's trait,
//!    overriding the kernel function your patch changes.
//! 2. Add a `Variant` for it to [`variants`].
//! 3. `cargo run --release -- check --variant <name>`: exit status 0 if it keeps every
//!    invariant, 1 with a minimal counterexample if it does not.

pub mod example;

use super::Variant;

/// The user's variants.
pub fn variants() -> Vec<Variant> {
    vec![example::variant()]
}
