//! kmsgate: the AWS KMS JSON protocol (TrentService) in front of a PKCS#11
//! token.
//!
//! The request path reads top to bottom, and no module reaches back up it:
//!
//! * [`http`]: routing, the awsJson1.1 protocol, errors on the wire;
//! * [`auth`]: SigV4 verification of every request;
//! * [`ops`]: one file per TrentService operation, owning its request and
//!   response shapes and its validation;
//! * [`keystore`]: key ids, ARNs and aliases resolved to keys and versions,
//!   key state, metadata stored on the token;
//! * [`hsm`]: pooled PKCS#11 sessions on dedicated worker threads (cryptoki);
//! * [`blob`]: the ciphertext format and the encryption-context encoding;
//! * [`audit`]: the audit trail, one chained record per request, which
//!   [`http`] writes.
//!
//! [`telemetry`] is beside the path, not on it: every layer counts and
//! times through it, and it imports none of them.
//!
//! Each layer has its own error type, and none writes a client's text but
//! the last:
//!
//! * [`hsm::HsmError`]: what the token did, classified once
//!   ([`hsm::Fault`]: bad input, busy, timeout, retryable, fatal, stale
//!   handle, not durable, setup);
//! * [`keystore::StoreError`]: what the key store found (a key or alias
//!   that does not exist, a key in the wrong state, an unreadable record, a
//!   conflict), with the data a message needs (ARNs, labels) and, for a
//!   token failure, the `HsmError` and so its class;
//! * [`arn::KeyRefError`]: a KeyId parameter that cannot name a key;
//! * [`error::KmsError`]: what a client sees. It is built in one place,
//!   [`error`], from the errors above (`From`), with AWS's exception names,
//!   statuses and texts; `auth` and `ops` also build it directly for
//!   authentication and validation failures, which are theirs to judge.

pub mod arn;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod blob;
pub mod config;
pub mod doctor;
pub mod error;
pub mod hsm;
pub mod http;
pub mod keystore;
pub mod logging;
pub mod ops;
pub mod policy;
pub mod preflight;
pub mod server;
pub mod telemetry;
pub mod workers;
pub mod xks_show;
