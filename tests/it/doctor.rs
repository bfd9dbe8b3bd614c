//! `kmsgate doctor`: one verdict per check, exit status 0 only when none
//! fails, the failing check named with what to do, and never a secret in
//! its output. It runs `serve`'s own start-up checks (transport with the
//! listen address serve would use, file permissions), and probes the token
//! with a write that it removes.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Runs the doctor on `token`'s config: (passed, its stdout).
fn doctor(token: &Token) -> (bool, String) {
    doctor_with(token, &[])
}

/// As [`doctor`], with `args` after `--config FILE`.
fn doctor_with(token: &Token, args: &[&str]) -> (bool, String) {
    let config = token.config().to_string_lossy().into_owned();
    let mut all = vec!["doctor", "--config", &config];
    all.extend_from_slice(args);
    let (ok, out, err) = token.run_cli(&all);
    assert!(
        !out.contains(PIN) && !err.contains(PIN),
        "the PIN in the doctor's output"
    );
    assert!(
        !out.contains(SECRET) && !err.contains(SECRET),
        "a secret in the doctor's output"
    );
    (ok, out)
}

/// The verdict word of `check` in the doctor's output.
fn verdict<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no '{check}' line in:\n{out}"))
}

fn edit_config(token: &Token, from: &str, to: &str) {
    let config = std::fs::read_to_string(token.config()).unwrap();
    assert!(config.contains(from), "{from} not in the config");
    std::fs::write(token.config(), config.replace(from, to)).unwrap();
}

/// Top-level `lines` put into the config (before its first table).
fn top_level(token: &Token, lines: &str) {
    edit_config(token, "[hsm]\n", &format!("{lines}\n[hsm]\n"));
}

/// The data objects on the token, as pkcs11-tool lists them.
fn data_objects(token: &Token) -> usize {
    list_objects(token)
        .lines()
        .filter(|l| l.starts_with("Data object"))
        .count()
}

/// Runs `kmsgate serve --listen listen` on `token` and expects it to refuse
/// to start: returns its stderr. Kills it if it serves.
fn serve_refuses(token: &Token, listen: &str) -> String {
    let log = token.path().join("refused-serve.log");
    let mut child = Command::new(kmsgate_bin())
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .args(["serve", "--config"])
        .arg(token.config())
        .args(["--listen", listen])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "serve did not refuse ({status:?}):\n{err}"
    );
    err
}

#[test]
fn a_healthy_set_up_passes_every_check() {
    let token = Token::new();
    let objects_before = data_objects(&token);
    let (ok, out) = doctor(&token);
    assert!(ok, "{out}");
    for check in [
        "config",
        "transport",
        "PIN file permissions",
        "credentials",
        "clock",
        "module loads",
        "token found",
        "login",
        "mechanisms",
        "data key path",
        "IV source",
        "random bytes",
        "token write",
    ] {
        assert_eq!(verdict(&out, check), "PASS", "{check}:\n{out}");
    }
    // SoftHSM2 does not offer CKM_AES_GCM for C_WrapKey; Kryoptic does.
    let path = match implementation() {
        Implementation::SoftHsm2 => "C_GenerateRandom + C_Encrypt",
        Implementation::Kryoptic(_) => "C_WrapKey with CKM_AES_GCM",
    };
    assert!(out.contains(path), "{out}");
    assert!(
        out.ends_with("kmsgate doctor: all checks passed\n"),
        "{out}"
    );
    // The write probe wrote through the token and took its object away.
    assert!(out.contains("created, read back and destroyed"), "{out}");
    assert_eq!(
        data_objects(&token),
        objects_before,
        "{}",
        list_objects(&token)
    );
    assert!(!list_objects(&token).contains("kmsgate/doctor"));
}

#[test]
fn a_wrong_pin_fails_the_login_check() {
    let token = Token::new();
    std::fs::write(token.path().join("pin"), "not-the-pin").unwrap();
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "login"), "FAIL", "{out}");
    assert!(
        out.contains("CKR_PIN_INCORRECT") && out.contains("fix: "),
        "{out}"
    );
    assert_eq!(verdict(&out, "token found"), "PASS");
}

