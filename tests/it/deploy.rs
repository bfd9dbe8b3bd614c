//! The deployment files in deploy/: the systemd unit passes
//! `systemd-analyze verify` with no warning at all (an unknown or
//! misspelt setting is only a warning there, so stderr must be empty too).

use std::process::Command;

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/deploy/systemd/kmsgate.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/kmsgate serve"));
    for setting in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitCORE=0",
        "MemoryDenyWriteExecute=yes",
        "User=kmsgate",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    // verify checks that ExecStart's program exists: point it at the
    // binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kmsgate.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/kmsgate", env!("CARGO_BIN_EXE_kmsgate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn the_sysusers_file_declares_the_units_user() {
    let root = env!("CARGO_MANIFEST_DIR");
    let sysusers =
        std::fs::read_to_string(format!("{root}/deploy/systemd/kmsgate.sysusers")).unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "kmsgate"])),
        "{sysusers}"
    );
}
