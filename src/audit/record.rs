//! One request's record, in CloudTrail's field names.
//!
//! The request and response members that go into the record are chosen by
//! name from a fixed list (`requestParameters`, `responseElements`), so a
//! member that is not on it (`Plaintext`, `CiphertextBlob`, a policy, an
//! unknown one) never reaches the log, whatever the operation. Of an
//! encryption context only the keys are logged unless the config asks for
//! the values too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// CloudTrail's record format version the fields follow.
pub const EVENT_VERSION: &str = "1.08";
/// Longest string value copied into a record, in characters.
const MAX_STRING: usize = 2048;

/// Where the gateway says it is: the ARN parts of its principals.
#[derive(Debug, Clone)]
pub struct Realm {
    pub partition: String,
    pub region: String,
    pub account_id: String,
}

/// Who made a request, as the signature proved it.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub name: &'a str,
    pub access_key_id: &'a str,
}

/// What the HTTP layer knows about a finished (or refused) request.
#[derive(Debug)]
pub struct Event<'a> {
    pub request_id: &'a str,
    /// The operation (`X-Amz-Target` without `TrentService.`), possibly
    /// empty or unknown.
    pub operation: &'a str,
    pub identity: Option<Identity<'a>>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    /// The request body as received (only listed members are read).
    pub request_body: Option<&'a [u8]>,
    /// The response body of a success (only listed members are read).
    pub response_body: Option<&'a [u8]>,
    /// The ARN of the key the request acted on.
    pub key_arn: Option<&'a str>,
    /// The key version that encrypted or decrypted.
    pub key_version: Option<u32>,
    pub http_status: u16,
    pub error_code: Option<&'a str>,
    pub error_message: Option<String>,
    pub started: Instant,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    event_version: &'static str,
    user_identity: Option<UserIdentity>,
    event_time: String,
    event_source: &'static str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: Option<String>,
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    request_parameters: Option<Map<String, Value>>,
    response_elements: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_event_data: Option<AdditionalEventData>,
    #[serde(rename = "requestID")]
    request_id: &'a str,
    #[serde(rename = "eventID")]
    event_id: String,
    read_only: bool,
    resources: Vec<Resource<'a>>,
    event_type: &'static str,
    recipient_account_id: &'a str,
    event_category: &'static str,
    http_status: u16,
    duration_micros: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentity {
    #[serde(rename = "type")]
    kind: &'static str,
    principal_id: String,
    arn: String,
    account_id: String,
    access_key_id: String,
    user_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdditionalEventData {
    key_version: u32,
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "ARN")]
    arn: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "accountId")]
    account_id: &'a str,
}

/// Request members copied as they are when they are scalars.
const REQUEST_SCALARS: &[&str] = &[
    "KeyId",
    "KeySpec",
    "KeyPairSpec",
    "KeyUsage",
    "NumberOfBytes",
    "AliasName",
    "TargetKeyId",
    "EncryptionAlgorithm",
    "MacAlgorithm",
    "SigningAlgorithm",
    "MessageType",
    "SourceKeyId",
    "DestinationKeyId",
    "SourceEncryptionAlgorithm",
    "DestinationEncryptionAlgorithm",
    "PendingWindowInDays",
    "RotationPeriodInDays",
    "Origin",
    "CustomerMasterKeySpec",
    "MultiRegion",
    "Description",
    "Limit",
    "DryRun",
    "BypassPolicyLockoutSafetyCheck",
    "WrappingAlgorithm",
    "WrappingKeySpec",
    "ExpirationModel",
    "ValidTo",
];
/// Request members that are encryption contexts.
const REQUEST_CONTEXTS: &[&str] = &[
    "EncryptionContext",
    "SourceEncryptionContext",
    "DestinationEncryptionContext",
];
/// Response members copied when they are scalars.
const RESPONSE_SCALARS: &[&str] = &[
    "KeyId",
    "SourceKeyId",
    "KeyState",
    "DeletionDate",
    "PendingWindowInDays",
    "KeyMaterialId",
    "SourceKeyMaterialId",
    "DestinationKeyMaterialId",
];
/// Members of a response's `KeyMetadata` copied when they are scalars.
const KEY_METADATA_SCALARS: &[&str] = &[
    "KeyId",
    "Arn",
    "KeyState",
    "KeySpec",
    "KeyUsage",
    "Enabled",
    "Origin",
    "CreationDate",
    "DeletionDate",
];

