//! SigV4 as a layer in front of the operations.
//!
//! [`authenticate`] runs on `POST /` before the handler: it gives the
//! request its id, reads the body (refusing one over the size limit or
//! slower than the body timeout), has the signature verified over it, and
//! hands both on as request extensions: [`RequestInfo`] and
//! [`Authenticated`] (the verified principal and the body bytes the
//! signature covers). The handler takes them from there and never sees an
//! unauthenticated request. A refused request is answered here, AWS-shaped
//! with its `x-amzn-RequestId`, and audited with the operation it named.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;
use http::request::Parts;
use tracing::Instrument;

use super::audit::{Origin, Trail, event};
use super::budget::{BodyBudget, WAIT};
use super::catch_panic::CatchPanic;
use super::{AppState, error_response};
use crate::auth::Principal;
use crate::error::{INTERNAL_FAILURE, KmsError};
use crate::telemetry::{self, Timeout};

/// Who a request is for the audit log: its id, when it came in, and the
/// operation its `X-Amz-Target` names (signed or not).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: String,
    pub started: Instant,
    /// The operation, source address and user agent, for the record.
    pub origin: Origin,
}

/// A request whose signature was verified: who signed it, and the body the
/// signature covers.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub body: Bytes,
}

impl RequestInfo {
    pub(super) fn new(request: &Request) -> RequestInfo {
        RequestInfo {
            request_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            origin: Origin::of(request),
        }
    }

    /// Answers `error` once the audit record of the request is written
    /// (with what `trail` learned: the body, if it was read). The request
    /// ran nothing, so it keeps its answer even if the record cannot be
    /// written.
    pub async fn refuse(&self, state: &AppState, trail: &Trail, error: KmsError) -> Response {
        let result = Err(error);
        let record = event(&self.request_id, &self.origin, trail, &result, self.started);
        let _ = state.audit.commit(&record).await;
        super::count_request(&self.origin.operation, &result, self.started);
        let Err(error) = result else {
            unreachable!("a refusal is an error")
        };
        error_response(&self.request_id, error.status(), &error)
    }
}

/// The layer: reads and verifies, then runs the handler with the
/// request's [`RequestInfo`] and [`Authenticated`] in its extensions.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let info = RequestInfo::new(&request);
    let span = tracing::info_span!("request", id = %info.request_id);
    async move {
        let (mut parts, body) = request.into_parts();
        let mut trail = Trail::default();
        let verified = CatchPanic::new(read_and_verify(&state, &parts, body, &mut trail))
            .await
            .unwrap_or_else(|panic| {
                tracing::error!(operation = %info.origin.operation, panic = %panic, "SigV4 verification panicked");
                Err(KmsError::Internal(INTERNAL_FAILURE.to_owned()))
            });
        match verified {
            Ok(authenticated) => {
                parts.extensions.insert(info);
                parts.extensions.insert(authenticated);
                next.run(Request::from_parts(parts, Body::empty())).await
            }
            Err(e) => info.refuse(&state, &trail, e).await,
        }
    }
    .instrument(span)
    .await
}

async fn read_and_verify(
    state: &AppState,
    parts: &Parts,
    body: Body,
    trail: &mut Trail,
) -> Result<Authenticated, KmsError> {
    let body = read_body(
        body,
        &parts.headers,
        state.max_body_bytes,
        state.body_timeout,
        parts.extensions.get::<BodyBudget>(),
    )
    .await?;
    trail.body = Some(body.clone());
    let principal = state.verifier.verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        SystemTime::now(),
    )?;
    Ok(Authenticated { principal, body })
}

/// Reads the body, refusing one larger than `limit` before it is parsed,
/// and one that does not arrive within `timeout`. With a `budget` (the
/// serving loop gives every request one), the declared body is reserved
/// from it first; a request that cannot reserve it is refused with
/// ThrottlingException without reading any of it.
pub(super) async fn read_body(
    mut body: Body,
    headers: &http::HeaderMap,
    limit: usize,
    timeout: Duration,
    budget: Option<&BodyBudget>,
) -> Result<Bytes, KmsError> {
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
    let expected = declared.unwrap_or(limit);
    let deadline = tokio::time::Instant::now() + timeout;
    let _reserved = match budget {
        Some(budget) => match budget.reserve(expected, timeout.min(WAIT)).await {
            Some(reserved) => Some(reserved),
            None => {
                tracing::debug!(
                    bytes = expected,
                    "no budget for a request body before authentication: refused"
                );
                return Err(KmsError::Throttling);
            }
        },
        None => None,
    };
    // Copied out of the frames: a frame's bytes may share (and so pin) a
    // larger buffer of the connection's.
    let mut bytes = Vec::with_capacity(expected);
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, frame).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if bytes.len() + data.len() > expected {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(data);
                }
            }
            Ok(Some(Err(_))) => return Err(too_large()),
            Err(_) => {
                telemetry::timed_out(Timeout::RequestBody);
                return Err(KmsError::RequestTimeout(format!(
                    "The request body was not received within {} ms.",
                    timeout.as_millis()
                )));
            }
        }
    }
    Ok(Bytes::from(bytes))
}