#[test]
fn a_missing_module_fails_the_module_check() {
    let token = Token::new();
    edit_config(
        &token,
        &module().to_string_lossy(),
        "/nonexistent/libpkcs11.so",
    );
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "module loads"), "FAIL", "{out}");
    assert!(out.contains("/nonexistent/libpkcs11.so"), "{out}");
    assert!(
        !out.contains("token found"),
        "no token check without a module:\n{out}"
    );
}

#[test]
fn a_missing_token_fails_the_token_check_and_names_the_tokens_there() {
    let token = Token::new();
    edit_config(
        &token,
        "token_label = \"kmsgate\"",
        "token_label = \"elsewhere\"",
    );
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "token found"), "FAIL", "{out}");
    assert!(
        out.contains("'elsewhere'") && out.contains("'kmsgate'"),
        "{out}"
    );
    assert!(!out.contains("login"), "no login without a token:\n{out}");
}

#[test]
fn a_world_readable_pin_file_fails() {
    let token = Token::new();
    let pin = token.path().join("pin");
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "PIN file permissions"), "FAIL", "{out}");
    assert!(
        out.contains("mode 0644") && out.contains("chmod 600"),
        "{out}"
    );
    // Everything else still passes: the verdict is about the file alone.
    assert_eq!(verdict(&out, "login"), "PASS", "{out}");
}

/// The serial and slot of the token labelled `kmsgate`, as the doctor lists
/// them when the configured one is not found.
fn serial_and_slot(token: &Token) -> (String, String) {
    edit_config(
        token,
        "token_label = \"kmsgate\"",
        "token_label = \"nowhere\"",
    );
    let (_, out) = doctor(token);
    edit_config(
        token,
        "token_label = \"nowhere\"",
        "token_label = \"kmsgate\"",
    );
    let listed = out
        .split("'kmsgate' (serial ")
        .nth(1)
        .unwrap_or_else(|| panic!("the token is not listed:\n{out}"));
    let (serial, rest) = listed.split_once(", slot ").unwrap();
    let slot = rest.split(')').next().unwrap();
    (serial.to_owned(), slot.to_owned())
}

#[test]
fn a_token_is_chosen_by_serial_and_slot_as_well_as_label() {
    let token = Token::new();
    let (serial, slot) = serial_and_slot(&token);
    let with = |extra: &str| {
        edit_config(
            &token,
            "token_label = \"kmsgate\"",
            &format!("token_label = \"kmsgate\"\n{extra}"),
        );
        let verdict_now = doctor(&token);
        let config = std::fs::read_to_string(token.config()).unwrap();
        std::fs::write(token.config(), config.replace(&format!("\n{extra}"), "")).unwrap();
        verdict_now
    };
    let (ok, out) = with(&format!("token_serial = \"{serial}\"\nslot_id = {slot}"));
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "'kmsgate', serial {serial}, in slot {slot} in slot {slot}"
        )),
        "{out}"
    );
    let (ok, out) = with("token_serial = \"0000000000000000\"");
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "token found"), "FAIL", "{out}");
    assert!(out.contains("serial 0000000000000000"), "{out}");
    let other_slot = slot.parse::<u64>().unwrap() + 1;
    let (ok, out) = with(&format!("slot_id = {other_slot}"));
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "token found"), "FAIL", "{out}");

    // A gateway on the token chosen by serial: it serves, and its writes
    // are confirmed by the read-back helper, which finds the same token.
    edit_config(
        &token,
        "token_label = \"kmsgate\"",
        &format!("token_label = \"kmsgate\"\ntoken_serial = \"{serial}\""),
    );
    let gw = Gateway::start_on(token.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(create_key(&gw.client()));
    assert!(!id.is_empty());
}

#[test]
fn plain_http_off_loopback_fails_as_serve_refuses_it() {
    let token = Token::new();
    // The listen address serve would use: the config's...
    top_level(&token, "listen = \"0.0.0.0:8080\"");
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "transport"), "FAIL", "{out}");
    assert!(
        out.contains("0.0.0.0:8080") && out.contains("insecure_plain_http"),
        "{out}"
    );
    assert!(serve_refuses(&token, "0.0.0.0:0").contains("refusing to serve plain HTTP"));
    // ... or the one --listen gives, as deploy/container/entrypoint.sh
    // passes it to both.
    edit_config(&token, "listen = \"0.0.0.0:8080\"\n", "");
    let (ok, out) = doctor(&token);
    assert!(ok, "{out}");
    assert_eq!(verdict(&out, "transport"), "PASS", "{out}");
    let (ok, out) = doctor_with(&token, &["--listen", "0.0.0.0:8080"]);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "transport"), "FAIL", "{out}");
    // The opt-in serve accepts passes, with a warning.
    top_level(&token, "insecure_plain_http = true");
    let (ok, out) = doctor_with(&token, &["--listen", "0.0.0.0:8080"]);
    assert!(ok, "{out}");
    assert_eq!(verdict(&out, "transport"), "WARN", "{out}");
}