/// Operations that change nothing (CloudTrail's `readOnly`).
const READ_ONLY: &[&str] = &[
    "DescribeKey",
    "GetKeyRotationStatus",
    "ListAliases",
    "ListKeyRotations",
    "ListKeys",
    "ListResourceTags",
    "GenerateRandom",
];

/// The record of `event` as one line of JSON (no chain fields yet).
pub fn render(event: &Event<'_>, realm: &Realm, context_values: bool) -> String {
    let record = Record {
        event_version: EVENT_VERSION,
        user_identity: event.identity.map(|id| user_identity(id, realm)),
        event_time: event_time(),
        event_source: "kms.amazonaws.com",
        event_name: event.operation,
        aws_region: &realm.region,
        source_ip_address: event.source_ip.map(|ip| ip.to_canonical().to_string()),
        user_agent: event.user_agent.map(|a| capped(a).to_owned()),
        error_code: event.error_code,
        error_message: event.error_message.clone(),
        request_parameters: event
            .request_body
            .and_then(|b| request_parameters(b, context_values)),
        response_elements: event.response_body.and_then(response_elements),
        additional_event_data: event
            .key_version
            .map(|key_version| AdditionalEventData { key_version }),
        request_id: event.request_id,
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only: READ_ONLY.contains(&event.operation),
        resources: event
            .key_arn
            .map(|arn| Resource {
                arn,
                kind: "AWS::KMS::Key",
                account_id: &realm.account_id,
            })
            .into_iter()
            .collect(),
        event_type: "AwsApiCall",
        recipient_account_id: &realm.account_id,
        event_category: "Management",
        http_status: event.http_status,
        duration_micros: u64::try_from(event.started.elapsed().as_micros()).unwrap_or(u64::MAX),
    };
    serde_json::to_string(&record).unwrap_or_else(|_| "{\"invalidRecord\":true}".to_owned())
}

/// What the gateway did on its own, with no request behind it: CloudTrail
/// records these as service events (`eventType` `AwsServiceEvent`), with
/// the service itself as the identity.
#[derive(Debug, Clone, Copy)]
pub struct ServiceEvent<'a> {
    /// CloudTrail's name for it: `DeleteKey`, `RotateKey`,
    /// `DeleteExpiredKeyMaterial`.
    pub name: &'a str,
    pub key_id: &'a str,
    pub key_arn: &'a str,
    /// `serviceEventDetails.rotationType` (`AUTOMATIC`) of a rotation.
    pub rotation_type: Option<&'a str>,
    /// kmsgate's: why it happened (`additionalEventData.reason`).
    pub reason: Option<&'a str>,
}

/// The service itself, as CloudTrail names it in a service event.
const SERVICE: &str = "kms.amazonaws.com";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceRecord<'a> {
    event_version: &'static str,
    user_identity: ServiceIdentity<'a>,
    event_time: String,
    event_source: &'static str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'static str,
    user_agent: &'static str,
    request_parameters: Option<()>,
    response_elements: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_event_data: Option<ServiceReason<'a>>,
    #[serde(rename = "eventID")]
    event_id: String,
    read_only: bool,
    resources: [Resource<'a>; 1],
    event_type: &'static str,
    recipient_account_id: &'a str,
    service_event_details: ServiceEventDetails<'a>,
    event_category: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceIdentity<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    account_id: &'a str,
    invoked_by: &'static str,
}

#[derive(Serialize)]
struct ServiceReason<'a> {
    reason: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceEventDetails<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_type: Option<&'a str>,
    key_id: &'a str,
}

