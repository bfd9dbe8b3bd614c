//! Black-box specification of kmsgate: the real binary on a real SoftHSM2
//! token, driven by the AWS SDK for Rust (aws-sdk-kms) and by raw HTTP where
//! the SDK would refuse to send what we need to test.
//!
//! One module per concern: `keys`, `aliases`, `data_keys`,
//! `encrypt_decrypt`, `protocol`, `access` (authentication and
//! authorization), `token` (restarts, a second gateway, back-pressure) and
//! `secrets`. `cargo test --test it gateway::` runs them all.

mod access;
mod aliases;
mod data_keys;
mod encrypt_decrypt;
mod keys;
mod protocol;
mod secrets;
mod token;

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
