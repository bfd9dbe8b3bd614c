//! The Prometheus endpoint: `GET /metrics` on a listener of its own
//! (`[metrics] listen`), plain HTTP, unauthenticated and unaudited, so it
//! belongs on an address only the monitoring system reaches. What it
//! serves comes from [`crate::telemetry`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};

use super::AppState;
use crate::telemetry;

/// The text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// This process's metrics: the gauges read at scrape time (readiness,
/// the token queue, GCM usage) are set first.
pub fn render(state: &AppState) -> String {
    telemetry::health(state.store.is_ready(), state.store.token_healthy());
    telemetry::token_queued(state.store.token_queued());
    match state.store.gcm_usage() {
        Ok((bound, usage)) => telemetry::gcm_usage(bound, &usage),
        Err(e) => tracing::warn!(error = %e, "metrics: GCM usage not readable"),
    }
    telemetry::render()
}

/// What produces the exposition on each scrape.
pub type Source = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Binds `addr` for the endpoint (at start-up, so a taken port fails it).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(metrics = %local, "metrics endpoint listening");
    }
    Ok(listener)
}

/// Serves `source` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, source: Source) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move { exposition(source().await) }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

fn exposition(text: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}
