//! Property-based fuzzing of hostile input, on stable Rust (proptest).
//!
//! What is fuzzed, one module each:
//!
//! * `blob`: the ciphertext blob parser (`kmsgate::blob::parse`);
//! * `context`: the canonical encryption-context encoding (the GCM AAD);
//! * `sigv4`: `Verifier::verify`, the SigV4 check every request passes,
//!   with hostile `Authorization`, `X-Amz-Date`, credential scopes and
//!   presigned query strings, and single-character changes of signed
//!   requests;
//! * `gateway`: one real gateway on a fresh SoftHSM2 token, sent hostile
//!   bodies for every operation of the KMS model.
//!
//! Every property runs `KMSGATE_FUZZ_CASES` cases (a small default, so that
//! `cargo test --test it fuzz::` stays well under a minute in debug builds);
//! `scripts/fuzz` runs them for longer. A failing case is written to
//! `target/fuzz-regressions/<property>.txt` and replayed first by the next
//! run on the same checkout; `PROPTEST_RNG_SEED=<n>` fixes the generator.
//! See docs/testing.md.

#[path = "fuzz/blob.rs"]
mod blob;
#[path = "fuzz/context.rs"]
mod context;
#[path = "fuzz/gateway.rs"]
mod gateway;
#[path = "fuzz/sigv4.rs"]
mod sigv4;

use proptest::test_runner::{Config, FileFailurePersistence};

/// The case count of every property: `KMSGATE_FUZZ_CASES`, or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("KMSGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The proptest config of one property. Failures persist under `target/`
/// (ignored by git, so a run never leaves the tree dirty) rather than in a
/// `proptest-regressions/` directory beside the sources.
pub fn config(persist_to: &'static str, default_cases: u32) -> Config {
    let mut config = Config::with_cases(cases(default_cases));
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(persist_to)));
    config
}
