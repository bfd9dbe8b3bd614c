//! The nemesis's history: what the clients asked and were told, and what the
//! nemesis did, one JSON object per line (`history.jsonl`, `faults.jsonl` in
//! the run's directory). The runner writes it; the checker reads nothing else
//! from the clients' side.
//!
//! One rule makes the checker's model simple: every key and every alias has
//! exactly one owning client, which sends its requests one at a time. So the
//! operations on one key are totally ordered by `seq`, and the expected state
//! of a key after its history is a fold over that order. An outcome of
//! `Unknown` (a timeout, a hang-up, a cut connection) may or may not have
//! taken effect, so the model keeps both possibilities.

use serde::{Deserialize, Serialize};

/// One client request and what came of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    /// Position in the whole history (unique, increasing in start order).
    pub seq: u64,
    /// Which client sent it (each key and alias has exactly one owner).
    pub client: u32,
    /// Index of the gateway it was sent to.
    pub gateway: u32,
    /// Milliseconds since the run began, when sent and when answered.
    pub start_ms: u64,
    pub end_ms: u64,
    /// The test clock's offset in days when the request was sent.
    pub clock_days: u64,
    pub call: Call,
    pub outcome: Outcome,
}

/// The request, with what the checker needs of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Call {
    CreateKey {
        /// SYMMETRIC_DEFAULT keys only, AWS_KMS or EXTERNAL origin.
        origin: String,
    },
    /// Import (or re-import) of the given material (base64 of the 32 bytes,
    /// kept so that the checker knows which material a ciphertext needs).
    ImportKeyMaterial {
        key_id: String,
        material_b64: String,
    },
    DeleteImportedKeyMaterial {
        key_id: String,
    },
    EnableKey {
        key_id: String,
    },
    DisableKey {
        key_id: String,
    },
    /// `days` is PendingWindowInDays.
    ScheduleKeyDeletion {
        key_id: String,
        days: u32,
    },
    CancelKeyDeletion {
        key_id: String,
    },
    RotateKeyOnDemand {
        key_id: String,
    },
    EnableKeyRotation {
        key_id: String,
        period_days: u32,
    },
    DisableKeyRotation {
        key_id: String,
    },
    TagResource {
        key_id: String,
        tag_key: String,
        tag_value: String,
    },
    UntagResource {
        key_id: String,
        tag_key: String,
    },
    PutKeyPolicy {
        key_id: String,
        policy: String,
    },
    CreateGrant {
        key_id: String,
        grantee: String,
        operations: Vec<String>,
    },
    RevokeGrant {
        key_id: String,
        grant_id: String,
    },
    CreateAlias {
        alias: String,
        key_id: String,
    },
    UpdateAlias {
        alias: String,
        key_id: String,
    },
    DeleteAlias {
        alias: String,
    },
    /// `plaintext_b64` is what was encrypted; `context` the encryption
    /// context (kept so that the checker can decrypt).
    Encrypt {
        key_id: String,
        plaintext_b64: String,
        context: Vec<(String, String)>,
    },
    GenerateDataKey {
        key_id: String,
        context: Vec<(String, String)>,
    },
    Decrypt {
        ciphertext_b64: String,
        context: Vec<(String, String)>,
    },
    DescribeKey {
        key_id: String,
    },
}

/// What the client was told.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome")]
pub enum Outcome {
    /// A 2xx answer. `request_id` is the x-amzn-requestid header.
    Ok { request_id: String, result: Result_ },
    /// An AWS-shaped error answer: the request was refused (a 4xx changes
    /// nothing; a 5xx may or may not have).
    Err {
        request_id: Option<String>,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: timeout, hang-up (the client's own, as a fault), or a cut
    /// connection. It may or may not have taken effect.
    Unknown { why: String },
}

/// The parts of a 2xx answer the checker uses.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Result_ {
    /// KeyId in the answer (an ARN for Encrypt/GenerateDataKey/Decrypt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// CiphertextBlob, base64 (Encrypt, GenerateDataKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_b64: Option<String>,
    /// Plaintext, base64 (GenerateDataKey, Decrypt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_b64: Option<String>,
    /// KeyState (DescribeKey), DeletionDate as seconds (ScheduleKeyDeletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date_s: Option<i64>,
    /// GrantId (CreateGrant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
}

/// Something the nemesis did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    /// Milliseconds since the run began, when it started and (for faults
    /// with a duration) when it was undone.
    pub start_ms: u64,
    pub end_ms: u64,
    /// e.g. "kill-worker", "kill-supervisor", "stop-worker", "kill-readback",
    /// "token-fault", "token-stall", "token-dir-unreadable", "disk-full",
    /// "clock-jump", "client-half-close", "client-timeout".
    pub kind: String,
    /// Which process or gateway, and the details (rule line, days, pid).
    pub target: String,
    pub detail: String,
}

/// What the run was: enough to rerun it and to judge it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub seed: u64,
    pub seconds: u64,
    pub gateways: u32,
    pub workers_per_gateway: u32,
    pub gcm_usage_bound: u64,
    /// The sync bound: after this long without faults, every gateway must
    /// give the same answer.
    pub sync_bound_ms: u64,
    /// The token directory, the audit files (one per gateway), and the
    /// config, for the checker's reads of the token afterwards.
    pub token_dir: String,
    pub audit_files: Vec<String>,
    pub config: String,
}
