//! A key version's token object that a listing misses for a while (its
//! storage unreadable, as under fd exhaustion) makes requests fail with a
//! retryable 5xx, and the key is served again as soon as the object is back,
//! without a restart: the gateway never keeps a key cached without a
//! version its record lists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;

/// Every object file of the token, with when it was last written.
pub(crate) fn object_files(dir: &Path) -> HashMap<PathBuf, SystemTime> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(object_files(&path));
        } else if path.extension().is_some_and(|e| e == "object") {
            let written = std::fs::metadata(&path).unwrap().modified().unwrap();
            out.insert(path, written);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_object_missing_for_a_while_heals_without_restart() {
    let token = Token::with_config("[keys]\nsync_interval_ms = 200\n");
    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let tokens = token.path().join("tokens");
    let before = object_files(&tokens);
    let key = create_key(&kms).await;
    // SoftHSM2 encrypts a private object's label, so the version's object
    // is found by what CreateKey wrote: the key object first, then its
    // record (a data object).
    let mut created: Vec<(PathBuf, SystemTime)> = object_files(&tokens)
        .into_iter()
        .filter(|(p, _)| !before.contains_key(p))
        .collect();
    created.sort_by_key(|(_, t)| *t);
    assert!(created.len() >= 2, "CreateKey wrote {created:?}");
    let version_file = created[0].0.clone();
    let encrypt = || {
        kms.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"heal".to_vec()))
            .send()
    };
    let sealed = encrypt().await.unwrap().ciphertext_blob.unwrap();

    let hidden = token.path().join("hidden.object");
    std::fs::rename(&version_file, &hidden).unwrap();

    // While the object is gone: retryable 5xx, never a client error.
    let mut failed = 0;
    for _ in 0..5 {
        if let Err(e) = encrypt().await {
            let status = e.raw_response().map(|r| r.status().as_u16());
            assert!(
                matches!(status, Some(500..=599)),
                "Encrypt without its version object: {status:?} {:?}",
                e.code()
            );
            failed += 1;
        }
        let r = kms.decrypt().ciphertext_blob(sealed.clone()).send().await;
        if let Err(e) = r {
            let status = e.raw_response().map(|r| r.status().as_u16());
            assert!(
                matches!(status, Some(500..=599)),
                "Decrypt without its version object: {status:?} {:?}",
                e.code()
            );
        }
    }
    assert!(failed > 0, "the token still served the hidden object");

    std::fs::rename(&hidden, &version_file).unwrap();
    let start = Instant::now();
    loop {
        let enc = encrypt().await;
        let dec = kms.decrypt().ciphertext_blob(sealed.clone()).send().await;
        if enc.is_ok() && dec.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the key was not served again 20 s after its object came back \
             (Encrypt {:?}, Decrypt {:?}); log:\n{}",
            enc.err().and_then(|e| e.code().map(str::to_owned)),
            dec.err().and_then(|e| e.code().map(str::to_owned)),
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