#[test]
fn a_world_writable_policy_file_fails_and_serve_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tester.json");
    std::fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
    )
    .unwrap();
    let token = Token::with_config(&format!(
        "[[auth.principals]]\nname = \"reader\"\npolicy_files = [\"{}\"]\n",
        policy.display()
    ));
    let (ok, out) = doctor(&token);
    assert!(ok, "{out}");
    assert_eq!(verdict(&out, "policy file permissions"), "PASS", "{out}");

    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "policy file permissions"), "FAIL", "{out}");
    assert!(
        out.contains("mode 0666") && out.contains("chmod go-w"),
        "{out}"
    );
    let err = serve_refuses(&token, "127.0.0.1:0");
    assert!(err.contains("tester.json") && err.contains("0666"), "{err}");

    // Group-writable is refused too.
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "policy file permissions"), "FAIL", "{out}");
}

#[test]
fn a_tls_key_others_can_change_or_read_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token = Token::with_config(&format!(
        "[tls]\ncert_chain_file = \"{}\"\nprivate_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    // With TLS, any listen address is fine.
    let (ok, out) = doctor_with(&token, &["--listen", "0.0.0.0:8443"]);
    assert!(ok, "{out}");
    assert_eq!(verdict(&out, "transport"), "PASS", "{out}");
    assert_eq!(verdict(&out, "TLS key permissions"), "PASS", "{out}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "TLS key permissions"), "FAIL", "{out}");
    assert!(out.contains("other users can change it"), "{out}");
    assert!(serve_refuses(&token, "127.0.0.1:0").contains("key.pem"));

    // Readable by others: serve accepts it, the doctor does not.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = doctor(&token);
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "TLS key permissions"), "FAIL", "{out}");
    assert!(
        out.contains("other users can read it") && out.contains("chmod 600"),
        "{out}"
    );
}

#[test]
fn a_token_that_refuses_writes_fails_the_write_check() {
    // faulty-pkcs11 forwards to SoftHSM2: scripts/test leaves this test
    // out of the Kryoptic run.
    let token = Token::faulty();
    let faults = token.faults();
    let run = || {
        let out = Command::new(kmsgate_bin())
            .env("SOFTHSM2_CONF", token.softhsm_conf())
            .envs(token.faulty_env())
            .args(["doctor", "--config"])
            .arg(token.config())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let before = data_objects(&token);
    let (ok, out) = run();
    assert!(ok, "{out}");
    assert_eq!(verdict(&out, "token write"), "PASS", "{out}");

    // CKR_TOKEN_WRITE_PROTECTED: every read check still passes.
    faults.set("C_CreateObject fail 0xE2 forever");
    let (ok, out) = run();
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "token write"), "FAIL", "{out}");
    assert!(out.contains("CKR_TOKEN_WRITE_PROTECTED"), "{out}");
    for check in ["login", "mechanisms", "random bytes"] {
        assert_eq!(verdict(&out, check), "PASS", "{check}:\n{out}");
    }
    assert!(faults.count("fail C_CreateObject") >= 1);

    // The object is made but cannot be destroyed: the doctor fails, and
    // names the object left behind (which no gateway reads).
    faults.set("C_DestroyObject fail 0x30 forever");
    let (ok, out) = run();
    assert!(!ok, "{out}");
    assert_eq!(verdict(&out, "token write"), "FAIL", "{out}");
    assert!(out.contains("kmsgate/doctor/"), "{out}");
    faults.clear();
    assert_eq!(data_objects(&token), before + 1, "{}", list_objects(&token));
    let (ok, out) = run();
    assert!(ok, "{out}");
}
