//! The wire: AWS's JSON 1.1 protocol over HTTP.
//!
//! Every KMS request is `POST /` with the operation in `X-Amz-Target`. The
//! [`authn`] layer in front of it reads the body (refusing oversized or too
//! slow ones before parsing) and has the signature verified; the handler
//! here hands the verified body to the operation and writes the answer
//! exactly as AWS KMS does: JSON, `x-amzn-RequestId` on every response, and
//! for errors `{"__type", "message"}` plus the `X-Amzn-ErrorType` header
//! that non-botocore SDKs read first. One audit record per request goes to
//! the `kmsgate::audit` log target.
//!
//! Submodules: [`serve`] is the serving loop (connection limit, timeouts,
//! drain) and [`conn`] its book-keeping; [`authn`] is SigV4 as a layer;
//! [`refusal`] answers and audits what is refused before an operation runs;
//! `/healthz` and `/readyz` are here, unsigned and unaudited.

mod audit;
mod authn;
mod catch_panic;
mod conn;
mod fdlimit;
mod refusal;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};

use crate::auth::{Authorizer, Principal, Verifier};
use crate::error::{INTERNAL_FAILURE, KmsError};
use crate::keystore::KeyStore;
use crate::ops::{self, Ctx};

use audit::Audit;
use authn::{Authenticated, RequestInfo};
use catch_panic::CatchPanic;

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const TARGET_PREFIX: &str = "TrentService.";

/// The environment variable naming an operation that panics before it
/// runs: a test hook for the panic handling, inert unless set.
pub const TEST_PANIC_ENV: &str = "KMSGATE_TEST_PANIC_OPERATION";

/// What every request needs.
pub struct AppState {
    pub store: KeyStore,
    pub verifier: Verifier,
    pub authorizer: Authorizer,
    pub max_body_bytes: usize,
    /// Request line plus headers larger than this are refused (431).
    pub max_header_bytes: usize,
    /// Time allowed for reading the body once the head is in.
    pub body_timeout: Duration,
    /// Set only by [`TEST_PANIC_ENV`]: this operation panics.
    pub panic_operation: Option<String>,
}

/// The operation a test asks to panic, from [`TEST_PANIC_ENV`]; warns when
/// it is set.
pub fn test_panic_from_env() -> Option<String> {
    let op = std::env::var(TEST_PANIC_ENV)
        .ok()
        .filter(|v| !v.is_empty())?;
    tracing::warn!(
        operation = %op,
        "{TEST_PANIC_ENV} is set: this operation panics (a test hook; never set it in production)"
    );
    Some(op)
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/",
            post(kms_request).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authn::authenticate,
            )),
        )
        .route("/ping", get(|| async { "ok" }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(refusal::unknown_path)
        .method_not_allowed_fallback(refusal::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refusal::check_head,
        ))
        .with_state(state)
}

/// The process is up and serving HTTP.
async fn healthz() -> Response {
    probe(StatusCode::OK, "ok")
}

/// The token is usable: 200, or 503 while it is not.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.store.is_ready() {
        probe(StatusCode::OK, "ready")
    } else {
        probe(StatusCode::SERVICE_UNAVAILABLE, "token unavailable")
    }
}

fn probe(status: StatusCode, text: &'static str) -> Response {
    let body = serde_json::json!({ "status": text }).to_string();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The operation named by `X-Amz-Target`, without the service prefix.
fn operation_of(headers: &http::HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.strip_prefix(TARGET_PREFIX).unwrap_or(t).to_owned())
        .unwrap_or_default()
}

/// A request the [`authn`] layer let through: the operation runs with the
/// verified principal and body.
async fn kms_request(State(state): State<Arc<AppState>>, mut request: Request) -> Response {
    let extensions = request.extensions_mut();
    let (Some(info), Some(authenticated)) = (
        extensions.remove::<RequestInfo>(),
        extensions.remove::<Authenticated>(),
    ) else {
        // Only a router built without the layer gets here.
        tracing::error!("a KMS request reached its handler without the SigV4 layer");
        return RequestInfo::new(request.headers())
            .refuse(None, &KmsError::Internal(INTERNAL_FAILURE.to_owned()));
    };
    let principal = authenticated.principal;
    let operation = info.operation.as_str();
    let mut audit_key: Option<String> = None;
    let handled = CatchPanic::new(handle(
        &state,
        request.headers(),
        operation,
        &principal,
        &authenticated.body,
        &mut audit_key,
    ))
    .await;
    let result = handled.unwrap_or_else(|panic| {
        tracing::error!(operation = %operation, panic = %panic, "request handler panicked");
        Err(KmsError::Internal(INTERNAL_FAILURE.to_owned()))
    });
    let (status, error) = match &result {
        Ok(_) => (StatusCode::OK, None),
        Err(e) => (e.status(), Some(e.type_name())),
    };
    Audit {
        request_id: &info.request_id,
        principal: Some(principal.name.as_str()),
        access_key_id: Some(principal.access_key_id.as_str()),
        operation,
        key: audit_key.as_deref(),
        status: status.as_u16(),
        error,
        started: info.started,
    }
    .write();
    match result {
        Ok(body) => success_response(&info.request_id, body),
        Err(e) => error_response(&info.request_id, e.status(), &e),
    }
}

async fn handle(
    state: &AppState,
    headers: &http::HeaderMap,
    operation: &str,
    principal: &Principal,
    body: &[u8],
    audit_key: &mut Option<String>,
) -> Result<Vec<u8>, KmsError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !target.starts_with(TARGET_PREFIX) {
        return Err(KmsError::UnknownOperation);
    }
    if ops::ALL_OPERATIONS.contains(&operation) {
        state.authorizer.check(principal, operation)?;
    }
    if state.panic_operation.as_deref() == Some(operation) {
        panic!("{TEST_PANIC_ENV} names {operation}");
    }
    let mut ctx = Ctx {
        store: &state.store,
        principal,
        audit_key: None,
    };
    let result = ops::dispatch(&mut ctx, operation, body).await;
    *audit_key = ctx.audit_key;
    result
}

fn success_response(request_id: &str, body: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    set_protocol_headers(&mut response, request_id, None);
    response
}

/// An error answer: `status`, the JSON error body, the protocol headers.
/// After a body timeout the connection is closed as well (the rest of the
/// body may still be on its way).
fn error_response(request_id: &str, status: StatusCode, error: &KmsError) -> Response {
    let mut response = (status, error.body()).into_response();
    set_protocol_headers(&mut response, request_id, Some(error.type_name()));
    if matches!(error, KmsError::RequestTimeout(_)) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn set_protocol_headers(
    response: &mut Response,
    request_id: &str,
    error_type: Option<&'static str>,
) {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(t) = error_type {
        h.insert("x-amzn-errortype", HeaderValue::from_static(t));
    }
}
