//! The ciphertext blob parser on hostile bytes.

use kmsgate::blob::{HEADER_LEN, Header, IV_LEN, ParsedBlob, TAG_LEN, assemble, parse};
use proptest::prelude::*;
use uuid::Uuid;

/// Header (22) + IV (12) + one ciphertext byte + tag (16).
const MIN_BLOB_LEN: usize = HEADER_LEN + IV_LEN + 1 + TAG_LEN;

fn owned(p: &ParsedBlob<'_>) -> (Header, [u8; IV_LEN], Vec<u8>) {
    (p.header, p.iv, p.ciphertext_and_tag.to_vec())
}

/// A valid blob from arbitrary parts.
fn valid_blob() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<[u8; IV_LEN]>(),
        prop::collection::vec(any::<u8>(), TAG_LEN + 1..300),
    )
        .prop_map(|(id, version, iv, sealed)| {
            let header = Header {
                key_id: Uuid::from_bytes(id),
                key_version: version,
            };
            assemble(&header, &iv, &sealed)
        })
}

/// Arbitrary bytes, some of them starting like a v1 blob so that parsing
/// gets past the version byte.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (prop::collection::vec(any::<u8>(), 0..120), any::<bool>()).prop_map(|(mut b, iv)| {
            if let Some(first) = b.first_mut() {
                *first = 1;
            }
            if iv && b.len() > 21 {
                b[21] = IV_LEN as u8;
            }
            b
        }),
    ]
}

proptest! {
    #![proptest_config(crate::fuzz::config("target/fuzz-regressions/blob.txt", 512))]

    /// Arbitrary bytes give an error or a parse, never a panic; whatever
    /// parses is a structurally valid v1 blob that reassembles to exactly
    /// the bytes it came from.
    #[test]
    fn arbitrary_bytes_parse_or_are_refused(bytes in hostile_bytes()) {
        if let Ok(parsed) = parse(&bytes) {
            prop_assert!(bytes.len() >= MIN_BLOB_LEN);
            prop_assert_eq!(bytes[0], 1);
            prop_assert_eq!(usize::from(bytes[21]), IV_LEN);
            prop_assert!(parsed.ciphertext_and_tag.len() > TAG_LEN);
            prop_assert_eq!(
                assemble(&parsed.header, &parsed.iv, parsed.ciphertext_and_tag),
                bytes
            );
        } else {
            prop_assert!(
                bytes.len() < MIN_BLOB_LEN || bytes[0] != 1 || usize::from(bytes[21]) != IV_LEN
            );
        }
    }

    /// Every blob assembled from arbitrary header, IV and ciphertext parses
    /// back to those parts.
    #[test]
    fn valid_blobs_round_trip(
        id in any::<[u8; 16]>(),
        version in any::<u32>(),
        iv in any::<[u8; IV_LEN]>(),
        sealed in prop::collection::vec(any::<u8>(), TAG_LEN + 1..300),
    ) {
        let header = Header { key_id: Uuid::from_bytes(id), key_version: version };
        let blob = assemble(&header, &iv, &sealed);
        prop_assert_eq!(blob.len(), HEADER_LEN + IV_LEN + sealed.len());
        let parsed = parse(&blob).expect("a valid blob parses");
        prop_assert_eq!(owned(&parsed), (header, iv, sealed));
    }

    /// Changing any single byte of a valid blob is refused or parses to
    /// something else: no two byte strings share a parse.
    #[test]
    fn a_changed_byte_is_refused_or_parses_differently(
        blob in valid_blob(),
        at in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let original = owned(&parse(&blob).unwrap());
        let mut changed = blob.clone();
        let i = at.index(changed.len());
        changed[i] = changed[i].wrapping_add(delta);
        if let Ok(parsed) = parse(&changed) {
            prop_assert_ne!(owned(&parsed), original);
        }
    }

    /// Truncating a valid blob to any shorter length, or extending it, is
    /// refused or parses to something else.
    #[test]
    fn a_truncated_or_extended_blob_is_refused_or_parses_differently(
        blob in valid_blob(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let original = owned(&parse(&blob).unwrap());
        let truncated = &blob[..cut.index(blob.len())];
        match parse(truncated) {
            Ok(parsed) => {
                prop_assert!(truncated.len() >= MIN_BLOB_LEN);
                prop_assert_ne!(owned(&parsed), original.clone());
            }
            Err(_) => prop_assert!(truncated.len() < MIN_BLOB_LEN),
        }
        let mut extended = blob.clone();
        extended.extend_from_slice(&extra);
        let parsed = parse(&extended).expect("a longer ciphertext still parses");
        prop_assert_ne!(owned(&parsed), original);
    }
}
