//! The XKS proxy API on the wire (AWS KMS external key stores; docs/xks.md).
//!
//! A request whose path is `<prefix>/kms/xks/v1<rest>` is XKS and never
//! reaches the TrentService router: [`intercept`] sits in front of it and
//! parses the path itself (as sent: `//kms/xks/v1/...` is the root store,
//! and is signed that way). Then, in the spec's order:
//!
//! 1. the body, within the size limit and the body timeout, read before
//!    any answer (over HTTP/2 an answer before the body resets the stream,
//!    which curl reports instead of the answer);
//! 2. route: an unknown prefix or operation is InvalidUriPathException
//!    (404); a method other than POST is 405; then a body that could not be
//!    read is refused;
//! 3. from here on in a task of its own (DESIGN.md decision 22), so that a
//!    client's hang-up never drops a token job or its audit record:
//!    SigV4 ([`XksAuth::authenticate`], 401), mTLS (401), validation of
//!    the body (400), secondary authorization (403, never for health),
//!    the store's rate limit (429), then the operation ([`ops::xks`]);
//! 4. one audit record per request, accepted or refused, in the same
//!    chain as the TrentService requests, and the metrics.
//!
//! Every answer is JSON on one line; errors are
//! `{"errorName":..,"errorMessage":..}` with the spec's status.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use tracing::Instrument;

use super::AppState;
use super::authn::read_body;
use super::budget::BodyBudget;
use super::catch_panic::CatchPanic;
use crate::audit::XksEvent;
use crate::auth::xks::{RequestFacts, XksAuth, XksAuthError};
use crate::error::KmsError;
use crate::ops::xks::shapes::RequestMetadata;
use crate::ops::xks::{
    self as ops_xks, HealthCheck, Route, XksCtx, XksError, XksErrorName, XksOperation, XksStores,
    XksTrail,
};

/// What the XKS API needs: the stores and their keys, their credentials
/// and rules, the health check and the fleet size it reports.
pub struct Xks {
    pub auth: XksAuth,
    pub stores: XksStores,
    pub health: HealthCheck,
    /// `xksProxyFleetSize`: the worker processes of this gateway.
    pub fleet_size: usize,
}

/// Everything a request's record is made of, gathered as it goes.
#[derive(Default)]
struct Record {
    request_id: String,
    store: Option<String>,
    region: Option<String>,
    op: Option<XksOperation>,
    external_key_id: Option<String>,
    access_key_id: Option<String>,
    source_ip: Option<std::net::IpAddr>,
    user_agent: Option<String>,
    metadata: Option<RequestMetadata>,
    trail: XksTrail,
    denied_by_rule: Option<String>,
}

