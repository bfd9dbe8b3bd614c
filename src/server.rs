//! Start-up and shutdown: config in, a listening gateway out.
//!
//! The listener and the shutdown signal are passed in, so the binary, the
//! benchmark and tests all start the gateway the same way.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::arn::Realm;
use crate::audit::{AuditConfig, AuditLog};
use crate::auth::{Authorizer, Credential, Verifier};
use crate::config::{Config, read_secret};
use crate::hsm::{Hsm, HsmSettings};
use crate::http::serve::{Drained, ServeSettings};
use crate::http::tls::{Tls, TlsFiles};
use crate::http::{AppState, router, test_panic_from_env};
use crate::keystore::events::{EventSink, Recording, RotationReason, ServiceEvent};
use crate::keystore::peers::PeerChanges;
use crate::keystore::{KeyPolicy, KeyStore, clock};

pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// How long shutdown waits for requests whose connection was cut to finish
/// their token work and records: longer than any token call may take.
const DETACHED_LIMIT: Duration = Duration::from_secs(60);

/// The token settings of `config`, with the user PIN read from its file or
/// environment variable. Shared by [`build`] and `kmsgate bench-token`.
pub fn hsm_settings(config: &Config) -> Result<HsmSettings, StartError> {
    Ok(hsm_settings_with_pin(config, user_pin(config)?))
}

/// The user PIN, from `hsm.pin_file` or `hsm.pin_env`.
pub fn user_pin(config: &Config) -> Result<SecretString, StartError> {
    Ok(read_secret(
        config.hsm.pin_file.as_deref(),
        config.hsm.pin_env.as_deref(),
    )?)
}

/// The token settings of `config` with a PIN read already (a worker
/// process gets it from its supervisor).
pub fn hsm_settings_with_pin(config: &Config, pin: SecretString) -> HsmSettings {
    HsmSettings {
        module: config.hsm.module.clone(),
        token: config.hsm.token(),
        pin,
        sessions: config.hsm.sessions,
        queue_depth: config.hsm.queue_depth,
        queue_timeout: Duration::from_millis(config.hsm.queue_timeout_ms),
        call_timeout: Duration::from_millis(config.hsm.call_timeout_ms),
        iv_source: config.hsm.iv_source,
        use_wrap_when_available: config.hsm.use_wrap_when_available,
        read_back: config.hsm.read_back,
        secret_env: config.secret_env(),
        random_block_bytes: config.hsm.random_block_bytes,
        pin_marker: None,
    }
}

/// The SigV4 verifier with every credential's secret read.
pub fn verifier(config: &Config) -> Result<Verifier, StartError> {
    let mut credentials = Vec::with_capacity(config.auth.credentials.len());
    for c in &config.auth.credentials {
        credentials.push(Credential {
            access_key_id: c.access_key_id.clone(),
            secret: read_secret(c.secret_file.as_deref(), c.secret_env.as_deref())?,
            principal: c.principal_name().to_owned(),
        });
    }
    Ok(Verifier::new(
        credentials,
        config.region.clone(),
        Duration::from_secs(config.auth.max_clock_skew_secs),
        config.auth.allow_anonymous,
    )
    .allow_presigned_urls(config.auth.allow_presigned_urls))
}

/// The identity policies of every principal: `[[auth.principals]]`
/// documents (inline and from files) and the credentials' `allow` lists.
pub fn authorizer(config: &Config) -> Result<Authorizer, StartError> {
    let mut authorizer = Authorizer::new(&config.partition, &config.account_id);
    for p in &config.auth.principals {
        authorizer.declare(&p.name);
        for (i, doc) in p.policies.iter().enumerate() {
            authorizer
                .attach(&p.name, doc)
                .map_err(|e| format!("principal {}: policy {}: {e}", p.name, i + 1))?;
        }
        for path in &p.policy_files {
            let doc = std::fs::read_to_string(path).map_err(|e| {
                format!("principal {}: cannot read {}: {e}", p.name, path.display())
            })?;
            authorizer
                .attach(&p.name, &doc)
                .map_err(|e| format!("principal {}: {}: {e}", p.name, path.display()))?;
        }
    }
    // Credentials of one principal share one allow list (checked by the
    // config), so each principal's list is attached once.
    let mut attached = std::collections::HashSet::new();
    for c in &config.auth.credentials {
        let name = c.principal_name();
        if let Some(allow) = &c.allow
            && attached.insert(name)
        {
            authorizer
                .allow(name, allow)
                .map_err(|e| format!("credential {}: allow: {e}", c.access_key_id))?;
        }
    }
    Ok(authorizer)
}

