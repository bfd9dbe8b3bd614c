//! GetParametersForImport: the public key of a wrapping key pair made on
//! the token, and an import token, for importing key material into an
//! EXTERNAL key. Both are valid for 24 hours; a newer call supersedes them.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{Blob, check_key_id};
use super::validate::Violations;
use crate::error::{KmsError, unsupported_wrapping, wrapping_unfit};
use crate::keystore::{KeySpec, KeyState, Origin, StoreError, WrappingAlgorithm};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportRequest {
    pub key_id: Option<String>,
    pub wrapping_algorithm: Option<String>,
    pub wrapping_key_spec: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    /// The key ARN.
    pub key_id: String,
    pub import_token: Blob,
    pub public_key: Blob,
    pub parameters_valid_to: f64,
}

/// The service model's AlgorithmSpec, in its order.
const ALGORITHM_SPECS: &[&str] = &[
    "RSAES_PKCS1_V1_5",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
    "SM2PKE",
];
/// The service model's WrappingKeySpec, in its order.
const WRAPPING_KEY_SPECS: &[&str] = &["RSA_2048", "RSA_3072", "RSA_4096", "SM2"];

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GetParametersForImportRequest,
) -> Result<GetParametersForImportResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("wrappingAlgorithm", &req.wrapping_algorithm)
        && let Some(a) = &req.wrapping_algorithm
    {
        v.enum_value("wrappingAlgorithm", a, ALGORITHM_SPECS);
    }
    if v.required("wrappingKeySpec", &req.wrapping_key_spec)
        && let Some(s) = &req.wrapping_key_spec
    {
        v.enum_value("wrappingKeySpec", s, WRAPPING_KEY_SPECS);
    }
    v.finish()?;
    let algorithm_name = req.wrapping_algorithm.as_deref().unwrap_or_default();
    let spec = req.wrapping_key_spec.as_deref().unwrap_or_default();
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx
        .authorize("GetParametersForImport", key, Use::default())
        .await?;
    let realm = ctx.store.realm();
    let arn = realm.key_arn(key.id());
    if key.record.origin != Origin::External {
        return Err(StoreError::WrongOrigin {
            arn,
            origin: key.record.origin.as_str(),
        }
        .into());
    }
    if key.record.state == KeyState::PendingDeletion {
        return Err(StoreError::PendingDeletion { arn }.into());
    }
    let (Some(algorithm), Some(bits)) = (
        WrappingAlgorithm::parse(algorithm_name),
        spec.strip_prefix("RSA_")
            .and_then(|b| b.parse::<u32>().ok()),
    ) else {
        return Err(unsupported_wrapping(algorithm_name, spec));
    };
    // RSAES_OAEP wraps the material itself, so it must fit in one OAEP
    // block: never an RSA private key, nor a P-521 one under RSA_2048.
    let key_spec = key.record.key_spec;
    let oaep = matches!(
        algorithm,
        WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaesOaepSha256
    );
    if oaep && (key_spec.is_rsa() || (key_spec == KeySpec::EccNistP521 && bits == 2048)) {
        return Err(wrapping_unfit(algorithm_name, spec, key_spec.as_str()));
    }
    let params = ctx
        .store
        .parameters_for_import(key.id(), algorithm, bits)
        .await?;
    Ok(GetParametersForImportResponse {
        key_id: arn,
        import_token: Blob(params.import_token),
        public_key: Blob(params.public_key),
        parameters_valid_to: params.valid_to,
    })
}
