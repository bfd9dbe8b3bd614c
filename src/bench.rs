//! `kmsgate bench-token`: the token's raw ceiling for GenerateDataKey.
//!
//! One GenerateDataKey costs the token one C_GenerateRandom (data key and IV
//! together) and one AES-GCM C_Encrypt under the master key version, with
//! the blob header and the encoded encryption context as AAD. This module
//! does exactly that work, through the real hsm layer ([`Hsm::open`] and
//! [`crypto::generate_data_key`]), on N OS threads that each own a session
//! outside the pool, with no HTTP, no JSON, no SigV4 and no queue. The rate
//! it reaches is the ceiling the gateway's GenerateDataKey is compared with
//! (`scripts/bench`, docs/benchmarks.md).
//!
//! `--op encrypt` and `--op decrypt` measure the token work of Encrypt (a
//! 12-byte IV from the RNG, C_Encrypt of `--bytes` bytes) and of Decrypt (one
//! C_Decrypt of a data key's ciphertext) the same way, so that every HTTP
//! workload has a ceiling to be compared with.
//!
//! The master key version it uses is a throw-away one labelled
//! `kmsgate/bench/<uuid>`, created at the start and destroyed at the end; it
//! has no key record, so the key store never lists it.

use std::io::Write;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::blob::{self, EncryptionContext, Header};
use crate::config::{Config, IvSource};
use crate::hsm::objects::{self, MasterKeyVersion};
use crate::hsm::{Hsm, HsmError, OwnedSession, TokenSession, crypto};
use crate::server::{StartError, hsm_settings};

/// The token work one request of an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// C_GenerateRandom (key and IV) + C_Encrypt of the key.
    GenerateDataKey,
    /// C_GenerateRandom (IV) + C_Encrypt of `bytes` bytes.
    Encrypt,
    /// C_Decrypt of the ciphertext of a `bytes`-byte data key.
    Decrypt,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "generate-data-key",
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
        }
    }

    /// The plaintext lengths the KMS operation accepts.
    fn max_bytes(self) -> usize {
        match self {
            // GenerateDataKey's NumberOfBytes.
            Op::GenerateDataKey | Op::Decrypt => 1024,
            // Encrypt's Plaintext.
            Op::Encrypt => 4096,
        }
    }
}

impl std::str::FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Op, String> {
        match s {
            "generate-data-key" => Ok(Op::GenerateDataKey),
            "encrypt" => Ok(Op::Encrypt),
            "decrypt" => Ok(Op::Decrypt),
            _ => Err(format!(
                "unknown op '{s}' (generate-data-key, encrypt or decrypt)"
            )),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub op: Op,
    /// OS threads, each with its own logged-in session.
    pub threads: usize,
    /// How long every thread loops.
    pub duration: Duration,
    /// Data key or plaintext length (GenerateDataKey's AES_256 is 32).
    pub bytes: usize,
}

/// What one thread did.
#[derive(Debug, Clone)]
pub struct ThreadResult {
    pub ops: u64,
    pub elapsed: Duration,
}

impl ThreadResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub threads: Vec<ThreadResult>,
    /// From the common start to the last thread's end.
    pub wall: Duration,
    /// The process's CPU time (user + system) over the run, in clock ticks
    /// (`getconf CLK_TCK` per second), where /proc has it.
    pub cpu_ticks: Option<u64>,
    pub op: Op,
    pub bytes: usize,
}