/// Opens the audit log and the token, loads the key store and prepares
/// the verifier: a gateway about to serve.
pub async fn build(config: &Config) -> Result<(Arc<AppState>, Arc<Hsm>), StartError> {
    build_with_audit(config, &config.audit, user_pin(config)?, None, 1).await
}

/// As [`build`], for a worker process of `serve --workers N`: the PIN
/// comes from the supervisor, and the audit table is the worker's own
/// (see [`crate::workers::audit_config`]), and the change counters shared
/// with the other workers keep a client's own changes visible to it.
pub async fn build_worker(
    config: &Config,
    audit: &AuditConfig,
    pin: SecretString,
    peers: PeerChanges,
    pin_marker: PathBuf,
    workers: usize,
) -> Result<(Arc<AppState>, Arc<Hsm>), StartError> {
    build_with_audit(config, audit, pin, Some((peers, pin_marker)), workers).await
}

/// As [`build`], for a command that serves no requests: the audit file is
/// left alone (a gateway may be writing it); the process log stands in.
pub async fn build_for_command(config: &Config) -> Result<(Arc<AppState>, Arc<Hsm>), StartError> {
    build_with_audit(config, &AuditConfig::default(), user_pin(config)?, None, 1).await
}

async fn build_with_audit(
    config: &Config,
    audit: &AuditConfig,
    pin: SecretString,
    worker: Option<(PeerChanges, PathBuf)>,
    fleet_size: usize,
) -> Result<(Arc<AppState>, Arc<Hsm>), StartError> {
    let (peers, pin_marker) = worker.unzip();
    let audit_realm = crate::audit::Realm {
        partition: config.partition.clone(),
        region: config.region.clone(),
        account_id: config.account_id.clone(),
    };
    let audit = Arc::new(AuditLog::open(audit, audit_realm).map_err(|e| {
        format!(
            "cannot open the audit log {}: {e}",
            audit
                .path
                .as_deref()
                .unwrap_or(std::path::Path::new("-"))
                .display()
        )
    })?);
    let mut settings = hsm_settings_with_pin(config, pin);
    settings.pin_marker = pin_marker;
    let authorizer = authorizer(config)?;
    let verifier = verifier(config)?;
    // XKS credentials are read with the others, before the token opens.
    let xks = crate::http::xks::from_config(config, fleet_size)?;
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
    let events = Arc::new(AuditedEvents {
        audit: audit.clone(),
        realm: realm.clone(),
    });
    let mut store = KeyStore::load(hsm.clone(), realm, policy, clock::from_env()).await?;
    if let Some(peers) = peers {
        store.share_changes(peers);
    }
    store.send_events_to(events);
    let state = Arc::new(AppState {
        store,
        verifier,
        authorizer,
        max_body_bytes: config.max_body_bytes,
        max_header_bytes: config.http.max_header_bytes,
        body_timeout: Duration::from_millis(config.http.body_timeout_ms),
        client_cert_principal: config.tls.as_ref().is_some_and(|t| t.client_cert_principal),
        panic_operation: test_panic_from_env(),
        audit,
        detached: tokio_util::task::TaskTracker::new(),
        xks,
    });
    Ok((state, hsm))
}

/// The key store's service events (a scheduled deletion or rotation, a
/// rotation at the GCM bound, expired material destroyed), recorded in the
/// audit trail as CloudTrail records them, chained with the requests.
struct AuditedEvents {
    audit: Arc<AuditLog>,
    realm: Realm,
}

