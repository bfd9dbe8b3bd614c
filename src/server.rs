//! Start-up and shutdown: config in, a listening gateway out.
//!
//! The listener and the shutdown signal are passed in, so the binary, the
//! benchmark and tests all start the gateway the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::arn::Realm;
use crate::auth::{Authorizer, Credential, Verifier};
use crate::config::{Config, read_secret};
use crate::hsm::{Hsm, HsmSettings};
use crate::http::{AppState, router};
use crate::keystore::{KeyPolicy, KeyStore, clock};

pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// The token settings of `config`, with the user PIN read from its file or
/// environment variable. Shared by [`build`] and `kmsgate bench-token`.
pub fn hsm_settings(config: &Config) -> Result<HsmSettings, StartError> {
    let pin = read_secret(
        config.hsm.pin_file.as_deref(),
        config.hsm.pin_env.as_deref(),
    )?;
    Ok(HsmSettings {
        module: config.hsm.module.clone(),
        token_label: config.hsm.token_label.clone(),
        pin,
        sessions: config.hsm.sessions,
        queue_depth: config.hsm.queue_depth,
        queue_timeout: Duration::from_millis(config.hsm.queue_timeout_ms),
        call_timeout: Duration::from_millis(config.hsm.call_timeout_ms),
        iv_source: config.hsm.iv_source,
        use_wrap_when_available: config.hsm.use_wrap_when_available,
        read_back: config.hsm.read_back,
    })
}

/// Opens the token, loads the key store and prepares the verifier.
pub async fn build(config: &Config) -> Result<(Arc<AppState>, Arc<Hsm>), StartError> {
    let settings = hsm_settings(config)?;
    let mut credentials = Vec::with_capacity(config.auth.credentials.len());
    let mut authorizer = Authorizer::new(&config.partition, &config.account_id);
    for c in &config.auth.credentials {
        if let Some(allow) = &c.allow {
            authorizer
                .restrict(&c.access_key_id, allow)
                .map_err(|e| format!("credential {}: {e}", c.access_key_id))?;
        }
        credentials.push(Credential {
            access_key_id: c.access_key_id.clone(),
            secret: read_secret(c.secret_file.as_deref(), c.secret_env.as_deref())?,
            principal: c
                .principal
                .clone()
                .unwrap_or_else(|| c.access_key_id.clone()),
        });
    }
    let verifier = Verifier::new(
        credentials,
        config.region.clone(),
        Duration::from_secs(config.auth.max_clock_skew_secs),
        config.auth.allow_anonymous,
    );
    if config.auth.allow_anonymous {
        tracing::warn!("allow_anonymous is set: unsigned requests are accepted");
    }

    let hsm = Arc::new(tokio::task::spawn_blocking(move || Hsm::open(settings)).await??);
    let realm = Realm {
        partition: config.partition.clone(),
        region: config.region.clone(),
        account_id: config.account_id.clone(),
    };
    let policy = KeyPolicy {
        gcm_usage_bound: config.keys.gcm_usage_bound,
        gcm_reserve_block: config.keys.gcm_reserve_block,
        max_on_demand_rotations: config.keys.max_on_demand_rotations,
    };
    let store = KeyStore::load(hsm.clone(), realm, policy, clock::from_env()).await?;
    let state = Arc::new(AppState {
        store,
        verifier,
        authorizer,
        max_body_bytes: config.max_body_bytes,
    });
    Ok((state, hsm))
}

/// Starts the background work every gateway does: the sync with the shared
/// token and the scheduler of rotations and deletions. Abort the handles to
/// stop them.
pub fn spawn_background(
    state: Arc<AppState>,
    sync_interval: Duration,
    scheduler_interval: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sync_state = state.clone();
    let sync = tokio::spawn(async move {
        let mut tick = tokio::time::interval(sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sync_state.store.sync_once().await {
                tracing::warn!(error = %e, "sync with the token failed");
            }
        }
    });
    let scheduler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(scheduler_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.store.run_due().await {
                Ok(r) if !(r.rotated.is_empty() && r.deleted.is_empty()) => {
                    tracing::info!(rotated = ?r.rotated, deleted = ?r.deleted, "scheduled work done");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduled work failed"),
            }
        }
    });
    vec![sync, scheduler]
}

/// Serves until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