impl Report {
    pub fn total_ops(&self) -> u64 {
        self.threads.iter().map(|t| t.ops).sum()
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.total_ops() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// One machine-readable line: `key=value` pairs separated by spaces.
    pub fn line(&self) -> String {
        let per_thread: Vec<String> = self
            .threads
            .iter()
            .map(|t| format!("{:.1}", t.ops_per_sec()))
            .collect();
        format!(
            "raw_ops_per_sec={:.1} op={} threads={} seconds={:.2} bytes={} ops={} errors=0 per_thread_ops_per_sec={} cpu_ticks={} peak_rss_kib={}",
            self.ops_per_sec(),
            self.op.name(),
            self.threads.len(),
            self.wall.as_secs_f64(),
            self.bytes,
            self.total_ops(),
            per_thread.join(","),
            self.cpu_ticks
                .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
            peak_rss_kib().map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
        )
    }
}

/// This process's peak resident set size (VmHWM), where /proc has it: the
/// token library's own memory, with the token's objects loaded.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's CPU time so far (utime + stime), in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Opens the token named in `config`, runs the benchmark and prints its
/// line on stdout.
pub fn run_from_config(config: &Config, options: &Options) -> Result<Report, StartError> {
    if options.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if options.duration.is_zero() {
        return Err("--seconds must be more than 0".into());
    }
    let max = options.op.max_bytes();
    if !(1..=max).contains(&options.bytes) {
        return Err(format!("--bytes must be 1-{max} for --op {}", options.op.name()).into());
    }
    let hsm = Hsm::open(hsm_settings(config)?)?;
    let result = run(&hsm, options);
    hsm.shutdown();
    let report = result?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", report.line())?;
    out.flush()?;
    Ok(report)
}

/// Runs the benchmark on an open token: creates the throw-away master key
/// version, loops on `options.threads` threads, destroys the key.
pub fn run(hsm: &Hsm, options: &Options) -> Result<Report, StartError> {
    let control = hsm.open_session()?;
    let key_id = Uuid::new_v4();
    let label = format!("kmsgate/bench/{key_id}");
    let key = objects::generate_master_key(&control.lend(), &label, key_id.as_bytes(), false)?;
    tracing::info!(
        %label,
        op = options.op.name(),
        threads = options.threads,
        seconds = options.duration.as_secs_f64(),
        "bench-token: master key version created"
    );
    let result = run_with_key(hsm, &control.lend(), key, key_id, options);
    if let Err(e) = objects::destroy_master_key(&control.lend(), key) {
        tracing::warn!(%label, error = %e, "bench-token: could not destroy the bench key");
    }
    result
}

fn run_with_key(
    hsm: &Hsm,
    control: &TokenSession,
    key: MasterKeyVersion,
    key_id: Uuid,
    options: &Options,
) -> Result<Report, StartError> {
    // What the operations pass as AAD: the 22-byte blob header and a
    // one-pair encryption context, canonically encoded.
    let header = Header {
        key_id,
        key_version: 1,
    };
    let context = EncryptionContext::from([("purpose".to_owned(), "bench".to_owned())]);
    let aad = blob::aad(&header, &context);
    let iv_source = hsm.capabilities().iv_source;

    // The work is real: a data key decrypts back to its plaintext. Its
    // ciphertext is what `--op decrypt` decrypts.
    let probe = crypto::generate_data_key(control, key, iv_source, &aad, options.bytes)?;
    let back = crypto::decrypt(control, key, iv_source, &probe.iv, &aad, &probe.ciphertext)?;
    if probe.plaintext.as_deref().map(Vec::as_slice) != Some(back.as_slice())
        || back.len() != options.bytes
    {
        return Err("bench-token: a data key did not decrypt to its plaintext".into());
    }
    let work = Work {
        op: options.op,
        key,
        iv_source,
        aad,
        plaintext: crypto::random(control, options.bytes)?,
        iv: probe.iv,
        ciphertext: probe.ciphertext,
        bytes: options.bytes,
    };

    let mut sessions = Vec::with_capacity(options.threads);
    for _ in 0..options.threads {
        sessions.push(hsm.open_session()?);
    }
    let gate = Gate::default();
    let (results, wall, cpu_ticks) = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(n, session)| {
                let (gate, work) = (&gate, &work);
                std::thread::Builder::new()
                    .name(format!("bench-{n}"))
                    .spawn_scoped(scope, move || worker(session, work, options.duration, gate))
            })
            .collect();
        // Start every thread at once, or none if one could not be started.
        let cpu_before = cpu_ticks();
        gate.open(handles.iter().all(Result::is_ok));
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(HsmError::Setup("a bench thread panicked".into()))),
                Err(e) => Err(HsmError::Setup(format!("cannot start a bench thread: {e}"))),
            })
            .collect();
        let wall = start.elapsed();
        let cpu = cpu_ticks()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        (results, wall, cpu)
    });
    let mut threads = Vec::with_capacity(results.len());
    for r in results {
        threads.push(r?);
    }
    Ok(Report {
        threads,
        wall,
        cpu_ticks,
        op: options.op,
        bytes: options.bytes,
    })
}