/// The record of a service event as one line of JSON (no chain fields).
pub fn render_service(event: &ServiceEvent<'_>, realm: &Realm) -> String {
    let record = ServiceRecord {
        event_version: EVENT_VERSION,
        user_identity: ServiceIdentity {
            kind: "AWSService",
            account_id: &realm.account_id,
            invoked_by: SERVICE,
        },
        event_time: event_time(),
        event_source: SERVICE,
        event_name: event.name,
        aws_region: &realm.region,
        source_ip_address: SERVICE,
        user_agent: SERVICE,
        request_parameters: None,
        response_elements: None,
        additional_event_data: event.reason.map(|reason| ServiceReason { reason }),
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only: false,
        resources: [Resource {
            arn: event.key_arn,
            kind: "AWS::KMS::Key",
            account_id: &realm.account_id,
        }],
        event_type: "AwsServiceEvent",
        recipient_account_id: &realm.account_id,
        service_event_details: ServiceEventDetails {
            rotation_type: event.rotation_type,
            key_id: event.key_id,
        },
        event_category: "Management",
    };
    serde_json::to_string(&record).unwrap_or_else(|_| "{\"invalidRecord\":true}".to_owned())
}

/// What the HTTP layer knows about a finished (or refused) XKS proxy API
/// request (AWS KMS calling an external key store). Never a plaintext, an
/// AAD or a ciphertext metadata value.
#[derive(Debug)]
pub struct XksEvent<'a> {
    pub request_id: &'a str,
    /// The spec's API name (`Encrypt`, `GetHealthStatus`, ...), or empty
    /// for a path that names none.
    pub operation: &'a str,
    /// The logical key store, if the path named one.
    pub store: Option<&'a str>,
    /// The store's region (the SigV4 scope AWS KMS signs with).
    pub region: Option<&'a str>,
    /// The XKS access key id that signed, once verified.
    pub access_key_id: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub external_key_id: Option<&'a str>,
    pub kms_request_id: Option<&'a str>,
    pub kms_operation: Option<&'a str>,
    pub aws_principal_arn: Option<&'a str>,
    pub kms_key_arn: Option<&'a str>,
    pub kms_via_service: Option<&'a str>,
    pub aws_source_vpc: Option<&'a str>,
    pub aws_source_vpce: Option<&'a str>,
    /// The kmsgate key the external key is, and the version that
    /// encrypted or decrypted.
    pub key_id: Option<String>,
    pub key_arn: Option<&'a str>,
    pub key_version: Option<u32>,
    pub http_status: u16,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    /// The secondary authorization rule that denied the request.
    pub denied_by_rule: Option<&'a str>,
    pub started: Instant,
}

/// The `eventSource` of XKS proxy API records.
pub const XKS_EVENT_SOURCE: &str = "kms-xks-proxy";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct XksRecord<'a> {
    event_version: &'static str,
    user_identity: Option<XksIdentity<'a>>,
    event_time: String,
    event_source: &'static str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: Option<String>,
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    request_parameters: Map<String, Value>,
    additional_event_data: Map<String, Value>,
    #[serde(rename = "requestID")]
    request_id: &'a str,
    #[serde(rename = "eventID")]
    event_id: String,
    read_only: bool,
    resources: Vec<Resource<'a>>,
    event_type: &'static str,
    recipient_account_id: &'a str,
    event_category: &'static str,
    http_status: u16,
    duration_micros: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct XksIdentity<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    access_key_id: &'a str,
}

