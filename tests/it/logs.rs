//! The log level changes without a restart: `log_level` in the config is
//! read again on SIGHUP.

use std::time::{Duration, Instant};

use crate::common::*;

/// A request with a wrong secret: at debug level the gateway logs the
/// canonical request it computed ("SigV4 signature mismatch"). Returns
/// once the request's audit record is in the log: the log is written by a
/// thread of its own, so only then are the request's lines all there.
async fn mismatch(gw: &Gateway) {
    let audited = |gw: &Gateway| gw.log().matches("\"eventName\":\"ListKeys\"").count();
    let before = audited(gw);
    let wrong = gw.client_as(ACCESS_KEY, "not-the-secret", REGION);
    assert!(wrong.list_keys().send().await.is_err());
    let start = Instant::now();
    while audited(gw) == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no audit record of the refused request:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mismatches_logged(gw: &Gateway) -> usize {
    gw.log().matches("SigV4 signature mismatch").count()
}

fn set_level(token: &Token, level: &str) {
    let config = std::fs::read_to_string(token.config()).unwrap();
    let kept: String = config
        .lines()
        .filter(|l| !l.starts_with("log_level"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(token.config(), format!("log_level = \"{level}\"\n{kept}")).unwrap();
}

fn hup_and_wait(gw: &Gateway, level: &str) {
    let before = gw.log().matches("SIGHUP: log level set").count();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let start = Instant::now();
    while gw.log().matches("SIGHUP: log level set").count() == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no reload logged:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gw.log().contains(&format!("log_level={level}"))
            || gw.log().contains(&format!("log_level=\"{level}\"")),
        "{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_configs_log_level() {
    let token = Token::new();
    set_level(&token, "info");
    let gw = Gateway::start_on(token.clone());
    mismatch(&gw).await;
    assert_eq!(mismatches_logged(&gw), 0, "debug lines at info level");

    set_level(&token, "kmsgate=debug,info");
    hup_and_wait(&gw, "kmsgate=debug,info");
    mismatch(&gw).await;
    assert!(
        mismatches_logged(&gw) >= 1,
        "no debug line after SIGHUP:\n{}",
        gw.log()
    );
    assert!(!gw.log().contains(SECRET), "a secret in the log");

    // Back to info; a filter that does not parse leaves the level alone.
    set_level(&token, "info");
    hup_and_wait(&gw, "info");
    let seen = mismatches_logged(&gw);
    mismatch(&gw).await;
    assert_eq!(
        mismatches_logged(&gw),
        seen,
        "debug lines after going back to info"
    );
    set_level(&token, "kmsgate=[");
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status();
    let start = Instant::now();
    while !gw
        .log()
        .contains("the config does not load; log level unchanged")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", gw.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    mismatch(&gw).await;
    assert_eq!(mismatches_logged(&gw), seen);
}
