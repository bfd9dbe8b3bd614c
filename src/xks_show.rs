//! `kmsgate xks show STORE`: what the AWS KMS console and
//! CreateCustomKeyStore ask for to connect an external key store to one of
//! kmsgate's XKS stores (docs/xks.md).
//!
//! It reads the config and, with `--secret`, the first credential's secret
//! (file or environment variable, as `serve` does); never the token, so it
//! needs no PIN and runs on any machine that has the config.
//!
//! Without `--secret` it prints one `Name: value` line per fact and never
//! the secret. With `--secret` it prints only the JSON "proxy configuration
//! file" the console imports (the XKS spec's "XKS proxy configuration in
//! AWS KMS console": `XksProxyUriPath` and `XksProxyAuthenticationCredential`
//! with `AccessKeyId` and `RawSecretAccessKey`), so that
//! `kmsgate xks show STORE --secret > proxy.json` is the file to upload.

use std::io::Write;

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::config::{Config, XksStoreConfig, XksUsage, read_secret, valid_xks_secret};
use crate::server::StartError;

/// The API version path every store answers under, after its prefix.
const API_PATH: &str = "/kms/xks/v1";

/// `XksProxyUriPath` for a store: its prefix, then `/kms/xks/v1`.
pub fn uri_path(store: &XksStoreConfig) -> String {
    format!("{}{API_PATH}", store.path_prefix)
}

fn usage_name(usage: XksUsage) -> &'static str {
    match usage {
        XksUsage::EncryptDecrypt => "encrypt_decrypt",
        XksUsage::Encrypt => "encrypt",
        XksUsage::Decrypt => "decrypt",
        XksUsage::None => "none",
    }
}

/// The store named `name`, or an error naming the stores there are.
fn find<'a>(config: &'a Config, name: &str) -> Result<&'a XksStoreConfig, StartError> {
    if let Some(s) = config.xks.stores.iter().find(|s| s.name == name) {
        return Ok(s);
    }
    let names: Vec<&str> = config.xks.stores.iter().map(|s| s.name.as_str()).collect();
    Err(if names.is_empty() {
        format!(
            "no XKS store '{name}': {} has no [[xks.stores]]",
            config.path.display()
        )
    } else {
        format!(
            "no XKS store '{name}' in {}; its stores: {}",
            config.path.display(),
            names.join(", ")
        )
    }
    .into())
}

/// Writes what `kmsgate xks show` prints for store `name` to `out`.
pub fn show(
    config: &Config,
    name: &str,
    secret: bool,
    out: &mut impl Write,
) -> Result<(), StartError> {
    let store = find(config, name)?;
    if secret {
        return write_proxy_configuration_file(store, out);
    }
    writeln!(out, "Store: {} (region {})", store.name, store.region)?;
    match &config.xks.uri_endpoint {
        Some(endpoint) => writeln!(out, "XksProxyUriEndpoint: {endpoint}")?,
        None => writeln!(
            out,
            "XksProxyUriEndpoint: not set: add `uri_endpoint = \"https://<FQDN>\"` to [xks] in {} (the name AWS KMS connects to on port 443, with a certificate from a public CA)",
            config.path.display()
        )?,
    }
    writeln!(out, "XksProxyUriPath: {}", uri_path(store))?;
    for c in &store.credentials {
        writeln!(out, "AccessKeyId: {}", c.access_key_id)?;
    }
    for k in &store.keys {
        // The config check makes every exposed key have an external id.
        if let Some(id) = k.external_id() {
            writeln!(
                out,
                "XksKeyId: {id} (kmsgate key {}, usage {})",
                k.key,
                usage_name(k.usage)
            )?;
        }
    }
    writeln!(
        out,
        "The secret is not shown; `kmsgate xks show {} --secret` prints the proxy configuration file with it.",
        store.name
    )?;
    out.flush()?;
    Ok(())
}

/// The console's proxy configuration file, with the store's first
/// credential. Every value in it is from a restricted alphabet (path
/// prefix, access key id and secret are checked against the spec's), so
/// none needs JSON escaping.
fn write_proxy_configuration_file(
    store: &XksStoreConfig,
    out: &mut impl Write,
) -> Result<(), StartError> {
    let Some(c) = store.credentials.first() else {
        return Err(format!("XKS store '{}' has no credential", store.name).into());
    };
    let secret = read_secret(c.secret_file.as_deref(), c.secret_env.as_deref())?;
    if !valid_xks_secret(secret.expose_secret()) {
        return Err(format!(
            "XKS store '{}', credential {}: the secret must be 43-64 characters from A-Za-z0-9+/= (AWS KMS refuses others)",
            store.name, c.access_key_id
        )
        .into());
    }
    let text = Zeroizing::new(format!(
        "{{\n  \"XksProxyUriPath\": \"{}\",\n  \"XksProxyAuthenticationCredential\": {{\n    \"AccessKeyId\": \"{}\",\n    \"RawSecretAccessKey\": \"{}\"\n  }}\n}}\n",
        uri_path(store),
        c.access_key_id,
        secret.expose_secret()
    ));
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
