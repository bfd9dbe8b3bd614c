//! The `kmsgate` binary: parses the command line and starts the gateway.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kmsgate::audit::verify;
use kmsgate::config::{Config, Workers, read_secret};
use kmsgate::hsm::{Hsm, init};
use kmsgate::http::AppState;
use kmsgate::{bench, server};
use tracing_subscriber::EnvFilter;

/// `kmsgate --version`. A build with the test hooks (the `test-hooks`
/// feature, which `cargo test` turns on) says so, and scripts/setup-token
/// and scripts/run refuse such a binary.
#[cfg(not(feature = "test-hooks"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "test-hooks")]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (test-hooks: a test build, not for use)"
);

#[derive(Parser)]
#[command(
    version = VERSION,
    about = "An AWS KMS-compatible key service backed by a PKCS#11 token"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the KMS API.
    Serve {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on; overrides `listen` in the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Gateway processes on the token: a number or `auto` (one per
        /// core); overrides `workers` in the config. Past 1, a supervisor
        /// runs that many worker processes on one listening socket.
        #[arg(long, value_name = "N|auto")]
        workers: Option<Workers>,
    },
    /// A worker process of `serve --workers N` (started by the supervisor,
    /// which hands it the listener and the PIN).
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        index: usize,
        /// Async runtime threads (the supervisor resolves `worker_threads`).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// The change counters file the workers share.
        #[arg(long)]
        changes: PathBuf,
        /// How many workers share it.
        #[arg(long)]
        workers: usize,
    },
    /// Check that every master key version on the token is sensitive and
    /// can be neither read nor wrapped out. Exits non-zero if one can.
    CheckKeys {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a set-up before traffic arrives: serve's own start-up checks
    /// (config, transport for the address serve would listen on, file
    /// permissions, PIN, credentials and policies, TLS files), the clock,
    /// and the token (module, token, login, mechanisms, data key path, IV
    /// source, and a write it removes). One verdict per check; exits
    /// non-zero if one fails.
    Doctor {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The address serve will listen on, if `serve --listen` overrides
        /// the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Copy a SoftHSM2 token's file store into DIR (new or empty) while
    /// gateways serve: under the token lock, so the copy holds every write
    /// acknowledged before it began and no record without its key
    /// versions; then DIR/manifest.json (keys, aliases, SHA-256 of each
    /// file), read from the copy. Refuses other modules.
    Backup {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The backup directory (new or empty).
        #[arg(long, required_unless_present = "list")]
        out: Option<PathBuf>,
        /// Internal: print the token's keys and aliases as JSON (run on
        /// the copy by `backup` and on the restored token by `restore`).
        #[arg(long, hide = true)]
        list: bool,
    },
    /// Put a `kmsgate backup` in place as SoftHSM2's token directory (for
    /// stopped gateways): checks the manifest's hashes, refuses while a
    /// gateway uses the token directory or if it is not empty (unless
    /// --force), then runs check-keys on the restored token.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The configuration file (TOML) of the gateways that will use it.
        #[arg(long)]
        config: PathBuf,
        /// Move what is in the token directory aside (into a sibling
        /// directory) instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Measure the token's raw ceiling for GenerateDataKey: the same
    /// PKCS#11 work (random bytes, AES-GCM under a master key version), on
    /// THREADS threads with a session each, without HTTP. Prints one
    /// `raw_ops_per_sec=... threads=... seconds=...` line on stdout.
    BenchToken {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The token work to measure: generate-data-key, encrypt (of
        /// --bytes bytes) or decrypt (of a --bytes-byte data key).
        #[arg(long, default_value = "generate-data-key")]
        op: bench::Op,
        /// Threads, each with its own logged-in session.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Data key length in bytes.
        #[arg(long, default_value_t = 32)]
        bytes: usize,
    },
    /// scripts/bench's XKS encrypt workload: sign one XKS encrypt request
    /// as AWS KMS does (store STORE's first credential, now), check that
    /// the gateway at ENDPOINT answers it 200, and write a wrk script that
    /// sends it unchanged (valid for the 5 minutes of allowed clock skew).
    #[command(hide = true)]
    BenchXksRequest {
        /// The configuration file (TOML) with the store.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        store: String,
        /// The externalKeyId to encrypt under.
        #[arg(long)]
        external_key_id: String,
        /// The gateway, `http://HOST:PORT`.
        #[arg(long)]
        endpoint: String,
        /// Plaintext length in bytes.
        #[arg(long, default_value_t = 32)]
        bytes: usize,
        /// AAD length in bytes (0: none).
        #[arg(long, default_value_t = 32)]
        aad_bytes: usize,
        /// Where to write the wrk script.
        #[arg(long)]
        lua: PathBuf,
    },
    /// Initialise a free token of a PKCS#11 module (e.g. SoftHSM2's) and set
    /// its user PIN. The PINs are read from files, never taken on the
    /// command line (where every process list shows them). Refuses, and
    /// changes nothing, if a token labelled LABEL exists already.
    InitToken {
        /// The PKCS#11 module (shared library), as `hsm.module`.
        #[arg(long)]
        module: PathBuf,
        /// The new token's label (1-32 bytes), as `hsm.token_label`.
        #[arg(long)]
        label: String,
        /// File holding the security officer's PIN (trailing newline ignored).
        #[arg(long, value_name = "FILE")]
        so_pin_file: PathBuf,
        /// File holding the user PIN (trailing newline ignored), the file
        /// `hsm.pin_file` names.
        #[arg(long, value_name = "FILE")]
        pin_file: PathBuf,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// kmsgate as an XKS proxy for AWS KMS external key stores.
    Xks {
        #[command(subcommand)]
        command: XksCommand,
    },
}

#[derive(Subcommand)]
enum XksCommand {
    /// Print what the AWS KMS console and CreateCustomKeyStore ask for to
    /// connect an external key store to STORE: XksProxyUriEndpoint,
    /// XksProxyUriPath, the access key ids and the exposed XksKeyIds. Reads
    /// the config only (no token, no PIN).
    Show {
        /// The store's `name` in `[[xks.stores]]`.
        store: String,
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Print instead the console's JSON proxy configuration file, with
        /// the store's first credential and its secret.
        #[arg(long)]
        secret: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files, oldest first (the rotated
    /// `PATH.<time>-<n>` files in name order, then `PATH`). Names the
    /// first line that was changed, removed or reordered and exits
    /// non-zero; or prints one `OK` line with the last line's hash, to
    /// keep for a later `--anchor`.
    Verify {
        /// The audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The files are process logs (no `[audit] path`): check the
        /// records of their `kmsgate::audit` lines.
        #[arg(long)]
        process_log: bool,
        /// A hash printed by an earlier verify: fail unless a line with it
        /// is still in the chain (detects a cut-off end).
        #[arg(long, value_name = "SHA256")]
        anchor: Option<String>,
        /// The last hash of older files already verified and pruned: the
        /// first line must link to it (instead of being sequence 0).
        #[arg(long, value_name = "SHA256")]
        continues: Option<String>,
    },
}

/// Registers `handle` (of either log format's subscriber) as the way the
/// log filter is replaced (kmsgate::logging).
fn reload_with<S: Send + Sync + 'static>(handle: tracing_subscriber::reload::Handle<EnvFilter, S>) {
    kmsgate::logging::set_reloader(move |d| {
        handle
            .reload(EnvFilter::try_new(d).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    });
}

fn main() -> ExitCode {
    // The read-back helper (kmsgate::hsm::readback) is this binary too; it
    // speaks only over its pipes and logs nothing.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(kmsgate::hsm::readback::HELPER_ARG))
    {
        return ExitCode::from(u8::try_from(kmsgate::hsm::readback::helper_main()).unwrap_or(1));
    }
    let cli = Cli::parse();
    // `serve` and a worker catch SIGHUP before anything else (its default
    // action ends the process, and `systemctl reload` may come at any
    // moment of a start-up that takes seconds on a big token). Tokio's
    // signal handling needs its runtime, so that comes first; a SIGHUP
    // that arrives during start-up is kept and acted on once serving
    // (kmsgate::server::Hangups).
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Worker { threads, .. } = &cli.command {
        runtime.worker_threads((*threads).max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kmsgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hangups = match &cli.command {
        Command::Serve { .. } | Command::Worker { .. } => {
            let _in = runtime.enter();
            match server::Hangups::catch() {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("kmsgate: cannot handle SIGHUP: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => server::Hangups::none(),
    };
    let filter = EnvFilter::try_from_env("KMSGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Every request writes an audit record. A logging thread writes them in
    // batches (one write per burst, not per record) so that request threads
    // never wait on stderr; it blocks rather than drop records when behind,
    // and `log_guard` flushes what is left before main returns.
    let (log_writer, log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(log_writer);
    // The filter stays replaceable: `log_level` in the config, at start
    // and on SIGHUP (kmsgate::logging).
    if cli.log_format == "json" {
        let builder = builder.json().with_filter_reloading();
        reload_with(builder.reload_handle());
        builder.init();
    } else {
        let builder = builder.with_filter_reloading();
        reload_with(builder.reload_handle());
        builder.init();
    }
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            workers,
        } => runtime.block_on(run(config, listen, workers, &cli.log_format, hangups)),
        Command::Worker {
            config,
            index,
            changes,
            workers,
            ..
        } => runtime.block_on(kmsgate::workers::worker::run(
            &config, index, &changes, workers, hangups,
        )),
        Command::CheckKeys { config } => runtime.block_on(check_keys(config)),
        Command::Doctor { config, listen } => {
            let findings = kmsgate::doctor::run(&config, listen);
            match kmsgate::doctor::report(&findings, &mut std::io::stdout()) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e.into()),
            }
        }
        Command::Backup { config, out, list } => match (list, out) {
            (true, _) => runtime.block_on(kmsgate::backup::list(&config)),
            (false, Some(out)) => kmsgate::backup::backup(&config, &out),
            (false, None) => Err("--out DIR is required".into()),
        },
        Command::Restore {
            from,
            config,
            force,
        } => kmsgate::backup::restore(&from, &config, force),
        Command::BenchToken {
            config,
            op,
            threads,
            seconds,
            bytes,
        } => bench_token(config, op, threads, seconds, bytes),
        Command::BenchXksRequest {
            config,
            store,
            external_key_id,
            endpoint,
            bytes,
            aad_bytes,
            lua,
        } => Config::load(&config)
            .map_err(Into::into)
            .and_then(|config| {
                bench::xks::prepare(
                    &config,
                    &bench::xks::RequestOptions {
                        store,
                        external_key_id,
                        endpoint,
                        bytes,
                        aad_bytes,
                    },
                    &lua,
                )
            }),
        Command::InitToken {
            module,
            label,
            so_pin_file,
            pin_file,
        } => init_token(&module, &label, &so_pin_file, &pin_file),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    files,
                    process_log,
                    anchor,
                    continues,
                },
        } => audit_verify(
            &files,
            verify::Options {
                process_log,
                anchor,
                continues,
            },
        ),
        Command::Xks {
            command:
                XksCommand::Show {
                    store,
                    config,
                    secret,
                },
        } => xks_show(&config, &store, secret),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kmsgate: {e}");
            if kmsgate::hsm::is_pin_refusal(e.as_ref()) {
                ExitCode::from(kmsgate::hsm::PIN_REFUSED_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    };
    // Every command has finished its token work and joined its threads by
    // now. Stop the runtime, then let the log writer write what it holds.
    drop(runtime);
    drop(log_guard);
    code
}

async fn run(
    config_path: PathBuf,
    listen: Option<SocketAddr>,
    workers: Option<Workers>,
    log_format: &str,
    hangups: server::Hangups,
) -> Result<(), server::StartError> {
    let config = Config::load(&config_path)?;
    kmsgate::logging::apply(config.log_level.as_deref(), "start-up");
    kmsgate::preflight::refuse_exposed(&config)?;
    let kmsgate::preflight::Transport { addr, tls } =
        kmsgate::preflight::transport(&config, listen)?;
    let workers = workers.unwrap_or(config.workers).resolve();
    if workers > 1 {
        return supervise(
            config_path,
            &config,
            addr,
            tls.is_some(),
            workers,
            log_format,
            hangups,
        )
        .await;
    }
    let metrics = metrics_endpoint(&config, config.metrics.key_labels).await?;
    let (state, hsm) = server::build(&config).await?;
    if let Some(listener) = metrics {
        server::spawn_metrics(listener, &state);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%local, scheme, "listening");
    // One line on stdout, for scripts and tests that started us on port 0.
    let mut out = std::io::stdout();
    writeln!(out, "kmsgate listening on {scheme}://{local}")?;
    out.flush()?;
    server::run(&config, listener, state, hsm, tls, hangups).await
}

/// `[metrics] listen`, bound, with this process's recorder installed
/// (`key_labels`: the per-key gauges, recorded by the process that serves
/// requests); `None` when no endpoint is configured.
async fn metrics_endpoint(
    config: &Config,
    key_labels: bool,
) -> Result<Option<tokio::net::TcpListener>, server::StartError> {
    let Some(at) = config.metrics.listen else {
        return Ok(None);
    };
    kmsgate::telemetry::install(None, key_labels)?;
    Ok(Some(kmsgate::http::metrics::bind(at).await?))
}

/// `serve --workers N` with N > 1: the supervisor binds the listener,
/// reads the PIN once, and runs the workers (kmsgate::workers).
async fn supervise(
    config_path: PathBuf,
    config: &Config,
    addr: SocketAddr,
    tls: bool,
    workers: usize,
    log_format: &str,
    hangups: server::Hangups,
) -> Result<(), server::StartError> {
    let pin = server::user_pin(config)?;
    let metrics = metrics_endpoint(config, false).await?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    tracing::info!(%local, scheme, workers, threads_per_worker = config.worker_threads.resolve(workers), "listening");
    let config_path = std::path::absolute(&config_path)?;
    kmsgate::workers::supervisor::run(kmsgate::workers::supervisor::Options {
        config: config_path,
        log_format: log_format.to_owned(),
        workers,
        threads: config.worker_threads.resolve(workers),
        listener,
        metrics,
        pin,
        pin_env: config.hsm.pin_env.clone(),
        announce: format!("kmsgate listening on {scheme}://{local}"),
        hangups,
        // A worker's drain grace, its background work's 5 s and its
        // token shutdown's 5 s, and some slack.
        stop_timeout: Duration::from_millis(config.http.shutdown_grace_ms)
            + Duration::from_secs(15),
    })
    .await
}

async fn check_keys(config_path: PathBuf) -> Result<(), server::StartError> {
    let config = Config::load(&config_path)?;
    let gateway = OpenGateway::build(&config).await?;
    let report = gateway.state().store.custody_report().await?;
    let mut out = std::io::stdout();
    let mut unsafe_versions = 0;
    for c in &report {
        if !c.is_safe() {
            unsafe_versions += 1;
        }
        writeln!(
            out,
            "{} v{} spec={}{} sensitive={} extractable={} never_extractable={} value_readable={} wrap_out={} {}",
            c.key_id,
            c.version,
            c.key_spec,
            if c.imported { " origin=EXTERNAL" } else { "" },
            c.sensitive,
            c.extractable,
            c.never_extractable,
            c.value_readable,
            if c.wrapped_out { "ALLOWED" } else { "refused" },
            if c.is_safe() { "ok" } else { "UNSAFE" },
        )?;
    }
    let mut lost = 0;
    for r in gateway.state().store.unreadable_records() {
        let verdict = if r.superseded {
            "superseded by a valid revision"
        } else {
            lost += 1;
            "NO VALID REVISION: the key or alias is unavailable"
        };
        writeln!(out, "unreadable record {}: {verdict}", r.label)?;
    }
    for label in gateway.state().store.orphan_key_objects() {
        writeln!(
            out,
            "orphan key object {label}: no record names it (a write cut short); never used"
        )?;
    }
    // The summary is the last line, for scripts.
    writeln!(
        out,
        "{} key versions checked, {unsafe_versions} unsafe",
        report.len()
    )?;
    out.flush()?;
    if unsafe_versions > 0 {
        return Err(format!("{unsafe_versions} key versions are not protected").into());
    }
    if lost > 0 {
        return Err(format!("{lost} records have no valid revision").into());
    }
    Ok(())
}

/// The gateway's state and its token, for a command that runs once and
/// exits. However the command ends (success, error or panic), dropping this
/// drops the state, then shuts the token down: the session pool's threads
/// are joined, the sessions closed and the library finalised. So no thread
/// of ours is still inside the PKCS#11 library when the process exits and
/// the library is unloaded (which made `check-keys` die with SIGSEGV now
/// and then).
struct OpenGateway {
    state: Option<Arc<AppState>>,
    hsm: Option<Arc<Hsm>>,
}

impl OpenGateway {
    async fn build(config: &Config) -> Result<OpenGateway, server::StartError> {
        let (state, hsm) = server::build_for_command(config).await?;
        Ok(OpenGateway {
            state: Some(state),
            hsm: Some(hsm),
        })
    }

    fn state(&self) -> &AppState {
        self.state.as_deref().expect("present until dropped")
    }
}

impl Drop for OpenGateway {
    fn drop(&mut self) {
        // The key store holds the other reference to the token.
        drop(self.state.take());
        let Some(hsm) = self.hsm.take() else {
            return;
        };
        kmsgate::hsm::Hsm::shutdown_when_released(hsm, std::time::Duration::ZERO);
    }
}

/// `kmsgate init-token`: the PINs come from files, are held as secrets and
/// go nowhere but to the token.
fn init_token(
    module: &Path,
    label: &str,
    so_pin_file: &Path,
    pin_file: &Path,
) -> Result<(), server::StartError> {
    // Read as `serve` reads `hsm.pin_file`, so the PIN set is the PIN used.
    let so_pin = read_secret(Some(so_pin_file), None)?;
    let pin = read_secret(Some(pin_file), None)?;
    let token = init::init_token(module, label, &so_pin, &pin)?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "token '{}' initialised (serial {}); user PIN set",
        token.label, token.serial_number
    )?;
    out.flush()?;
    Ok(())
}

/// `kmsgate audit verify`: the verdict on stdout, one line.
fn audit_verify(files: &[PathBuf], options: verify::Options) -> Result<(), server::StartError> {
    let mut out = std::io::stdout();
    match verify::verify(files, &options)? {
        Ok(s) => {
            writeln!(out, "OK: {s}")?;
            out.flush()?;
            Ok(())
        }
        Err(problem) => {
            writeln!(out, "DAMAGED: {problem}")?;
            out.flush()?;
            Err(format!("the audit chain is broken at {}", problem.at).into())
        }
    }
}

/// `kmsgate xks show`.
fn xks_show(config_path: &Path, store: &str, secret: bool) -> Result<(), server::StartError> {
    let config = Config::load(config_path)?;
    kmsgate::xks_show::show(&config, store, secret, &mut std::io::stdout())
}

fn bench_token(
    config_path: PathBuf,
    op: bench::Op,
    threads: usize,
    seconds: f64,
    bytes: usize,
) -> Result<(), server::StartError> {
    let config = Config::load(&config_path)?;
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("--seconds must be a positive number, got {seconds}"))?;
    let options = bench::Options {
        op,
        threads,
        duration,
        bytes,
    };
    bench::run_from_config(&config, &options)?;
    Ok(())
}
