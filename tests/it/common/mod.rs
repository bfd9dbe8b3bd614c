//! The black-box harness: a fresh SoftHSM2 token in a temp dir, the real
//! `kmsgate` binary started on a free port against it, and real clients.
//!
//! With `KMSGATE_TEST_TOKEN=kryoptic` and `KMSGATE_TEST_MODULE` naming
//! Kryoptic's library (scripts/kryoptic builds it), the tokens are
//! Kryoptic's instead, each in its own SQLite file in the temp dir:
//! scripts/test runs the subset of the suite that does not reach into
//! SoftHSM2's own files on it (docs/testing.md).

#![allow(dead_code)]

pub mod disk;
pub mod faulty;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "111122223333";
pub const ACCESS_KEY: &str = "AKIAKMSGATETESTKEY01";
pub const SECRET: &str = "kmsgate/test+secret0123456789abcdefghijKL";
pub const PIN: &str = "test-user-pin-4711";

/// The access key and secret of the principal `other` that tests give
/// identity policies of their own ([`Gateway::start_with_other`]).
pub const OTHER_KEY: &str = "AKIAKMSGATEOTHERKEY1";
pub const OTHER_SECRET: &str = "other-secret-456789abcdefghijklmnopqrst";

/// A SoftHSM2 token of its own, in a temp dir, with a gateway config.
pub struct Token {
    dir: tempfile::TempDir,
}

/// The PKCS#11 implementation under the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Implementation {
    SoftHsm2,
    Kryoptic(PathBuf),
}

/// `KMSGATE_TEST_TOKEN` (unset: SoftHSM2).
pub fn implementation() -> Implementation {
    match std::env::var("KMSGATE_TEST_TOKEN").as_deref() {
        Err(_) | Ok("" | "softhsm2") => Implementation::SoftHsm2,
        Ok("kryoptic") => Implementation::Kryoptic(
            std::env::var_os("KMSGATE_TEST_MODULE")
                .expect("KMSGATE_TEST_TOKEN=kryoptic needs KMSGATE_TEST_MODULE (scripts/kryoptic prints it)")
                .into(),
        ),
        Ok(other) => panic!("KMSGATE_TEST_TOKEN={other}: softhsm2 or kryoptic"),
    }
}

/// The module the gateways under test load.
pub fn module() -> PathBuf {
    match implementation() {
        Implementation::SoftHsm2 => softhsm_module(),
        Implementation::Kryoptic(path) => path,
    }
}

pub fn softhsm_module() -> PathBuf {
    for p in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("libsofthsm2.so not found: install softhsm2");
}

impl Token {
    pub fn new() -> Arc<Token> {
        Self::with_config("")
    }

    /// A fresh token; `extra` is TOML tables (e.g. `[keys]`) appended to
    /// the config.
    pub fn with_config(extra: &str) -> Arc<Token> {
        Self::with_token_dir(extra, |_| {})
    }