impl EventSink for AuditedEvents {
    fn record<'a>(&'a self, event: &'a ServiceEvent) -> Recording<'a> {
        Box::pin(async move {
            let (name, key_id, rotation, reason) = match event {
                ServiceEvent::KeyDeleted { key_id } => ("DeleteKey", key_id, None, None),
                ServiceEvent::KeyRotated { key_id, reason } => (
                    "RotateKey",
                    key_id,
                    Some("AUTOMATIC"),
                    Some(match reason {
                        RotationReason::Scheduled => "rotationSchedule",
                        RotationReason::GcmUsageBound => "gcmUsageBound",
                    }),
                ),
                ServiceEvent::ExpiredMaterialDeleted { key_id } => {
                    ("DeleteExpiredKeyMaterial", key_id, None, None)
                }
            };
            let id = key_id.to_string();
            let arn = self.realm.key_arn(key_id);
            let record = crate::audit::ServiceEvent {
                name,
                key_id: &id,
                key_arn: &arn,
                rotation_type: rotation,
                reason,
            };
            if self.audit.commit_service(&record).await.is_err() {
                // The change is on the token already: it cannot be refused.
                tracing::error!(
                    event = name,
                    key_id = %id,
                    "cannot write the audit record of a service event"
                );
            }
        })
    }
}

/// The background work every gateway does: the sync with the shared token
/// and the scheduler of rotations and deletions.
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Stops the tasks between two rounds (a round in progress finishes,
    /// so no token write is cut in half), waiting at most `deadline`; then
    /// aborts what is left.
    pub async fn stop(self, deadline: Duration) {
        let _ = self.stop.send(true);
        let until = tokio::time::Instant::now() + deadline;
        for mut task in self.tasks {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                tracing::warn!("a background task did not stop in time; aborted");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Starts the background work: the sync with the shared token and the
/// scheduler of rotations and deletions. [`Background::stop`] ends it.
pub fn spawn_background(
    state: Arc<AppState>,
    sync_interval: Duration,
    scheduler_interval: Duration,
) -> Background {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sync_state = state.clone();
    let mut sync_stopped = stopped.clone();
    let sync = tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(sync_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = sync_stopped.wait_for(|s| *s) => break,
                }
                if let Err(e) = sync_state.store.sync_once().await {
                    tracing::warn!(error = %e, "sync with the token failed");
                }
            }
            // A change whose marker move failed is announced before the
            // gateway goes (DESIGN.md decision 22).
            sync_state.store.move_owed_marker().await;
        }
        // In the caller's span, so that a worker's lines name the worker.
        .in_current_span(),
    );
    let mut scheduler_stopped = stopped;
    let scheduler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(scheduler_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = scheduler_stopped.wait_for(|s| *s) => break,
            }
            match state.store.run_due().await {
                Ok(r) if !(r.rotated.is_empty() && r.deleted.is_empty()) => {
                    tracing::info!(rotated = ?r.rotated, deleted = ?r.deleted, "scheduled work done");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduled work failed"),
            }
            // Each round's end, for tests that must know a whole round
            // ran after some moment (tests/it/lifecycle.rs).
            tracing::debug!("scheduler round ended");
        }
    }
    .in_current_span());
    Background {
        stop,
        tasks: vec![sync, scheduler],
    }
}

/// The listener's TLS from the `[tls]` config table (none: plain HTTP).
/// Reads the PEM files now, so that a bad one stops the start-up. An XKS
/// store's `[mtls]` needs `[tls]`: its CA is accepted at the handshake.
pub fn tls(config: &Config) -> Result<Option<Arc<Tls>>, StartError> {
    let Some(t) = &config.tls else {
        if let Some(s) = config.xks.stores.iter().find(|s| s.mtls.is_some()) {
            return Err(format!(
                "xks store '{}' has [mtls], which needs [tls]: client certificates are only asked for over TLS",
                s.name
            )
            .into());
        }
        return Ok(None);
    };
    let tls = Tls::load(TlsFiles {
        cert_chain_file: t.cert_chain_file.clone(),
        private_key_file: t.private_key_file.clone(),
        client_ca_file: t.client_ca_file.clone(),
        store_client_ca_files: store_client_ca_files(config),
    })
    .map_err(|e| format!("tls: {e}"))?;
    Ok(Some(Arc::new(tls)))
}

/// The CA files of the XKS stores with `[mtls]`.
fn store_client_ca_files(config: &Config) -> Vec<PathBuf> {
    config
        .xks
        .stores
        .iter()
        .filter_map(|s| s.mtls.as_ref().map(|m| m.client_ca_file.clone()))
        .collect()
}

