//! ARNs and the four ways a request can name a key.
//!
//! A multi-Region key id (`mrk-` and 32 lowercase hex digits) is well formed
//! but never names a key here (kmsgate makes no multi-Region keys): it is
//! parsed, so that it is answered as AWS answers an id that does not exist,
//! not as a malformed one.
//!
//! SDKs and the AWS Encryption SDK parse key ARNs and compare them byte for
//! byte with what they were configured with, so the gateway builds every ARN
//! in exactly one place, from the configured partition, region and account
//! (DESIGN.md decision 7).

use uuid::Uuid;

/// The partition, region and account this gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    pub partition: String,
    pub region: String,
    pub account_id: String,
}

/// Why a KeyId parameter names no key of this realm. The data only: the
/// client's exception and text are decided in the `error` module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefError {
    /// Not an ARN of this partition and account, or not of a key or alias.
    #[error("malformed or foreign ARN {arn}")]
    MalformedArn { arn: String },
    /// A well-formed ARN of another region (AWS names only the region).
    #[error("ARN of another region {region}")]
    OtherRegion { region: String },
    /// Not a key id in its hyphenated UUID form.
    #[error("malformed key id {key_id}")]
    MalformedKeyId { key_id: String },
}

/// A key named in a request, before it is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key id, or a key ARN reduced to its id.
    Key(Uuid),
    /// A well-formed multi-Region key id (`mrk-` and 32 lowercase hex
    /// digits), bare or from a key ARN.
    MultiRegion(String),
    /// An alias name including its `alias/` prefix, from a name or an ARN.
    Alias(String),
}

impl Realm {
    /// `id` is a key id: a UUID, or a multi-Region id (`mrk-...`).
    pub fn key_arn(&self, id: &(impl std::fmt::Display + ?Sized)) -> String {
        format!(
            "arn:{}:kms:{}:{}:key/{}",
            self.partition, self.region, self.account_id, id
        )
    }

    /// `alias_name` includes its `alias/` prefix.
    pub fn alias_arn(&self, alias_name: &str) -> String {
        format!(
            "arn:{}:kms:{}:{}:{}",
            self.partition, self.region, self.account_id, alias_name
        )
    }

    /// Parses a KeyId parameter: key id, key ARN, alias name or alias ARN.
    pub fn parse_key_ref(&self, input: &str) -> Result<KeyRef, KeyRefError> {
        let malformed_arn = || KeyRefError::MalformedArn {
            arn: input.to_owned(),
        };
        if input.starts_with("alias/") {
            return Ok(KeyRef::Alias(input.to_owned()));
        }
        if let Some(rest) = input.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [partition, service, region, account, resource] = parts[..] else {
                return Err(malformed_arn());
            };
            if service != "kms" || partition.is_empty() || account.is_empty() {
                return Err(malformed_arn());
            }
            if region != self.region {
                return Err(KeyRefError::OtherRegion {
                    region: region.to_owned(),
                });
            }
            if partition != self.partition || account != self.account_id {
                return Err(malformed_arn());
            }
            if let Some(id) = resource.strip_prefix("key/") {
                return parse_key_id(id).ok_or_else(|| KeyRefError::MalformedKeyId {
                    key_id: id.to_owned(),
                });
            }
            if resource.starts_with("alias/") && resource.len() > "alias/".len() {
                return Ok(KeyRef::Alias(resource.to_owned()));
            }
            return Err(malformed_arn());
        }
        parse_key_id(input).ok_or_else(|| KeyRefError::MalformedKeyId {
            key_id: input.to_owned(),
        })
    }
}

/// A key id is a UUID in its hyphenated form (AWS rejects the simple form),
/// or a multi-Region id: `mrk-` and 32 lowercase hex digits.
fn parse_key_id(s: &str) -> Option<KeyRef> {
    if let Some(hex) = s.strip_prefix("mrk-") {
        let well_formed =
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        return well_formed.then(|| KeyRef::MultiRegion(s.to_owned()));
    }
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok().map(KeyRef::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm() -> Realm {
        Realm {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account_id: "111122223333".into(),
        }
    }

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn all_four_forms_parse() {
        let r = realm();
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(r.parse_key_ref(ID).unwrap(), KeyRef::Key(id));
        assert_eq!(r.parse_key_ref(&r.key_arn(&id)).unwrap(), KeyRef::Key(id));
        assert_eq!(
            r.parse_key_ref("alias/app").unwrap(),
            KeyRef::Alias("alias/app".into())
        );
        assert_eq!(
            r.parse_key_ref(&r.alias_arn("alias/app")).unwrap(),
            KeyRef::Alias("alias/app".into())
        );
    }

    #[test]
    fn malformed_ids_and_foreign_arns_are_refused() {
        let r = realm();
        let key_id = |s: &str| {
            Err(KeyRefError::MalformedKeyId {
                key_id: s.to_owned(),
            })
        };
        assert_eq!(r.parse_key_ref("fake-key-id"), key_id("fake-key-id"));
        assert_eq!(
            r.parse_key_ref("134f2428cec14b25a1ae9048164dba47"),
            key_id("134f2428cec14b25a1ae9048164dba47")
        );
        let other = format!("arn:aws:kms:us-west-2:111122223333:key/{ID}");
        assert_eq!(
            r.parse_key_ref(&other),
            Err(KeyRefError::OtherRegion {
                region: "us-west-2".into()
            })
        );
        let foreign = format!("arn:aws:kms:us-east-1:444455556666:key/{ID}");
        assert_eq!(
            r.parse_key_ref(&foreign),
            Err(KeyRefError::MalformedArn { arn: foreign })
        );
        assert_eq!(
            r.parse_key_ref(&format!(
                "arn:aws:kms:us-east-1:111122223333:key/{}",
                &ID[1..]
            )),
            key_id(&ID[1..])
        );
    }

    #[test]
    fn multi_region_ids_are_well_formed_only_with_32_lowercase_hex_digits() {
        let r = realm();
        let mrk = "mrk-0123456789abcdef0123456789abcdef";
        assert_eq!(
            r.parse_key_ref(mrk).unwrap(),
            KeyRef::MultiRegion(mrk.into())
        );
        let arn = r.key_arn(mrk);
        assert_eq!(arn, format!("arn:aws:kms:us-east-1:111122223333:key/{mrk}"));
        assert_eq!(
            r.parse_key_ref(&arn).unwrap(),
            KeyRef::MultiRegion(mrk.into())
        );
        for bad in [
            "mrk-fake-key-id",
            "mrk-",
            "mrk-0123456789abcdef0123456789abcde",
            "mrk-0123456789abcdef0123456789abcdef0",
            "mrk-0123456789ABCDEF0123456789ABCDEF",
            "mrk-0123456789abcdef0123456789abcdeg",
            "MRK-0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(
                r.parse_key_ref(bad),
                Err(KeyRefError::MalformedKeyId { key_id: bad.into() }),
                "{bad}"
            );
        }
    }
}
