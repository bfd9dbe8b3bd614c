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
//! drain) and [`conn`] its book-keeping; [`tls`] its TLS configuration
//! (reloadable, optionally with client certificates); [`authn`] is SigV4
//! as a layer, reading bodies within the [`budget`] of what
//! unauthenticated clients may make the gateway hold; [`refusal`] answers and audits what is refused before an
//! operation runs; [`xks`] answers the XKS proxy API (AWS KMS external key
//! stores) in front of the TrentService routes; `/healthz` and `/readyz`
//! are here, unsigned and unaudited.

mod audit;
mod authn;
mod budget;
mod catch_panic;
mod conn;
mod fdlimit;
pub mod metrics;
mod refusal;
pub mod serve;
pub mod tls;
pub mod xks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};

use crate::audit::{AuditLog, Unaudited};
use crate::auth::{Authorizer, Verifier};
use crate::error::{AUDIT_UNAVAILABLE, INTERNAL_FAILURE, KmsError};
use crate::keystore::KeyStore;
use crate::ops::authorize::Caller;
use crate::ops::{self, Ctx, Operation};

use audit::Trail;
use authn::{Authenticated, RequestInfo};
use catch_panic::CatchPanic;

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const TARGET_PREFIX: &str = "TrentService.";

/// The environment variable naming an operation that panics before it
/// runs: a test hook for the panic handling, inert unless set, and read only
/// by builds with the `test-hooks` cargo feature.
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
    /// The TLS client certificate's subject CN must name the principal
    /// that signed the request (`tls.client_cert_principal`).
    pub client_cert_principal: bool,
    /// Set only by [`TEST_PANIC_ENV`]: this operation panics.
    pub panic_operation: Option<String>,
    /// Where every request's record goes ([`crate::audit`]).
    pub audit: Arc<AuditLog>,
    /// Authenticated requests, each running to its end in a task of its
    /// own (DESIGN.md decision 22): hyper runs a handler inside its
    /// connection's future, which a half-close, an HTTP/2 RST_STREAM or the
    /// shutdown's cut drops while a token job already handed to the pool
    /// runs on. Shutdown waits for these tasks before the token and the
    /// audit log close.
    pub detached: tokio_util::task::TaskTracker,
    /// The XKS proxy API (`[xks]`), if any store is configured.
    pub xks: Option<Arc<xks::Xks>>,
}

/// The operation a test asks to panic, from [`TEST_PANIC_ENV`]; warns when
/// it is set. Without the `test-hooks` feature: none, and the variable is
/// never read.
#[cfg(not(feature = "test-hooks"))]
pub fn test_panic_from_env() -> Option<String> {
    None
}

/// The operation a test asks to panic, from [`TEST_PANIC_ENV`]; warns when
/// it is set.
#[cfg(feature = "test-hooks")]
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
        // XKS paths are answered before the TrentService routes see them
        // (axum's router does not match `//kms/...`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            xks::intercept,
        ))
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

/// The token is usable: 200, or 503 while it is not (saying so when the
/// token refused the PIN, which only the operator can fix).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.store.is_ready() {
        probe(StatusCode::OK, "ready")
    } else if let Some(code) = state.store.pin_refused() {
        probe(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the token refused the PIN ({code}); fix it and send SIGHUP"),
        )
    } else {
        probe(StatusCode::SERVICE_UNAVAILABLE, "token unavailable")
    }
}

fn probe(status: StatusCode, text: &str) -> Response {
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

/// Counts a KMS request answered with `result` (`kmsgate_requests_total`
/// and its latency). An operation kmsgate does not know counts as
/// `unknown`, so clients cannot grow the label set.
fn count_request<T>(operation: &str, result: &Result<T, KmsError>, started: std::time::Instant) {
    if !crate::telemetry::enabled() {
        return;
    }
    let operation = Operation::from_name(operation).map_or("unknown", Operation::name);
    let outcome = result.as_ref().map_or_else(KmsError::type_name, |_| "ok");
    crate::telemetry::request(operation, outcome, started.elapsed());
}

/// A request the [`authn`] layer let through: the operation runs with the
/// verified principal and body, and the response waits for its audit
/// record (in sync mode, until it is on disk).
///
/// From here on the request may change the token, so the operation and its
/// record run in a task of their own ([`AppState::detached`]): a client that hangs up
/// or resets the stream, or the shutdown's cut, drops only this future,
/// never the write, its record, the cache update or the announcement.
async fn kms_request(State(state): State<Arc<AppState>>, mut request: Request) -> Response {
    let extensions = request.extensions_mut();
    let (Some(info), Some(authenticated)) = (
        extensions.remove::<RequestInfo>(),
        extensions.remove::<Authenticated>(),
    ) else {
        // Only a router built without the layer gets here.
        tracing::error!("a KMS request reached its handler without the SigV4 layer");
        return RequestInfo::new(&request)
            .refuse(
                &state,
                &Trail::default(),
                KmsError::Internal(INTERNAL_FAILURE.to_owned()),
            )
            .await;
    };
    let cert = request.extensions().get::<tls::ClientCert>().cloned();
    let headers = request.headers().clone();
    let request_id = info.request_id.clone();
    let span = tracing::Span::current();
    let running = state.detached.spawn(tracing::Instrument::instrument(
        run_to_the_end(state.clone(), info, authenticated, cert, headers),
        span,
    ));
    match running.await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "a request's task failed");
            let e = KmsError::Internal(INTERNAL_FAILURE.to_owned());
            error_response(&request_id, e.status(), &e)
        }
    }
}

