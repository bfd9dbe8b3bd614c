//! GetHealthStatus: a real AES-GCM round trip on the token under a
//! session key, never a customer key; the fleet size and the token's
//! vendor and model; UNAVAILABLE while the token fails; cached for at
//! most `health_cache_secs`.

use super::client::Sealed;
use super::*;

#[tokio::test]
async fn health_is_active_with_the_tokens_vendor_and_model() {
    let (_gw, c, _) = usual().await;
    let h = c.health();
    h.assert_ok();
    let b = &h.body;
    assert_eq!(b["xksProxyFleetSize"], 1);
    assert_eq!(b["xksProxyVendor"], "kmsgate");
    assert!(b["xksProxyModel"].as_str().unwrap().starts_with("kmsgate "));
    let details = b["ekmFleetDetails"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{}", h.text);
    assert_eq!(details[0]["healthStatus"], "ACTIVE");
    assert!(!details[0]["id"].as_str().unwrap().is_empty());
    if implementation() == Implementation::SoftHsm2 {
        // C_GetTokenInfo of a SoftHSM2 token.
        assert_eq!(b["ekmVendor"], "SoftHSM project", "{}", h.text);
        assert_eq!(details[0]["model"], "SoftHSM v2", "{}", h.text);
    }
}

#[tokio::test]
async fn health_never_spends_a_customer_keys_gcm_budget() {
    // Two encryptions per version: had health used the key, the next
    // encryption would name version 2.
    let gw = start(&format!(
        "[keys]\ngcm_usage_bound = 2\ngcm_reserve_block = 1\n\n[xks]\nhealth_cache_secs = 0\n{}",
        usual_store()
    ));
    key_with_alias(&gw.client(), "alias/xks-both").await;
    let c = client(&gw, "/xks");
    for _ in 0..5 {
        assert_eq!(
            c.health().body["ekmFleetDetails"][0]["healthStatus"],
            "ACTIVE"
        );
    }
    let s = Sealed::of(&c.encrypt("ek-both", b"x", None, false));
    let s2 = Sealed::of(&c.encrypt("ek-both", b"y", None, false));
    assert_eq!((s.metadata[19], s2.metadata[19]), (1, 1));
}

#[tokio::test]
async fn health_is_unavailable_while_the_token_fails_and_cached_only_as_configured() {
    let token =
        Token::with_faulty_config(&format!("[xks]\nhealth_cache_secs = 0\n{}", usual_store()));
    let gw = Gateway::start_faulty_on_with_env(token, &[(XKS_SECRET_ENV, XKS_SECRET)]);
    let c = client(&gw, "/xks");
    let status = |c: &client::XksClient| {
        let h = c.health();
        h.assert_ok();
        h.body["ekmFleetDetails"][0]["healthStatus"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(&c), "ACTIVE");
    let faults = gw.faults();
    faults.set("C_Encrypt fail 0x30 forever\nC_GenerateKey fail 0x30 forever");
    assert_eq!(status(&c), "UNAVAILABLE");
    faults.clear();
    assert_eq!(status(&c), "ACTIVE");
}

#[tokio::test]
async fn a_cached_health_answer_is_reused_within_its_time() {
    let token =
        Token::with_faulty_config(&format!("[xks]\nhealth_cache_secs = 60\n{}", usual_store()));
    let gw = Gateway::start_faulty_on_with_env(token, &[(XKS_SECRET_ENV, XKS_SECRET)]);
    let c = client(&gw, "/xks");
    assert_eq!(
        c.health().body["ekmFleetDetails"][0]["healthStatus"],
        "ACTIVE"
    );
    let faults = gw.faults();
    faults.set("C_GenerateKey fail 0x30 forever");
    // Within the minute: the cached answer, and no probe on the token.
    let before = faults.count("fail C_GenerateKey");
    assert_eq!(
        c.health().body["ekmFleetDetails"][0]["healthStatus"],
        "ACTIVE"
    );
    assert_eq!(faults.count("fail C_GenerateKey"), before);
    faults.clear();
}

#[tokio::test]
async fn health_is_degraded_while_the_token_encrypts_but_the_gateway_is_not_ready() {
    let token = Token::with_faulty_config(&format!(
        "[keys]\nsync_interval_ms = 100\n\n[xks]\nhealth_cache_secs = 0\n{}",
        usual_store()
    ));
    let gw = Gateway::start_faulty_on_with_env(token, &[(XKS_SECRET_ENV, XKS_SECRET)]);
    let c = client(&gw, "/xks");
    let status = || {
        c.health().body["ekmFleetDetails"][0]["healthStatus"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(status(), "ACTIVE");
    // Listing the token fails, so the sync with it does (the gateway is
    // not ready), while AES-GCM on a session key still works.
    let faults = gw.faults();
    faults.set("C_FindObjectsInit fail 0x30 forever");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = status();
    while seen != "DEGRADED" && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = status();
    }
    assert_eq!(seen, "DEGRADED");
    faults.clear();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen != "ACTIVE" && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = status();
    }
    assert_eq!(seen, "ACTIVE");
}
