//! What kind of key a record describes: its key spec, what it may be used
//! for, for HMAC keys the one MAC algorithm that fits, for signing keys
//! the signing algorithms ([`super::signing`]) and for RSA encryption keys
//! the encryption algorithms ([`super::rsa_encryption`]).
//!
//! Every record written before keys had a spec is a symmetric encryption
//! key, so both fields default to that (`SYMMETRIC_DEFAULT`,
//! `ENCRYPT_DECRYPT`) when a record lacks them.

use serde::{Deserialize, Serialize};

/// A key spec, named as AWS names it on the wire and in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KeySpec {
    #[default]
    #[serde(rename = "SYMMETRIC_DEFAULT")]
    SymmetricDefault,
    #[serde(rename = "HMAC_224")]
    Hmac224,
    #[serde(rename = "HMAC_256")]
    Hmac256,
    #[serde(rename = "HMAC_384")]
    Hmac384,
    #[serde(rename = "HMAC_512")]
    Hmac512,
    #[serde(rename = "RSA_2048")]
    Rsa2048,
    #[serde(rename = "RSA_3072")]
    Rsa3072,
    #[serde(rename = "RSA_4096")]
    Rsa4096,
    #[serde(rename = "ECC_NIST_P256")]
    EccNistP256,
    #[serde(rename = "ECC_NIST_P384")]
    EccNistP384,
    #[serde(rename = "ECC_NIST_P521")]
    EccNistP521,
    #[serde(rename = "ECC_SECG_P256K1")]
    EccSecgP256k1,
}

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KeyUsage {
    #[default]
    #[serde(rename = "ENCRYPT_DECRYPT")]
    EncryptDecrypt,
    #[serde(rename = "GENERATE_VERIFY_MAC")]
    GenerateVerifyMac,
    #[serde(rename = "SIGN_VERIFY")]
    SignVerify,
    #[serde(rename = "KEY_AGREEMENT")]
    KeyAgreement,
}