/// Everything a thread needs for one operation; shared read-only.
struct Work {
    op: Op,
    key: MasterKeyVersion,
    iv_source: IvSource,
    aad: Vec<u8>,
    /// What `Op::Encrypt` encrypts.
    plaintext: Zeroizing<Vec<u8>>,
    /// What `Op::Decrypt` decrypts.
    iv: [u8; crypto::IV_LEN],
    ciphertext: Vec<u8>,
    bytes: usize,
}

impl Work {
    fn once(&self, session: &TokenSession) -> Result<(), HsmError> {
        match self.op {
            Op::GenerateDataKey => {
                let dk = crypto::generate_data_key(
                    session,
                    self.key,
                    self.iv_source,
                    &self.aad,
                    self.bytes,
                )?;
                std::hint::black_box(&dk);
            }
            Op::Encrypt => {
                let sealed = crypto::encrypt(
                    session,
                    self.key,
                    self.iv_source,
                    &self.aad,
                    &self.plaintext,
                )?;
                std::hint::black_box(&sealed);
            }
            Op::Decrypt => {
                let plain = crypto::decrypt(
                    session,
                    self.key,
                    self.iv_source,
                    &self.iv,
                    &self.aad,
                    &self.ciphertext,
                )?;
                std::hint::black_box(&plain);
            }
        }
        Ok(())
    }
}

fn worker(
    session: OwnedSession,
    work: &Work,
    duration: Duration,
    gate: &Gate,
) -> Result<ThreadResult, HsmError> {
    if !gate.wait() {
        return Err(HsmError::Setup("bench aborted before it started".into()));
    }
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        work.once(&session.lend())?;
        ops += 1;
    }
    Ok(ThreadResult {
        ops,
        elapsed: start.elapsed(),
    })
}

/// Holds the threads until all are ready, then lets them go (or not) at once.
#[derive(Default)]
struct Gate {
    go: Mutex<Option<bool>>,
    opened: Condvar,
}

impl Gate {
    fn open(&self, go: bool) {
        *self.go.lock().unwrap_or_else(|e| e.into_inner()) = Some(go);
        self.opened.notify_all();
    }

    /// Blocks until [`Gate::open`]; answers whether to run.
    fn wait(&self) -> bool {
        let mut go = self.go.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(go) = *go {
                return go;
            }
            go = self.opened.wait(go).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// `kmsgate bench-xks-request`: scripts/bench's XKS encrypt workload, one
/// request signed once as AWS KMS signs it (SigV4, service
/// `kms-xks-proxy`, the store's region, signed headers exactly
/// `host;x-amz-date`, the body's SHA-256) and sent unchanged by wrk on every
/// connection. The gateway accepts the signature for 5 minutes, longer than
/// a workload runs. `content-type` is added after signing, as AWS KMS does.
pub mod xks {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, KeyInit, Mac};
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};

    use crate::config::{Config, read_secret};
    use crate::server::StartError;

    /// What to sign and where to send it.
    #[derive(Debug, Clone)]
    pub struct RequestOptions {
        /// The `[[xks.stores]]` name; its first credential signs.
        pub store: String,
        /// The `externalKeyId` to encrypt under.
        pub external_key_id: String,
        /// The gateway's plain-HTTP address, `http://HOST:PORT`.
        pub endpoint: String,
        /// Plaintext length (AWS KMS sends its own ciphertext of a data
        /// key, a few dozen bytes; at most 4,300).
        pub bytes: usize,
        /// AAD length (AWS KMS sends an encryption context's digest).
        pub aad_bytes: usize,
    }

