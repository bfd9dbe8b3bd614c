//! Requests refused before any operation runs: a wrong path or method, a
//! head larger than the limit, HTTP that hyper's parser rejects. They are
//! answered (where we write the answer) and audited like KMS requests.
//!
//! The exception for a wrong path or method is `UnknownOperationException`:
//! it is what AWS's JSON front end calls a request it cannot route to an
//! operation (the same name kmsgate already sends for an unknown
//! `X-Amz-Target`), and the SDKs treat it as a non-retryable client fault.
//! The HTTP status stays the one HTTP gives these cases (404, 405 with
//! `Allow: POST`), so plain HTTP tools still see what happened.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use super::audit::{Origin, Trail, event};
use super::{AppState, error_response};
use crate::audit::{AuditLog, Event};
use crate::error::KmsError;

/// Answers `error` with `status` once its audit record is written. The
/// request ran nothing, so it keeps its answer even if the record cannot
/// be written.
async fn refuse(
    state: &AppState,
    origin: Origin,
    status: StatusCode,
    error: KmsError,
    started: Instant,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let trail = Trail::default();
    let result = Err(error);
    let mut record = event(&request_id, &origin, &trail, &result, started);
    record.http_status = status.as_u16();
    let _ = state.audit.commit(&record).await;
    super::count_request(&origin.operation, &result, started);
    let Err(error) = result else {
        unreachable!("a refusal is an error")
    };
    error_response(&request_id, status, &error)
}

/// Reads (and drops) the body of a request about to be refused, within
/// the body limits: over HTTP/2 an answer sent before the request body is
/// in makes hyper reset the stream, and a client such as curl then reports
/// the reset (error 92) instead of the answer. A body that cannot be read
/// changes nothing: the refusal is the answer either way.
async fn drain(state: &AppState, request: Request) {
    let (parts, body) = request.into_parts();
    let _ = super::authn::read_body(
        body,
        &parts.headers,
        state.max_body_bytes,
        state.body_timeout,
        parts.extensions.get::<super::budget::BodyBudget>(),
    )
    .await;
}

/// Any path but the ones routed: 404 UnknownOperationException.
pub async fn unknown_path(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let origin = Origin::of(&request);
    drain(&state, request).await;
    refuse(
        &state,
        origin,
        StatusCode::NOT_FOUND,
        KmsError::UnknownOperation,
        started,
    )
    .await
}

/// A routed path with the wrong method (`GET /`): 405
/// UnknownOperationException.
pub async fn wrong_method(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let origin = Origin::of(&request);
    let allow = if request.uri().path() == "/" {
        "POST"
    } else {
        "GET"
    };
    drain(&state, request).await;
    let mut response = refuse(
        &state,
        origin,
        StatusCode::METHOD_NOT_ALLOWED,
        KmsError::UnknownOperation,
        started,
    )
    .await;
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Refuses a request whose line and headers together exceed
/// `max_header_bytes`: 431 RequestEntityTooLargeException, the name kmsgate
/// also gives an oversized body (a client fault the SDKs do not retry).
/// hyper's own parser limit is set above ours, so that only heads far past
/// the limit meet hyper's empty-bodied 431.
pub async fn check_head(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.max_header_bytes;
    if head_size(&request) > limit {
        return refuse(
            &state,
            Origin::of(&request),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            KmsError::PayloadTooLarge(format!(
                "The request headers are larger than the {limit}-byte limit."
            )),
            Instant::now(),
        )
        .await;
    }
    next.run(request).await
}

/// The size of the request line and headers as sent in HTTP/1.1.
fn head_size(request: &Request) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n ".len();
    request.headers().iter().fold(line, |n, (k, v)| {
        n + k.as_str().len() + v.len() + ": \r\n".len()
    })
}

/// Audits a request that hyper's parser refused (it answers 400, 414 or 431
/// itself, with an empty body and no request id).
pub fn parse_refused(audit: &AuditLog, error: &hyper::Error, peer: std::net::SocketAddr) {
    let status = if error.is_parse_too_large() {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(%peer, %error, "malformed HTTP request refused");
    if crate::telemetry::enabled() {
        crate::telemetry::request("unknown", HTTP_PARSE_ERROR, std::time::Duration::ZERO);
    }
    audit.submit(&Event {
        request_id: &request_id,
        operation: "",
        identity: None,
        source_ip: Some(peer.ip()),
        user_agent: None,
        request_body: None,
        response_body: None,
        key_arn: None,
        key_version: None,
        http_status: status.as_u16(),
        error_code: Some(HTTP_PARSE_ERROR),
        error_message: None,
        started: Instant::now(),
    });
}

/// The `errorCode` of the audit record of a request hyper's parser
/// refused. Not an exception name: the client got no JSON body.
pub const HTTP_PARSE_ERROR: &str = "MalformedHttpRequest";