/// The operation of an authenticated request and its audit record.
async fn run_to_the_end(
    state: Arc<AppState>,
    info: RequestInfo,
    authenticated: Authenticated,
    cert: Option<tls::ClientCert>,
    headers: http::HeaderMap,
) -> Response {
    let Authenticated { principal, body } = authenticated;
    let operation = info.origin.operation.as_str();
    let mut trail = Trail {
        principal: Some(principal),
        body: Some(body),
        ..Trail::default()
    };
    let handled = CatchPanic::new(handle(
        &state,
        cert.as_ref(),
        &headers,
        operation,
        &mut trail,
    ))
    .await;
    let result = handled.unwrap_or_else(|panic| {
        tracing::error!(operation = %operation, panic = %panic, "request handler panicked");
        Err(KmsError::Internal(INTERNAL_FAILURE.to_owned()))
    });
    let record = audit::event(
        &info.request_id,
        &info.origin,
        &trail,
        &result,
        info.started,
    );
    // Sync mode: answered only once the record is on disk.
    let result = match state.audit.commit(&record).await {
        Ok(()) => result,
        Err(Unaudited) => Err(KmsError::Internal(AUDIT_UNAVAILABLE.to_owned())),
    };
    count_request(operation, &result, info.started);
    match result {
        Ok(body) => success_response(&info.request_id, body),
        Err(e) => error_response(&info.request_id, e.status(), &e),
    }
}

async fn handle(
    state: &AppState,
    cert: Option<&tls::ClientCert>,
    headers: &http::HeaderMap,
    operation: &str,
    trail: &mut Trail,
) -> Result<Vec<u8>, KmsError> {
    let (Some(principal), Some(body)) = (trail.principal.clone(), trail.body.clone()) else {
        return Err(KmsError::Internal(INTERNAL_FAILURE.to_owned()));
    };
    if state.client_cert_principal {
        check_client_cert(cert, &principal)?;
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !target.starts_with(TARGET_PREFIX) {
        return Err(KmsError::UnknownOperation);
    }
    let Some(op) = Operation::from_name(operation) else {
        return Err(KmsError::UnknownOperation);
    };
    // Operations on no key are decided by identity policies here; the
    // others against their key, in `ops`, once the key is known.
    if op.is_keyless() {
        state.authorizer.check(&principal, operation).map_err(|d| {
            crate::error::access_denied(&d.principal_arn, &d.action, None, d.refusal)
        })?;
    }
    // A request that could not be audited must not run.
    if state.audit.is_failing() {
        return Err(KmsError::Internal(AUDIT_UNAVAILABLE.to_owned()));
    }
    if state.panic_operation.as_deref() == Some(operation) {
        panic!("{TEST_PANIC_ENV} names {operation}");
    }
    let caller = Caller {
        arn: state.authorizer.principal_arn(&principal),
        account: state.authorizer.account_id().to_owned(),
        identity: state.authorizer.identity(&principal),
        facts: state.authorizer.base_facts(&principal),
    };
    let mut ctx = Ctx {
        store: &state.store,
        principal: &principal,
        caller: &caller,
        audit_key: None,
        audit_version: None,
    };
    let result = ops::dispatch(&mut ctx, op, &body).await;
    trail.key = ctx.audit_key;
    trail.key_version = ctx.audit_version;
    result
}

/// The second factor: the verified client certificate names the principal
/// the signature proved.
fn check_client_cert(
    cert: Option<&tls::ClientCert>,
    principal: &crate::auth::Principal,
) -> Result<(), KmsError> {
    let cn = cert.and_then(|c| c.subject_cn.as_deref());
    if cn == Some(principal.name.as_str()) {
        Ok(())
    } else {
        Err(crate::error::client_cert_mismatch(&principal.name))
    }
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
