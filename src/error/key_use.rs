//! The texts of refusals about what a key is used for: the wrong usage,
//! an algorithm the key spec lacks, RSA and ECDH arguments that do not fit
//! the key. A part of `error` of its own only for length.

use super::KmsError;

/// InvalidKeyUsageException for a key used for what its KeyUsage does not
/// allow, in AWS's words: `usage` is the key's (`GENERATE_VERIFY_MAC`),
/// `operation` the request's (`Encrypt`).
pub fn wrong_key_usage(key_arn: &str, usage: &str, operation: &str) -> KmsError {
    KmsError::InvalidKeyUsage(format!(
        "{key_arn} key usage is {usage} which is not valid for {operation}."
    ))
}

/// ValidationException for an RSA plaintext longer than the key spec and
/// algorithm allow, in AWS's words.
pub fn oaep_too_long(algorithm: &str, key_spec: &str, max: usize) -> KmsError {
    KmsError::Validation(format!(
        "Algorithm {algorithm} and key spec {key_spec} cannot encrypt data larger than {max} bytes."
    ))
}

/// An encryption context with an RSA key (AWS accepts none; its text is
/// not recorded, this is kmsgate's).
pub const RSA_CONTEXT: &str =
    "EncryptionContext is not supported with asymmetric encryption algorithms.";

/// An RSA ciphertext without the KeyId of its key (AWS requires it; its
/// text is not recorded, this is kmsgate's).
pub const RSA_KEY_ID_REQUIRED: &str =
    "KeyId is required to decrypt with an asymmetric encryption algorithm.";
/// ValidationException for a DIGEST message whose length is not the
/// algorithm's hash length.
pub fn digest_length(algorithm: &str) -> KmsError {
    KmsError::Validation(format!(
        "Digest is invalid length for algorithm {algorithm}."
    ))
}

/// InvalidKeyUsageException for an algorithm that the key's spec does not
/// support (`HMAC_SHA_256` with an `HMAC_224` key), in AWS's words.
pub fn incompatible_algorithm(algorithm: &str, key_spec: &str) -> KmsError {
    KmsError::InvalidKeyUsage(format!(
        "Algorithm {algorithm} is incompatible with key spec {key_spec}."
    ))
}

/// ValidationException for a DeriveSharedSecret PublicKey that is no
/// public key on the KMS key's curve (AWS's text is not recorded; this is
/// kmsgate's).
pub fn invalid_peer_public_key(key_spec: &str) -> KmsError {
    KmsError::Validation(format!(
        "PublicKey must be a DER-encoded SubjectPublicKeyInfo of a valid public key on the curve of key spec {key_spec}."
    ))
}
