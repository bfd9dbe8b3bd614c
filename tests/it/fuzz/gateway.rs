//! Hostile request bodies for every operation, against one real gateway.
//!
//! Every response must be a client fault or a success, never a 5xx and never
//! a dropped connection; every error is AWS-shaped (`__type`, the
//! `X-Amzn-ErrorType` header, status 400, or 413 for an oversized body);
//! every response has `x-amzn-RequestId`. And a refused request changes
//! nothing: after every refused request of an operation that could change
//! state the observable state (keys, aliases, the metadata, tags and
//! rotations of the seeded keys) is compared with what it was before.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kmsgate::ops::Operation;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::common::{ACCOUNT, Gateway, REGION, RawResponse, key_arn};

/// Operations that can change state when they succeed. Only the seeded key
/// `k2` (and junk) is put into their key arguments, so that `k1` must come
/// out of the run exactly as it went in.
const MUTATING: &[&str] = &[
    "CancelKeyDeletion",
    "CreateAlias",
    "CreateGrant",
    "CreateKey",
    "DeleteAlias",
    "DeleteImportedKeyMaterial",
    "DisableKey",
    "DisableKeyRotation",
    "EnableKey",
    "EnableKeyRotation",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "PutKeyPolicy",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "TagResource",
    "UntagResource",
    "UpdateAlias",
    "UpdateKeyDescription",
];

/// The operations kmsgate implements; every other one of the model must be
/// refused (UnsupportedOperationException) whatever the body.
const IMPLEMENTED: &[&str] = &[
    "CancelKeyDeletion",
    "CreateAlias",
    "CreateGrant",
    "CreateKey",
    "Decrypt",
    "DeleteAlias",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeKey",
    "DisableKey",
    "DisableKeyRotation",
    "EnableKey",
    "EnableKeyRotation",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GenerateRandom",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ListAliases",
    "ListGrants",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListKeys",
    "ListResourceTags",
    "ListRetirableGrants",
    "PutKeyPolicy",
    "ReEncrypt",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "Sign",
    "TagResource",
    "UntagResource",
    "UpdateAlias",
    "UpdateKeyDescription",
    "Verify",
    "VerifyMac",
];

/// Operations whose KeyId AWS documents as "key ID or key ARN": an alias
/// name or alias ARN never names a key for them.
const KEY_ID_OR_ARN_ONLY: &[&str] = &[
    "CancelKeyDeletion",
    "CreateGrant",
    "DisableKey",
    "DisableKeyRotation",
    "EnableKey",
    "EnableKeyRotation",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "ListAliases",
    "ListGrants",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListResourceTags",
    "PutKeyPolicy",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "TagResource",
    "UntagResource",
    "UpdateKeyDescription",
];