    /// As [`with_config`](Self::with_config); `prepare` gets the empty
    /// token directory before the token is initialised in it (to mount a
    /// small file system there, say).
    pub fn with_token_dir(extra: &str, prepare: impl FnOnce(&Path)) -> Arc<Token> {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir(root.join("tokens")).unwrap();
        prepare(&root.join("tokens"));
        std::fs::write(
            root.join("kryoptic.conf"),
            format!(
                "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}/tokens/token.sql\"\n",
                root.display()
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
                root.display()
            ),
        )
        .unwrap();
        // The token is made the way scripts/setup-token makes it: PINs in
        // files, never on a command line.
        std::fs::write(root.join("pin"), PIN).unwrap();
        std::fs::write(root.join("so-pin"), "so-pin-0815").unwrap();
        let out = Command::new(kmsgate_bin())
            .env("SOFTHSM2_CONF", root.join("softhsm2.conf"))
            .env("KRYOPTIC_CONF", root.join("kryoptic.conf"))
            .arg("init-token")
            .arg("--module")
            .arg(module())
            .args(["--label", "kmsgate", "--so-pin-file"])
            .arg(root.join("so-pin"))
            .arg("--pin-file")
            .arg(root.join("pin"))
            .output()
            .expect("kmsgate init-token runs");
        assert!(
            out.status.success(),
            "kmsgate init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(root.join("secret"), SECRET).unwrap();
        // As scripts/setup-token leaves them: readable by their owner only
        // (`kmsgate doctor` fails anything else).
        for secret in ["pin", "so-pin", "secret"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root.join(secret), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        std::fs::write(
            root.join("kmsgate.toml"),
            format!(
                r#"region = "{REGION}"
account_id = "{ACCOUNT}"
# One process: tests signal, limit and watch the gateway's own pid
# (tests/it/workers.rs starts supervisors with --workers).
workers = 1

[hsm]
module = "{module}"
token_label = "kmsgate"
pin_file = "{root}/pin"

[[auth.credentials]]
access_key_id = "{ACCESS_KEY}"
secret_file = "{root}/secret"
principal = "tester"
allow = ["kms:*"]

{extra}
"#,
                module = module().display(),
                root = root.display(),
            ),
        )
        .unwrap();
        Arc::new(Token { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("kmsgate.toml")
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.path().join("softhsm2.conf")
    }

    /// Kryoptic's configuration file for this token (see [`implementation`]).
    pub fn kryoptic_conf(&self) -> PathBuf {
        self.path().join("kryoptic.conf")
    }

    /// The test clock every gateway on this token reads: seconds to add to
    /// the system time (none while the file does not exist).
    pub fn clock_file(&self) -> PathBuf {
        self.path().join("clock-offset")
    }

    /// Moves the gateways' clock `days` days ahead of the system time.
    pub fn set_clock_days_ahead(&self, days: u64) {
        std::fs::write(self.clock_file(), (days * 86_400).to_string()).unwrap();
    }

    /// Runs the binary with `args` against this token and returns
    /// (success, stdout, stderr).
    pub fn run_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(kmsgate_bin())
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .env("KRYOPTIC_CONF", self.kryoptic_conf())
            .env("KMSGATE_TEST_CLOCK_OFFSET_FILE", self.clock_file())
            .args(args)
            .output()
            .expect("kmsgate runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The kmsgate binary the tests start: the one cargo built for them, or
/// the one `KMSGATE_TEST_BIN` names (to run a suite, say the nemesis,
/// against an older build: `scripts/nemesis --bin PATH`).
pub fn kmsgate_bin() -> PathBuf {
    std::env::var_os("KMSGATE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kmsgate")))
}

/// Starts `kmsgate serve` on `token` on a free port with `args` added,
/// its stderr to `log`, and waits up to `wait` for its "listening" line;
/// returns the process and its endpoint, or panics with the log.
pub fn spawn_serve(
    token: &Token,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
    wait: Duration,
) -> (Child, String) {
    spawn_serve_with(token, &token.config(), args, env, log, wait)
}

/// As [`spawn_serve`], with the config file `config` instead of the
/// token's own (one that differs per gateway, say in its audit path).
pub fn spawn_serve_with(
    token: &Token,
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
    wait: Duration,
) -> (Child, String) {
    let mut child = Command::new(kmsgate_bin())
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .env("KMSGATE_LOG", "info")
        .env("KMSGATE_TEST_CLOCK_OFFSET_FILE", token.clock_file())
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("kmsgate starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(wait).unwrap_or_default();
    let Some(endpoint) = line.trim().strip_prefix("kmsgate listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "kmsgate serve did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    };
    (child, endpoint.to_owned())
}

/// A client of `endpoint` signing with this credential, with a connection
/// pool of its own and no retries (they would hide what a single request
/// answers).
pub fn client_at(
    endpoint: &str,
    access_key: &str,
    secret: &str,
    region: &str,
) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(access_key, secret, None, None, "test"))
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// A running gateway process. Killed when dropped.
pub struct Gateway {
    child: Child,
    pub token: Arc<Token>,
    pub endpoint: String,
    pub addr: String,
    log: PathBuf,
}

static NEXT_LOG: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Gateway {
    /// A gateway on a fresh token.
    pub fn start() -> Gateway {
        Self::start_on(Token::new())
    }

    /// A gateway on an existing token (a restart, or a second gateway).
    pub fn start_on(token: Arc<Token>) -> Gateway {
        Self::start_on_with_env(token, &[])
    }

    /// As [`start_on`](Self::start_on), with extra environment variables.
    pub fn start_on_with_env(token: Arc<Token>, env: &[(&str, &str)]) -> Gateway {
        let n = NEXT_LOG.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = token.path().join(format!("gateway-{n}.log"));
        let (child, endpoint) = spawn_serve(&token, &[], env, &log, Duration::from_secs(30));
        let addr = endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        Gateway {
            child,
            token,
            endpoint,
            addr,
            log,
        }
    }

    pub fn client(&self) -> aws_sdk_kms::Client {
        self.client_as(ACCESS_KEY, SECRET, REGION)
    }

    /// A gateway on a fresh token whose config also has the principal
    /// `other` (signing with [`OTHER_KEY`]) with this one identity policy,
    /// and a client signing as `other`.
    pub fn start_with_other(policy: &str) -> (Gateway, aws_sdk_kms::Client) {
        let token = Token::with_config(&format!(
            r#"
[[auth.credentials]]
access_key_id = "{OTHER_KEY}"
secret_env = "KMSGATE_TEST_OTHER_SECRET"
principal = "other"

[[auth.principals]]
name = "other"
policies = ['{policy}']
"#
        ));
        let gw = Gateway::start_on_with_env(token, &[("KMSGATE_TEST_OTHER_SECRET", OTHER_SECRET)]);
        let other = gw.client_as(OTHER_KEY, OTHER_SECRET, REGION);
        (gw, other)
    }

    pub fn client_as(&self, access_key: &str, secret: &str, region: &str) -> aws_sdk_kms::Client {
        client_at(&self.endpoint, access_key, secret, region)
    }

    /// What the gateway wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether a line of the log satisfies `found` within two seconds: the
    /// gateway writes its log (audit records included) in the background,
    /// so a record may land a moment after its response.
    pub fn log_has(&self, found: impl Fn(&str) -> bool) -> bool {
        (0..100).any(|_| {
            let hit = self.log().lines().any(&found);
            if !hit {
                std::thread::sleep(Duration::from_millis(20));
            }
            hit
        })
    }

    /// Kills the gateway with SIGKILL (a crash) and returns the token.
    pub fn crash(mut self) -> Arc<Token> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.token.clone()
    }

    /// Stops the gateway with SIGTERM and waits for it; returns the token.
    pub fn stop(mut self) -> Arc<Token> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.token.clone()
    }

    /// Sends a request signed like an SDK would (unless `signed` is false)
    /// and returns (status, lower-case headers, body).
    pub fn raw(&self, target: Option<&str>, body: &[u8], signed: bool) -> RawResponse {
        self.raw_with(target, body, signed.then(SystemTime::now), &[])
    }

    /// As [`raw`], signing as of `signed_at`, with extra headers.
    pub fn raw_with(
        &self,
        target: Option<&str>,
        body: &[u8],
        signed_at: Option<SystemTime>,
        extra: &[(&str, &str)],
    ) -> RawResponse {
        let request = self.request_bytes(target, body, signed_at, extra);
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        stream
            .write_all(&request[..request.len() - body.len()])
            .unwrap();
        // A refused oversized body may be cut off mid-write: that is fine.
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        RawResponse::parse(&response)
    }

    /// The bytes of an HTTP/1.1 request as [`raw_with`](Self::raw_with)
    /// sends it (`connection: close`), head and body.
    pub fn request_bytes(
        &self,
        target: Option<&str>,
        body: &[u8],
        signed_at: Option<SystemTime>,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        request_bytes_at(&self.addr, &self.endpoint, target, body, signed_at, extra)
    }
}

/// The bytes of an HTTP/1.1 request (`connection: close`), head and body,
/// to the gateway at `addr` (`endpoint` is its URL), signed as of
/// `signed_at` with the test credential unless that is `None`.
pub fn request_bytes_at(
    addr: &str,
    endpoint: &str,
    target: Option<&str>,
    body: &[u8],
    signed_at: Option<SystemTime>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), addr.to_owned()),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
    ];
    if let Some(t) = target {
        headers.push(("x-amz-target".into(), t.into()));
    }
    for (k, v) in extra {
        headers.push(((*k).into(), (*v).into()));
    }
    if let Some(time) = signed_at {
        let identity = Credentials::new(ACCESS_KEY, SECRET, None, None, "test").into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("kms")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            format!("{endpoint}/"),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        for (k, v) in instructions.headers() {
            headers.push((k.to_owned(), v.to_owned()));
        }
    }
    let mut request = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in &headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the gateway warned about (its log goes
        // with the temp dir).
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            eprintln!(
                "--- kmsgate warnings and errors (last 40 of {}) ---\n{}",
                lines.len(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl RawResponse {
    /// Parses an HTTP/1.1 response as read off the socket.
    pub fn parse(bytes: &[u8]) -> RawResponse {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        RawResponse {
            status,
            headers,
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn error_type(&self) -> &str {
        self.body["__type"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The exception name and message of an SDK error.
pub fn error_of<E, R>(err: &aws_sdk_kms::error::SdkError<E, R>) -> (String, String)
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(e) => (
            e.code().unwrap_or_default().to_owned(),
            e.message().unwrap_or_default().to_owned(),
        ),
        None => (format!("not a service error: {err:?}"), String::new()),
    }
}

pub fn key_arn(id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{id}")
}

/// The key ids of the first page of ListKeys.
pub async fn list_key_ids(client: &aws_sdk_kms::Client) -> Vec<String> {
    client
        .list_keys()
        .send()
        .await
        .unwrap()
        .keys
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| k.key_id)
        .collect()
}

/// Creates a symmetric key with no options and returns its key id.
pub async fn create_key(client: &aws_sdk_kms::Client) -> String {
    client
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

/// Creates `n` keys that rotate every 90 days; returns their ids.
pub async fn keys_rotating_every_90_days(client: &aws_sdk_kms::Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = create_key(client).await;
        client
            .enable_key_rotation()
            .key_id(&id)
            .rotation_period_in_days(90)
            .send()
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// A key's rotations, as ListKeyRotations answers; panics on error.
pub async fn rotations(
    client: &aws_sdk_kms::Client,
    key: &str,
) -> Vec<aws_sdk_kms::types::RotationsListEntry> {
    client
        .list_key_rotations()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .rotations
        .unwrap_or_default()
}

/// Creates a key of `spec` and `usage` (HMAC, signing, ...) and returns
/// its id; panics on error.
pub async fn create_key_of(
    client: &aws_sdk_kms::Client,
    spec: aws_sdk_kms::types::KeySpec,
    usage: aws_sdk_kms::types::KeyUsageType,
) -> String {
    client
        .create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

/// Encrypts `plaintext` under `key_id` (no context) and returns the
/// ciphertext blob; panics on error.
pub async fn encrypt(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    plaintext: &[u8],
) -> aws_sdk_kms::primitives::Blob {
    client
        .encrypt()
        .key_id(key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext.to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
}

/// Decrypts `blob` (no context); panics on error.
pub async fn decrypt(client: &aws_sdk_kms::Client, blob: aws_sdk_kms::primitives::Blob) -> Vec<u8> {
    client
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap()
        .into_inner()
}

/// DescribeKey's KeyMetadata of a key (by any KeyId form); panics on error.
pub async fn key_metadata(
    client: &aws_sdk_kms::Client,
    key_id: &str,
) -> aws_sdk_kms::types::KeyMetadata {
    client
        .describe_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
}

/// Process-level controls used by the HTTP robustness tests.
impl Gateway {
    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit;
    /// returns its exit status and how long it took (`None` if it was
    /// still running at `limit`, in which case it is killed).
    pub fn stop_and_wait(
        &mut self,
        limit: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        let started = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (None, started.elapsed())
    }

    /// The gateway's resident memory in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// File descriptors the gateway has open (Linux).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// How many token objects carry exactly `label`, as pkcs11-tool lists
/// them (in a process of its own, from the token's storage).
pub fn objects_labelled(token: &Token, label: &str) -> usize {
    list_objects(token)
        .lines()
        // pkcs11-tool quotes a data object's label.
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .filter(|l| l.trim().trim_matches('\'') == label)
        .count()
}

/// The token's objects as OpenSC's `pkcs11-tool --list-objects` shows
/// them to an HSM operator (logged in, so private objects too).
pub fn list_objects(token: &Token) -> String {
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .arg("--module")
        .arg(module())
        .args(["--token-label", "kmsgate", "--login", "--pin", PIN, "--list-objects"])
        .output()
        .expect("pkcs11-tool runs: install OpenSC (apt-get install -y opensc; scripts/test and .ci/run do)");
    assert!(
        out.status.success(),
        "pkcs11-tool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
