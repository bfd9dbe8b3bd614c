//! The wire: AWS's JSON 1.1 protocol over HTTP.
//!
//! Every KMS request is `POST /` with the operation in `X-Amz-Target`. This
//! module reads the body (refusing oversized ones before parsing), has the
//! signature verified, hands the body to the operation, and writes the
//! answer exactly as AWS KMS does: JSON, `x-amzn-RequestId` on every
//! response, and for errors `{"__type", "message"}` plus the
//! `X-Amzn-ErrorType` header that non-botocore SDKs read first. One audit
//! record per request goes to the `kmsgate::audit` log target.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use tracing::Instrument;

use crate::auth::{Authorizer, Principal, Verifier};
use crate::error::KmsError;
use crate::keystore::KeyStore;
use crate::ops::{self, Ctx};

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const TARGET_PREFIX: &str = "TrentService.";

/// What every request needs.
pub struct AppState {
    pub store: KeyStore,
    pub verifier: Verifier,
    pub authorizer: Authorizer,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(kms_request))
        .route("/ping", get(|| async { "ok" }))
        .with_state(state)
}

async fn kms_request(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("request", id = %request_id);
    async move {
        let started = Instant::now();
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(|t| t.strip_prefix(TARGET_PREFIX).unwrap_or(t).to_owned())
            .unwrap_or_default();
        let mut principal: Option<Principal> = None;
        let mut audit_key: Option<String> = None;
        let result = handle(&state, request, &operation, &mut principal, &mut audit_key).await;
        let (status, error) = match &result {
            Ok(_) => (StatusCode::OK, None),
            Err(e) => (e.status(), Some(e.type_name())),
        };
        tracing::info!(
            target: "kmsgate::audit",
            request_id = %request_id,
            principal = principal.as_ref().map(|p| p.name.as_str()).unwrap_or("-"),
            access_key_id = principal.as_ref().map(|p| p.access_key_id.as_str()).unwrap_or("-"),
            operation = %operation,
            key = audit_key.as_deref().unwrap_or("-"),
            status = status.as_u16(),
            error = error.unwrap_or("-"),
            micros = started.elapsed().as_micros() as u64,
        );
        respond(&request_id, result)
    }
    .instrument(span)
    .await
}

async fn handle(
    state: &AppState,
    request: Request,
    operation: &str,
    principal_out: &mut Option<Principal>,
    audit_key: &mut Option<String>,
) -> Result<Vec<u8>, KmsError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, &parts.headers, state.max_body_bytes).await?;
    let principal = state.verifier.verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        SystemTime::now(),
    )?;
    *principal_out = Some(principal.clone());
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !target.starts_with(TARGET_PREFIX) {
        return Err(KmsError::UnknownOperation);
    }
    if ops::ALL_OPERATIONS.contains(&operation) {
        state.authorizer.check(&principal, operation)?;
    }
    let mut ctx = Ctx {
        store: &state.store,
        principal: &principal,
        audit_key: None,
    };
    let result = ops::dispatch(&mut ctx, operation, &body).await;
    *audit_key = ctx.audit_key;
    result
}

/// Reads the body, refusing one larger than `limit` before it is parsed.
async fn read_body(body: Body, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, KmsError> {
    let too_large = || {
        KmsError::PayloadTooLarge(format!(
            "The request body is larger than the {limit}-byte limit."
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

fn respond(request_id: &str, result: Result<Vec<u8>, KmsError>) -> Response {
    let (status, body, error_type) = match result {
        Ok(body) => (StatusCode::OK, body, None),
        Err(e) => (e.status(), e.body(), Some(e.type_name())),
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(t) = error_type {
        h.insert("x-amzn-errortype", HeaderValue::from_static(t));
    }
    response
}
