//! The worker process: a gateway whose listener, PIN and life come from
//! its supervisor (see the module above).

use std::os::fd::AsFd;
use std::path::Path;

use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::Instrument;
use zeroize::Zeroizing;

use super::{READY, audit_config};
use crate::config::Config;
use crate::keystore::peers::PeerChanges;
use crate::server::{self, StartError};

/// Runs worker `index` of the config at `config_path`: takes the
/// listening socket from standard input and the control channel from
/// standard output, reads the PIN, builds the gateway, says `ready`, and
/// serves until SIGTERM or SIGINT or until the supervisor is gone.
pub async fn run(
    config_path: &Path,
    index: usize,
    changes: &Path,
    workers: usize,
) -> Result<(), StartError> {
    let listener = std::net::TcpListener::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    // Fails unless standard input is a socket.
    let local = listener
        .local_addr()
        .map_err(|e| format!("worker {index}: standard input is not the listening socket: {e}"))?;
    listener.set_nonblocking(true)?;
    let control =
        std::os::unix::net::UnixStream::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    control.set_nonblocking(true)?;
    let mut control = BufReader::new(tokio::net::UnixStream::from_std(control)?);
    let pin = read_pin(&mut control).await?;
    async move {
        let config = Config::load(config_path)?;
        crate::logging::apply(config.log_level.as_deref(), "start-up");
        if config.metrics.listen.is_some() {
            // Served by the supervisor, from this worker's answers.
            crate::telemetry::install(Some(index), config.metrics.key_labels)?;
        }
        let tls = server::tls(&config)?;
        // Workers are numbered from 1; their counter slots from 0.
        let peers = PeerChanges::open(changes, index.saturating_sub(1), workers)
            .map_err(|e| format!("worker {index}: cannot open {}: {e}", changes.display()))?;
        let (state, hsm) =
            server::build_worker(&config, &audit_config(&config.audit, index), pin, peers).await?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        control
            .get_mut()
            .try_write(format!("{READY}\n").as_bytes())
            .map_err(|e| format!("cannot tell the supervisor: {e}"))?;
        tracing::info!(%local, pid = std::process::id(), "worker serving");
        let orphaned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = orphaned.clone();
        let gateway = std::sync::Arc::downgrade(&state);
        let supervisor_gone = async move {
            // The supervisor asks only for metrics from here on
            // (super::metrics); the end of the channel means it has exited.
            let mut line = String::new();
            loop {
                line.clear();
                if !matches!(control.read_line(&mut line).await, Ok(1..)) {
                    break;
                }
                let render = || {
                    gateway
                        .upgrade()
                        .map(|s| crate::http::metrics::render(&s))
                        .unwrap_or_default()
                };
                if let Some(out) = super::metrics::answer(&line, render)
                    && control.get_mut().write_all(out.as_bytes()).await.is_err()
                {
                    break;
                }
            }
            tracing::warn!("the supervisor is gone; stopping");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let shutdown = async move {
            tokio::select! {
                () = server::shutdown_signal() => {}
                () = supervisor_gone => {}
            }
        };
        let served = server::run_until(&config, listener, state, hsm, tls, shutdown).await;
        // A supervisor that was killed could not remove the counters file;
        // its workers do (whichever comes first; the others find it gone).
        if orphaned.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::fs::remove_file(changes);
        }
        served
    }
    .instrument(tracing::info_span!("worker", n = index))
    .await
}

/// The first line of the control channel: the user PIN, hex-encoded.
async fn read_pin(
    control: &mut BufReader<tokio::net::UnixStream>,
) -> Result<SecretString, StartError> {
    let mut line = Zeroizing::new(String::new());
    control.read_line(&mut line).await?;
    let bytes = Zeroizing::new(
        hex::decode(line.trim_end()).map_err(|_| "the supervisor sent no PIN line")?,
    );
    let pin = std::str::from_utf8(&bytes).map_err(|_| "the PIN is not UTF-8")?;
    if pin.is_empty() {
        return Err("the supervisor sent no PIN".into());
    }
    Ok(SecretString::from(pin.to_owned()))
}