/// A MAC algorithm of GenerateMac and VerifyMac.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlgorithm {
    HmacSha224,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl KeySpec {
    /// The key specs kmsgate can create.
    pub const SUPPORTED: [KeySpec; 12] = [
        KeySpec::SymmetricDefault,
        KeySpec::Hmac224,
        KeySpec::Hmac256,
        KeySpec::Hmac384,
        KeySpec::Hmac512,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
            KeySpec::Hmac224 => "HMAC_224",
            KeySpec::Hmac256 => "HMAC_256",
            KeySpec::Hmac384 => "HMAC_384",
            KeySpec::Hmac512 => "HMAC_512",
            KeySpec::Rsa2048 => "RSA_2048",
            KeySpec::Rsa3072 => "RSA_3072",
            KeySpec::Rsa4096 => "RSA_4096",
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
            KeySpec::EccNistP521 => "ECC_NIST_P521",
            KeySpec::EccSecgP256k1 => "ECC_SECG_P256K1",
        }
    }

    pub fn parse(s: &str) -> Option<KeySpec> {
        Self::SUPPORTED.into_iter().find(|k| k.as_str() == s)
    }

    /// The usages kmsgate makes keys of this spec for; the first is the
    /// one a key of the spec gets when the request names none.
    pub fn usages(self) -> &'static [KeyUsage] {
        match self {
            KeySpec::SymmetricDefault => &[KeyUsage::EncryptDecrypt],
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                &[KeyUsage::GenerateVerifyMac]
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                &[KeyUsage::SignVerify, KeyUsage::EncryptDecrypt]
            }
            KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 => {
                &[KeyUsage::SignVerify, KeyUsage::KeyAgreement]
            }
            KeySpec::EccSecgP256k1 => &[KeyUsage::SignVerify],
        }
    }

    /// Whether keys of this spec are key pairs (a private and a public
    /// key object on the token).
    pub fn is_asymmetric(self) -> bool {
        !matches!(
            self,
            KeySpec::SymmetricDefault
                | KeySpec::Hmac224
                | KeySpec::Hmac256
                | KeySpec::Hmac384
                | KeySpec::Hmac512
        )
    }

    /// Whether this is an RSA key spec.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
    }

    /// The MAC algorithm of an HMAC key spec; `None` for other specs.
    pub fn mac_algorithm(self) -> Option<MacAlgorithm> {
        match self {
            KeySpec::Hmac224 => Some(MacAlgorithm::HmacSha224),
            KeySpec::Hmac256 => Some(MacAlgorithm::HmacSha256),
            KeySpec::Hmac384 => Some(MacAlgorithm::HmacSha384),
            KeySpec::Hmac512 => Some(MacAlgorithm::HmacSha512),
            _ => None,
        }
    }

    /// The length in bytes of an HMAC key of this spec: as many bits as
    /// its name says, as AWS makes them.
    pub fn hmac_key_len(self) -> Option<usize> {
        self.mac_algorithm().map(MacAlgorithm::output_len)
    }
}

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::KeyAgreement => "KEY_AGREEMENT",
        }
    }

    pub fn parse(s: &str) -> Option<KeyUsage> {
        [
            KeyUsage::EncryptDecrypt,
            KeyUsage::GenerateVerifyMac,
            KeyUsage::SignVerify,
            KeyUsage::KeyAgreement,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

impl MacAlgorithm {
    /// In the order AWS prints them in its validation message.
    pub const ALL: [MacAlgorithm; 4] = [
        MacAlgorithm::HmacSha384,
        MacAlgorithm::HmacSha256,
        MacAlgorithm::HmacSha224,
        MacAlgorithm::HmacSha512,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MacAlgorithm::HmacSha224 => "HMAC_SHA_224",
            MacAlgorithm::HmacSha256 => "HMAC_SHA_256",
            MacAlgorithm::HmacSha384 => "HMAC_SHA_384",
            MacAlgorithm::HmacSha512 => "HMAC_SHA_512",
        }
    }

    pub fn parse(s: &str) -> Option<MacAlgorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The MAC's length in bytes (the hash's output length).
    pub fn output_len(self) -> usize {
        match self {
            MacAlgorithm::HmacSha224 => 28,
            MacAlgorithm::HmacSha256 => 32,
            MacAlgorithm::HmacSha384 => 48,
            MacAlgorithm::HmacSha512 => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for k in KeySpec::SUPPORTED {
            assert_eq!(KeySpec::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            for u in k.usages() {
                assert_eq!(
                    serde_json::to_string(u).unwrap(),
                    format!("\"{}\"", u.as_str())
                );
            }
        }
        for a in MacAlgorithm::ALL {
            assert_eq!(MacAlgorithm::parse(a.as_str()), Some(a));
        }
        assert_eq!(KeySpec::parse("SM2"), None);
        assert_eq!(KeySpec::Rsa2048.usages()[0], KeyUsage::SignVerify);
        assert!(
            KeySpec::Rsa4096
                .usages()
                .contains(&KeyUsage::EncryptDecrypt)
        );
        assert!(KeySpec::EccSecgP256k1.is_asymmetric());
        assert!(!KeySpec::Hmac256.is_asymmetric());
    }

    #[test]
    fn hmac_specs_fit_one_algorithm_each() {
        assert_eq!(KeySpec::SymmetricDefault.mac_algorithm(), None);
        assert_eq!(KeySpec::Hmac224.hmac_key_len(), Some(28));
        assert_eq!(KeySpec::Hmac512.hmac_key_len(), Some(64));
        assert_eq!(
            KeySpec::Hmac384.mac_algorithm(),
            Some(MacAlgorithm::HmacSha384)
        );
        assert_eq!(KeySpec::Hmac256.usages(), &[KeyUsage::GenerateVerifyMac]);
    }
}