/// The record of an XKS request as one line of JSON (no chain fields).
pub fn render_xks(event: &XksEvent<'_>, realm: &Realm) -> String {
    let mut params = Map::new();
    let mut put = |name: &str, v: Option<&str>| {
        if let Some(v) = v {
            params.insert(name.to_owned(), Value::String(capped(v).to_owned()));
        }
    };
    put("xksStore", event.store);
    put("externalKeyId", event.external_key_id);
    put("kmsRequestId", event.kms_request_id);
    put("kmsOperation", event.kms_operation);
    put("awsPrincipalArn", event.aws_principal_arn);
    put("kmsKeyArn", event.kms_key_arn);
    put("kmsViaService", event.kms_via_service);
    put("awsSourceVpc", event.aws_source_vpc);
    put("awsSourceVpce", event.aws_source_vpce);
    let mut additional = Map::new();
    if let Some(id) = &event.key_id {
        additional.insert("keyId".into(), Value::String(id.clone()));
    }
    if let Some(v) = event.key_version {
        additional.insert("keyVersion".into(), v.into());
    }
    if let Some(rule) = event.denied_by_rule {
        additional.insert(
            "deniedByRule".into(),
            Value::String(capped(rule).to_owned()),
        );
    }
    let record = XksRecord {
        event_version: EVENT_VERSION,
        user_identity: event.access_key_id.map(|access_key_id| XksIdentity {
            kind: "XksProxyCredential",
            access_key_id,
        }),
        event_time: event_time(),
        event_source: XKS_EVENT_SOURCE,
        event_name: event.operation,
        aws_region: event.region.unwrap_or(&realm.region),
        source_ip_address: event.source_ip.map(|ip| ip.to_canonical().to_string()),
        user_agent: event.user_agent.map(|a| capped(a).to_owned()),
        error_code: event.error_code,
        error_message: event.error_message,
        request_parameters: params,
        additional_event_data: additional,
        request_id: event.request_id,
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only: event.operation != "Encrypt" && event.operation != "Decrypt",
        resources: event
            .key_arn
            .map(|arn| Resource {
                arn,
                kind: "AWS::KMS::Key",
                account_id: &realm.account_id,
            })
            .into_iter()
            .collect(),
        event_type: "AwsApiCall",
        recipient_account_id: &realm.account_id,
        event_category: "Data",
        http_status: event.http_status,
        duration_micros: u64::try_from(event.started.elapsed().as_micros()).unwrap_or(u64::MAX),
    };
    serde_json::to_string(&record).unwrap_or_else(|_| "{\"invalidRecord\":true}".to_owned())
}

fn user_identity(id: Identity<'_>, realm: &Realm) -> UserIdentity {
    let anonymous = id.access_key_id.is_empty();
    UserIdentity {
        kind: if anonymous { "Anonymous" } else { "IAMUser" },
        principal_id: id.name.to_owned(),
        arn: if anonymous {
            String::new()
        } else {
            format!(
                "arn:{}:iam::{}:user/{}",
                realm.partition, realm.account_id, id.name
            )
        },
        account_id: realm.account_id.clone(),
        access_key_id: id.access_key_id.to_owned(),
        user_name: id.name.to_owned(),
    }
}

/// Now in ISO 8601 UTC to the second, as CloudTrail writes `eventTime`.
fn event_time() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn capped(s: &str) -> &str {
    match s.char_indices().nth(MAX_STRING) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A scalar JSON value as it goes into a record (long strings cut).
fn scalar(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => Some(Value::String(capped(s).to_owned())),
        Value::Number(_) | Value::Bool(_) => Some(v.clone()),
        _ => None,
    }
}

/// `KeyId` -> `keyId`, as CloudTrail names request members.
fn camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The members of a JSON object body that `wanted` names, each parsed; the
/// others are only scanned, never copied (a response's `Plaintext` is never
/// turned into a `String` here). `None` unless the body is a JSON object.
fn object_of(body: &[u8], wanted: impl Fn(&str) -> bool) -> Option<Map<String, Value>> {
    let members: BTreeMap<String, &RawValue> = serde_json::from_slice(body).ok()?;
    Some(
        members
            .into_iter()
            .filter(|(name, _)| wanted(name))
            .filter_map(|(name, raw)| Some((name, serde_json::from_str(raw.get()).ok()?)))
            .collect(),
    )
}

fn in_request(name: &str) -> bool {
    REQUEST_SCALARS.contains(&name)
        || REQUEST_CONTEXTS.contains(&name)
        || matches!(name, "GrantTokens" | "TagKeys" | "Tags")
}