    /// A signed request: its path, headers (Host first) and body.
    #[derive(Debug, Clone)]
    pub struct SignedRequest {
        pub path: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>, StartError> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|_| "HMAC key of a bad length")?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// SigV4 over `host;x-amz-date` and the body, as AWS KMS signs XKS
    /// calls (the spec's Appendix A).
    pub fn sign(
        access_key_id: &str,
        secret: &str,
        region: &str,
        host: &str,
        path: &str,
        body: &[u8],
        at: SystemTime,
    ) -> Result<Vec<(String, String)>, StartError> {
        let t = time::OffsetDateTime::from(at);
        let amz_date = t.format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))?;
        let day = &amz_date[..8];
        let canonical = format!(
            "POST\n{path}\n\nhost:{host}\nx-amz-date:{amz_date}\n\nhost;x-amz-date\n{}",
            hex::encode(Sha256::digest(body))
        );
        let scope = format!("{day}/{region}/kms-xks-proxy/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes())?;
        for part in [region, "kms-xks-proxy", "aws4_request"] {
            key = hmac(&key, part.as_bytes())?;
        }
        let signature = hex::encode(hmac(&key, to_sign.as_bytes())?);
        Ok(vec![
            ("Host".to_owned(), host.to_owned()),
            ("X-Amz-Date".to_owned(), amz_date),
            (
                "Authorization".to_owned(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders=host;x-amz-date, Signature={signature}"
                ),
            ),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ])
    }

    /// The encrypt request of `options`, signed now with the store's first
    /// credential. The plaintext and AAD are random bytes from `rand`
    /// (test data, not key material).
    pub fn encrypt_request(
        config: &Config,
        options: &RequestOptions,
    ) -> Result<SignedRequest, StartError> {
        let store = config
            .xks
            .stores
            .iter()
            .find(|s| s.name == options.store)
            .ok_or_else(|| format!("no XKS store '{}' in the config", options.store))?;
        let credential = store
            .credentials
            .first()
            .ok_or_else(|| format!("XKS store '{}' has no credential", store.name))?;
        let secret = read_secret(
            credential.secret_file.as_deref(),
            credential.secret_env.as_deref(),
        )?;
        if !(1..=4300).contains(&options.bytes) || options.aad_bytes > 8192 {
            return Err("--bytes must be 1-4300 and --aad-bytes at most 8192".into());
        }
        let host = options
            .endpoint
            .strip_prefix("http://")
            .ok_or("--endpoint must be http://HOST:PORT")?
            .trim_end_matches('/')
            .to_owned();
        let path = format!(
            "{}/kms/xks/v1/keys/{}/encrypt",
            store.path_prefix, options.external_key_id
        );
        let random = |n: usize| {
            let mut b = vec![0u8; n];
            rand::fill(&mut b[..]);
            STANDARD.encode(b)
        };
        let mut body = serde_json::json!({
            "requestMetadata": {
                "awsPrincipalArn": format!("arn:aws:iam::{}:role/kmsgate-bench", config.account_id),
                "kmsKeyArn": format!("arn:aws:kms:{}:{}:key/{}", store.region, config.account_id, uuid::Uuid::new_v4()),
                "kmsOperation": "Encrypt",
                "kmsRequestId": uuid::Uuid::new_v4().to_string(),
                "kmsViaService": "ebs",
            },
            "plaintext": random(options.bytes),
            "encryptionAlgorithm": "AES_GCM",
        });
        if options.aad_bytes > 0 {
            body["additionalAuthenticatedData"] = random(options.aad_bytes).into();
        }
        let body = serde_json::to_vec(&body)?;
        let headers = sign(
            &credential.access_key_id,
            secret.expose_secret(),
            &store.region,
            &host,
            &path,
            &body,
            SystemTime::now(),
        )?;
        Ok(SignedRequest {
            path,
            headers,
            body,
        })
    }

    /// Sends `request` once to `endpoint` (plain HTTP/1.1, a connection of
    /// its own) and returns the status and body.
    pub fn send_once(request: &SignedRequest) -> Result<(u16, String), StartError> {
        let host = request
            .headers
            .iter()
            .find(|(n, _)| n == "Host")
            .map(|(_, v)| v.clone())
            .ok_or("no Host header")?;
        let mut stream = TcpStream::connect(&host)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!("POST {} HTTP/1.1\r\n", request.path);
        for (n, v) in &request.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            request.body.len()
        ));
        stream.write_all(head.as_bytes())?;
        stream.write_all(&request.body)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {text:.200}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_owned());
        Ok((status, body))
    }

    /// A Lua string literal holding exactly `data`.
    fn lua_string(data: &[u8]) -> String {
        let mut out = String::from("\"");
        for &b in data {
            if (32..127).contains(&b) && b != b'"' && b != b'\\' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        out.push('"');
        out
    }

    /// The wrk script: this request on every connection, and one `BENCH`
    /// line from its done() hook in the format scripts/bench_kms.py's
    /// scripts print (scripts/bench reads both the same way).
    pub fn wrk_script(request: &SignedRequest) -> String {
        let mut lua = String::from(
            "-- Written by `kmsgate bench-xks-request`: one signed XKS encrypt request,\n-- sent unchanged on every connection.\nwrk.method = \"POST\"\n",
        );
        lua.push_str(&format!(
            "wrk.path = {}\nwrk.body = {}\n",
            lua_string(request.path.as_bytes()),
            lua_string(&request.body)
        ));
        for (n, v) in &request.headers {
            lua.push_str(&format!(
                "wrk.headers[{}] = {}\n",
                lua_string(n.as_bytes()),
                lua_string(v.as_bytes())
            ));
        }
        lua.push_str(
            r#"
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%.0f duration_us=%.0f bytes=%.0f status_errors=%.0f connect_errors=%.0f read_errors=%.0f write_errors=%.0f timeout_errors=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f\n",
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"#,
        );
        lua
    }

    /// Signs the request, checks that the gateway answers it 200 with a
    /// ciphertext, and writes the wrk script to `lua`.
    pub fn prepare(
        config: &Config,
        options: &RequestOptions,
        lua: &Path,
    ) -> Result<(), StartError> {
        let request = encrypt_request(config, options)?;
        let (status, body) = send_once(&request)?;
        if status != 200 || !body.contains("\"ciphertext\"") {
            return Err(
                format!("the signed XKS encrypt request got HTTP {status}: {body:.300}").into(),
            );
        }
        std::fs::write(lua, wrk_script(&request))?;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::auth::sigv4::{Credential, Verifier};

        /// The signer agrees with kmsgate's own verifier for XKS (service
        /// `kms-xks-proxy`, path as sent), and the verifier sees exactly
        /// `host;x-amz-date` signed.
        #[test]
        fn a_bench_request_verifies_as_aws_kms_signs_it() {
            let secret = "benchSecret0123456789abcdefghijklmnopqrstuvw=";
            let body = br#"{"plaintext":"AAAA"}"#;
            let path = "//kms/xks/v1/keys/k1/encrypt";
            let now = SystemTime::now();
            let headers = sign(
                "KMSGATEBENCHXKSKEY22",
                secret,
                "eu-west-1",
                "127.0.0.1:8080",
                path,
                body,
                now,
            )
            .unwrap();
            let mut map = http::HeaderMap::new();
            for (n, v) in &headers {
                map.insert(
                    http::header::HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                        .unwrap(),
                    v.parse().unwrap(),
                );
            }
            let verifier = Verifier::new(
                vec![Credential {
                    access_key_id: "KMSGATEBENCHXKSKEY22".into(),
                    secret: secret.into(),
                    principal: "bench".into(),
                }],
                "eu-west-1".into(),
                Duration::from_secs(300),
                false,
            )
            .for_service("kms-xks-proxy")
            .path_as_sent();
            let uri: http::Uri = path.parse().unwrap();
            verifier
                .verify(&http::Method::POST, &uri, &map, body, now)
                .unwrap();
            let mut tampered = body.to_vec();
            tampered[2] ^= 1;
            assert!(
                verifier
                    .verify(&http::Method::POST, &uri, &map, &tampered, now)
                    .is_err()
            );
        }

        #[test]
        fn lua_strings_escape_quotes_backslashes_and_control_bytes() {
            assert_eq!(lua_string(b"a\"b\\c\n"), "\"a\\034b\\092c\\010\"");
        }
    }
}
