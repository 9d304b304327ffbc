//! Environment knobs that scale the tests (CI runs the small defaults, a nightly-style run
//! raises them). Knows nothing of what the numbers mean to any one test.

/// The value of `name` as an unsigned integer, or `default` when it is unset or empty.
/// A value that is set but not a number fails the test: a typo must not silently run the
/// small default.
pub fn u64_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not an unsigned integer")),
        _ => default,
    }
}

/// Like [`u64_or`] but `None` when unset.
pub fn u64_opt(name: &str) -> Option<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not an unsigned integer")),
        ),
        _ => None,
    }
}

/// Whether `name` is set to something other than empty, `0` or `false`.
pub fn flag(name: &str) -> bool {
    matches!(std::env::var(name), Ok(v) if !matches!(v.trim(), "" | "0" | "false"))
}
