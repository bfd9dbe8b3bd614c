//! Authentication: who sent a request.
//!
//! Every request reaching an operation has passed [`Verifier::verify`], which
//! checks its AWS Signature Version 4 against the credentials in the config
//! and names the [`Principal`] that signed it. Failures come back as the
//! exceptions AWS KMS sends for them, so SDKs report them the same way.
//! [`Authorizer`] then decides whether that principal may call the
//! operation.

pub mod authz;
pub mod sigv4;
pub mod xks;

pub use authz::{Authorizer, Denied};
pub use sigv4::{Credential, Principal, Verifier};
