//! `kmsgate backup` and `kmsgate restore` (docs/operations.md, "Backup and
//! restore"): a copy taken while workers serve a mixed write load restores
//! every write acknowledged before the backup began; the copy is private
//! and holds no PIN; other modules, damaged backups and a target in use are
//! refused.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::common::*;
use crate::workers::Supervised;

/// `kmsgate backup` against `token`'s live token.
fn run_backup(token: &Token, config: &Path, out: &Path) -> Output {
    Command::new(kmsgate_bin())
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .env("KMSGATE_TEST_CLOCK_OFFSET_FILE", token.clock_file())
        .arg("backup")
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()
        .expect("kmsgate runs")
}

/// `kmsgate restore` of `from` with `token`'s config into the token
/// directory that `softhsm_conf` names.
fn run_restore(token: &Token, softhsm_conf: &Path, from: &Path, force: bool) -> Output {
    let mut cmd = Command::new(kmsgate_bin());
    cmd.env("SOFTHSM2_CONF", softhsm_conf)
        .env("KMSGATE_TEST_CLOCK_OFFSET_FILE", token.clock_file())
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--config")
        .arg(token.config());
    if force {
        cmd.arg("--force");
    }
    cmd.output().expect("kmsgate runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh, empty token directory with a `softhsm2.conf` naming it (the
/// restore target): (its temp dir, the conf).
fn empty_target(token: &Token) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = std::fs::read_to_string(token.softhsm_conf())
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("directories.tokendir"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!("directories.tokendir = {}\n", tokens.display());
    let path = dir.path().join("softhsm2.conf");
    std::fs::write(&path, conf).unwrap();
    (dir, path)
}

/// Every file under `dir` (relative path -> bytes).
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every directory under `dir` (and `dir`) is 0700, every file 0600.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            assert_private(&e.path());
        } else {
            assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        }
    }
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// A gateway process started by hand (on a restored token); killed when
/// dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One write of the load, with when it was sent and when (if) it was
/// acknowledged.
#[derive(Debug, Clone)]
enum Op {
    Create { key: String },
    Rotate { key: String },
    Alias { name: String, target: String },
    Schedule { key: String },
    Encrypt { plaintext: Vec<u8>, blob: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Event {
    op: Op,
    sent: Instant,
    acked: Option<Instant>,
}

/// One client's mixed load until `stop`: CreateKey, RotateKeyOnDemand,
/// CreateAlias/UpdateAlias, ScheduleKeyDeletion (of keys it created itself),
/// Encrypt (under the stable keys).
async fn load(
    client: aws_sdk_kms::Client,
    task: usize,
    stable: Vec<String>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Event>>>,
) {
    let mut created: Vec<String> = Vec::new();
    let mut aliases: Vec<String> = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let pick = stable[(i * 7 + task * 3) % stable.len()].clone();
        let sent = Instant::now();
        let (op, ok) = match i % 5 {
            0 => match client.create_key().send().await {
                Ok(r) => {
                    let key = r.key_metadata.unwrap().key_id;
                    created.push(key.clone());
                    (Op::Create { key }, true)
                }
                Err(_) => (Op::Create { key: String::new() }, false),
            },
            1 => {
                let r = client.rotate_key_on_demand().key_id(&pick).send().await;
                (Op::Rotate { key: pick }, r.is_ok())
            }
            2 => {
                let r = if aliases.len() < 2 || i.is_multiple_of(2) {
                    let name = format!("alias/backup-t{task}-{i}");
                    aliases.push(name.clone());
                    let r = client
                        .create_alias()
                        .alias_name(&name)
                        .target_key_id(&pick)
                        .send()
                        .await
                        .map(|_| ());
                    (name, r.is_ok())
                } else {
                    let name = aliases[i % aliases.len()].clone();
                    let r = client
                        .update_alias()
                        .alias_name(&name)
                        .target_key_id(&pick)
                        .send()
                        .await
                        .map(|_| ());
                    (name, r.is_ok())
                };
                (
                    Op::Alias {
                        name: r.0,
                        target: pick,
                    },
                    r.1,
                )
            }
            3 => {
                if created.is_empty() {
                    i += 1;
                    continue;
                }
                let key = created.remove(0);
                let r = client
                    .schedule_key_deletion()
                    .key_id(&key)
                    .pending_window_in_days(7)
                    .send()
                    .await;
                (Op::Schedule { key }, r.is_ok())
            }
            _ => {
                let plaintext = format!("backup test {task} {i}").into_bytes();
                let r = client
                    .encrypt()
                    .key_id(&pick)
                    .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext.clone()))
                    .send()
                    .await;
                let ok = r.is_ok();
                let blob = r
                    .ok()
                    .and_then(|r| r.ciphertext_blob)
                    .map(|b| b.into_inner())
                    .unwrap_or_default();
                (Op::Encrypt { plaintext, blob }, ok)
            }
        };
        let acked = ok.then(Instant::now);
        log.lock().unwrap().push(Event { op, sent, acked });
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_a_write_load_restores_every_write_acknowledged_before_it() {
    if implementation() != Implementation::SoftHsm2 {
        return; // `kmsgate backup` copies SoftHSM2's files only (tested below).
    }
    let token = Token::with_config("[keys]\nmax_on_demand_rotations = 1000\n");
    let gateway = Supervised::start(token.clone(), "2");
    let client = gateway.client();
    let mut stable = Vec::new();
    for _ in 0..6 {
        stable.push(create_key(&client).await);
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..2)
        .map(|t| {
            tokio::spawn(load(
                gateway.client(),
                t,
                stable.clone(),
                stop.clone(),
                log.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(3000)).await;

    let backup_dir = tempfile::tempdir().unwrap();
    let out = backup_dir.path().join("copy");
    let begun = Instant::now();
    let backup = {
        let (token, out) = (token.clone(), out.clone());
        tokio::task::spawn_blocking(move || run_backup(&token, &token.config(), &out))
            .await
            .unwrap()
    };
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(backup.status.success(), "backup failed: {}", text(&backup));
    let events = log.lock().unwrap().clone();
    let before = |e: &Event| e.acked.is_some_and(|a| a < begun);
    // A write that may be in the copy without having been acknowledged
    // before it began: sent before the backup ended, not acknowledged
    // before it began.
    let overlapping = |e: &Event| e.sent < ended && !before(e);
    let acked_before = events.iter().filter(|e| before(e)).count();
    let in_flight = events
        .iter()
        .filter(|e| e.sent < ended && e.acked.is_none_or(|a| a > begun))
        .count();
    let stdout = String::from_utf8_lossy(&backup.stdout).into_owned();
    eprintln!(
        "backup took {} ms; {} writes acknowledged before it, {in_flight} in flight during it, \
         {} failed of {}; kmsgate: {}",
        ended.duration_since(begun).as_millis(),
        acked_before,
        events.iter().filter(|e| e.acked.is_none()).count(),
        events.len(),
        stdout.trim()
    );
    assert!(
        acked_before >= 10,
        "too few writes before the backup: {acked_before}"
    );
    assert!(in_flight >= 1, "no write ran while the backup ran");
    assert!(stdout.contains("held it"), "{stdout}");

    // The copy: private, no PIN, every file as the manifest says.
    assert_private(&out);
    let m = manifest(&out);
    let files = files_under(&out);
    let listed = m["files"].as_object().unwrap();
    for (path, bytes) in &files {
        for secret in [PIN, SECRET] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{path} holds a secret"
            );
        }
        if path == "manifest.json" {
            continue;
        }
        let hash = hex::encode(sha2::Sha256::digest(bytes));
        assert_eq!(
            listed.get(path).and_then(|h| h.as_str()),
            Some(hash.as_str()),
            "{path}"
        );
    }
    assert_eq!(listed.len() + 1, files.len(), "files not in the manifest");
    assert!(!files.keys().any(|p| p.contains(".kmsgate-token")));

    // What each key and alias may be after the restore.
    let mut keys: Vec<String> = stable.clone();
    let mut scheduled: HashMap<String, (bool, bool)> = HashMap::new(); // (before, overlapping)
    let mut rotations: HashMap<String, (usize, usize)> = HashMap::new(); // (before, at most)
    let mut aliases: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
    for e in &events {
        match &e.op {
            Op::Create { key } if before(e) => keys.push(key.clone()),
            Op::Schedule { key } => {
                let s = scheduled.entry(key.clone()).or_default();
                s.0 |= before(e);
                s.1 |= overlapping(e);
            }
            Op::Rotate { key } => {
                let r = rotations.entry(key.clone()).or_default();
                r.0 += usize::from(before(e));
                r.1 += usize::from(e.sent < ended);
            }
            Op::Alias { name, target } => {
                let a = aliases.entry(name.clone()).or_default();
                if before(e) {
                    a.0 = Some(target.clone());
                } else if overlapping(e) {
                    a.1.push(target.clone());
                }
            }
            _ => {}
        }
    }
    let allowed_state = |key: &str| match scheduled.get(key) {
        Some((true, _)) => vec!["PendingDeletion"],
        Some((false, true)) => vec!["Enabled", "PendingDeletion"],
        _ => vec!["Enabled"],
    };
    let allowed_target = |name: &str| {
        let (at, later) = &aliases[name];
        let mut all = later.clone();
        all.extend(at.clone());
        all
    };
    // The manifest, read from the copy, already says so.
    let in_manifest: HashMap<String, String> = m["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for key in &keys {
        let state = in_manifest
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in the manifest"));
        assert!(
            allowed_state(key).contains(&state.as_str()),
            "{key}: {state}"
        );
    }
    for (name, (at, _)) in &aliases {
        if at.is_some() {
            let target = m["aliases"][name].as_str().unwrap_or("(absent)");
            assert!(
                allowed_target(name).iter().any(|t| t == target),
                "{name} -> {target}"
            );
        }
    }

    // Restore into a fresh token directory and serve from it.
    let (target, conf) = empty_target(&token);
    let restored = run_restore(&token, &conf, &out, false);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        text(&restored)
    );
    let said = String::from_utf8_lossy(&restored.stdout);
    assert!(said.contains(" 0 unsafe"), "{said}");
    assert!(said.contains("check-keys is clean"), "{said}");
    let log_path = target.path().join("gateway.log");
    let (child, endpoint) = spawn_serve_with(
        &token,
        &token.config(),
        &[],
        &[("SOFTHSM2_CONF", conf.to_str().unwrap())],
        &log_path,
        Duration::from_secs(30),
    );
    let _served = Process(child);
    let rc = client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
    for key in &keys {
        let md = key_metadata(&rc, key).await;
        let state = md.key_state.unwrap();
        assert!(
            allowed_state(key).contains(&state.as_str()),
            "{key} is {state:?} after the restore"
        );
    }
    for (key, (at_least, at_most)) in &rotations {
        let listed = rc
            .list_key_rotations()
            .key_id(key)
            .limit(1000)
            .send()
            .await
            .unwrap()
            .rotations
            .unwrap_or_default()
            .len();
        assert!(
            *at_least <= listed && listed <= *at_most,
            "{key}: {listed} rotations, {at_least} acknowledged before the backup, {at_most} sent"
        );
    }
    for (name, (at, _)) in &aliases {
        if at.is_none() {
            continue;
        }
        let target = key_metadata(&rc, name).await.key_id;
        assert!(
            allowed_target(name).contains(&target),
            "{name} -> {target} after the restore"
        );
    }
    let mut decrypted = 0;
    for e in events.iter().filter(|e| before(e)) {
        if let Op::Encrypt {
            plaintext, blob, ..
        } = &e.op
        {
            let pt = decrypt(&rc, aws_sdk_kms::primitives::Blob::new(blob.clone())).await;
            assert_eq!(&pt, plaintext);
            decrypted += 1;
        }
    }
    assert!(decrypted >= 1, "no ciphertext made before the backup");
    eprintln!(
        "restored: {} keys, {} aliases, {} rotated keys, {decrypted} ciphertexts checked",
        keys.len(),
        aliases.values().filter(|a| a.0.is_some()).count(),
        rotations.len()
    );
}

#[test]
fn backup_refuses_a_module_that_is_not_softhsm2() {
    let token = Token::new();
    let config = match implementation() {
        Implementation::Kryoptic(_) => token.config(),
        Implementation::SoftHsm2 => {
            // A real PKCS#11 module that is not SoftHSM2: OpenSC's.
            let Some(opensc) = [
                "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
                "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
                "/usr/lib/opensc-pkcs11.so",
            ]
            .into_iter()
            .find(|p| Path::new(p).exists()) else {
                eprintln!("skipped: no OpenSC module (apt-get install opensc-pkcs11)");
                return;
            };
            let path = token.path().join("opensc.toml");
            let config = std::fs::read_to_string(token.config()).unwrap().replace(
                &format!("module = \"{}\"", module().display()),
                &format!("module = \"{opensc}\""),
            );
            assert!(config.contains(opensc));
            std::fs::write(&path, config).unwrap();
            path
        }
    };
    let out = token.path().join("copy");
    let refused = run_backup(&token, &config, &out);
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("not SoftHSM2"), "{said}");
    assert!(
        said.contains("Luna") && said.contains("nShield") && said.contains("CloudHSM"),
        "{said}"
    );
    assert!(!out.exists(), "a refused backup wrote {}", out.display());
}