/// The serving loop's settings from the `[http]` config table, with the
/// listener's TLS.
pub fn serve_settings(config: &Config, tls: Option<Arc<Tls>>) -> ServeSettings {
    let h = &config.http;
    ServeSettings {
        max_connections: h.max_connections,
        max_header_bytes: h.max_header_bytes,
        header_timeout: Duration::from_millis(h.header_timeout_ms),
        idle_timeout: Duration::from_millis(h.idle_timeout_ms),
        shutdown_grace: Duration::from_millis(h.shutdown_grace_ms),
        max_concurrent_streams: h.max_concurrent_streams,
        // Each at least one body, or a request could never be read.
        connection_body_bytes: h.connection_body_bytes.max(config.max_body_bytes),
        pending_body_bytes: h.pending_body_bytes.max(config.max_body_bytes),
        tls,
    }
}

/// Serves this process's metrics on `listener` (`[metrics] listen`) for
/// as long as the gateway `state` lives.
pub fn spawn_metrics(listener: TcpListener, state: &Arc<AppState>) {
    let state = Arc::downgrade(state);
    tokio::spawn(crate::http::metrics::serve(
        listener,
        Arc::new(move || {
            let state = state.upgrade();
            Box::pin(async move {
                state
                    .map(|s| crate::http::metrics::render(&s))
                    .unwrap_or_default()
            })
        }),
    ));
}

/// Serves until `shutdown` completes, then drains the connections within
/// the grace period (see [`crate::http::serve::serve`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<Drained> {
    let audit = state.audit.clone();
    crate::http::serve::serve(listener, router(state), settings, audit, shutdown).await
}

/// SIGHUP, caught by `main` before anything else of `serve` or of a
/// worker runs (its default action ends the process). A SIGHUP that
/// arrives during start-up is kept, and acted on once the gateway serves:
/// one reload, which also picks up a change made to the files while the
/// start-up was reading them. The stream is tokio's: its handler is
/// replaced by the default on exec, so children (workers, the read-back
/// helper) start with SIGHUP as the system leaves it, and catch it
/// themselves. (Tokio installs the handler a moment before the stream
/// listens: a SIGHUP in between is caught but not seen, which is harmless,
/// since nothing has been read yet.)
pub struct Hangups(Option<tokio::signal::unix::Signal>);

