//! TLS on the listener: aws-sdk-kms over HTTPS and mTLS, refusals of
//! clients without the right certificate, the client certificate as a
//! second factor, h2 and HTTP/1.1 by ALPN, certificate reload on SIGHUP,
//! and the refusal to serve plain HTTP off loopback.
//!
//! Every certificate is made at test time with rcgen, in the token's temp
//! dir.

#[path = "tls/pki.rs"]
pub(crate) mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{ACCESS_KEY, Gateway, REGION, SECRET, Token, error_of};
use aws_credential_types::Credentials;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pki::{Ca, Https, Leaf, RustlsHttpClient, client_tls, https_connector};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// The principal the harness's credential signs as.
const PRINCIPAL: &str = "tester";

/// The server's PEM files in the token dir, and the `[tls]` table naming them.
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl ServerFiles {
    fn write(dir: &Path, leaf: &Leaf) -> ServerFiles {
        let files = ServerFiles {
            cert: dir.join("server-chain.pem"),
            key: dir.join("server-key.pem"),
        };
        files.replace(leaf);
        files
    }

    fn replace(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert).unwrap();
        std::fs::write(&self.key, &leaf.key).unwrap();
    }

    fn table(&self, client_ca: Option<&Path>, client_cert_principal: bool) -> String {
        let mut t = format!(
            "[tls]\ncert_chain_file = \"{}\"\nprivate_key_file = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        );
        if let Some(ca) = client_ca {
            t += &format!("client_ca_file = \"{}\"\n", ca.display());
        }
        if client_cert_principal {
            t += "client_cert_principal = true\n";
        }
        t
    }
}

/// A token whose gateway serves TLS with a certificate from `ca`; with
/// `client_ca`, clients need a certificate from that CA.
fn tls_token(
    ca: &Ca,
    client_ca: Option<&Ca>,
    client_cert_principal: bool,
) -> (Arc<Token>, ServerFiles) {
    let token = Token::new();
    let files = ServerFiles::write(token.path(), &ca.server("kmsgate-test"));
    let client_ca_file = client_ca.map(|c| {
        let path = token.path().join("client-ca.pem");
        std::fs::write(&path, &c.pem).unwrap();
        path
    });
    let table = files.table(client_ca_file.as_deref(), client_cert_principal);
    let config = std::fs::read_to_string(token.config()).unwrap();
    std::fs::write(token.config(), format!("{config}\n{table}")).unwrap();
    (token, files)
}

fn tls_gateway(ca: &Ca, client_ca: Option<&Ca>, client_cert_principal: bool) -> Gateway {
    Gateway::start_on(tls_token(ca, client_ca, client_cert_principal).0)
}

fn sdk_client(gw: &Gateway, http: SharedHttpClient) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(&gw.endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET, None, None, "test"))
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .http_client(http)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// aws-sdk-kms on our rustls client config.
fn sdk_over(gw: &Gateway, tls: ClientConfig) -> aws_sdk_kms::Client {
    let client = HyperClient::builder(TokioExecutor::new()).build(https_connector(tls));
    sdk_client(gw, SharedHttpClient::new(RustlsHttpClient { client }))
}

