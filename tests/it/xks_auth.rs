//! XKS proxy authentication, authorization and protection (issue 21,
//! items 5, 6 and 8), through a real gateway: SigV4 as AWS KMS and curl
//! sign and every way a signature can be wrong; two credentials at once
//! and their rotation by SIGHUP (one process and `--workers 2`); secondary
//! authorization rules; per-store throttling; per-store mTLS.
//!
//! Requests are signed here with `aws-sigv4` rather than with the shared
//! XKS client, because each test needs to get one part of the signature
//! wrong on purpose (scope, time, path normalisation, signed headers).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::tls::pki::{self, Ca, client_tls, https_connector};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;

use crate::common::{Gateway, Token, kmsgate_bin};
use crate::workers::{Supervised, workers_of};

/// An XKS credential: the access key id and the secret (in a file in the
/// token's directory, named after the id).
#[derive(Clone, Copy)]
struct Cred {
    id: &'static str,
    secret: &'static str,
}

const A: Cred = Cred {
    id: "XKSAUTHTESTAAAAAAAA2",
    secret: "aaaaAAAA1111bbbbBBBB2222ccccCCCC3333dddd+/=",
};
const B: Cred = Cred {
    id: "XKSAUTHTESTBBBBBBBB3",
    secret: "bbbbBBBB1111ccccCCCC2222ddddDDDD3333eeee+/=",
};
const C: Cred = Cred {
    id: "XKSAUTHTESTCCCCCCCC4",
    secret: "ccccCCCC1111ddddDDDD2222eeeeEEEE3333ffff+/=",
};
const XKS_REGION: &str = "eu-west-1";
const AWS_SUBJECT: &str = "cks.kms.eu-west-1.amazonaws.com";