fn in_response(name: &str) -> bool {
    RESPONSE_SCALARS.contains(&name) || name == "KeyMetadata"
}

/// The listed members of a request body; `None` unless it is a JSON object.
pub fn request_parameters(body: &[u8], context_values: bool) -> Option<Map<String, Value>> {
    let request = object_of(body, in_request)?;
    let mut out = Map::new();
    for (name, value) in &request {
        let name = name.as_str();
        if REQUEST_SCALARS.contains(&name) {
            if let Some(v) = scalar(value) {
                out.insert(camel(name), v);
            }
        } else if REQUEST_CONTEXTS.contains(&name) {
            let Value::Object(context) = value else {
                continue;
            };
            if context_values {
                let values = context
                    .iter()
                    .filter_map(|(k, v)| Some((capped(k).to_owned(), scalar(v)?)))
                    .collect();
                out.insert(camel(name), Value::Object(values));
            } else {
                let keys = context
                    .keys()
                    .map(|k| Value::String(capped(k).to_owned()))
                    .collect();
                out.insert(format!("{}Keys", camel(name)), Value::Array(keys));
            }
        } else if let (true, Value::Array(items)) = (name == "GrantTokens", value) {
            out.insert("grantTokenCount".into(), items.len().into());
        } else if let (true, Value::Array(tags)) = (name == "TagKeys" || name == "Tags", value) {
            let keys = tags
                .iter()
                .filter_map(|t| scalar(t.get("TagKey").unwrap_or(t)))
                .collect();
            out.insert("tagKeys".into(), Value::Array(keys));
        }
    }
    Some(out)
}