/// The members each operation reads (src/ops/<op>.rs); operations kmsgate
/// does not implement get a few members of the model.
fn members(op: &str) -> &'static [&'static str] {
    match op {
        "CancelKeyDeletion"
        | "DisableKey"
        | "DisableKeyRotation"
        | "EnableKey"
        | "GetKeyRotationStatus"
        | "RotateKeyOnDemand" => &["KeyId"],
        "CreateAlias" | "UpdateAlias" => &["AliasName", "TargetKeyId"],
        "CreateKey" => &[
            "Policy",
            "Description",
            "KeyUsage",
            "CustomerMasterKeySpec",
            "KeySpec",
            "Origin",
            "CustomKeyStoreId",
            "BypassPolicyLockoutSafetyCheck",
            "Tags",
            "MultiRegion",
            "XksKeyId",
        ],
        "Decrypt" => &[
            "CiphertextBlob",
            "EncryptionContext",
            "GrantTokens",
            "KeyId",
            "EncryptionAlgorithm",
            "Recipient",
            "DryRun",
            "DryRunModifiers",
        ],
        "DeleteAlias" => &["AliasName"],
        "DescribeKey" => &["KeyId", "GrantTokens"],
        "EnableKeyRotation" => &["KeyId", "RotationPeriodInDays"],
        "Encrypt" => &[
            "KeyId",
            "Plaintext",
            "EncryptionContext",
            "GrantTokens",
            "EncryptionAlgorithm",
            "DryRun",
        ],
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => &[
            "KeyId",
            "EncryptionContext",
            "NumberOfBytes",
            "KeySpec",
            "GrantTokens",
            "Recipient",
            "DryRun",
        ],
        "GenerateRandom" => &["NumberOfBytes", "CustomKeyStoreId", "Recipient"],
        "GenerateMac" => &["Message", "KeyId", "MacAlgorithm", "GrantTokens", "DryRun"],
        "VerifyMac" => &[
            "Message",
            "KeyId",
            "MacAlgorithm",
            "Mac",
            "GrantTokens",
            "DryRun",
        ],
        "GetPublicKey" => &["KeyId", "GrantTokens"],
        "Sign" => &[
            "KeyId",
            "Message",
            "MessageType",
            "GrantTokens",
            "SigningAlgorithm",
            "DryRun",
        ],
        "Verify" => &[
            "KeyId",
            "Message",
            "MessageType",
            "Signature",
            "SigningAlgorithm",
            "GrantTokens",
            "DryRun",
        ],
        "ListAliases" => &["KeyId", "Limit", "Marker"],
        "ListKeyRotations" => &["KeyId", "IncludeKeyMaterial", "Limit", "Marker"],
        "ListKeys" => &["Limit", "Marker"],
        "ListResourceTags" => &["KeyId", "Limit", "Marker"],
        "ReEncrypt" => &[
            "CiphertextBlob",
            "SourceEncryptionContext",
            "SourceKeyId",
            "DestinationKeyId",
            "DestinationEncryptionContext",
            "SourceEncryptionAlgorithm",
            "DestinationEncryptionAlgorithm",
            "GrantTokens",
            "DryRun",
            "DryRunModifiers",
        ],
        "ScheduleKeyDeletion" => &["KeyId", "PendingWindowInDays"],
        "TagResource" => &["KeyId", "Tags"],
        "UntagResource" => &["KeyId", "TagKeys"],
        "UpdateKeyDescription" => &["KeyId", "Description"],
        "CreateGrant" => &[
            "KeyId",
            "GranteePrincipal",
            "RetiringPrincipal",
            "Operations",
            "Constraints",
            "GrantTokens",
            "Name",
            "DryRun",
        ],
        "GetKeyPolicy" => &["KeyId", "PolicyName"],
        "ListKeyPolicies" => &["KeyId", "Limit", "Marker"],
        "PutKeyPolicy" => &[
            "KeyId",
            "PolicyName",
            "Policy",
            "BypassPolicyLockoutSafetyCheck",
        ],
        "ListGrants" => &["KeyId", "Limit", "Marker", "GrantId", "GranteePrincipal"],
        "ListRetirableGrants" => &["RetiringPrincipal", "Limit", "Marker"],
        "RetireGrant" => &["GrantToken", "KeyId", "GrantId", "DryRun"],
        "RevokeGrant" => &["KeyId", "GrantId", "DryRun"],
        _ => &[
            "KeyId",
            "GrantTokens",
            "Policy",
            "Message",
            "Limit",
            "DryRun",
        ],
    }
}

/// Members some operation cannot do without: nearly always sent, so that
/// requests get past "is required" to the checks behind it.
const REQUIRED: &[&str] = &[
    "KeyId",
    "TargetKeyId",
    "AliasName",
    "Plaintext",
    "CiphertextBlob",
    "DestinationKeyId",
    "NumberOfBytes",
    "Tags",
    "TagKeys",
    "Description",
    "GranteePrincipal",
    "Operations",
    "Message",
    "MacAlgorithm",
    "Mac",
    "SigningAlgorithm",
    "Signature",
];

/// What the run starts from: two keys with an alias each, and a real
/// ciphertext of `k1`.
struct Seed {
    k1: String,
    k2: String,
    blob: Vec<u8>,
}