fn secret_file(dir: &Path, cred: Cred) -> PathBuf {
    let path = dir.join(format!("xks-{}.secret", cred.id));
    std::fs::write(&path, cred.secret).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// One `[[xks.stores]]` table: `scalars` are extra keys of the store,
/// `tables` its sub-tables (`[xks.stores.mtls]`, rules).
fn store(
    dir: &Path,
    name: &str,
    prefix: &str,
    creds: &[Cred],
    scalars: &str,
    tables: &str,
) -> String {
    let mut t = format!(
        "\n[[xks.stores]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nregion = \"{XKS_REGION}\"\n{scalars}\n"
    );
    for c in creds {
        t += &format!(
            "[[xks.stores.credentials]]\naccess_key_id = \"{}\"\nsecret_file = \"{}\"\n",
            c.id,
            secret_file(dir, *c).display()
        );
    }
    t + tables + "\n"
}

/// The token's config with `[xks]` set to `stores` (and `more` tables
/// before them); replaces any earlier `[xks]` written by this function.
fn write_xks(token: &Token, more: &str, stores: &str) {
    const MARK: &str = "\n# xks_auth\n";
    let config = std::fs::read_to_string(token.config()).unwrap();
    let base = config.split(MARK).next().unwrap().to_owned();
    std::fs::write(token.config(), format!("{base}{MARK}{more}\n{stores}")).unwrap();
}

/// How a request is signed. The default is AWS KMS's way with `A`.
#[derive(Clone)]
struct Sig {
    cred: Cred,
    region: &'static str,
    service: &'static str,
    /// Seconds added to the signing time.
    skew: i64,
    /// curl's `--aws-sigv4`: `content-type;host;x-amz-date`.
    curl: bool,
    /// Sign the path normalised (`//kms` as `/kms`) whatever is sent.
    normalise: bool,
    /// Send this body instead of the one signed.
    tampered: Option<&'static str>,
}

impl Default for Sig {
    fn default() -> Self {
        Sig {
            cred: A,
            region: XKS_REGION,
            service: "kms-xks-proxy",
            skew: 0,
            curl: false,
            normalise: false,
            tampered: None,
        }
    }
}

impl Sig {
    fn by(cred: Cred) -> Sig {
        Sig {
            cred,
            ..Sig::default()
        }
    }
}

/// A health request body.
fn health_body() -> String {
    format!(
        r#"{{"requestMetadata":{{"kmsRequestId":"{}","kmsOperation":"KmsHealthCheck"}}}}"#,
        uuid::Uuid::new_v4()
    )
}

/// The signed request: host from `endpoint`, body `body`.
fn signed(endpoint: &str, path: &str, body: &str, sig: &Sig) -> http::Request<Full<Bytes>> {
    let host = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let identity = Credentials::new(sig.cred.id, sig.cred.secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.uri_path_normalization_mode = if sig.normalise {
        UriPathNormalizationMode::Enabled
    } else {
        UriPathNormalizationMode::Disabled
    };
    let time = if sig.skew >= 0 {
        SystemTime::now() + Duration::from_secs(sig.skew.unsigned_abs())
    } else {
        SystemTime::now() - Duration::from_secs(sig.skew.unsigned_abs())
    };
    let params = SigningParams::builder()
        .identity(&identity)
        .region(sig.region)
        .name(sig.service)
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let url = format!("{endpoint}{path}");
    let mut to_sign = vec![("host".to_owned(), host.to_owned())];
    if sig.curl {
        to_sign.push(("content-type".into(), "application/json".into()));
    }
    let signable = SignableRequest::new(
        "POST",
        url.clone(),
        to_sign.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let sent = sig.tampered.map_or(body.to_owned(), str::to_owned);
    let mut request = http::Request::post(url)
        .header("host", host)
        .body(Full::new(Bytes::from(sent)))
        .unwrap();
    instructions.apply_to_request_http1x(&mut request);
    // AWS KMS adds the content type after signing; curl signs it.
    request
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let auth = request.headers()["authorization"].to_str().unwrap();
    let expected = if sig.curl {
        "SignedHeaders=content-type;host;x-amz-date,"
    } else {
        "SignedHeaders=host;x-amz-date,"
    };
    assert!(auth.contains(expected), "{auth}");
    request
}

/// The answer: status and JSON body (`Null` when not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: serde_json::Value,
}

impl Answer {
    fn error_name(&self) -> &str {
        self.body["errorName"].as_str().unwrap_or("")
    }

    fn is(&self, status: u16, error_name: &str) -> bool {
        self.status == status && self.error_name() == error_name
    }
}

/// Sends a signed XKS request over plain HTTP, or over TLS with `tls`.
async fn send(
    endpoint: &str,
    tls: Option<ClientConfig>,
    path: &str,
    body: &str,
    sig: &Sig,
) -> Result<Answer, String> {
    let request = signed(endpoint, path, body, sig);
    let response = match tls {
        None => HyperClient::builder(TokioExecutor::new())
            .build_http()
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?,
        Some(config) => HyperClient::builder(TokioExecutor::new())
            .build(https_connector(config))
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?,
    };
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok(Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    })
}

async fn health(endpoint: &str, prefix: &str, sig: &Sig) -> Answer {
    send(
        endpoint,
        None,
        &format!("{prefix}/kms/xks/v1/health"),
        &health_body(),
        sig,
    )
    .await
    .unwrap()
}

fn sighup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP {pid} failed");
}

fn alive(pid: u32) -> bool {
    crate::workers::alive(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_as_aws_kms_and_curl_make_them_pass_and_every_wrong_one_is_refused() {
    let token = Token::new();
    write_xks(&token, "", &store(token.path(), "s", "", &[A, B], "", ""));
    let gw = Gateway::start_on(token);
    let ep = gw.endpoint.as_str();

    // AWS KMS's way (host;x-amz-date), curl's way (content-type too, Host
    // with the port), either credential, and the empty prefix sent and
    // signed as `//kms/xks/v1`.
    let ok = health(ep, "", &Sig::default()).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let curl = Sig {
        curl: true,
        ..Sig::by(B)
    };
    let ok = health(ep, "", &curl).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let ok = health(ep, "/", &Sig::default()).await;
    assert_eq!(ok.status, 200, "// as sent: {ok:?}");

    let refused = [
        (
            "wrong secret",
            Sig {
                cred: Cred {
                    id: A.id,
                    secret: B.secret,
                },
                ..Sig::default()
            },
            "",
        ),
        (
            "wrong region",
            Sig {
                region: "us-east-1",
                ..Sig::default()
            },
            "",
        ),
        (
            "service kms",
            Sig {
                service: "kms",
                ..Sig::default()
            },
            "",
        ),
        (
            "6 minutes ahead",
            Sig {
                skew: 360,
                ..Sig::default()
            },
            "",
        ),
        (
            "6 minutes behind",
            Sig {
                skew: -360,
                ..Sig::default()
            },
            "",
        ),
        ("unknown key id", Sig::by(C), ""),
        (
            "tampered body",
            Sig {
                tampered: Some(
                    r#"{"requestMetadata":{"kmsRequestId":"x","kmsOperation":"KmsHealthCheck"}} "#,
                ),
                ..Sig::default()
            },
            "",
        ),
        (
            "normalised path signed, // sent",
            Sig {
                normalise: true,
                ..Sig::default()
            },
            "/",
        ),
    ];
    for (what, sig, prefix) in refused {
        let answer = health(ep, prefix, &sig).await;
        assert!(
            answer.is(401, "AuthenticationFailedException"),
            "{what}: {answer:?}"
        );
    }
    // Within the skew is fine.
    let ok = health(
        ep,
        "",
        &Sig {
            skew: -240,
            ..Sig::default()
        },
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
}

/// Sends `sig`'s health requests in a loop until `stop`; returns how many
/// were answered other than 200.
fn hammer(
    endpoint: String,
    sig: Sig,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut sent, mut bad) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let a = health(&endpoint, "", &sig).await;
            sent += 1;
            if a.status != 200 {
                bad.push(format!("{a:?}"));
            }
        }
        (sent, bad)
    })
}

