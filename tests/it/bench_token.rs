//! `kmsgate bench-token` writes to the live token: it makes a throw-away
//! master key version (`kmsgate/bench/<uuid>`), measures on it and destroys
//! it. It prints one machine-readable line with a positive rate, leaves the
//! token's objects as it found them, and refuses bad arguments before it
//! touches the token.

use std::collections::BTreeMap;

use crate::common::*;

/// The keys of bench-token's line, in order (scripts/bench reads them).
const FIELDS: [&str; 10] = [
    "raw_ops_per_sec",
    "op",
    "threads",
    "seconds",
    "bytes",
    "ops",
    "errors",
    "per_thread_ops_per_sec",
    "cpu_ticks",
    "peak_rss_kib",
];

/// The token's objects as an HSM operator sees them (`pkcs11-tool`), one
/// entry per object, sorted: Kryoptic lists its own objects in no fixed
/// order.
fn objects(token: &Token) -> Vec<String> {
    let listing = list_objects(token);
    let mut objects: Vec<String> = Vec::new();
    for line in listing.lines() {
        match objects.last_mut() {
            Some(last) if line.starts_with(' ') => {
                last.push('\n');
                last.push_str(line);
            }
            _ => objects.push(line.to_owned()),
        }
    }
    objects.sort();
    objects
}

/// A token holding one key made through the gateway, and its objects.
async fn token_with_a_key() -> (std::sync::Arc<Token>, Vec<String>) {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key(&kms).await;
    let token = gw.stop();
    let objects = objects(&token);
    assert!(objects.iter().any(|o| o.contains(&key)), "{objects:#?}");
    (token, objects)
}

/// `check-keys` on the token: its stdout, which must say it succeeded.
fn check_keys(token: &Token) -> String {
    let config = token.config().to_string_lossy().into_owned();
    let (ok, out, err) = token.run_cli(&["check-keys", "--config", &config]);
    assert!(ok, "check-keys: {out}\n{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_token_prints_a_positive_rate_and_leaves_the_token_as_it_was() {
    let (token, before) = token_with_a_key().await;
    let checked = check_keys(&token);
    assert!(
        checked.ends_with("\n1 key versions checked, 0 unsafe\n"),
        "{checked}"
    );
    let config = token.config().to_string_lossy().into_owned();

    for (op, bytes) in [
        ("generate-data-key", "32"),
        ("encrypt", "4096"),
        ("decrypt", "1"),
    ] {
        let (ok, out, err) = token.run_cli(&[
            "bench-token",
            "--config",
            &config,
            "--op",
            op,
            "--threads",
            "2",
            "--seconds",
            "0.3",
            "--bytes",
            bytes,
        ]);
        assert!(ok, "bench-token --op {op}: {out}\n{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stdout: {out}");
        let pairs: Vec<(&str, &str)> = lines[0]
            .split(' ')
            .map(|p| {
                p.split_once('=')
                    .unwrap_or_else(|| panic!("{p:?} in {out}"))
            })
            .collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, FIELDS, "{out}");
        let v: BTreeMap<&str, &str> = pairs.into_iter().collect();
        let num = |k: &str| -> f64 {
            v[k].parse()
                .unwrap_or_else(|_| panic!("{k}={} is not a number: {out}", v[k]))
        };
        assert_eq!(v["op"], op);
        assert_eq!(v["threads"], "2");
        assert_eq!(v["bytes"], bytes);
        assert_eq!(v["errors"], "0");
        let (rate, ops, seconds) = (num("raw_ops_per_sec"), num("ops"), num("seconds"));
        assert!(rate > 0.0 && ops >= 2.0, "{out}");
        assert!((0.3..30.0).contains(&seconds), "{out}");
        // The rate is the operations over the wall time (both rounded).
        assert!(
            (rate - ops / seconds).abs() <= rate * 0.05 + 1.0,
            "rate {rate} is not ops {ops} / seconds {seconds}: {out}"
        );
        let per_thread: Vec<f64> = v["per_thread_ops_per_sec"]
            .split(',')
            .map(|r| r.parse().unwrap())
            .collect();
        assert_eq!(per_thread.len(), 2, "{out}");
        assert!(per_thread.iter().all(|r| *r > 0.0), "{out}");
        for k in ["cpu_ticks", "peak_rss_kib"] {
            assert!(
                v[k] == "unknown" || v[k].parse::<u64>().is_ok(),
                "{k}: {out}"
            );
        }
    }

    // Its key versions are gone: the listing is the one before, and the
    // key store's own checks see the one key as before.
    let after = objects(&token);
    assert!(
        !after.iter().any(|o| o.contains("kmsgate/bench/")),
        "{after:#?}"
    );
    assert_eq!(after, before, "bench-token left the token changed");
    assert_eq!(check_keys(&token), checked);

    // And the key made before still works.
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let keys = kms
        .list_keys()
        .send()
        .await
        .unwrap()
        .keys
        .unwrap_or_default();
    assert_eq!(keys.len(), 1);
    let id = keys[0].key_id.clone().unwrap();
    let sealed = encrypt(&kms, &id, b"after the bench").await;
    assert_eq!(decrypt(&kms, sealed).await, b"after the bench");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_token_refuses_bad_arguments_and_touches_nothing() {
    let (token, before) = token_with_a_key().await;
    let config = token.config().to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 9] = [
        (&["--threads", "0"], "--threads must be at least 1"),
        (&["--seconds", "0"], "--seconds must be more than 0"),
        (&["--seconds=-1"], "--seconds must be a positive number"),
        (&["--seconds", "inf"], "--seconds must be a positive number"),
        (
            &["--bytes", "0"],
            "--bytes must be 1-1024 for --op generate-data-key",
        ),
        (
            &["--bytes", "1025"],
            "--bytes must be 1-1024 for --op generate-data-key",
        ),
        (
            &["--op", "encrypt", "--bytes", "4097"],
            "--bytes must be 1-4096 for --op encrypt",
        ),
        (&["--op", "sign"], "unknown op 'sign'"),
        (&["--threads", "many"], "invalid value 'many'"),
    ];
    for (args, expected) in cases {
        let mut argv = vec!["bench-token", "--config", &config];
        argv.extend_from_slice(args);
        let (ok, out, err) = token.run_cli(&argv);
        assert!(!ok, "{args:?} was accepted: {out}");
        assert!(out.is_empty(), "{args:?}: stdout {out:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let (ok, _, err) = token.run_cli(&["bench-token", "--config", "/nonexistent/kmsgate.toml"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/kmsgate.toml"), "{err}");
    assert_eq!(objects(&token), before, "a refused bench changed the token");
}

