//! The operator's custody check (`kmsgate check-keys`): how every key
//! version is protected on the token, as the token itself reports it.

use uuid::Uuid;

use super::error::{StoreError, token};
use super::{KeyStore, Origin};
use crate::hsm::objects;

/// How one key version is protected on the token.
#[derive(Debug, Clone)]
pub struct Custody {
    pub key_id: Uuid,
    pub version: u32,
    /// `SYMMETRIC_DEFAULT` (an AES key) or `HMAC_*` (a generic secret).
    pub key_spec: &'static str,
    pub sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub value_readable: bool,
    pub wrapped_out: bool,
    /// Imported material (an EXTERNAL key): unwrapped onto the token, so
    /// PKCS#11 has its CKA_NEVER_EXTRACTABLE false (it existed outside).
    pub imported: bool,
}

impl Custody {
    /// What DESIGN.md decision 2 requires of every master key version
    /// (of imported material: all but CKA_NEVER_EXTRACTABLE).
    pub fn is_safe(&self) -> bool {
        self.sensitive
            && !self.extractable
            && (self.never_extractable || self.imported)
            && !self.value_readable
            && !self.wrapped_out
    }
}

impl KeyStore {
    /// How every version of every key is protected, as the token reports
    /// it. For `kmsgate check-keys`, the operator's custody check.
    pub async fn custody_report(&self) -> Result<Vec<Custody>, StoreError> {
        let mut versions = Vec::new();
        for key in self.all_keys()? {
            let mut vs: Vec<_> = key.versions.iter().map(|(v, h)| (*v, *h)).collect();
            vs.sort_by_key(|(v, _)| *v);
            let spec = key.record.key_spec.as_str();
            let imported = key.record.origin == Origin::External;
            versions.extend(
                vs.into_iter()
                    .map(|(v, h)| (*key.id(), spec, imported, v, h)),
            );
        }
        self.hsm
            .pool()
            .run(move |s| {
                let mut out = Vec::with_capacity(versions.len());
                for (key_id, key_spec, imported, version, h) in versions {
                    let (sensitive, extractable, never_extractable) =
                        objects::key_protection(s, h)?;
                    let value_readable = matches!(objects::try_read_key_value(s, h), Ok(Some(_)));
                    let wrapped_out = objects::try_wrap_out(s, h)?;
                    out.push(Custody {
                        key_id,
                        version,
                        key_spec,
                        sensitive,
                        extractable,
                        never_extractable,
                        value_readable,
                        wrapped_out,
                        imported,
                    });
                }
                Ok(out)
            })
            .await
            .map_err(token)
    }
}