/// The listed members of a success's body; `None` when there are none.
pub fn response_elements(body: &[u8]) -> Option<Map<String, Value>> {
    let response = object_of(body, in_response)?;
    let mut out = Map::new();
    for name in RESPONSE_SCALARS {
        if let Some(v) = response.get(*name).and_then(scalar) {
            out.insert(camel(name), v);
        }
    }
    if let Some(Value::Object(meta)) = response.get("KeyMetadata") {
        let picked: Map<String, Value> = KEY_METADATA_SCALARS
            .iter()
            .filter_map(|name| Some((camel(name), scalar(meta.get(*name)?)?)))
            .collect();
        out.insert("keyMetadata".into(), Value::Object(picked));
    }
    (!out.is_empty()).then_some(out)
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

    fn event<'a>(request: &'a [u8], response: Option<&'a [u8]>) -> Event<'a> {
        Event {
            request_id: "req-1",
            operation: "Encrypt",
            identity: Some(Identity {
                name: "alice",
                access_key_id: "AKIAEXAMPLE",
            }),
            source_ip: Some("127.0.0.1".parse().unwrap()),
            user_agent: Some("aws-sdk-rust"),
            request_body: Some(request),
            response_body: response,
            key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/k"),
            key_version: Some(3),
            http_status: 200,
            error_code: None,
            error_message: None,
            started: Instant::now(),
        }
    }

    #[test]
    fn a_record_has_cloudtrails_fields_and_never_a_plaintext_or_context_value() {
        let request = br#"{"KeyId":"alias/app","Plaintext":"c2VjcmV0LXBsYWludGV4dA==",
            "EncryptionContext":{"tenant":"acme-secret-value"},"GrantTokens":["t1","t2"]}"#;
        let response = br#"{"KeyId":"arn:k","CiphertextBlob":"Y2lwaGVy","Plaintext":"cGxhaW4="}"#;
        let line = render(&event(request, Some(response)), &realm(), false);
        for secret in ["c2VjcmV0", "acme-secret-value", "Y2lwaGVy", "cGxhaW4="] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["eventSource"], "kms.amazonaws.com");
        assert_eq!(v["eventName"], "Encrypt");
        assert_eq!(v["awsRegion"], "us-east-1");
        assert_eq!(v["requestID"], "req-1");
        assert_eq!(v["sourceIPAddress"], "127.0.0.1");
        assert_eq!(v["userIdentity"]["type"], "IAMUser");
        assert_eq!(
            v["userIdentity"]["arn"],
            "arn:aws:iam::111122223333:user/alice"
        );
        assert_eq!(v["userIdentity"]["accessKeyId"], "AKIAEXAMPLE");
        assert_eq!(v["requestParameters"]["keyId"], "alias/app");
        assert_eq!(v["requestParameters"]["grantTokenCount"], 2);
        assert_eq!(
            v["requestParameters"]["encryptionContextKeys"],
            serde_json::json!(["tenant"])
        );
        assert_eq!(v["responseElements"], serde_json::json!({"keyId": "arn:k"}));
        assert_eq!(v["additionalEventData"]["keyVersion"], 3);
        assert_eq!(v["resources"][0]["type"], "AWS::KMS::Key");
        assert_eq!(v["httpStatus"], 200);
        let time = v["eventTime"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 20, "{time}");
    }

    #[test]
    fn a_service_event_is_cloudtrails_aws_service_event() {
        let line = render_service(
            &ServiceEvent {
                name: "RotateKey",
                key_id: "k",
                key_arn: "arn:aws:kms:us-east-1:111122223333:key/k",
                rotation_type: Some("AUTOMATIC"),
                reason: Some("schedule"),
            },
            &realm(),
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["eventType"], "AwsServiceEvent");
        assert_eq!(v["eventName"], "RotateKey");
        assert_eq!(v["userIdentity"]["type"], "AWSService");
        assert_eq!(v["userIdentity"]["invokedBy"], "kms.amazonaws.com");
        assert_eq!(v["userIdentity"]["accountId"], "111122223333");
        assert_eq!(
            v["serviceEventDetails"],
            serde_json::json!({"rotationType": "AUTOMATIC", "keyId": "k"})
        );
        assert_eq!(
            v["resources"][0]["ARN"],
            "arn:aws:kms:us-east-1:111122223333:key/k"
        );
        assert_eq!(v["requestParameters"], Value::Null);
        assert_eq!(v["additionalEventData"]["reason"], "schedule");
        assert!(v.get("requestID").is_none());
    }

    #[test]
    fn import_records_never_hold_the_token_or_the_wrapped_material() {
        let request = br#"{"KeyId":"k","ImportToken":"dG9rZW4tYm9keQ==",
            "EncryptedKeyMaterial":"d3JhcHBlZC1tYXRlcmlhbA==","ExpirationModel":"KEY_MATERIAL_EXPIRES",
            "ValidTo":1800000000}"#;
        let p = request_parameters(request, true).unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            !text.contains("dG9rZW4") && !text.contains("d3JhcHBl"),
            "{text}"
        );
        assert_eq!(p["expirationModel"], "KEY_MATERIAL_EXPIRES");
        let response = br#"{"KeyId":"k","ImportToken":"dG9rZW4tYm9keQ==","PublicKey":"cHVi","ParametersValidTo":1.0}"#;
        let text = serde_json::to_string(&response_elements(response)).unwrap();
        assert!(!text.contains("dG9rZW4"), "{text}");
    }

    #[test]
    fn context_values_are_logged_only_when_configured() {
        let request = br#"{"EncryptionContext":{"tenant":"acme"}}"#;
        let line = render(&event(request, None), &realm(), true);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["requestParameters"]["encryptionContext"],
            serde_json::json!({"tenant": "acme"})
        );
        assert_eq!(v["responseElements"], Value::Null);
    }

    #[test]
    fn a_body_that_is_not_a_json_object_has_no_request_parameters() {
        assert_eq!(request_parameters(b"not json", false), None);
        assert_eq!(request_parameters(b"[1]", false), None);
        let p = request_parameters(br#"{"KeyId":{"nested":1},"Policy":"x"}"#, false).unwrap();
        assert!(p.is_empty(), "{p:?}");
    }
}
