//! The XKS proxy API (issue 21): kmsgate as an AWS KMS external key store
//! proxy, driven through a real gateway on SoftHSM2 by [`client`], which
//! signs as AWS KMS does. `ops` covers the four operations and the usage
//! kinds and key states, `errors` the spec's error table, `crypto` the
//! AAD and integrity value against an independent AES-GCM and SHA-256,
//! `rotation` the key versions in `ciphertextMetadata` and the GCM bound,
//! `health` the deep health check, `audit` the records.

pub mod client;

mod audit;
mod crypto;
mod errors;
mod health;
mod metrics;
mod ops;
mod rotation;

use std::sync::Arc;

use crate::common::*;
use client::XksClient;

/// The test store's credential (AWS's rules: 20-30 of A-Z2-7; 43-64 of
/// A-Za-z0-9+/=).
pub const XKS_ACCESS_KEY: &str = "AKIAXKSTESTKEYABCDEF";
pub const XKS_SECRET: &str = "xksTestSecret0123456789abcdefghijklmnopqrstuv+/=";
/// The environment variable the test configs read the secret from.
pub const XKS_SECRET_ENV: &str = "KMSGATE_TEST_XKS_SECRET";
/// The region the test stores are called from.
pub const XKS_REGION: &str = "eu-west-1";

/// `[[xks.stores]]` named `name` under `prefix`, with the test credential
/// and `keys` as (externalKeyId, kmsgate key, usage).
pub fn store_toml(name: &str, prefix: &str, keys: &[(&str, &str, &str)]) -> String {
    let mut t = format!(
        r#"
[[xks.stores]]
name = "{name}"
path_prefix = "{prefix}"
region = "{XKS_REGION}"

[[xks.stores.credentials]]
access_key_id = "{XKS_ACCESS_KEY}"
secret_env = "{XKS_SECRET_ENV}"
"#
    );
    for (external, key, usage) in keys {
        t.push_str(&format!(
            "\n[[xks.stores.keys]]\nexternal_key_id = \"{external}\"\nkey = \"{key}\"\nusage = \"{usage}\"\n"
        ));
    }
    t
}

/// The usual store: prefix `/xks`, the four usage kinds on aliases
/// `alias/xks-<usage>` as `ek-<usage>` (`ek-both` is encrypt_decrypt).
pub fn usual_store() -> String {
    store_toml(
        "main",
        "/xks",
        &[
            ("ek-both", "alias/xks-both", "encrypt_decrypt"),
            ("ek-encrypt", "alias/xks-encrypt", "encrypt"),
            ("ek-decrypt", "alias/xks-decrypt", "decrypt"),
            ("ek-none", "alias/xks-none", "none"),
        ],
    )
}

/// A gateway whose config has `extra` (`[xks]` tables and others).
pub fn start(extra: &str) -> Gateway {
    let token = Token::with_config(extra);
    start_on(token)
}

pub fn start_on(token: Arc<Token>) -> Gateway {
    Gateway::start_on_with_env(token, &[(XKS_SECRET_ENV, XKS_SECRET)])
}

/// A client of the store under `prefix` of `gw`.
pub fn client(gw: &Gateway, prefix: &str) -> XksClient {
    XksClient::new(&gw.addr, prefix, XKS_REGION, XKS_ACCESS_KEY, XKS_SECRET)
}

/// Creates a symmetric key with alias `alias` (with `alias/`); its id.
pub async fn key_with_alias(kms: &aws_sdk_kms::Client, alias: &str) -> String {
    let id = create_key(kms).await;
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    id
}

/// A gateway with [`usual_store`] and a key behind each of its aliases;
/// the key ids by usage (both, encrypt, decrypt, none).
pub async fn usual() -> (Gateway, XksClient, [String; 4]) {
    let gw = start(&usual_store());
    let kms = gw.client();
    let mut ids = Vec::new();
    for usage in ["both", "encrypt", "decrypt", "none"] {
        ids.push(key_with_alias(&kms, &format!("alias/xks-{usage}")).await);
    }
    let c = client(&gw, "/xks");
    (gw, c, ids.try_into().unwrap())
}