/// Polls until `sig` is answered `status` on every one of `n` fresh
/// connections in a row (with workers, each may reach another process),
/// for up to 30 s.
async fn until_all(endpoint: &str, sig: &Sig, status: u16, n: usize) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let mut all = true;
        for _ in 0..n {
            if health(endpoint, "", sig).await.status != status {
                all = false;
                break;
            }
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Rewrites the store from A+B to A+C and reloads with SIGHUP to `pid`:
/// B stops, C starts, A works throughout; a config that then fails to
/// load (C's secret file gone) keeps A and C.
async fn rotate_by_sighup(
    token: &Token,
    endpoint: &str,
    pid: u32,
    processes: &[u32],
    log: impl Fn() -> String,
    reloads: usize,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kept = hammer(endpoint.to_owned(), Sig::default(), stop.clone());
    let c = health(endpoint, "", &Sig::by(C)).await;
    assert!(c.is(401, "AuthenticationFailedException"), "{c:?}");
    assert_eq!(health(endpoint, "", &Sig::by(B)).await.status, 200);

    write_xks(token, "", &store(token.path(), "s", "", &[A, C], "", ""));
    sighup(pid);
    assert!(
        until_all(endpoint, &Sig::by(C), 200, 10).await,
        "the added credential never worked:\n{}",
        log()
    );
    assert!(
        until_all(endpoint, &Sig::by(B), 401, 10).await,
        "the removed credential kept working"
    );
    // Every process says so (each worker reloads on its own).
    let reloaded = || {
        log()
            .matches("SIGHUP: XKS credentials, mTLS CAs and authorization rules reloaded")
            .count()
    };
    let started = Instant::now();
    while reloaded() < reloads && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloaded(), reloads, "{}", log());

    // A config whose secret cannot be read: the credentials in use stay.
    std::fs::remove_file(token.path().join(format!("xks-{}.secret", C.id))).unwrap();
    let config = std::fs::read_to_string(token.config()).unwrap();
    std::fs::write(token.config(), &config).unwrap();
    sighup(pid);
    let started = Instant::now();
    while log().matches("SIGHUP: XKS reload failed").count() < reloads
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        log().matches("SIGHUP: XKS reload failed").count() >= reloads,
        "{}",
        log()
    );
    for _ in 0..10 {
        assert_eq!(health(endpoint, "", &Sig::by(C)).await.status, 200);
        assert_eq!(health(endpoint, "", &Sig::by(B)).await.status, 401);
    }

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, bad) = kept.await.unwrap();
    assert!(sent > 0);
    assert!(
        bad.is_empty(),
        "the kept credential failed {} of {sent}: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    for p in processes {
        assert!(alive(*p), "process {p} is gone: restarted?");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_credentials_without_a_restart() {
    let token = Token::new();
    write_xks(&token, "", &store(token.path(), "s", "", &[A, B], "", ""));
    let gw = Gateway::start_on(token.clone());
    let pid = gw.pid();
    rotate_by_sighup(&token, &gw.endpoint, pid, &[pid], || gw.log(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_credentials_in_every_worker() {
    let token = Token::new();
    write_xks(&token, "", &store(token.path(), "s", "", &[A, B], "", ""));
    let gw = Supervised::start(token.clone(), "2");
    let workers = gw.workers();
    assert_eq!(workers.len(), 2, "{}", gw.log());
    rotate_by_sighup(&token, &gw.endpoint, gw.pid(), &workers, || gw.log(), 2).await;
    assert_eq!(workers_of(gw.pid()), workers, "no worker was restarted");
}

/// An encrypt request for an external key no store exposes: past
/// secondary authorization it is KeyNotFoundException (404).
fn encrypt_body(principal: &str, via: Option<&str>) -> String {
    let via = via.map_or(String::new(), |v| format!(r#","kmsViaService":"{v}""#));
    format!(
        r#"{{"requestMetadata":{{"awsPrincipalArn":"{principal}","kmsKeyArn":"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab","kmsOperation":"Encrypt","kmsRequestId":"{}"{via}}},"plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM"}}"#,
        uuid::Uuid::new_v4()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_authorization_denies_by_rule_and_never_health() {
    let token = Token::new();
    let rules = r#"
[[xks.stores.authorization]]
name = "only-through-s3"
effect = "allow"
kms_via_service = ["s3.*.amazonaws.com"]

[[xks.stores.authorization]]
name = "no-blocked-roles"
effect = "deny"
aws_principal_arn = ["arn:aws:iam::*:role/Blocked*", "arn:aws:iam::11112222333?:user/mallory"]
"#;
    write_xks(&token, "", &store(token.path(), "s", "", &[A], "", rules));
    let gw = Gateway::start_on(token);
    let ep = gw.endpoint.as_str();
    let path = "/kms/xks/v1/keys/not-exposed/encrypt";
    let call = |principal: &'static str, via: Option<&'static str>| async move {
        send(
            ep,
            None,
            path,
            &encrypt_body(principal, via),
            &Sig::default(),
        )
        .await
        .unwrap()
    };

    let allowed = call(
        "arn:aws:iam::111122223333:role/App",
        Some("s3.eu-west-1.amazonaws.com"),
    )
    .await;
    assert!(allowed.is(404, "KeyNotFoundException"), "{allowed:?}");
    let blocked = call(
        "arn:aws:iam::111122223333:role/BlockedBatch",
        Some("s3.eu-west-1.amazonaws.com"),
    )
    .await;
    assert!(blocked.is(403, "AccessDeniedException"), "{blocked:?}");
    assert!(
        gw.log_has(|l| l.contains("kmsgate::audit: record=")
            && l.contains("no-blocked-roles")
            && l.contains("AccessDeniedException")),
        "the audit record names the rule:\n{}",
        gw.log()
    );
    let mallory = call(
        "arn:aws:iam::111122223334:user/mallory",
        Some("s3.eu-west-1.amazonaws.com"),
    )
    .await;
    assert!(mallory.is(403, "AccessDeniedException"), "{mallory:?}");
    // Not through S3, or through no service at all: no allow rule matches.
    let ebs = call(
        "arn:aws:iam::111122223333:role/App",
        Some("ebs.eu-west-1.amazonaws.com"),
    )
    .await;
    assert!(ebs.is(403, "AccessDeniedException"), "{ebs:?}");
    let direct = call("arn:aws:iam::111122223333:role/App", None).await;
    assert!(direct.is(403, "AccessDeniedException"), "{direct:?}");
    assert!(
        gw.log_has(|l| l.contains("kmsgate::audit: record=") && l.contains("no allow rule matched")),
        "{}",
        gw.log()
    );
    // Case-sensitive, as IAM's StringLike.
    let upper = call(
        "arn:aws:iam::111122223333:role/App",
        Some("S3.eu-west-1.amazonaws.com"),
    )
    .await;
    assert!(upper.is(403, "AccessDeniedException"), "{upper:?}");
    // Health is never subject to the rules.
    let h = health(ep, "", &Sig::default()).await;
    assert_eq!(h.status, 200, "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_over_its_rate_is_throttled_and_recovers_and_others_are_not() {
    let token = Token::new();
    let stores = store(
        token.path(),
        "slow",
        "/slow",
        &[A],
        "max_requests_per_second = 5",
        "",
    ) + &store(token.path(), "fast", "/fast", &[A], "", "");
    write_xks(&token, "", &stores);
    let gw = Gateway::start_on(token);
    let burst = |prefix: &'static str| {
        let ep = gw.endpoint.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let ep = ep.clone();
                set.spawn(async move { health(&ep, prefix, &Sig::default()).await });
            }
            let mut answers = Vec::new();
            while let Some(a) = set.join_next().await {
                answers.push(a.unwrap());
            }
            answers
        }
    };
    let slow = burst("/slow").await;
    let ok = slow.iter().filter(|a| a.status == 200).count();
    let throttled = slow
        .iter()
        .filter(|a| a.is(429, "ThrottlingException"))
        .count();
    assert_eq!(ok + throttled, 50, "{slow:?}");
    // 5 a second with a burst of 5: most of 50 sent at once are refused,
    // even on a loaded machine that takes seconds to send them.
    assert!(
        ok >= 1 && throttled >= 10,
        "{ok} served, {throttled} throttled"
    );

    let fast = burst("/fast").await;
    assert!(fast.iter().all(|a| a.status == 200), "{fast:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = health(&gw.endpoint, "/slow", &Sig::default()).await;
    assert_eq!(again.status, 200, "{again:?}");
}

/// A gateway serving TLS (with `tls.client_ca_file` = `required`, if
/// any), and three stores: `/m` with mTLS to `right` (subject
/// [`AWS_SUBJECT`]), `/o` with mTLS to `other` and `/p` without mTLS.
fn mtls_gateway(server: &Ca, right: &Ca, other: &Ca, required: Option<&Ca>) -> Gateway {
    let token = Token::new();
    let dir = token.path();
    let leaf = server.server("kmsgate-xks");
    let (cert, key) = (dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert, &leaf.cert).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    let ca_file = |name: &str, ca: &Ca| {
        let path = dir.join(name);
        std::fs::write(&path, &ca.pem).unwrap();
        path
    };
    let mtls = |path: PathBuf, subject: &str| {
        format!(
            "[xks.stores.mtls]\nclient_ca_file = \"{}\"\nsubject = \"{subject}\"\n",
            path.display()
        )
    };
    let mut tls = format!(
        "[tls]\ncert_chain_file = \"{}\"\nprivate_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    if let Some(ca) = required {
        tls += &format!(
            "client_ca_file = \"{}\"\n",
            ca_file("tls-client-ca.pem", ca).display()
        );
    }
    let stores = store(
        dir,
        "m",
        "/m",
        &[A],
        "",
        &mtls(ca_file("right-ca.pem", right), AWS_SUBJECT),
    ) + &store(
        dir,
        "o",
        "/o",
        &[A],
        "",
        &mtls(ca_file("other-ca.pem", other), "someone.example.com"),
    ) + &store(dir, "p", "/p", &[A], "", "");
    write_xks(&token, &tls, &stores);
    Gateway::start_on(token)
}

/// Health on store `prefix` over TLS trusting `server`, presenting
/// `identity`; `Err` when the connection (the handshake) fails.
async fn mtls_health(
    endpoint: &str,
    server: &Ca,
    identity: Option<pki::Leaf>,
    prefix: &str,
) -> Result<Answer, String> {
    let config = client_tls(&[server], identity.as_ref(), &[b"http/1.1"]);
    send(
        endpoint,
        Some(config),
        &format!("{prefix}/kms/xks/v1/health"),
        &health_body(),
        &Sig::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_stores_client_ca() {
    let server = Ca::new("xks server CA");
    let right = Ca::new("xks right client CA");
    let other = Ca::new("xks other client CA");
    let next = Ca::new("xks next client CA");
    let gw = mtls_gateway(&server, &right, &other, None);
    let ep = gw.endpoint.as_str();
    let ok = mtls_health(ep, &server, Some(right.client(AWS_SUBJECT)), "/m").await;
    assert!(matches!(&ok, Ok(a) if a.status == 200), "{ok:?}");
    let before = mtls_health(ep, &server, Some(next.client(AWS_SUBJECT)), "/m").await;
    assert!(before.is_err(), "{before:?}");

    // The store's CA file now holds another CA.
    std::fs::write(gw.token.path().join("right-ca.pem"), &next.pem).unwrap();
    sighup(gw.pid());
    let started = Instant::now();
    let mut now = before;
    while started.elapsed() < Duration::from_secs(30) {
        now = mtls_health(ep, &server, Some(next.client(AWS_SUBJECT)), "/m").await;
        if matches!(&now, Ok(a) if a.status == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(&now, Ok(a) if a.status == 200),
        "{now:?}\n{}",
        gw.log()
    );
    // The old CA is gone from the handshake and from the store.
    let old = mtls_health(ep, &server, Some(right.client(AWS_SUBJECT)), "/m").await;
    assert!(old.is_err(), "{old:?}");
    // The other store is untouched.
    let o = mtls_health(ep, &server, Some(other.client("someone.example.com")), "/o").await;
    assert!(matches!(&o, Ok(a) if a.status == 200), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_needs_the_stores_ca_and_subject_and_only_for_that_store() {
    let server = Ca::new("xks server CA");
    let right = Ca::new("xks right client CA");
    let other = Ca::new("xks other client CA");
    let stranger = Ca::new("xks unknown CA");
    let gw = mtls_gateway(&server, &right, &other, None);
    assert!(gw.endpoint.starts_with("https://"), "{}", gw.endpoint);
    let ep = gw.endpoint.as_str();
    let call = |identity, prefix| mtls_health(ep, &server, identity, prefix);
    let unauthenticated = |a: &Result<Answer, String>| matches!(a, Ok(a) if a.is(401, "AuthenticationFailedException"));

    let ok = call(Some(right.client(AWS_SUBJECT)), "/m").await;
    assert!(matches!(&ok, Ok(a) if a.status == 200), "{ok:?}");
    let wrong_cn = call(Some(right.client("cks.kms.us-east-1.amazonaws.com")), "/m").await;
    assert!(unauthenticated(&wrong_cn), "{wrong_cn:?}");
    // Another configured CA passes the handshake, not the store.
    let other_ca = call(Some(other.client(AWS_SUBJECT)), "/m").await;
    assert!(unauthenticated(&other_ca), "{other_ca:?}");
    let none = call(None, "/m").await;
    assert!(unauthenticated(&none), "{none:?}");
    // A CA nobody configured: refused at the handshake.
    let refused = call(Some(stranger.client(AWS_SUBJECT)), "/m").await;
    assert!(refused.is_err(), "{refused:?}");

    // The store without [mtls] needs no certificate; the other mTLS
    // store takes its own CA and subject.
    let plain = call(None, "/p").await;
    assert!(matches!(&plain, Ok(a) if a.status == 200), "{plain:?}");
    let o = call(Some(other.client("someone.example.com")), "/o").await;
    assert!(matches!(&o, Ok(a) if a.status == 200), "{o:?}");
    let o_wrong = call(Some(right.client("someone.example.com")), "/o").await;
    assert!(unauthenticated(&o_wrong), "{o_wrong:?}");
}

#[test]
fn mtls_without_tls_is_refused_at_start_with_the_reason() {
    let token = Token::new();
    let ca = Ca::new("xks client CA");
    let path = token.path().join("client-ca.pem");
    std::fs::write(&path, &ca.pem).unwrap();
    let mtls = format!(
        "[xks.stores.mtls]\nclient_ca_file = \"{}\"\nsubject = \"{AWS_SUBJECT}\"\n",
        path.display()
    );
    write_xks(&token, "", &store(token.path(), "m", "/m", &[A], "", &mtls));
    let mut child = Command::new(kmsgate_bin())
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .args(["serve", "--config"])
        .arg(token.config())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(line, "", "it started: {line}");
    assert!(
        stderr.contains("xks store 'm' has [mtls], which needs [tls]"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_client_ca_file_a_certificate_is_required_and_the_store_cas_join_it() {
    let server = Ca::new("xks server CA");
    let right = Ca::new("xks right client CA");
    let other = Ca::new("xks other client CA");
    let listener = Ca::new("tls client CA");
    let gw = mtls_gateway(&server, &right, &other, Some(&listener));
    let ep = gw.endpoint.as_str();
    // tls.client_ca_file makes a certificate required at the handshake.
    let none = mtls_health(ep, &server, None, "/p").await;
    assert!(none.is_err(), "{none:?}");
    // Its CA's certificates serve stores without [mtls], not the mTLS store.
    let plain = mtls_health(ep, &server, Some(listener.client("app")), "/p").await;
    assert!(matches!(&plain, Ok(a) if a.status == 200), "{plain:?}");
    let m = mtls_health(ep, &server, Some(listener.client(AWS_SUBJECT)), "/m").await;
    assert!(
        matches!(&m, Ok(a) if a.is(401, "AuthenticationFailedException")),
        "{m:?}"
    );
    // The store's CA is accepted at the handshake too, and by its store.
    let ok = mtls_health(ep, &server, Some(right.client(AWS_SUBJECT)), "/m").await;
    assert!(matches!(&ok, Ok(a) if a.status == 200), "{ok:?}");
}