impl Seed {
    /// The key arguments an operation is given: `k1` only for operations
    /// that cannot change anything.
    fn key_args(&self, op: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut add = |id: &str, alias: &str| {
            // The four forms, weighted up against the near-misses (the
            // alias forms are refused by the key-id-or-ARN operations).
            for _ in 0..3 {
                ids.extend([
                    id.to_owned(),
                    key_arn(id),
                    format!("alias/{alias}"),
                    format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/{alias}"),
                ]);
            }
            ids.extend([
                id.to_owned(),
                key_arn(id),
                format!("alias/{alias}"),
                format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/{alias}"),
                id.to_ascii_uppercase(),
                format!(" {id}"),
                format!("arn:aws:kms:eu-west-1:{ACCOUNT}:key/{id}"),
                format!("arn:aws:kms:{REGION}:999999999999:key/{id}"),
                format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/{id}"),
                id[..id.len() - 1].to_owned(),
            ]);
        };
        if !MUTATING.contains(&op) {
            add(&self.k1, "fuzz-k1");
        }
        add(&self.k2, "fuzz-k2");
        ids.extend(
            [
                "",
                "alias/",
                "alias/aws/kms",
                "alias/does-not-exist",
                "00000000-0000-0000-0000-000000000000",
                "arn:aws:kms:::key/",
                "arn:",
                "key/",
                "mrk-0123456789abcdef0123456789abcdef",
            ]
            .map(str::to_owned),
        );
        ids
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Any string, as JSON text: Unicode of every kind, control characters,
/// escapes JSON allows but that make no valid UTF-8 (a lone surrogate),
/// and long runs.
fn junk_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(?s).{0,24}".prop_map(|s| quoted(&s)),
        1 => any::<String>().prop_map(|s| quoted(&s)),
        1 => Just(r#""\ud800""#.to_owned()),
        1 => Just(r#""\udc00\ud800x""#.to_owned()),
        1 => Just(r#""\u0000""#.to_owned()),
        1 => (0usize..70_000, "[a-z\u{e9}\u{1f600}]").prop_map(|(n, c)| quoted(&c.repeat(n))),
    ]
}

/// Any JSON value, as text; numbers JSON can write but no Rust type holds.
fn junk_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("99999999999999999999999999".to_owned()),
        Just("-0".to_owned()),
        Just("0.5".to_owned()),
        junk_string(),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((junk_string(), inner), 0..5).prop_map(|v| {
                let members: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
            (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        ]
    })
    .boxed()
}

fn b64(bytes: &[u8]) -> String {
    quoted(&B64.encode(bytes))
}

/// A value for one member, mostly of its own type and plausible (so that
/// validation is passed and deeper code runs), else anything.
fn member_value(
    name: &'static str,
    keys: Arc<Vec<String>>,
    blob: Arc<Vec<u8>>,
) -> BoxedStrategy<String> {
    let typed: BoxedStrategy<String> = match name {
        "KeyId" | "TargetKeyId" | "SourceKeyId" | "DestinationKeyId" => prop_oneof![
            4 => prop::sample::select((*keys).clone()).prop_map(|k| quoted(&k)),
            1 => junk_string(),
        ]
        .boxed(),
        "AliasName" => prop_oneof![
            Just(quoted("alias/fuzz-k2")),
            Just(quoted("alias/aws/fuzz")),
            Just(quoted("alias/")),
            "alias/[a-zA-Z0-9/_-]{1,12}".prop_map(|s| quoted(&s)),
            "alias/[a-z:]{1,6}:[a-z]{0,6}".prop_map(|s| quoted(&s)),
            "alias/(?s).{1,12}".prop_map(|s| quoted(&s)),
            (250usize..300).prop_map(|n| quoted(&format!("alias/{}", "a".repeat(n)))),
            junk_string(),
        ]
        .boxed(),
        "Plaintext" | "Message" | "Mac" | "Signature" => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| b64(&b)),
            (4090usize..4100).prop_map(|n| b64(&vec![7; n])),
            Just(quoted("not base64!")),
            Just(quoted("AAA")),
            Just(quoted("AA==AA==")),
            Just(quoted("-_-_")),
        ]
        .boxed(),
        "CiphertextBlob" => {
            let blob2 = blob.clone();
            let blob3 = blob.clone();
            prop_oneof![
                Just(b64(&blob)),
                (any::<prop::sample::Index>(), 1u8..=255).prop_map(move |(i, d)| {
                    let mut b = (*blob2).clone();
                    let i = i.index(b.len());
                    b[i] = b[i].wrapping_add(d);
                    b64(&b)
                }),
                any::<prop::sample::Index>().prop_map(move |i| b64(&blob3[..i.index(blob3.len())])),
                prop::collection::vec(any::<u8>(), 0..120).prop_map(|b| b64(&b)),
                (6140usize..6200).prop_map(|n| b64(&vec![1; n])),
                Just(quoted("====")),
            ]
            .boxed()
        }
        "EncryptionContext" | "SourceEncryptionContext" | "DestinationEncryptionContext" => {
            prop_oneof![
                Just("{}".to_owned()),
                prop::collection::vec((junk_string(), junk_string()), 0..4).prop_map(|v| {
                    let m: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", m.join(","))
                }),
                prop::collection::vec((junk_string(), junk_value()), 1..3).prop_map(|v| {
                    let m: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", m.join(","))
                }),
            ]
            .boxed()
        }
        "NumberOfBytes" | "Limit" | "PendingWindowInDays" | "RotationPeriodInDays" => prop_oneof![
            (-3i64..1100).prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "0",
                "1",
                "7",
                "30",
                "90",
                "100",
                "1000",
                "1001",
                "1024",
                "1025",
                "2560",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
                "1e400",
                "1.5",
                "7.0",
                "\"7\"",
                "-0",
            ])
            .prop_map(str::to_owned),
        ]
        .boxed(),
        "DryRun" | "MultiRegion" | "BypassPolicyLockoutSafetyCheck" => {
            prop::sample::select(vec!["true", "false", "\"true\"", "1", "null"])
                .prop_map(str::to_owned)
                .boxed()
        }
        "Tags" => prop::collection::vec(
            (
                prop_oneof![
                    Just("TagKey"),
                    Just("TagValue"),
                    Just("Key"),
                    Just("tagkey")
                ],
                junk_string(),
                prop_oneof![Just("TagValue"), Just("TagKey"), Just("Value")],
                junk_string(),
            )
                .prop_map(|(k1, v1, k2, v2)| format!("{{\"{k1}\":{v1},\"{k2}\":{v2}}}")),
            0..4,
        )
        .prop_map(|v| format!("[{}]", v.join(",")))
        .boxed(),
        "Policy" => prop_oneof![
            Just(quoted(&format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
            ))),
            Just(quoted(
                r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/nobody"},"Action":"kms:Encrypt","Resource":"*"}]}"#
            )),
            Just(quoted("{}")),
            junk_string(),
        ]
        .boxed(),
        "GranteePrincipal" | "RetiringPrincipal" => prop_oneof![
            Just(quoted(&format!("arn:aws:iam::{ACCOUNT}:user/tester"))),
            Just(quoted(&format!("arn:aws:iam::{ACCOUNT}:user/other"))),
            junk_string(),
        ]
        .boxed(),
        "Operations" => prop::collection::vec(
            prop::sample::select(vec![
                "Decrypt",
                "Encrypt",
                "DescribeKey",
                "RetireGrant",
                "Sign",
                "GenerateMac",
                "Nope",
            ])
                .prop_map(quoted),
            0..4,
        )
        .prop_map(|v| format!("[{}]", v.join(",")))
        .boxed(),
        "GrantId" => prop_oneof![
            Just(quoted(&"ab".repeat(32))),
            "[0-9a-f]{64}".prop_map(|s| quoted(&s)),
            junk_string(),
        ]
        .boxed(),
        "GrantTokens" | "TagKeys" | "DryRunModifiers" => prop::collection::vec(junk_string(), 0..5)
            .prop_map(|v| format!("[{}]", v.join(",")))
            .boxed(),
        _ => prop_oneof![
            prop::sample::select(vec![
                "SYMMETRIC_DEFAULT",
                "AES_256",
                "AES_128",
                "AES_512",
                "RSA_2048",
                "ENCRYPT_DECRYPT",
                "SIGN_VERIFY",
                "AWS_KMS",
                "EXTERNAL",
                "ALL_KEY_MATERIAL",
                "RSAES_OAEP_SHA_256",
                "HMAC_256",
                "HMAC_224",
                "GENERATE_VERIFY_MAC",
                "HMAC_SHA_256",
                "HMAC_SHA_512",
                "RSASSA_PSS_SHA_256",
                "ECDSA_SHA_256",
                "ECDSA_SHA_384",
                "RAW",
                "DIGEST",
                "ECC_NIST_P256",
                "",
            ])
            .prop_map(quoted),
            junk_string(),
        ]
        .boxed(),
    };
    prop_oneof![19 => typed, 1 => junk_value()].boxed()
}