/// A data key made and opened again: the whole round trip works.
async fn round_trip(kms: &aws_sdk_kms::Client) -> Result<(), String> {
    let key = kms
        .create_key()
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    let dk = kms
        .generate_data_key()
        .key_id(&key_id)
        .number_of_bytes(32)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let back = kms
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    assert_eq!(back.plaintext(), dk.plaintext());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_default_https_client_trusting_the_gateway_ca_works() {
    let ca = Ca::new("kmsgate test CA");
    let gw = tls_gateway(&ca, None, false);
    assert!(
        gw.endpoint.starts_with("https://127.0.0.1:"),
        "{}",
        gw.endpoint
    );

    // The SDK's own HTTPS client, told to trust the test CA: what an
    // application does with a private CA.
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(rustls_provider::CryptoMode::AwsLc))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(TrustStore::empty().with_pem_certificate(ca.pem.as_bytes()))
                .build()
                .unwrap(),
        )
        .build_https();
    round_trip(&sdk_client(&gw, http)).await.unwrap();

    // Plain HTTP to the TLS port gets no KMS answer.
    let plain = gw.client_as(ACCESS_KEY, SECRET, REGION);
    let plain = aws_sdk_kms::Client::from_conf(
        plain
            .config()
            .to_builder()
            .endpoint_url(format!("http://{}", gw.addr))
            .build(),
    );
    assert!(plain.list_keys().send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_works_over_mtls_with_a_certificate_from_the_client_ca() {
    let ca = Ca::new("kmsgate test CA");
    let clients = Ca::new("kmsgate client CA");
    let gw = tls_gateway(&ca, Some(&clients), false);
    let me = clients.client("any-name");
    let kms = sdk_over(&gw, client_tls(&[&ca], Some(&me), &[b"h2", b"http/1.1"]));
    round_trip(&kms).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mtls_a_client_without_a_certificate_or_with_another_cas_is_refused() {
    let ca = Ca::new("kmsgate test CA");
    let clients = Ca::new("kmsgate client CA");
    let strangers = Ca::new("some other CA");
    let gw = tls_gateway(&ca, Some(&clients), false);

    let anonymous = sdk_over(&gw, client_tls(&[&ca], None, &[b"http/1.1"]));
    let err = anonymous.list_keys().send().await.unwrap_err();
    assert!(
        err.as_service_error().is_none(),
        "no certificate: no KMS answer at all, got {err:?}"
    );

    let stranger = strangers.client(PRINCIPAL);
    let wrong = sdk_over(&gw, client_tls(&[&ca], Some(&stranger), &[b"http/1.1"]));
    let err = wrong.list_keys().send().await.unwrap_err();
    assert!(
        err.as_service_error().is_none(),
        "another CA's certificate: no KMS answer at all, got {err:?}"
    );

    // The refusals cost the gateway nothing: a good client still works.
    let me = clients.client(PRINCIPAL);
    let good = sdk_over(&gw, client_tls(&[&ca], Some(&me), &[b"http/1.1"]));
    good.list_keys().send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_cert_principal_the_certificate_must_name_the_signer() {
    let ca = Ca::new("kmsgate test CA");
    let clients = Ca::new("kmsgate client CA");
    let gw = tls_gateway(&ca, Some(&clients), true);

    let named = clients.client(PRINCIPAL);
    let kms = sdk_over(&gw, client_tls(&[&ca], Some(&named), &[b"http/1.1"]));
    round_trip(&kms).await.unwrap();

    // A valid signature of "tester" over a certificate naming someone else.
    let other = clients.client("someone-else");
    let kms = sdk_over(&gw, client_tls(&[&ca], Some(&other), &[b"http/1.1"]));
    let err = kms.list_keys().send().await.unwrap_err();
    let (code, message) = error_of(&err);
    assert_eq!(code, "AccessDeniedException", "{message}");
    assert!(message.contains(PRINCIPAL), "{message}");
    assert!(
        gw.log_has(|l| l.contains("AccessDeniedException")),
        "the refusal is audited"
    );
}

/// GET /healthz over a fresh connection offering only `alpn`: the status
/// and the HTTP version the server chose.
async fn probe(gw: &Gateway, tls: ClientConfig) -> (u16, http::Version) {
    let client: HyperClient<Https, Empty<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(https_connector(tls));
    let response = client
        .get(format!("{}/healthz", gw.endpoint).parse().unwrap())
        .await
        .unwrap();
    (response.status().as_u16(), response.version())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_h2_and_http1_and_the_sdk_works_over_h2() {
    let ca = Ca::new("kmsgate test CA");
    let gw = tls_gateway(&ca, None, false);

    let h2 = probe(&gw, client_tls(&[&ca], None, &[b"h2"])).await;
    assert_eq!(h2, (200, http::Version::HTTP_2));
    let h1 = probe(&gw, client_tls(&[&ca], None, &[b"http/1.1"])).await;
    assert_eq!(h1, (200, http::Version::HTTP_11));

    // A whole KMS round trip with h2 as the only protocol offered.
    let kms = sdk_over(&gw, client_tls(&[&ca], None, &[b"h2"]));
    round_trip(&kms).await.unwrap();
}

/// An HTTP/1.1 connection of its own: the certificate the server showed,
/// and a sender for requests on that same connection.
async fn open_connection(
    gw: &Gateway,
    cas: &[&Ca],
) -> (
    CertificateDer<'static>,
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) {
    let tcp = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(cas, None, &[])));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (cert, sender)
}

async fn healthz_on(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> u16 {
    let request = http::Request::get("/healthz")
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

fn der_of(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()
}

fn sighup(gw: &Gateway) {
    let ok = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_loads_a_new_certificate_for_new_connections_and_keeps_open_ones() {
    let first_ca = Ca::new("first CA");
    let second_ca = Ca::new("second CA");
    let (token, files) = tls_token(&first_ca, None, false);
    let first = first_ca.server("first");
    files.replace(&first);
    let gw = Gateway::start_on(token);
    let trust = [&first_ca, &second_ca];

    let (cert, mut open) = open_connection(&gw, &trust).await;
    assert_eq!(cert, der_of(&first));
    assert_eq!(healthz_on(&mut open).await, 200);

    let second = second_ca.server("second");
    files.replace(&second);
    sighup(&gw);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (cert, _) = open_connection(&gw, &trust).await;
        if cert == der_of(&second) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections still get the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reload still serves.
    assert_eq!(healthz_on(&mut open).await, 200);

    // A broken file on reload: the certificate in use stays.
    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    sighup(&gw);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("TLS reload failed") {
        assert!(
            Instant::now() < deadline,
            "no error logged for the bad file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cert, mut fresh) = open_connection(&gw, &trust).await;
    assert_eq!(cert, der_of(&second));
    assert_eq!(healthz_on(&mut fresh).await, 200);
}

/// Starts `kmsgate serve` on `listen` and returns its first stdout line
/// (empty if it exited first) and stderr; the process is killed.
fn start_once(token: &Token, listen: &str) -> (String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmsgate"))
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .args(["serve", "--config"])
        .arg(token.config())
        .args(["--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (line, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn plain_http_on_a_non_loopback_address_needs_the_opt_in() {
    let token = Token::new();
    let (line, stderr) = start_once(&token, "0.0.0.0:0");
    assert_eq!(line, "", "it started: {line}");
    assert!(
        stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0")
            && stderr.contains("insecure_plain_http = true"),
        "{stderr}"
    );

    // Loopback needs no opt-in; off loopback the opt-in is honoured.
    let (line, _) = start_once(&token, "127.0.0.1:0");
    assert!(
        line.starts_with("kmsgate listening on http://127.0.0.1:"),
        "{line}"
    );
    let config = std::fs::read_to_string(token.config()).unwrap();
    std::fs::write(
        token.config(),
        format!("insecure_plain_http = true\n{config}"),
    )
    .unwrap();
    let (line, stderr) = start_once(&token, "0.0.0.0:0");
    assert!(
        line.starts_with("kmsgate listening on http://0.0.0.0:"),
        "{line}\n{stderr}"
    );
}
