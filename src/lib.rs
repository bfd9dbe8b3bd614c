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
//! * [`blob`]: the ciphertext format and the encryption-context encoding.
//!
//! Every client-visible failure is a [`error::KmsError`], mapped to its
//! exception name, status and message in one place.

pub mod arn;
pub mod auth;
pub mod bench;
pub mod blob;
pub mod config;
pub mod error;
pub mod hsm;
pub mod http;
pub mod keystore;
pub mod ops;
pub mod server;
