//! The logical key stores of `[xks]` and the keys each exposes, and the
//! routing of an XKS path (`<prefix>/kms/xks/v1<rest>`) to a store and an
//! operation.

use std::collections::HashMap;

use crate::config::Config;
use crate::config::{XksUsage, valid_external_key_id};

/// The longest URI the spec allows.
pub const MAX_URI: usize = 256;
/// What every XKS path holds after its prefix.
const API_ROOT: &str = "/kms/xks/v1";

/// One XKS operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XksOperation {
    Metadata,
    Encrypt,
    Decrypt,
    Health,
}

impl XksOperation {
    /// The spec's API name (the audit record's `eventName`).
    pub fn name(self) -> &'static str {
        match self {
            XksOperation::Metadata => "GetKeyMetadata",
            XksOperation::Encrypt => "Encrypt",
            XksOperation::Decrypt => "Decrypt",
            XksOperation::Health => "GetHealthStatus",
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            XksOperation::Metadata => "metadata",
            XksOperation::Encrypt => "encrypt",
            XksOperation::Decrypt => "decrypt",
            XksOperation::Health => "health",
        }
    }
}

/// A key a store exposes.
#[derive(Debug, Clone)]
pub struct Exposed {
    /// The kmsgate key: id, ARN or alias name.
    pub key: String,
    pub usage: XksUsage,
}

/// One logical key store.
#[derive(Debug)]
pub struct XksStore {
    pub name: String,
    pub region: String,
    /// `""` for the root (also reached as `//kms/xks/v1`).
    pub prefix: String,
    keys: HashMap<String, Exposed>,
}

impl XksStore {
    /// The key exposed as `external_key_id`, if any.
    pub fn exposed(&self, external_key_id: &str) -> Option<&Exposed> {
        self.keys.get(external_key_id)
    }
}

/// Every store of `[xks]`.
#[derive(Debug, Default)]
pub struct XksStores {
    stores: Vec<XksStore>,
}

/// Where an XKS path leads.
#[derive(Debug)]
pub enum Route<'a> {
    /// Not an XKS path: the TrentService API's.
    NotXks,
    /// An XKS path no store or operation answers: InvalidUriPathException
    /// (with the store, when the prefix names one).
    Invalid(Option<&'a XksStore>),
    Op {
        store: &'a XksStore,
        op: XksOperation,
        external_key_id: Option<&'a str>,
    },
}

impl XksStores {
    pub fn from_config(config: &Config) -> XksStores {
        let stores = config
            .xks
            .stores
            .iter()
            .map(|s| XksStore {
                name: s.name.clone(),
                region: s.region.clone(),
                prefix: s.path_prefix.clone(),
                keys: s
                    .keys
                    .iter()
                    .filter_map(|k| {
                        let id = k.external_id()?.to_owned();
                        Some((
                            id,
                            Exposed {
                                key: k.key.clone(),
                                usage: k.usage,
                            },
                        ))
                    })
                    .collect(),
            })
            .collect();
        XksStores { stores }
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    pub fn stores(&self) -> &[XksStore] {
        &self.stores
    }

    /// Routes a request path (as received, never normalised).
    pub fn route<'a>(&'a self, path: &'a str) -> Route<'a> {
        let Some(at) = path.rfind(API_ROOT) else {
            return Route::NotXks;
        };
        let (prefix, rest) = (&path[..at], &path[at + API_ROOT.len()..]);
        if !rest.is_empty() && !rest.starts_with('/') {
            // `/kms/xks/v1x`: not the API root.
            return Route::NotXks;
        }
        // `//kms/xks/v1`: a client joined `/` and the empty prefix.
        let prefix = if prefix == "/" { "" } else { prefix };
        let Some(store) = self.stores.iter().find(|s| s.prefix == prefix) else {
            return Route::Invalid(None);
        };
        if path.len() > MAX_URI {
            return Route::Invalid(Some(store));
        }
        if rest == "/health" {
            return Route::Op {
                store,
                op: XksOperation::Health,
                external_key_id: None,
            };
        }
        let mut parts = rest.split('/');
        let (Some(""), Some("keys"), Some(id), Some(op), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Route::Invalid(Some(store));
        };
        let op = match op {
            "metadata" => XksOperation::Metadata,
            "encrypt" => XksOperation::Encrypt,
            "decrypt" => XksOperation::Decrypt,
            _ => return Route::Invalid(Some(store)),
        };
        if !valid_external_key_id(id) {
            return Route::Invalid(Some(store));
        }
        Route::Op {
            store,
            op,
            external_key_id: Some(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> XksStores {
        let store = |name: &str, prefix: &str| XksStore {
            name: name.into(),
            region: "us-east-1".into(),
            prefix: prefix.into(),
            keys: HashMap::new(),
        };
        XksStores {
            stores: vec![store("root", ""), store("a", "/tenant/a")],
        }
    }

    fn op(r: Route<'_>) -> Option<(String, XksOperation, Option<String>)> {
        match r {
            Route::Op {
                store,
                op,
                external_key_id,
            } => Some((store.name.clone(), op, external_key_id.map(str::to_owned))),
            _ => None,
        }
    }

    #[test]
    fn paths_route_to_stores_and_operations() {
        let s = stores();
        assert!(matches!(s.route("/"), Route::NotXks));
        assert!(matches!(s.route("/healthz"), Route::NotXks));
        assert_eq!(
            op(s.route("/kms/xks/v1/health")),
            Some(("root".into(), XksOperation::Health, None))
        );
        assert_eq!(
            op(s.route("//kms/xks/v1/keys/k-1/encrypt")),
            Some(("root".into(), XksOperation::Encrypt, Some("k-1".into())))
        );
        assert_eq!(
            op(s.route("/tenant/a/kms/xks/v1/keys/k.1/metadata")),
            Some(("a".into(), XksOperation::Metadata, Some("k.1".into())))
        );
        assert!(matches!(
            s.route("/other/kms/xks/v1/health"),
            Route::Invalid(None)
        ));
        for bad in [
            "/kms/xks/v1",
            "/kms/xks/v1/",
            "/kms/xks/v1/keys/k/sign",
            "/kms/xks/v1/keys/k",
            "/kms/xks/v1/keys/k/encrypt/x",
            "/kms/xks/v1/keys/k%2F/encrypt",
        ] {
            assert!(matches!(s.route(bad), Route::Invalid(Some(_))), "{bad}");
        }
    }
}
