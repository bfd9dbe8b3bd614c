//! ARNs and the four ways a request can name a key.
//!
//! SDKs and the AWS Encryption SDK parse key ARNs and compare them byte for
//! byte with what they were configured with, so the gateway builds every ARN
//! in exactly one place, from the configured partition, region and account
//! (DESIGN.md decision 7).

use uuid::Uuid;

use crate::error::KmsError;

/// The partition, region and account this gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    pub partition: String,
    pub region: String,
    pub account_id: String,
}

/// A key named in a request, before it is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key id, or a key ARN reduced to its id.
    Key(Uuid),
    /// An alias name including its `alias/` prefix, from a name or an ARN.
    Alias(String),
}

impl Realm {
    pub fn key_arn(&self, id: &Uuid) -> String {
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
    /// Errors carry AWS's NotFoundException texts.
    pub fn parse_key_ref(&self, input: &str) -> Result<KeyRef, KmsError> {
        if input.starts_with("alias/") {
            return Ok(KeyRef::Alias(input.to_owned()));
        }
        if let Some(rest) = input.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [partition, service, region, account, resource] = parts[..] else {
                return Err(KmsError::NotFound(format!("Invalid arn {input}")));
            };
            if service != "kms" || partition.is_empty() || account.is_empty() {
                return Err(KmsError::NotFound(format!("Invalid arn {input}")));
            }
            if region != self.region {
                return Err(KmsError::NotFound(format!("Invalid arn {region}")));
            }
            if partition != self.partition || account != self.account_id {
                return Err(KmsError::NotFound(format!("Invalid arn {input}")));
            }
            if let Some(id) = resource.strip_prefix("key/") {
                return parse_key_id(id)
                    .map(KeyRef::Key)
                    .ok_or_else(|| KmsError::NotFound(format!("Invalid keyId '{id}'")));
            }
            if resource.starts_with("alias/") && resource.len() > "alias/".len() {
                return Ok(KeyRef::Alias(resource.to_owned()));
            }
            return Err(KmsError::NotFound(format!("Invalid arn {input}")));
        }
        parse_key_id(input)
            .map(KeyRef::Key)
            .ok_or_else(|| KmsError::NotFound(format!("Invalid keyId '{input}'")))
    }

    /// AWS's text for a well-formed key that does not exist here.
    pub fn key_not_found(&self, id: &Uuid) -> KmsError {
        KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(id)))
    }

    pub fn alias_not_found(&self, alias_name: &str) -> KmsError {
        KmsError::NotFound(format!(
            "Alias {} is not found.",
            self.alias_arn(alias_name)
        ))
    }
}

/// A key id is a UUID in its hyphenated form (AWS rejects the simple form).
fn parse_key_id(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
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
    fn malformed_ids_and_foreign_arns_have_aws_messages() {
        let r = realm();
        assert_eq!(
            r.parse_key_ref("fake-key-id"),
            Err(KmsError::NotFound("Invalid keyId 'fake-key-id'".into()))
        );
        assert_eq!(
            r.parse_key_ref("134f2428cec14b25a1ae9048164dba47"),
            Err(KmsError::NotFound(
                "Invalid keyId '134f2428cec14b25a1ae9048164dba47'".into()
            ))
        );
        let other = format!("arn:aws:kms:us-west-2:111122223333:key/{ID}");
        assert_eq!(
            r.parse_key_ref(&other),
            Err(KmsError::NotFound("Invalid arn us-west-2".into()))
        );
    }

    #[test]
    fn not_found_message_names_the_full_arn() {
        let r = realm();
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(
            r.key_not_found(&id).message().unwrap(),
            format!("Key 'arn:aws:kms:us-east-1:111122223333:key/{ID}' does not exist")
        );
    }
}
