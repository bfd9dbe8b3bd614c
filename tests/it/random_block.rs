//! `hsm.random_block_bytes`: the token's random bytes drawn in blocks. Data
//! keys and IVs still come only from the token, every byte is used once,
//! and the number of C_GenerateRandom calls drops by the block's worth.

use std::collections::HashSet;

use crate::common::faulty::SETTLE;
use crate::common::*;

/// GenerateDataKey `n` times; returns every plaintext and ciphertext, each
/// checked to decrypt back to its plaintext.
async fn data_keys(kms: &aws_sdk_kms::Client, key: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = kms
            .generate_data_key()
            .key_id(key)
            .number_of_bytes(32)
            .send()
            .await
            .unwrap();
        let plaintext = r.plaintext.unwrap().into_inner();
        let blob = r.ciphertext_blob.unwrap();
        let back = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(back.plaintext.unwrap().into_inner(), plaintext);
        out.push((plaintext, blob.into_inner()));
    }
    out
}

/// The random draws of `n` GenerateDataKey calls, as the module counts them.
async fn draws(block: usize, n: usize) -> (usize, Vec<(Vec<u8>, Vec<u8>)>) {
    let token = Token::with_faulty_hsm(&format!("random_block_bytes = {block}"), "");
    let gw = Gateway::start_faulty_on(token);
    let faults = gw.faults();
    let kms = gw.client();
    let key = create_key(&kms).await;
    // Every C_GenerateRandom from now on is logged (a 1 ms stall).
    faults.set("C_GenerateRandom stall 1ms forever");
    let before = faults.count("stall C_GenerateRandom");
    let keys = data_keys(&kms, &key, n).await;
    tokio::time::sleep(SETTLE).await;
    (faults.count("stall C_GenerateRandom") - before, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_in_blocks_are_fewer_calls_and_never_reused() {
    let n = 40;
    let (unbuffered, _) = draws(0, n).await;
    assert!(
        unbuffered >= n,
        "one C_GenerateRandom per data key without a block: {unbuffered} for {n}"
    );
    // 32 key bytes and a 12-byte IV per data key: a 1024-byte block
    // serves 23 of them.
    let (buffered, keys) = draws(1024, n).await;
    assert!(
        buffered <= n.div_ceil(23) + 1,
        "{buffered} C_GenerateRandom calls for {n} data keys from 1024-byte blocks"
    );
    // Every byte handed out once: no data key repeats, no IV repeats (the
    // blob is header (22 bytes) || IV (12) || ciphertext || tag), and no
    // 8-byte run of any key or IV appears twice anywhere.
    let plaintexts: HashSet<&Vec<u8>> = keys.iter().map(|(p, _)| p).collect();
    assert_eq!(plaintexts.len(), n, "a data key was handed out twice");
    let ivs: HashSet<&[u8]> = keys.iter().map(|(_, b)| &b[22..34]).collect();
    assert_eq!(ivs.len(), n, "an IV was used twice");
    let mut runs = HashSet::new();
    for (p, b) in &keys {
        for w in p.windows(8).chain(b[22..34].windows(8)) {
            assert!(runs.insert(w.to_vec()), "random bytes handed out twice");
        }
    }
}
