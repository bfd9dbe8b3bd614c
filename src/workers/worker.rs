//! The worker process: a gateway whose listener, PIN and life come from
//! its supervisor (see the module above).

use std::os::fd::AsFd;
use std::path::Path;

use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
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
    hangups: server::Hangups,
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
    let mut control = tokio::net::UnixStream::from_std(control)?;
    let pin = read_pin(&mut control).await?;
    // Buffered only after the PIN: a read buffer would keep it for the
    // worker's lifetime.
    let mut control = BufReader::new(control);
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
        let (state, hsm) = server::build_worker(
            &config,
            &audit_config(&config.audit, index),
            pin,
            peers,
            super::pin_marker(changes),
            workers,
        )
        .await?;
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
        let served = server::run_until(&config, listener, state, hsm, tls, hangups, shutdown).await;
        // A supervisor that was killed could not remove the counters file
        // and the PIN marker's files; its workers do (whichever comes
        // first; the others find them gone).
        if orphaned.load(std::sync::atomic::Ordering::SeqCst) {
            for file in super::shared_files(changes) {
                let _ = std::fs::remove_file(file);
            }
        }
        served
    }
    .instrument(tracing::info_span!("worker", n = index))
    .await
}

/// The longest PIN line the supervisor may send (hex, newline included).
const MAX_PIN_LINE: usize = 4096;

/// The first line of the control channel: the user PIN, hex-encoded. Read
/// a byte at a time, so that nothing past it is buffered, into buffers
/// allocated once (no reallocation leaves a copy) and wiped when dropped.
async fn read_pin(control: &mut (impl AsyncRead + Unpin)) -> Result<SecretString, StartError> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_PIN_LINE));
    loop {
        match control.read_u8().await? {
            b'\n' => break,
            _ if line.len() == MAX_PIN_LINE => {
                return Err("the supervisor's PIN line is too long".into());
            }
            b => line.push(b),
        }
    }
    let mut bytes = Zeroizing::new(vec![0u8; line.len() / 2]);
    hex::decode_to_slice(&line[..], &mut bytes[..])
        .map_err(|_| "the supervisor sent no PIN line")?;
    let pin = std::str::from_utf8(&bytes).map_err(|_| "the PIN is not UTF-8")?;
    if pin.is_empty() {
        return Err("the supervisor sent no PIN".into());
    }
    Ok(SecretString::from(pin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pin_line_is_read_without_buffering_past_it_or_reallocating() {
        let (mut ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let pin = "a PIN with spaces";
        ours.write_all(format!("{}\nmetrics\n", hex::encode(pin)).as_bytes())
            .await
            .unwrap();
        let read = read_pin(&mut theirs).await.unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&read), pin);
        // The next line is still in the channel: nothing of it (nor of the
        // PIN line) was taken into a buffer that outlives the read.
        let mut rest = String::new();
        BufReader::new(theirs).read_line(&mut rest).await.unwrap();
        assert_eq!(rest, "metrics\n");

        let (mut ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        ours.write_all(&[b'a'; MAX_PIN_LINE + 1]).await.unwrap();
        assert!(read_pin(&mut theirs).await.is_err());
        let (mut ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        ours.write_all(b"zz\n").await.unwrap();
        assert!(read_pin(&mut theirs).await.is_err());
    }
}