impl Hangups {
    /// Starts catching SIGHUP. Inside the runtime.
    pub fn catch() -> std::io::Result<Hangups> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Hangups(Some(signal(SignalKind::hangup())?)))
    }

    /// For commands that leave SIGHUP alone: never completes.
    pub fn none() -> Hangups {
        Hangups(None)
    }

    /// The next SIGHUP (one that arrived since the last, or since
    /// [`catch`](Self::catch)).
    pub async fn recv(&mut self) {
        match &mut self.0 {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// The life of a serving gateway after start-up: background work, serving
/// until SIGTERM or SIGINT (SIGHUP reloads the TLS files), draining,
/// stopping the background work, and closing the token's sessions and
/// finalising the library last.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    state: Arc<AppState>,
    hsm: Arc<Hsm>,
    tls: Option<Arc<Tls>>,
    hangups: Hangups,
) -> Result<(), StartError> {
    run_until(
        config,
        listener,
        state,
        hsm,
        tls,
        hangups,
        shutdown_signal(),
    )
    .await
}

/// As [`run`], stopping when `shutdown` completes (a worker also stops
/// when its supervisor is gone).
pub async fn run_until(
    config: &Config,
    listener: TcpListener,
    state: Arc<AppState>,
    hsm: Arc<Hsm>,
    tls: Option<Arc<Tls>>,
    hangups: Hangups,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let background = spawn_background(
        state.clone(),
        Duration::from_millis(config.keys.sync_interval_ms),
        Duration::from_millis(config.keys.scheduler_interval_ms),
    );
    let reloader = tokio::spawn(reload_on_sighup(
        config.path.clone(),
        tls.clone(),
        hsm.clone(),
        state.xks.clone(),
        hangups,
    ));
    serve(
        listener,
        state.clone(),
        serve_settings(config, tls),
        shutdown,
    )
    .await?;
    reloader.abort();
    // Requests cut by the drain may still be changing the token: each
    // finishes with its record, cache update and announcement before the
    // audit log and the token close (DESIGN.md decision 22).
    let running = state.detached.len();
    if running > 0 {
        tracing::info!(
            requests = running,
            "waiting for requests still changing the token"
        );
    }
    state.detached.close();
    if tokio::time::timeout(DETACHED_LIMIT, state.detached.wait())
        .await
        .is_err()
    {
        tracing::error!(
            requests = state.detached.len(),
            "requests still running at shutdown; their records may be missing"
        );
    }
    background.stop(Duration::from_secs(5)).await;
    drop(state);
    // Work handed to the token's threads may still hold the token for a
    // moment after its request was cut.
    let closed = tokio::task::spawn_blocking(move || {
        Hsm::shutdown_when_released(hsm, Duration::from_secs(5))
    })
    .await?;
    if closed {
        tracing::info!("token sessions closed; shut down cleanly");
    }
    Ok(())
}

/// Re-reads the TLS files on every SIGHUP (one that came during start-up
/// included); new connections use them, open ones keep what they had. A
/// file that does not load keeps the old configuration. Without TLS,
/// SIGHUP is logged and ignored (rather than ending the process, its
/// default). The user PIN is read again too: after the token refused it,
/// this is the one new login attempt (`hsm::link::PinGate`). So are the
/// XKS stores' credentials, mTLS CAs and authorization rules (and rate
/// limits), from the config as it is now: a config that does not load, or
/// a secret or CA file that does not, keeps the ones in use. Each worker
/// of `serve --workers N` gets the SIGHUP from its supervisor and reloads
/// its own.
async fn reload_on_sighup(
    config_path: PathBuf,
    tls: Option<Arc<Tls>>,
    hsm: Arc<Hsm>,
    xks: Option<Arc<crate::http::xks::Xks>>,
    mut hangups: Hangups,
) {
    loop {
        hangups.recv().await;
        let config = reread_log_level(&config_path);
        if let Some(xks) = &xks {
            match &config {
                Some(c) => match xks.auth.reload(c) {
                    Ok(()) => tracing::info!(
                        stores = c.xks.stores.len(),
                        "SIGHUP: XKS credentials, mTLS CAs and authorization rules reloaded"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: XKS reload failed; keeping the credentials in use"
                    ),
                },
                None => tracing::error!(
                    "SIGHUP: the config does not load; keeping the XKS credentials in use"
                ),
            }
        }
        // A worker's environment has no `hsm.pin_env`: it keeps the PIN
        // its supervisor gave it unless the PIN is in a file.
        let pin = config.as_ref().and_then(|c| user_pin(c).ok());
        let refused = hsm.pin_refused();
        let token = hsm.clone();
        match tokio::task::spawn_blocking(move || token.retry_pin(pin)).await {
            Ok(true) if refused.is_some() => {
                tracing::info!("SIGHUP: the token took the PIN; ready again")
            }
            Ok(false) if refused.is_some() => {
                tracing::warn!("SIGHUP: the login failed; the gateway is not ready")
            }
            _ => {}
        }
        let Some(tls) = &tls else {
            tracing::info!("SIGHUP: no [tls] configured, nothing to reload");
            continue;
        };
        let reloaded = match &config {
            Some(c) => tls.reload_with_store_cas(store_client_ca_files(c)),
            None => tls.reload(),
        };
        match reloaded {
            Ok(()) => tracing::info!(
                cert_chain_file = %tls.files().cert_chain_file.display(),
                "SIGHUP: TLS certificate and key reloaded; new connections use them"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: TLS reload failed; keeping the certificate and key in use"
            ),
        }
    }
}

/// On SIGHUP: the config's `log_level` is read again and applied (the rest
/// of the config needs a restart, but for the PIN); returns the config.
pub fn reread_log_level(config_path: &Path) -> Option<Config> {
    if config_path.as_os_str().is_empty() {
        return None;
    }
    match Config::load(config_path) {
        Ok(c) => {
            crate::logging::apply(c.log_level.as_deref(), "SIGHUP");
            Some(c)
        }
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP: the config does not load; log level unchanged");
            None
        }
    }
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
