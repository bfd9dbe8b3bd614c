//! The audit trail is evidence (DESIGN.md decision 16): one chained JSON
//! line per request, accepted or refused; `kmsgate audit verify` finds a
//! changed, removed or reordered line and a cut file; no secret reaches the
//! file; and a request that cannot be audited is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::disk::SmallDisk;
use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use serde_json::Value;

/// A gateway whose audit file is `dir/audit.log`, with `extra` lines in
/// its `[audit]` table.
fn gateway_auditing_to(dir: &Path, extra: &str) -> Gateway {
    Gateway::start_on(Token::with_config(&format!(
        "[audit]\npath = \"{}\"\n{extra}\n",
        dir.join("audit.log").display()
    )))
}

/// The audit files in `dir`, oldest first.
fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit.log."))
        })
        .collect();
    rotated.sort();
    rotated.push(dir.join("audit.log"));
    rotated
}

/// `kmsgate audit verify FILES...`: (exit success, stdout).
fn verify(files: &[PathBuf], extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kmsgate"))
        .args(["audit", "verify"])
        .args(extra)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// Copies `files` into a fresh directory, lets `damage` change the copies,
/// and returns verify's verdict on them.
fn verify_damaged(files: &[PathBuf], damage: impl FnOnce(&[PathBuf])) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let copies: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let to = dir.path().join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect();
    damage(&copies);
    verify(&copies, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_accepts_an_intact_trail_and_names_each_kind_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_auditing_to(dir.path(), "max_file_bytes = 6000");
    let kms = gw.client();
    let key = create_key(&kms).await;
    let mut requests = 1;
    for i in 0..12 {
        encrypt(&kms, &key, format!("data {i}").as_bytes()).await;
        requests += 1;
    }
    // Refused: a wrong signature, an unknown key, an unsigned request.
    let _ = gw
        .client_as(ACCESS_KEY, "not-the-secret", REGION)
        .list_keys()
        .send()
        .await
        .unwrap_err();
    let _ = kms
        .describe_key()
        .key_id("alias/none")
        .send()
        .await
        .unwrap_err();
    let unsigned = gw.raw(Some("TrentService.ListKeys"), b"", false);
    assert_eq!(unsigned.status, 400);
    let unsigned = unsigned.error_type().to_owned();
    requests += 3;
    let log_text = gw.log();
    gw.stop();

    let files = audit_files(dir.path());
    assert!(files.len() >= 3, "no rotation: {files:?}");
    let records: Vec<Value> = files
        .iter()
        .flat_map(|f| lines_of(f))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert_eq!(records.len(), requests, "one record per request");
    assert!(
        records
            .iter()
            .any(|r| r["httpStatus"] == 400 && r["errorCode"] == unsigned.as_str()),
        "the unsigned request is audited"
    );
    assert!(
        records
            .iter()
            .any(|r| r["errorCode"] == "NotFoundException" && r["eventName"] == "DescribeKey")
    );
    assert!(
        records
            .iter()
            .any(|r| r["eventName"] == "Encrypt" && r["additionalEventData"]["keyVersion"] == 1)
    );
    assert!(
        !log_text.contains("kmsgate::audit: record="),
        "records in the process log"
    );

    let (ok, out) = verify(&files, &[]);
    assert!(ok, "intact trail refused: {out}");
    assert!(out.starts_with(&format!("OK: {requests} records")), "{out}");
    let last_hash = out.trim().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(last_hash.len(), 64, "{out}");
    let (ok, out) = verify(&files, &["--anchor", &last_hash]);
    assert!(ok, "{out}");

    let first = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let second = files[1].file_name().unwrap().to_string_lossy().into_owned();
    assert!(lines_of(&files[0]).len() >= 4, "too few lines to damage");

    let (ok, out) = verify_damaged(&files, |f| {
        let mut lines = lines_of(&f[0]);
        lines[1] = lines[1].replace("\"httpStatus\":200", "\"httpStatus\":201");
        write_lines(&f[0], &lines);
    });
    assert!(!ok);
    assert!(out.contains(&format!("{first}:2: changed")), "{out}");

    let (ok, out) = verify_damaged(&files, |f| {
        let mut lines = lines_of(&f[0]);
        lines.remove(2);
        write_lines(&f[0], &lines);
    });
    assert!(!ok);
    assert!(
        out.contains(&format!("{first}:3: 1 line(s) removed")),
        "{out}"
    );

    let (ok, out) = verify_damaged(&files, |f| {
        let mut lines = lines_of(&f[0]);
        lines.swap(1, 2);
        write_lines(&f[0], &lines);
    });
    assert!(!ok);
    assert!(out.contains(&format!("{first}:2: reordered")), "{out}");

    // The first file of a rotated pair loses its last line.
    let (ok, out) = verify_damaged(&files[..2], |f| {
        let mut lines = lines_of(&f[0]);
        lines.pop();
        write_lines(&f[0], &lines);
    });
    assert!(!ok);
    assert!(
        out.contains(&format!("{second}:1: 1 line(s) removed")),
        "{out}"
    );

    // ... or its beginning.
    let (ok, out) = verify_damaged(&files[..2], |f| {
        let lines = lines_of(&f[0]);
        write_lines(&f[0], &lines[1..]);
    });
    assert!(!ok);
    assert!(
        out.contains(&format!("{first}:1: the chain's beginning is missing")),
        "{out}"
    );

    // A cut-off end is found only against a kept hash.
    let tail = files[..files.len() - 1].to_vec();
    let (ok, _) = verify(&tail, &[]);
    assert!(ok, "a prefix of the chain is a valid chain");
    let (ok, out) = verify(&tail, &["--anchor", &last_hash]);
    assert!(!ok);
    assert!(out.contains("no line has the anchored hash"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_holds_context_keys_but_never_plaintexts_secrets_or_context_values() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_auditing_to(dir.path(), "durability = \"async\"");
    let kms = gw.client();
    let key = create_key(&kms).await;
    let plaintext = b"top-secret-plaintext-4711";
    let sealed = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(plaintext.to_vec()))
        .encryption_context("tenant-key", "context-value-0815")
        .send()
        .await
        .unwrap();
    let blob = sealed.ciphertext_blob.unwrap();
    kms.decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("tenant-key", "context-value-0815")
        .send()
        .await
        .unwrap();
    let dk = kms
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let data_key = b64(dk.plaintext.unwrap().as_ref());
    gw.stop();

    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(text.contains("tenant-key"), "context keys are logged");
    for secret in [
        "context-value-0815",
        "top-secret-plaintext",
        &b64(plaintext),
        &b64(blob.as_ref()),
        &data_key,
        SECRET,
        PIN,
    ] {
        assert!(!text.contains(secret), "{secret:?} in the audit file");
    }
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let encrypt = records
        .iter()
        .find(|r| r["eventName"] == "Encrypt")
        .unwrap();
    assert_eq!(encrypt["eventSource"], "kms.amazonaws.com");
    assert_eq!(encrypt["userIdentity"]["type"], "IAMUser");
    assert_eq!(
        encrypt["userIdentity"]["arn"],
        format!("arn:aws:iam::{ACCOUNT}:user/tester")
    );
    assert_eq!(encrypt["userIdentity"]["accessKeyId"], ACCESS_KEY);
    assert_eq!(encrypt["sourceIPAddress"], "127.0.0.1");
    assert_eq!(encrypt["resources"][0]["ARN"], key_arn(&key));
    assert_eq!(encrypt["requestParameters"]["keyId"], key.as_str());
    assert_eq!(encrypt["additionalEventData"]["keyVersion"], 1);
    let (ok, out) = verify(&[dir.path().join("audit.log")], &[]);
    assert!(ok, "{out}");
}

#[test]
fn without_a_file_the_process_log_carries_a_verifiable_chain() {
    let gw = Gateway::start();
    for _ in 0..3 {
        assert_eq!(
            gw.raw(Some("TrentService.ListKeys"), b"{}", true).status,
            200
        );
    }
    let _ = gw.raw(Some("TrentService.ListKeys"), b"{}", false);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    std::fs::write(&log, gw.log()).unwrap();
    let (ok, out) = verify(std::slice::from_ref(&log), &["--process-log"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("OK: 4 records"), "{out}");
}

// ------------------------------------------------------------------ workers

/// The audit records in a process log, each with its line number (0-based).
fn records_in_log(log: &str) -> Vec<(usize, Value)> {
    log.lines()
        .enumerate()
        .filter_map(|(n, l)| {
            let (_, record) = l.split_once(" kmsgate::audit: record=")?;
            Some((n, serde_json::from_str(record).unwrap()))
        })
        .collect()
}

/// How many records each chain in a process log has, by chain id.
fn chains_in_log(log: &str) -> std::collections::BTreeMap<String, usize> {
    let mut chains = std::collections::BTreeMap::new();
    for (_, r) in records_in_log(log) {
        *chains
            .entry(r["chainId"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    chains
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_workers_trail_in_the_process_log_verifies_and_names_an_edit() {
    // Workers and no [audit] path: every worker's chain goes to the one
    // shared process log.
    let mut gw = crate::workers::Supervised::start(Token::new(), "2");
    let mut requests = 0;
    // Each request on a client of its own (a connection of its own, which
    // either worker may accept), until both workers have served some.
    while requests < 30 || chains_in_log(&gw.log()).len() < 2 {
        assert!(
            requests < 400,
            "both workers should have served within 400 requests: {:?}",
            chains_in_log(&gw.log())
        );
        gw.client().list_keys().send().await.unwrap();
        requests += 1;
    }
    let status = gw.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = gw.log();
    let chains = chains_in_log(&log);
    assert_eq!(chains.len(), 2, "one chain per worker: {chains:?}");
    assert_eq!(
        chains.values().sum::<usize>(),
        requests,
        "one record per request"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kmsgate.log");
    std::fs::write(&path, &log).unwrap();
    let (ok, out) = verify(std::slice::from_ref(&path), &["--process-log"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with(&format!("OK: {requests} records")) && out.contains("2 chains"),
        "{out}"
    );

    // A record of either chain, not its chain's last, edited: named.
    let records = records_in_log(&log);
    let (victim, _) = records
        .iter()
        .find(|(_, r)| chains[r["chainId"].as_str().unwrap()] >= 2 && r["sequence"] == 0)
        .expect("a chain with two records");
    let lines: Vec<String> = log.lines().map(str::to_owned).collect();
    let mut edited = lines.clone();
    edited[*victim] = edited[*victim].replace("\"httpStatus\":200", "\"httpStatus\":201");
    assert_ne!(edited[*victim], lines[*victim], "nothing edited");
    write_lines(&path, &edited);
    let (ok, out) = verify(std::slice::from_ref(&path), &["--process-log"]);
    assert!(!ok, "{out}");
    assert!(
        out.starts_with(&format!(
            "DAMAGED: {}:{}: changed",
            path.display(),
            victim + 1
        )),
        "{out}"
    );
}

// ------------------------------------------------- requests cut mid-write

/// A gateway behind faulty-pkcs11 whose audit file is `dir/audit.log`.
fn faulty_gateway_auditing_to(dir: &Path, extra: &str) -> Gateway {
    Gateway::start_faulty_on(Token::with_faulty_config(&format!(
        "[audit]\npath = \"{}\"\n{extra}\n",
        dir.join("audit.log").display()
    )))
}

/// Sends a signed CreateKey on a connection of its own, waits `wait`,
/// half-closes the connection (`shutdown(SHUT_WR)`) and reads what comes
/// back until the gateway closes it.
fn create_key_and_hang_up(gw: &Gateway, wait: Duration) {
    use std::io::{Read, Write};
    let request = gw.request_bytes(
        Some("TrentService.CreateKey"),
        b"{}",
        Some(std::time::SystemTime::now()),
        &[],
    );
    let mut stream = std::net::TcpStream::connect(&gw.addr).unwrap();
    stream.write_all(&request).unwrap();
    std::thread::sleep(wait);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// Every record of the audit files in `dir`.
fn records_in(dir: &Path) -> Vec<Value> {
    audit_files(dir)
        .iter()
        .filter(|f| f.exists())
        .flat_map(|f| lines_of(f))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

/// The key ids of the successful CreateKey records, in order.
fn created_keys(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["eventName"] == "CreateKey" && r.get("errorCode").is_none())
        .map(|r| {
            r["responseElements"]["keyMetadata"]["keyId"]
                .as_str()
                .unwrap_or_else(|| panic!("a CreateKey record names no key: {r}"))
                .to_owned()
        })
        .collect()
}

/// Every key on `token`, as a fresh gateway (no rules, no cache) lists it.
async fn keys_on(token: Arc<Token>) -> Vec<String> {
    let gw = Gateway::start_faulty_on(token);
    let kms = gw.client();
    let mut keys = Vec::new();
    let mut marker = None;
    loop {
        let page = kms
            .list_keys()
            .set_marker(marker.take())
            .send()
            .await
            .unwrap();
        keys.extend(
            page.keys()
                .iter()
                .filter_map(|k| k.key_id().map(str::to_owned)),
        );
        match page.next_marker() {
            Some(m) if page.truncated() => marker = Some(m.to_owned()),
            _ => break,
        }
    }
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_request_never_leaves_a_write_unaudited() {
    let dir = tempfile::tempdir().unwrap();
    let gw = faulty_gateway_auditing_to(dir.path(), "");
    // Every key generation takes a while, so hang-ups land before, during
    // and after the token's work.
    gw.faults().set("C_GenerateKey stall 40ms forever");
    for i in 0..40u64 {
        create_key_and_hang_up(&gw, Duration::from_millis(i * 7 % 80));
    }
    gw.faults().clear();
    // The gateway exits only once every cut request has finished.
    let mut gw = gw;
    let (status, _) = gw.stop_and_wait(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let token = gw.token.clone();
    drop(gw);
    let records = records_in(dir.path());
    let mut audited = created_keys(&records);
    let created = audited.len();
    audited.sort();
    audited.dedup();
    assert_eq!(audited.len(), created, "a key with two CreateKey records");
    let on_token = keys_on(token).await;
    assert!(!on_token.is_empty(), "no request got as far as the token");
    assert_eq!(
        on_token,
        audited,
        "keys on the token and CreateKey records differ ({} keys, {} records)",
        on_token.len(),
        created
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_right_after_a_hang_up_still_leaves_the_record_of_its_write() {
    let dir = tempfile::tempdir().unwrap();
    let gw = faulty_gateway_auditing_to(dir.path(), "[http]\nshutdown_grace_ms = 100");
    gw.faults().set("C_GenerateKey stall 1s once");
    let hang_up = {
        let request = gw.request_bytes(
            Some("TrentService.CreateKey"),
            b"{}",
            Some(std::time::SystemTime::now()),
            &[],
        );
        let addr = gw.addr.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(&request).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        })
    };
    // The key generation is under way (stalled) when the client hangs up
    // and the gateway is told to stop.
    assert_eq!(
        gw.faults()
            .wait_for_count("stall C_GenerateKey", 1, Duration::from_secs(10)),
        1,
        "{}",
        gw.faults().log()
    );
    std::thread::sleep(Duration::from_millis(400));
    let mut gw = gw;
    let (status, _) = gw.stop_and_wait(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    hang_up.join().unwrap();
    let token = gw.token.clone();
    drop(gw);
    token.faults().clear();
    let audited = created_keys(&records_in(dir.path()));
    assert_eq!(audited.len(), 1, "one CreateKey record: {audited:?}");
    assert_eq!(keys_on(token).await, audited);
    let (ok, out) = verify(&audit_files(dir.path()), &[]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_stream_reset_mid_request_still_leaves_the_record_of_its_write() {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = faulty_gateway_auditing_to(dir.path(), "");
    gw.faults().set("C_GenerateKey stall 1s once");
    // The signed head of an HTTP/1.1 request, as h2 headers (no
    // connection-specific ones).
    let bytes = gw.request_bytes(
        Some("TrentService.CreateKey"),
        b"{}",
        Some(std::time::SystemTime::now()),
        &[],
    );
    let head = String::from_utf8(bytes[..bytes.len() - 2].to_vec()).unwrap();
    let mut request = http::Request::post(format!("{}/", gw.endpoint));
    for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(": ").unwrap();
        if !matches!(name, "connection" | "host" | "content-length") {
            request = request.header(name, value);
        }
    }
    let request = request.body(Full::new(Bytes::from_static(b"{}"))).unwrap();
    let stream = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    // Dropping the response future resets the stream (RST_STREAM) while
    // the key generation is stalled on the token.
    let answered =
        tokio::time::timeout(Duration::from_millis(500), sender.send_request(request)).await;
    assert!(answered.is_err(), "answered before the reset: {answered:?}");
    assert_eq!(
        gw.faults().count("stall C_GenerateKey"),
        1,
        "{}",
        gw.faults().log()
    );
    // The connection stays open; the stream alone is gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(sender);
    connection.abort();
    let (status, _) = gw.stop_and_wait(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let token = gw.token.clone();
    drop(gw);
    token.faults().clear();
    let audited = created_keys(&records_in(dir.path()));
    assert_eq!(audited.len(), 1, "one CreateKey record: {audited:?}");
    assert_eq!(keys_on(token).await, audited);
}

// ------------------------------------------------------------ service events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedulers_deletions_rotations_and_expiries_are_audited_as_service_events() {
    use aws_sdk_kms::types::{AlgorithmSpec, ExpirationModelType, KeyState, WrappingKeySpec};
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_on(Token::with_config(&format!(
        "[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n\
         gcm_usage_bound = 4\ngcm_reserve_block = 2\n\
         [audit]\npath = \"{}\"\n",
        dir.path().join("audit.log").display()
    )));
    let kms = gw.client();
    let rotating = create_key(&kms).await;
    kms.enable_key_rotation()
        .key_id(&rotating)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    let doomed = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(&doomed)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    // The fifth encryption finds the version at the bound of 4.
    let bounded = create_key(&kms).await;
    for i in 0..5 {
        encrypt(&kms, &bounded, format!("data {i}").as_bytes()).await;
    }
    let imported = crate::import::create_external(&kms).await;
    let alg = AlgorithmSpec::RsaesOaepSha1;
    let p = crate::import::parameters(&kms, &imported, alg.clone(), WrappingKeySpec::Rsa2048).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    kms.import_key_material()
        .key_id(&imported)
        .import_token(Blob::new(p.token.clone()))
        .encrypted_key_material(Blob::new(crate::import::wrap(
            &p.public_key,
            &alg,
            &rand::random::<[u8; 32]>(),
        )))
        .expiration_model(ExpirationModelType::KeyMaterialExpires)
        .valid_to(aws_smithy_types::DateTime::from_secs(now + 2 * 86_400))
        .send()
        .await
        .unwrap();

    // The deletion, the rotation and the expiry all come due.
    gw.token.set_clock_days_ahead(91);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let deleted = kms.describe_key().key_id(&doomed).send().await.is_err();
        let rotated = !rotations(&kms, &rotating).await.is_empty();
        let expired =
            key_metadata(&kms, &imported).await.key_state == Some(KeyState::PendingImport);
        if deleted && rotated && expired {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "due work not done: deleted {deleted}, rotated {rotated}, expired {expired}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut gw = gw;
    let (status, _) = gw.stop_and_wait(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    let records = records_in(dir.path());
    let mut events: Vec<(String, String, String)> = records
        .iter()
        .filter(|r| r["eventType"] == "AwsServiceEvent")
        .map(|r| {
            assert_eq!(r["userIdentity"]["type"], "AWSService", "{r}");
            assert_eq!(r["userIdentity"]["invokedBy"], "kms.amazonaws.com", "{r}");
            assert_eq!(r["userIdentity"]["accountId"], ACCOUNT, "{r}");
            assert_eq!(r["eventSource"], "kms.amazonaws.com", "{r}");
            let id = r["serviceEventDetails"]["keyId"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(r["resources"][0]["ARN"], key_arn(&id), "{r}");
            (
                r["eventName"].as_str().unwrap().to_owned(),
                id,
                r["additionalEventData"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    events.sort();
    let mut expected = vec![
        (
            "DeleteExpiredKeyMaterial".to_owned(),
            imported,
            String::new(),
        ),
        ("DeleteKey".to_owned(), doomed, String::new()),
        ("RotateKey".to_owned(), bounded, "gcmUsageBound".to_owned()),
        (
            "RotateKey".to_owned(),
            rotating.clone(),
            "rotationSchedule".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(events, expected);
    let scheduled = records
        .iter()
        .find(|r| {
            r["eventType"] == "AwsServiceEvent"
                && r["serviceEventDetails"]["keyId"] == rotating.as_str()
        })
        .unwrap();
    assert_eq!(
        scheduled["serviceEventDetails"]["rotationType"],
        "AUTOMATIC"
    );
    let (ok, out) = verify(&audit_files(dir.path()), &[]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with(&format!("OK: {} records", records.len())),
        "{out}"
    );
}

// ---------------------------------------------------------------- full disk

#[test]
fn with_the_audit_disk_full_requests_fail_and_nothing_acknowledged_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount_or_opt_out(dir.path(), 256) else {
        return;
    };
    let gw = gateway_auditing_to(dir.path(), "");
    let key = {
        let r = gw.raw(Some("TrentService.CreateKey"), b"{}", true);
        assert_eq!(r.status, 200);
        r.body["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    };
    let body = format!(r#"{{"KeyId":"{key}","NumberOfBytes":32}}"#);
    let mut acknowledged = Vec::new();
    let send = |acknowledged: &mut Vec<String>| {
        let r = gw.raw(Some("TrentService.GenerateDataKey"), body.as_bytes(), true);
        if r.status == 200 {
            acknowledged.push(r.header("x-amzn-requestid").unwrap().to_owned());
        } else {
            assert_eq!(r.status, 500, "{:?}", r.body);
            assert_eq!(r.error_type(), "KMSInternalException");
        }
        r.status
    };
    assert_eq!(send(&mut acknowledged), 200);

    disk.fill();
    let statuses: Vec<u16> = (0..30).map(|_| send(&mut acknowledged)).collect();
    let refused = statuses.iter().filter(|s| **s == 500).count();
    assert!(refused >= 20, "a full disk must refuse: {statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 500, "{statuses:?}");

    disk.free();
    let after: Vec<u16> = (0..5).map(|_| send(&mut acknowledged)).collect();
    assert_eq!(after[1..], [200; 4], "the writer recovers: {after:?}");
    let log = gw.log();
    gw.stop();
    assert!(log.contains("cannot write the audit log"), "{log}");
    assert!(log.contains("writable again"), "{log}");

    let files = audit_files(dir.path());
    let (ok, out) = verify(&files, &[]);
    assert!(ok, "the chain survives a full disk: {out}");
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for id in &acknowledged {
        assert!(
            text.contains(id),
            "acknowledged request {id} is not in the trail"
        );
    }
    drop(disk);
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The rotated audit files in `dir` (not the active file, not its lock),
/// by name.
fn rotated_files(dir: &Path) -> Vec<PathBuf> {
    audit_files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit.log.") && n != "audit.log.lock")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_names_never_repeat_after_the_documented_prune() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::with_config(&format!(
        "[audit]\npath = \"{}\"\nmax_file_bytes = 3000\n",
        dir.path().join("audit.log").display()
    ));
    let traffic = |gw: Gateway| async move {
        let kms = gw.client();
        let key = create_key(&kms).await;
        for i in 0..10 {
            encrypt(&kms, &key, format!("data {i}").as_bytes()).await;
        }
        gw.stop()
    };
    let token = traffic(Gateway::start_on(token)).await;
    let shipped = rotated_files(dir.path());
    assert!(shipped.len() >= 2, "no rotation: {shipped:?}");
    // docs/operations.md: verify, keep the last hash, prune the rotated
    // files (a log shipper has them).
    let (ok, out) = verify(&shipped, &[]);
    assert!(ok, "{out}");
    let pruned_hash = out.trim().rsplit(' ').next().unwrap().to_owned();
    let shipped_names: Vec<String> = shipped
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for f in &shipped {
        std::fs::remove_file(f).unwrap();
    }

    traffic(Gateway::start_on(token)).await;
    let later = rotated_files(dir.path());
    assert!(later.len() >= 2, "no rotation after the prune: {later:?}");
    for f in &later {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !shipped_names.contains(&name),
            "{name} was used before the prune: {shipped_names:?}"
        );
    }
    // In name order the files are in chain order, and they link to the
    // pruned ones.
    let (ok, out) = verify(&audit_files(dir.path()), &["--continues", &pruned_hash]);
    assert!(ok, "{out}");
}
