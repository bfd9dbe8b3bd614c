//! `kmsgate doctor`: one verdict per check, exit status 0 only when none
//! fails, the failing check named with what to do, and never a secret in
//! its output.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// Runs the doctor on `token`'s config: (passed, its stdout).
fn doctor(token: &Token) -> (bool, String) {
    let (ok, out, err) = token.run_cli(&["doctor", "--config", &token.config().to_string_lossy()]);
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

#[test]
fn a_healthy_set_up_passes_every_check() {
    let token = Token::new();
    let (ok, out) = doctor(&token);
    assert!(ok, "{out}");
    for check in [
        "config",
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
