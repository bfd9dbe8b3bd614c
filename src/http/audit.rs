//! The HTTP side of the audit trail ([`crate::audit`]): what a request's
//! record is made of, gathered as the request goes.
//!
//! KMS requests, and the requests the HTTP layer refuses before any
//! operation runs, write the same fields, so one query over the audit log
//! sees every request a client made.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use http::header;

use super::operation_of;
use crate::audit::{Event, Identity};
use crate::auth::Principal;
use crate::error::KmsError;

/// What the head of a request says, taken before the request is consumed.
#[derive(Debug, Clone)]
pub struct Origin {
    pub operation: String,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Origin {
    pub fn of(request: &Request) -> Origin {
        Origin {
            operation: operation_of(request.headers()),
            source_ip: request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            user_agent: request
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// What a request's handling learns for its record.
#[derive(Default)]
pub struct Trail {
    pub principal: Option<Principal>,
    pub body: Option<Bytes>,
    pub key: Option<String>,
    pub key_version: Option<u32>,
}

/// The record of a request answered with `result`.
pub fn event<'a>(
    request_id: &'a str,
    origin: &'a Origin,
    trail: &'a Trail,
    result: &'a Result<Vec<u8>, KmsError>,
    started: Instant,
) -> Event<'a> {
    let error = result.as_ref().err();
    Event {
        request_id,
        operation: &origin.operation,
        identity: trail.principal.as_ref().map(|p| Identity {
            name: &p.name,
            access_key_id: &p.access_key_id,
        }),
        source_ip: origin.source_ip,
        user_agent: origin.user_agent.as_deref(),
        request_body: trail.body.as_deref(),
        response_body: result.as_ref().ok().map(Vec::as_slice),
        key_arn: trail.key.as_deref(),
        key_version: trail.key_version,
        http_status: error.map_or(200, |e| e.status().as_u16()),
        error_code: error.map(KmsError::type_name),
        error_message: error.and_then(KmsError::message),
        started,
    }
}