/// A JSON object with the operation's own members (each there or not, in
/// any order), now and then an unknown or repeated member.
fn object_body(
    op: &'static str,
    keys: Arc<Vec<String>>,
    blob: Arc<Vec<u8>>,
) -> BoxedStrategy<String> {
    let fields: Vec<BoxedStrategy<Option<String>>> = members(op)
        .iter()
        .map(|&name| {
            let present = if REQUIRED.contains(&name) { 0.85 } else { 0.3 };
            prop::option::weighted(present, member_value(name, keys.clone(), blob.clone()))
                .prop_map(move |v| v.map(|v| format!("{}:{v}", quoted(name))))
                .boxed()
        })
        .collect();
    let extra = prop::option::weighted(
        0.15,
        prop_oneof![
            (junk_string(), junk_value()).prop_map(|(k, v)| format!("{k}:{v}")),
            prop::sample::select(members(op).to_vec())
                .prop_map(|name| format!("{}:null", quoted(name))),
        ],
    );
    (fields, extra)
        .prop_flat_map(|(fields, extra)| {
            let mut members: Vec<String> = fields.into_iter().flatten().collect();
            members.extend(extra);
            Just(members).prop_shuffle()
        })
        .prop_map(|members| format!("{{{}}}", members.join(",")))
        .boxed()
}

