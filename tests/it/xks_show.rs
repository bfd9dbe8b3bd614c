//! `kmsgate xks show STORE`: what the AWS KMS console and
//! CreateCustomKeyStore ask for, from the config alone. The configs here
//! name a PKCS#11 module, a PIN file and a KMS credential's secret file
//! that do not exist, so every run also proves that the command touches no
//! token and needs no PIN.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::kmsgate_bin;

const KEY_A: &str = "AKMSGATEXKSSHOWFIRST2";
const KEY_B: &str = "AKMSGATEXKSSHOWSECND3";
const SECRET_A: &str = "xksShowFirstSecret/0123456789+abcdefghijklmnop=";
const SECRET_B: &str = "xksShowSecondSecret0123456789abcdefghijklmnopQR";
const SECRET_B_ENV: &str = "KMSGATE_TEST_XKS_SHOW_SECRET_B";
const KEY_ID: &str = "0b7d4a9c-6f2e-4d1a-9c3b-2e5f8a7d6c41";

/// A config with two stores: `tenant-a` (prefix `/tenant-a`, two
/// credentials, a key by id and one by alias) and `plain` (empty prefix).
/// `endpoint`: the `[xks] uri_endpoint` line, if any.
fn write_config(dir: &Path, endpoint: Option<&str>) -> std::path::PathBuf {
    std::fs::write(dir.join("secret-a"), format!("{SECRET_A}\n")).unwrap();
    std::fs::write(dir.join("secret-c"), "c".repeat(44)).unwrap();
    let endpoint = endpoint
        .map(|e| format!("uri_endpoint = \"{e}\"\n"))
        .unwrap_or_default();
    let path = dir.join("kmsgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"workers = 1

[hsm]
module = "{d}/no-such-module.so"
token_label = "kmsgate"
pin_file = "{d}/no-such-pin"

[[auth.credentials]]
access_key_id = "AKIAKMSGATETESTKEY01"
secret_file = "{d}/no-such-secret"
principal = "tester"
allow = ["kms:*"]

[xks]
{endpoint}
[[xks.stores]]
name = "tenant-a"
path_prefix = "/tenant-a"
region = "eu-west-1"

[[xks.stores.credentials]]
access_key_id = "{KEY_A}"
secret_file = "{d}/secret-a"

[[xks.stores.credentials]]
access_key_id = "{KEY_B}"
secret_env = "{SECRET_B_ENV}"

[[xks.stores.keys]]
key = "{KEY_ID}"

[[xks.stores.keys]]
key = "alias/payroll"
external_key_id = "payroll-2026"
usage = "encrypt"

[[xks.stores]]
name = "plain"
path_prefix = ""
region = "us-east-1"

[[xks.stores.credentials]]
access_key_id = "AKMSGATEXKSSHOWPLAIN4"
secret_file = "{d}/secret-c"
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

/// `kmsgate xks show ARGS --config CONFIG`, with the most verbose log
/// filter (so a secret that reached a log line would show on stderr).
fn show(config: &Path, args: &[&str]) -> Output {
    Command::new(kmsgate_bin())
        .env("KMSGATE_LOG", "trace")
        .env(SECRET_B_ENV, SECRET_B)
        .args(["xks", "show"])
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("kmsgate runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_secret(what: &str, s: &str) {
    for secret in [SECRET_A, SECRET_B] {
        assert!(!s.contains(secret), "{what} holds a secret:\n{s}");
    }
}

#[test]
fn show_prints_endpoint_path_access_keys_and_key_ids_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some("https://xks.example.com"));
    let out = show(&config, &["tenant-a"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    for want in [
        "XksProxyUriEndpoint: https://xks.example.com",
        "XksProxyUriPath: /tenant-a/kms/xks/v1",
        &format!("AccessKeyId: {KEY_A}"),
        &format!("AccessKeyId: {KEY_B}"),
        &format!("XksKeyId: {KEY_ID} (kmsgate key {KEY_ID}, usage encrypt_decrypt)"),
        "XksKeyId: payroll-2026 (kmsgate key alias/payroll, usage encrypt)",
    ] {
        assert!(lines.contains(&want), "no line {want:?} in:\n{stdout}");
    }
    assert_no_secret("stdout", &stdout);
    assert_no_secret("stderr", &stderr);
}

#[test]
fn show_with_an_empty_prefix_and_no_endpoint_says_how_to_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None);
    let out = show(&config, &["plain"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        stdout.lines().any(|l| l == "XksProxyUriPath: /kms/xks/v1"),
        "{stdout}"
    );
    let endpoint = stdout
        .lines()
        .find(|l| l.starts_with("XksProxyUriEndpoint: "))
        .unwrap_or_else(|| panic!("no endpoint line in:\n{stdout}"));
    assert!(
        endpoint.contains("not set") && endpoint.contains("uri_endpoint = \"https://"),
        "{endpoint}"
    );
    assert!(!stdout.contains(&"c".repeat(44)), "{stdout}");
}

#[test]
fn show_secret_prints_the_console_proxy_configuration_file_with_the_first_credential() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some("https://xks.example.com"));
    let out = show(&config, &["tenant-a", "--secret"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let file: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    assert_eq!(
        file,
        serde_json::json!({
            "XksProxyUriPath": "/tenant-a/kms/xks/v1",
            "XksProxyAuthenticationCredential": {
                "AccessKeyId": KEY_A,
                "RawSecretAccessKey": SECRET_A,
            }
        })
    );
    assert!(!stdout.contains(SECRET_B), "{stdout}");
    assert_no_secret("stderr", &stderr);
}

#[test]
fn show_of_an_unknown_store_is_refused_naming_the_stores_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some("https://xks.example.com"));
    for args in [&["tenant-b"][..], &["tenant-b", "--secret"][..]] {
        let out = show(&config, args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{args:?}: stderr: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.contains("no XKS store 'tenant-b'") && stderr.contains("tenant-a, plain"),
            "{args:?}: {stderr}"
        );
        assert_no_secret("stderr", &stderr);
    }
}

#[test]
fn show_secret_with_an_invalid_secret_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some("https://xks.example.com"));
    let bad = "too-short-and-has-a-dash";
    std::fs::write(dir.path().join("secret-a"), bad).unwrap();
    let out = show(&config, &["tenant-a", "--secret"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("43-64 characters"), "{stderr}");
    assert!(!stderr.contains(bad), "{stderr}");
}