/// The layer in front of the TrentService router: XKS paths are answered
/// here, every other request goes on.
pub async fn intercept(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(xks) = state.xks.clone() else {
        return next.run(request).await;
    };
    let origin = super::audit::Origin::of(&request);
    let mut record = Record {
        request_id: uuid::Uuid::new_v4().to_string(),
        source_ip: origin.source_ip,
        user_agent: origin.user_agent,
        ..Record::default()
    };
    let routed = match xks.stores.route(request.uri().path()) {
        Route::NotXks => return next.run(request).await,
        Route::Invalid(store) => {
            record.store = store.map(|s| s.name.clone());
            record.region = store.map(|s| s.region.clone());
            None
        }
        Route::Op {
            store,
            op,
            external_key_id,
        } => {
            record.store = Some(store.name.clone());
            record.region = Some(store.region.clone());
            record.op = Some(op);
            record.external_key_id = external_key_id.map(str::to_owned);
            Some(op)
        }
    };
    let started = Instant::now();
    let span = tracing::info_span!("xks", id = %record.request_id);
    async move {
        // The body is read (within its limits) before any answer, a refusal
        // of the path or method too: over HTTP/2 an answer sent before the
        // request body is in makes hyper reset the stream, and curl reports
        // that reset (error 92) instead of the answer.
        let (parts, body) = request.into_parts();
        let body = read_body(
            body,
            &parts.headers,
            state.max_body_bytes,
            state.body_timeout,
            parts.extensions.get::<BodyBudget>(),
        )
        .await;
        let Some(op) = routed else {
            let e = XksError::new(
                XksErrorName::InvalidUriPath,
                "The URI path names no XKS key store or operation here.",
            );
            return finish(&state, record, Err(e), started).await;
        };
        if parts.method != Method::POST {
            let e = XksError::new(
                XksErrorName::MethodNotAllowed,
                "XKS proxy API requests are POST.",
            );
            let mut response = finish(&state, record, Err(e), started).await;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let body = match body {
            Ok(body) => body,
            Err(e) => return finish(&state, record, Err(body_error(e)), started).await,
        };
        let task = run_to_the_end(state.clone(), xks, record, op, parts, body, started);
        match state
            .detached
            .spawn(task.instrument(tracing::Span::current()))
            .await
        {
            Ok(response) => response,
            Err(e) => {
                tracing::error!(error = %e, "an XKS request's task failed");
                error_response(&XksError::new(XksErrorName::Internal, "Internal error."))
            }
        }
    }
    .instrument(span)
    .await
}

/// Authentication, validation, authorization, throttling and the
/// operation of a request whose body is in, then its record.
async fn run_to_the_end(
    state: Arc<AppState>,
    xks: Arc<Xks>,
    mut record: Record,
    op: XksOperation,
    parts: http::request::Parts,
    body: Bytes,
    started: Instant,
) -> Response {
    record.metadata = ops_xks::metadata_of(&body);
    let handled = CatchPanic::new(handle(&state, &xks, &mut record, op, &parts, &body)).await;
    let result = handled.unwrap_or_else(|panic| {
        tracing::error!(panic = %panic, "XKS request handler panicked");
        Err(XksError::new(XksErrorName::Internal, "Internal error."))
    });
    finish(&state, record, result, started).await
}

async fn handle(
    state: &AppState,
    xks: &Xks,
    record: &mut Record,
    op: XksOperation,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<zeroize::Zeroizing<Vec<u8>>, XksError> {
    let Some(store_name) = record.store.clone() else {
        return Err(XksError::new(XksErrorName::Internal, "No store."));
    };
    let access_key_id = xks
        .auth
        .authenticate(
            &store_name,
            &parts.method,
            &parts.uri,
            &parts.headers,
            body,
            SystemTime::now(),
        )
        .map_err(|e| auth_error(e, record))?;
    record.access_key_id = Some(access_key_id);
    xks.auth
        .check_client_cert(&store_name, client_chain(parts))
        .map_err(|e| auth_error(e, record))?;
    let request = ops_xks::parse(op, body)?;
    record.metadata = Some(request.metadata.clone());
    if op != XksOperation::Health {
        let m = &request.metadata;
        let facts = RequestFacts {
            aws_principal_arn: m.aws_principal_arn.as_deref(),
            kms_via_service: m.kms_via_service.as_deref(),
            kms_operation: m.kms_operation.as_deref(),
            aws_source_vpc: m.aws_source_vpc.as_deref(),
            aws_source_vpce: m.aws_source_vpce.as_deref(),
        };
        xks.auth
            .authorize(&store_name, &facts)
            .map_err(|e| auth_error(e, record))?;
    }
    xks.auth
        .throttle(&store_name)
        .map_err(|e| auth_error(e, record))?;
    // A request that could not be audited must not run.
    if state.audit.is_failing() {
        return Err(XksError::new(
            XksErrorName::Internal,
            "The audit log cannot be written. Retry the request.",
        ));
    }
    let Some(store) = xks.stores.stores().iter().find(|s| s.name == store_name) else {
        return Err(XksError::new(XksErrorName::Internal, "No store."));
    };
    let ctx = XksCtx {
        keys: &state.store,
        store,
        health: &xks.health,
        fleet_size: xks.fleet_size,
    };
    let external_key_id = record.external_key_id.clone();
    ops_xks::execute(
        &ctx,
        op,
        external_key_id.as_deref(),
        request,
        &mut record.trail,
    )
    .await
}

/// The TLS client certificate chain the connection presented, leaf
/// first ([`super::tls::ClientCert`]), for the store's mTLS check; `None`
/// over plain HTTP or without a certificate.
fn client_chain(
    parts: &http::request::Parts,
) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
    parts
        .extensions
        .get::<super::tls::ClientCert>()
        .map(|c| &*c.chain)
}

/// An authentication or authorization refusal as the spec names it; a
/// denial's rule goes into the record.
fn auth_error(e: XksAuthError, record: &mut Record) -> XksError {
    match e {
        XksAuthError::Signature(_) => XksError::new(
            XksErrorName::AuthenticationFailed,
            "The request signature is not valid for this key store.",
        ),
        XksAuthError::ClientCert(m) => XksError::new(XksErrorName::AuthenticationFailed, m),
        XksAuthError::Denied { rule } => {
            let e = XksError::new(
                XksErrorName::AccessDenied,
                format!("Denied by the key store's authorization rule '{rule}'."),
            );
            record.denied_by_rule = Some(rule);
            e
        }
        XksAuthError::Throttled => XksError::new(
            XksErrorName::Throttling,
            "The key store's request rate limit is reached.",
        ),
    }
}

/// A body that could not be read, as the spec names it.
fn body_error(e: KmsError) -> XksError {
    match e {
        KmsError::PayloadTooLarge(m) => XksError::new(XksErrorName::UnsupportedOperation, m),
        KmsError::RequestTimeout(m) => XksError::validation(m),
        KmsError::Throttling => XksError::new(
            XksErrorName::Throttling,
            "Too many request bodies are being read. Retry.",
        ),
        _ => XksError::validation("The request body could not be read."),
    }
}

/// Audits, counts and answers.
async fn finish(
    state: &AppState,
    record: Record,
    result: Result<zeroize::Zeroizing<Vec<u8>>, XksError>,
    started: Instant,
) -> Response {
    let error = result.as_ref().err();
    let m = record.metadata.as_ref();
    let key_id = record.trail.key_id.map(|id| id.to_string());
    let event = XksEvent {
        request_id: &record.request_id,
        operation: record.op.map_or("", XksOperation::name),
        store: record.store.as_deref(),
        region: record.region.as_deref(),
        access_key_id: record.access_key_id.as_deref(),
        source_ip: record.source_ip,
        user_agent: record.user_agent.as_deref(),
        external_key_id: record.external_key_id.as_deref(),
        kms_request_id: m.and_then(|m| m.kms_request_id.as_deref()),
        kms_operation: m.and_then(|m| m.kms_operation.as_deref()),
        aws_principal_arn: m.and_then(|m| m.aws_principal_arn.as_deref()),
        kms_key_arn: m.and_then(|m| m.kms_key_arn.as_deref()),
        kms_via_service: m.and_then(|m| m.kms_via_service.as_deref()),
        aws_source_vpc: m.and_then(|m| m.aws_source_vpc.as_deref()),
        aws_source_vpce: m.and_then(|m| m.aws_source_vpce.as_deref()),
        key_id,
        key_arn: record.trail.key_arn.as_deref(),
        key_version: record.trail.key_version,
        http_status: error.map_or(200, |e| e.status().as_u16()),
        error_code: error.map(XksError::error_name),
        error_message: error.map(|e| e.message.as_str()),
        denied_by_rule: record.denied_by_rule.as_deref(),
        started,
    };
    let audited = state.audit.commit_xks(&event).await;
    // Sync mode: an answer that changed something leaves only once its
    // record is on disk; a refusal keeps its answer.
    let result = match (result, audited) {
        (Ok(_), Err(_)) => Err(XksError::new(
            XksErrorName::Internal,
            "The audit log cannot be written. Retry the request.",
        )),
        (result, _) => result,
    };
    if crate::telemetry::enabled() {
        let outcome = result.as_ref().map_or_else(|e| e.error_name(), |_| "ok");
        crate::telemetry::xks_request(
            record.store.as_deref().unwrap_or("unknown"),
            record.op.map_or("unknown", XksOperation::label),
            outcome,
            started.elapsed(),
        );
    }
    match result {
        Ok(body) => json_response(StatusCode::OK, body.to_vec()),
        Err(e) => error_response(&e),
    }
}

fn error_response(e: &XksError) -> Response {
    json_response(e.status(), e.body().into_bytes())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Builds the XKS state from the config: `None` when no store is
/// configured (XKS paths are then the TrentService API's, which knows
/// none).
pub fn from_config(
    config: &crate::config::Config,
    fleet_size: usize,
) -> Result<Option<Arc<Xks>>, crate::config::ConfigError> {
    let stores = XksStores::from_config(config);
    if stores.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Xks {
        auth: XksAuth::for_workers(config, fleet_size)?,
        stores,
        health: HealthCheck::new(std::time::Duration::from_secs(config.xks.health_cache_secs)),
        fleet_size,
    })))
}