/// A whole body: mostly objects of the operation's members, else any JSON
/// value, truncated or corrupted JSON, bytes that are not UTF-8, nothing.
fn body(op: &'static str, keys: Arc<Vec<String>>, blob: Arc<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let object = object_body(op, keys, blob);
    prop_oneof![
        12 => object.clone().prop_map(String::into_bytes),
        3 => junk_value().prop_map(String::into_bytes),
        2 => (object.clone(), any::<prop::sample::Index>())
            .prop_map(|(o, i)| o.as_bytes()[..i.index(o.len())].to_vec()),
        2 => (object, any::<prop::sample::Index>(), prop::collection::vec(128u8..=255, 1..4))
            .prop_map(|(o, i, bad)| {
                let mut b = o.into_bytes();
                let at = i.index(b.len() + 1);
                b.splice(at..at, bad);
                b
            }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => prop::sample::select(vec!["", "  \n", "{", "}", "[]", "{}{}", "{\"KeyId\"}", "\u{feff}{}"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
    .boxed()
}

/// A request body; shown shortened (as text where it is UTF-8) when a case
/// fails, since the bodies run to 64 KiB. The persisted seed, not this
/// text, is what replays a failure.
#[derive(Clone)]
struct Body(Vec<u8>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = String::from_utf8_lossy(&self.0[..self.0.len().min(2000)]);
        write!(f, "Body({} bytes: {shown:?})", self.0.len())
    }
}

/// Sends a request that must succeed and returns its body.
fn ok(gw: &Gateway, op: &str, body: Value) -> Value {
    let r = gw.raw(
        Some(&format!("TrentService.{op}")),
        body.to_string().as_bytes(),
        true,
    );
    assert_eq!(r.status, 200, "{op} {body}: {r:?}");
    r.body
}

/// A response as a value to compare: status and body, whatever they are.
fn observe(gw: &Gateway, op: &str, body: &Value) -> Value {
    let r = gw.raw(
        Some(&format!("TrentService.{op}")),
        body.to_string().as_bytes(),
        true,
    );
    json!({"status": r.status, "body": r.body})
}

/// Every page of a list operation (or its error).
fn list_all(gw: &Gateway, op: &str, mut request: Value, field: &str) -> Value {
    let mut out = Vec::new();
    loop {
        let page = observe(gw, op, &request);
        if page["status"] != json!(200) {
            return page;
        }
        let page = &page["body"];
        out.extend(page[field].as_array().cloned().unwrap_or_default());
        match page["NextMarker"].as_str() {
            Some(m) if page["Truncated"] == json!(true) => request["Marker"] = json!(m),
            _ => return Value::Array(out),
        }
    }
}

/// Everything a request could change, as far as clients can see it.
fn snapshot(gw: &Gateway, seed: &Seed) -> Value {
    let mut keys: Vec<String> = list_all(gw, "ListKeys", json!({}), "Keys")
        .as_array()
        .expect("ListKeys succeeds")
        .iter()
        .map(|k| k["KeyId"].as_str().unwrap_or_default().to_owned())
        .collect();
    keys.sort();
    let mut aliases = list_all(gw, "ListAliases", json!({}), "Aliases")
        .as_array()
        .cloned()
        .expect("ListAliases succeeds");
    aliases.sort_by_key(|a| a["AliasName"].as_str().unwrap_or_default().to_owned());
    let key = |id: &str| {
        json!({
            "metadata": observe(gw, "DescribeKey", &json!({"KeyId": id})),
            "tags": list_all(gw, "ListResourceTags", json!({"KeyId": id}), "Tags"),
            "rotation": observe(gw, "GetKeyRotationStatus", &json!({"KeyId": id})),
            "rotations": list_all(gw, "ListKeyRotations", json!({"KeyId": id}), "Rotations"),
            "policy": observe(gw, "GetKeyPolicy", &json!({"KeyId": id})),
            "grants": list_all(gw, "ListGrants", json!({"KeyId": id}), "Grants"),
        })
    };
    json!({"keys": keys, "aliases": aliases, "k1": key(&seed.k1), "k2": key(&seed.k2)})
}

/// The shape every response must have, whatever the body was.
fn check_response(op: &str, body: &[u8], r: &RawResponse) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
    let ctx = || format!("{op} with body {shown:?} ({} bytes): {r:?}", body.len());
    prop_assert!(r.status != 0, "no response (connection dropped): {}", ctx());
    prop_assert!(r.status < 500, "server fault: {}", ctx());
    prop_assert!(
        r.header("x-amzn-requestid").is_some_and(|v| !v.is_empty()),
        "no x-amzn-RequestId: {}",
        ctx()
    );
    prop_assert!(r.body.is_object(), "body is not a JSON object: {}", ctx());
    if r.status == 200 {
        prop_assert!(
            IMPLEMENTED.contains(&op),
            "unsupported operation succeeded: {}",
            ctx()
        );
        let member = |name: &str| {
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|b| b.get(name)?.as_str().map(str::to_owned))
        };
        if KEY_ID_OR_ARN_ONLY.contains(&op)
            && let Some(k) = member("KeyId")
        {
            prop_assert!(
                !(k.starts_with("alias/") || (k.starts_with("arn:") && k.contains(":alias/"))),
                "an alias was followed by a key-id-or-ARN operation: {}",
                ctx()
            );
        }
        if let Some(name) = member("AliasName") {
            prop_assert!(
                !name.contains(':'),
                "alias name with ':' accepted: {}",
                ctx()
            );
        }
        return Ok(());
    }
    let name = r.error_type();
    prop_assert!(!name.is_empty(), "no __type: {}", ctx());
    prop_assert_eq!(r.header("x-amzn-errortype"), Some(name), "{}", ctx());
    let expected = if name == "RequestEntityTooLargeException" {
        413
    } else {
        400
    };
    prop_assert_eq!(r.status, expected, "{}", ctx());
    if !IMPLEMENTED.contains(&op) && r.status != 413 {
        prop_assert_eq!(name, "UnsupportedOperationException", "{}", ctx());
    }
    Ok(())
}

#[test]
fn hostile_bodies_for_every_operation() {
    let gw = Gateway::start();
    let k1 = ok(&gw, "CreateKey", json!({"Description": "fuzz k1"}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let k2 = ok(&gw, "CreateKey", json!({"Description": "fuzz k2"}))["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &gw,
        "CreateAlias",
        json!({"AliasName": "alias/fuzz-k1", "TargetKeyId": k1}),
    );
    ok(
        &gw,
        "CreateAlias",
        json!({"AliasName": "alias/fuzz-k2", "TargetKeyId": k2}),
    );
    ok(
        &gw,
        "TagResource",
        json!({"KeyId": k1, "Tags": [{"TagKey": "t", "TagValue": "1"}]}),
    );
    let encrypted = ok(
        &gw,
        "Encrypt",
        json!({"KeyId": k1, "Plaintext": B64.encode(b"fuzz"), "EncryptionContext": {"a": "b"}}),
    );
    let blob = B64
        .decode(encrypted["CiphertextBlob"].as_str().unwrap())
        .unwrap();
    let seed = Seed { k1, k2, blob };

    let initial = snapshot(&gw, &seed);
    let last = RefCell::new(initial.clone());
    let sent = Cell::new(0u64);
    let outcomes = RefCell::new(std::collections::BTreeMap::<(&str, String), u64>::new());
    let succeeded = RefCell::new(std::collections::BTreeMap::<&str, u64>::new());

    let blob = Arc::new(seed.blob.clone());
    // Implemented operations three times as often as the rest, which all
    // stop at the same UnsupportedOperationException.
    let key_args: Vec<(&'static str, Arc<Vec<String>>)> = Operation::ALL
        .iter()
        .map(|o| o.name())
        .flat_map(|op| {
            let times = if IMPLEMENTED.contains(&op) { 3 } else { 1 };
            std::iter::repeat_n((op, Arc::new(seed.key_args(op))), times)
        })
        .collect();
    let strategy = prop::sample::select(key_args)
        .prop_flat_map(move |(op, keys)| (Just(op), body(op, keys, blob.clone()).prop_map(Body)));

    let mut config = crate::fuzz::config("target/fuzz-regressions/gateway.txt", 1000);
    // Shrinking replays requests against a gateway whose state has moved
    // on; a bounded number of steps gives a small enough example.
    config.max_shrink_iters = 200;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(op, Body(body))| {
        let r = gw.raw(Some(&format!("TrentService.{op}")), &body, true);
        sent.set(sent.get() + 1);
        check_response(op, &body, &r)?;
        *outcomes
            .borrow_mut()
            .entry((op, r.error_type().to_owned()))
            .or_default() += 1;
        if r.status == 200 {
            *succeeded.borrow_mut().entry(op).or_default() += 1;
        }
        if MUTATING.contains(&op) {
            let now = snapshot(&gw, &seed);
            if r.status != 200 {
                let before = last.borrow();
                prop_assert_eq!(
                    &now,
                    &*before,
                    "refused {} ({}) changed state; body {:?}",
                    op,
                    r.error_type(),
                    String::from_utf8_lossy(&body)
                );
            }
            *last.borrow_mut() = now;
        }
        Ok(())
    });
    let log = gw.log();
    let succeeded = succeeded.into_inner();
    if std::env::var_os("KMSGATE_FUZZ_VERBOSE").is_some() {
        for ((op, error), n) in outcomes.into_inner() {
            eprintln!(
                "{n:6} {op} {}",
                if error.is_empty() { "200" } else { &error }
            );
        }
    }
    eprintln!(
        "gateway fuzz: {} requests, {} succeeded: {:?}",
        sent.get(),
        succeeded.values().sum::<u64>(),
        succeeded
    );
    if let Err(e) = result {
        panic!("{e}\n--- gateway log (tail) ---\n{}", tail(&log));
    }
    assert!(
        !log.contains("panicked"),
        "the gateway panicked:\n{}",
        tail(&log)
    );

    // Nothing sent to the operations that cannot change state changed it,
    // and `k1` (never given to an operation that can) is as it was.
    let end = snapshot(&gw, &seed);
    assert_eq!(
        end,
        *last.borrow(),
        "state changed by a read-only operation"
    );
    assert_eq!(end["k1"], initial["k1"], "k1 changed");
    let k1_aliases = |s: &Value| -> Vec<Value> {
        s["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                a["TargetKeyId"] == json!(seed.k1) || a["AliasName"] == json!("alias/fuzz-k1")
            })
            .cloned()
            .collect()
    };
    assert_eq!(
        k1_aliases(&end),
        k1_aliases(&initial),
        "aliases of k1 changed"
    );
}

fn tail(log: &str) -> &str {
    let mut from = log.len().saturating_sub(4000);
    while !log.is_char_boundary(from) {
        from += 1;
    }
    &log[from..]
}
