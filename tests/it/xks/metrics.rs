//! XKS requests are counted by store, operation and outcome, and timed
//! (`kmsgate_xks_requests_total`, `kmsgate_xks_request_duration_seconds`,
//! as docs/operations.md lists them).

use super::client::Sealed;
use super::*;
use crate::metrics::{XKS, assert_families, metrics_addr, scrape, sum};

#[tokio::test]
async fn xks_requests_are_counted_by_store_operation_and_outcome() {
    let gw = start(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n{}",
        usual_store()
    ));
    key_with_alias(&gw.client(), "alias/xks-both").await;
    let c = client(&gw, "/xks");
    c.metadata("ek-both").assert_ok();
    let sealed = Sealed::of(&c.encrypt("ek-both", b"m", None, false));
    c.decrypt("ek-both", &sealed, None).assert_ok();
    c.decrypt("ek-both", &sealed, Some(b"other"))
        .assert_error(400, "InvalidCiphertextException");
    c.health().assert_ok();
    c.metadata("ek-missing")
        .assert_error(404, "KeyNotFoundException");
    client(&gw, "/nowhere")
        .health()
        .assert_error(404, "InvalidUriPathException");

    let addr = metrics_addr(|| gw.log());
    let (status, body) = scrape(&addr);
    assert!(status.contains("200"), "{status}");
    assert_families(&body, XKS, &[]);
    let count = |labels: &[&str]| sum(&body, "kmsgate_xks_requests_total", labels);
    for (op, outcome) in [
        ("metadata", "ok"),
        ("encrypt", "ok"),
        ("decrypt", "ok"),
        ("decrypt", "InvalidCiphertextException"),
        ("health", "ok"),
        ("metadata", "KeyNotFoundException"),
    ] {
        let op = format!("operation=\"{op}\"");
        let outcome = format!("outcome=\"{outcome}\"");
        assert_eq!(
            count(&["store=\"main\"", &op, &outcome]),
            1.0,
            "{op} {outcome}\n{body}"
        );
    }
    assert_eq!(
        count(&[
            "store=\"unknown\"",
            "operation=\"unknown\"",
            "outcome=\"InvalidUriPathException\""
        ]),
        1.0,
        "{body}"
    );
    assert_eq!(
        sum(
            &body,
            "kmsgate_xks_request_duration_seconds_count",
            &["store=\"main\"", "operation=\"decrypt\""]
        ),
        2.0,
        "{body}"
    );
}
