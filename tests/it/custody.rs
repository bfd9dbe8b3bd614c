//! What an HSM operator sees on the token, with OpenSC's `pkcs11-tool
//! --list-objects` (an independent PKCS#11 client): every private and
//! secret key kmsgate made or imported for any kind of key is sensitive,
//! and every key the token generated is also never extractable (an
//! unwrapped key cannot be: PKCS#11 sets CKA_NEVER_EXTRACTABLE false on
//! it, while CKA_EXTRACTABLE stays false).

use aws_sdk_kms::types::{KeySpec, KeyUsageType};

use crate::common::*;

/// One object block of `pkcs11-tool --list-objects`: its header line and
/// the rest.
fn objects(listing: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![];
    for line in listing.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            out.push((line.to_owned(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    out
}

fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(|v| v.trim_start_matches(':').trim())
        .unwrap_or("")
}

#[tokio::test]
async fn pkcs11_tool_sees_every_key_sensitive_and_generated_keys_never_extractable() {
    let gw = Gateway::start();
    let kms = gw.client();
    let mut generated = vec![create_key(&kms).await];
    for (spec, usage) in [
        (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
        (KeySpec::Rsa2048, KeyUsageType::SignVerify),
        (KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt),
        (KeySpec::EccNistP256, KeyUsageType::SignVerify),
        (KeySpec::EccSecgP256K1, KeyUsageType::SignVerify),
        (KeySpec::EccNistP384, KeyUsageType::KeyAgreement),
    ] {
        generated.push(create_key_of(&kms, spec, usage).await);
    }
    let imported = crate::import::create_external(&kms).await;
    crate::import::import_material(&kms, &imported, &[0x5a; 32]).await;

    let listing = list_objects(&gw.token);
    let keys: Vec<_> = objects(&listing)
        .into_iter()
        .filter(|(h, _)| h.starts_with("Private Key Object") || h.starts_with("Secret Key Object"))
        .collect();
    for id in generated.iter().chain([&imported]) {
        assert!(
            keys.iter()
                .any(|(_, b)| field(b, "label").contains(id.as_str())),
            "no private or secret key of {id} in:\n{listing}"
        );
    }
    for (header, body) in &keys {
        let label = field(body, "label");
        let access = field(body, "Access");
        assert!(access.contains("sensitive"), "{header} {label}: {access}");
        let from_import = label.contains(imported.as_str());
        if !from_import {
            assert!(
                access.contains("never extractable"),
                "{header} {label}: {access}"
            );
        }
        // Nothing is extractable: pkcs11-tool prints "extractable" only
        // as part of "never extractable".
        assert!(
            !access
                .replace("never extractable", "")
                .contains("extractable"),
            "{header} {label}: {access}"
        );
    }
}