// ---------------------------------------------------- bench-xks-request

/// The bytes of a Lua string literal as `kmsgate bench-xks-request` writes
/// them (printable ASCII, `\DDD` for the rest).
fn lua_unescape(literal: &str) -> Vec<u8> {
    let inner = literal
        .trim()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a Lua string: {literal}"));
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let code = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap();
            out.push(code.parse::<u8>().unwrap());
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// scripts/bench's XKS workload: `kmsgate bench-xks-request` signs one XKS
/// encrypt as AWS KMS signs it (service `kms-xks-proxy`, the store's
/// region, signed headers `host;x-amz-date`), checks the gateway's 200 and
/// writes a wrk script. The request in that script, sent again byte for
/// byte as wrk sends it, is encrypted by the store; a store the config does
/// not have is refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_xks_request_writes_a_signed_xks_encrypt_the_gateway_answers() {
    use crate::xks::{XKS_REGION, XKS_SECRET, XKS_SECRET_ENV, key_with_alias, start, store_toml};
    use std::io::{Read, Write};

    let gw = start(&store_toml(
        "bench",
        "/bench",
        &[("bench-key", "alias/bench-xks", "encrypt_decrypt")],
    ));
    key_with_alias(&gw.client(), "alias/bench-xks").await;
    let lua = gw.token.path().join("xks.lua");
    let run = |store: &str| {
        std::process::Command::new(kmsgate_bin())
            .env(XKS_SECRET_ENV, XKS_SECRET)
            .arg("bench-xks-request")
            .arg("--config")
            .arg(gw.token.config())
            .args(["--store", store, "--external-key-id", "bench-key"])
            .args(["--endpoint", &gw.endpoint, "--lua"])
            .arg(&lua)
            .output()
            .expect("kmsgate runs")
    };

    let out = run("no-such-store");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no XKS store 'no-such-store'"),
        "{out:?}"
    );
    assert!(!lua.exists());

    let out = run("bench");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let script = std::fs::read_to_string(&lua).unwrap();
    let mut path = Vec::new();
    let mut body = Vec::new();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in script.lines() {
        if let Some(v) = line.strip_prefix("wrk.path = ") {
            path = lua_unescape(v);
        } else if let Some(v) = line.strip_prefix("wrk.body = ") {
            body = lua_unescape(v);
        } else if let Some(rest) = line.strip_prefix("wrk.headers[") {
            let (name, value) = rest.split_once("] = ").unwrap();
            headers.push((
                String::from_utf8(lua_unescape(name)).unwrap(),
                String::from_utf8(lua_unescape(value)).unwrap(),
            ));
        }
    }
    assert_eq!(path, b"/bench/kms/xks/v1/keys/bench-key/encrypt");
    assert!(script.contains("function done("), "{script}");
    let authorization = &headers
        .iter()
        .find(|(n, _)| n == "Authorization")
        .unwrap_or_else(|| panic!("no Authorization in {script}"))
        .1;
    assert!(
        authorization.contains(&format!("/{XKS_REGION}/kms-xks-proxy/aws4_request"))
            && authorization.contains("SignedHeaders=host;x-amz-date,"),
        "{authorization}"
    );
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(request["encryptionAlgorithm"], "AES_GCM");

    // As wrk sends it: the same head and body on a connection of its own.
    let mut head = format!("POST {} HTTP/1.1\r\n", String::from_utf8(path).unwrap());
    for (n, v) in &headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut stream = std::net::TcpStream::connect(&gw.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let response = RawResponse::parse(&answer);
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.body["ciphertext"].is_string() && response.body["ciphertextMetadata"].is_string(),
        "{response:?}"
    );
}