#[test]
fn restore_refuses_a_changed_backup_and_a_token_directory_in_use() {
    if implementation() != Implementation::SoftHsm2 {
        return;
    }
    let gateway = Gateway::start();
    let token = gateway.token.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(create_key(&gateway.client()));
    let out = token.path().join("copy");
    let backup = run_backup(&token, &token.config(), &out);
    assert!(backup.status.success(), "{}", text(&backup));

    let copy_of = |name: &str| {
        let to = token.path().join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&out)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
        to
    };
    let object = files_under(&out)
        .into_keys()
        .find(|p| p.ends_with(".object") && !p.ends_with("token.object"))
        .unwrap();
    // A changed byte in a copied file.
    let changed = copy_of("changed-file");
    let mut bytes = std::fs::read(changed.join(&object)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(changed.join(&object), bytes).unwrap();
    // A manifest whose hash was "fixed" for another file, and one that
    // does not name a file that is there.
    let forged = copy_of("changed-manifest");
    let mut m = manifest(&forged);
    m["files"][&object] = serde_json::Value::String("00".repeat(32));
    std::fs::write(forged.join("manifest.json"), m.to_string()).unwrap();
    let extra = copy_of("extra-file");
    let dir = Path::new(&object).parent().unwrap();
    std::fs::write(extra.join(dir).join("planted.object"), b"x").unwrap();
    for (damaged, why) in [
        (&changed, "does not match its SHA-256"),
        (&forged, "does not match its SHA-256"),
        (&extra, "is not in the manifest"),
    ] {
        let (target, conf) = empty_target(&token);
        let refused = run_restore(&token, &conf, damaged, false);
        let said = text(&refused);
        assert!(!refused.status.success(), "{said}");
        assert!(said.contains(why), "{said}");
        assert!(
            std::fs::read_dir(target.path().join("tokens"))
                .unwrap()
                .next()
                .is_none(),
            "a refused restore wrote into the target"
        );
    }

    // The gateway's own token directory, while it serves: refused, with
    // --force too, and nothing there changes.
    let tokens = token.path().join("tokens");
    let before = files_under(&tokens);
    for force in [false, true] {
        let refused = run_restore(&token, &token.softhsm_conf(), &out, force);
        let said = text(&refused);
        assert!(!refused.status.success(), "{said}");
        assert!(said.contains("a gateway is using"), "{said}");
    }
    assert_eq!(
        files_under(&tokens).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    // Stopped, it may be replaced (--force sets what was there aside).
    let token = gateway.stop();
    let restored = run_restore(&token, &token.softhsm_conf(), &out, true);
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(String::from_utf8_lossy(&restored.stdout).contains("is in "));
    let again = Gateway::start_on(token);
    assert_eq!(
        runtime.block_on(key_metadata(&again.client(), &key)).key_id,
        key
    );
}

/// Two objects holding one record's latest revision (a commit settling, or
/// left so by a writer killed before its clean-up) are never copied as a
/// backup: either may be the one a client was told of.
#[test]
fn backup_refuses_a_copy_with_a_commit_still_settling() {
    if implementation() != Implementation::SoftHsm2 {
        return;
    }
    let gateway = Gateway::start();
    let token = gateway.token.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (one, two) = runtime.block_on(async {
        let client = gateway.client();
        (create_key(&client).await, create_key(&client).await)
    });
    let rival = |target: &str| {
        (
            "kmsgate/alias/settling".to_owned(),
            serde_json::json!({
                "format": 1, "revision": 7, "name": "alias/settling",
                "target": target, "created": 1.0e9, "updated": 1.0e9,
            })
            .to_string()
            .into_bytes(),
        )
    };
    crate::unreadable::inject(&token, &[rival(&one), rival(&two)]);
    let out = token.path().join("copy");
    let refused = run_backup(&token, &token.config(), &out);
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("still settling"), "{said}");
    assert!(said.contains("kmsgate/alias/settling"), "{said}");
    assert!(!out.join("manifest.json").exists() && !out.join("tokens").exists());
}
