//! The canonical encryption-context encoding (part of the GCM AAD).

use kmsgate::blob::{EncryptionContext, Header, aad, encode_context};
use proptest::prelude::*;
use uuid::Uuid;

/// Strings of any Unicode scalar values, control characters and NUL
/// included, or from a tiny alphabet (so that keys, values and their
/// concatenations collide often, which is what injectivity must survive).
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["(?s).{0,12}", "[ab\u{e9}\u{0}]{0,4}", any::<String>(),]
}

fn context() -> impl Strategy<Value = EncryptionContext> {
    prop::collection::btree_map(text(), text(), 0..6)
}

/// The inverse of the encoding, written from docs/ciphertext-format.md: if
/// every encoding decodes back to its context, no two contexts share one.
fn decode(mut bytes: &[u8]) -> Option<EncryptionContext> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Some(head)
    }
    fn take_str(bytes: &mut &[u8]) -> Option<String> {
        let n = u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?) as usize;
        String::from_utf8(take(bytes, n)?.to_vec()).ok()
    }
    let count = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
    let mut ctx = EncryptionContext::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let key = take_str(&mut bytes)?;
        // Pairs are in strictly ascending byte order of their keys.
        if previous
            .as_ref()
            .is_some_and(|p| p.as_bytes() >= key.as_bytes())
        {
            return None;
        }
        previous = Some(key.clone());
        let value = take_str(&mut bytes)?;
        ctx.insert(key, value);
    }
    bytes.is_empty().then_some(ctx)
}

/// A context as a JSON object text with its members in the given order, as
/// a client would send it.
fn json_object(pairs: &[(String, String)]) -> String {
    let members: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                serde_json::to_string(k).unwrap(),
                serde_json::to_string(v).unwrap()
            )
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

proptest! {
    #![proptest_config(crate::fuzz::config("target/fuzz-regressions/context.txt", 512))]

    /// The encoding is a function of the context alone, and decodes back to
    /// it (so it is injective).
    #[test]
    fn encoding_is_deterministic_and_decodes_back(ctx in context()) {
        let once = encode_context(&ctx);
        prop_assert_eq!(&once, &encode_context(&ctx.clone()));
        prop_assert_eq!(decode(&once), Some(ctx));
    }

    /// Two different contexts never encode the same.
    #[test]
    fn different_contexts_encode_differently(a in context(), b in context()) {
        prop_assert_eq!(a == b, encode_context(&a) == encode_context(&b));
    }

    /// A context differing in one value only, or in one key only, still
    /// encodes differently (the near-misses random pairs rarely hit).
    #[test]
    fn a_changed_key_or_value_encodes_differently(
        ctx in prop::collection::btree_map(text(), text(), 1..6),
        at in any::<prop::sample::Index>(),
        suffix in "(?s).{1,3}",
        change_key in any::<bool>(),
    ) {
        let (key, value) = ctx.iter().nth(at.index(ctx.len())).map(|(k, v)| (k.clone(), v.clone())).unwrap();
        let mut other = ctx.clone();
        if change_key {
            let value = other.remove(&key).unwrap();
            other.insert(format!("{key}{suffix}"), value);
        } else {
            other.insert(key, format!("{value}{suffix}"));
        }
        prop_assert_eq!(ctx == other, encode_context(&ctx) == encode_context(&other));
    }

    /// The order in which pairs are inserted, or in which a client writes
    /// them in its JSON object, does not matter.
    #[test]
    fn insertion_and_json_member_order_do_not_matter(
        (pairs, shuffled) in prop::collection::btree_map(text(), text(), 0..8)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
            .prop_flat_map(|pairs| (Just(pairs.clone()), Just(pairs).prop_shuffle())),
    ) {
        let sorted: EncryptionContext = pairs.iter().cloned().collect();
        let mut inserted = EncryptionContext::new();
        for (k, v) in shuffled.iter().rev() {
            inserted.insert(k.clone(), v.clone());
        }
        prop_assert_eq!(encode_context(&sorted), encode_context(&inserted));

        let from_json: EncryptionContext = serde_json::from_str(&json_object(&shuffled)).unwrap();
        prop_assert_eq!(encode_context(&from_json), encode_context(&sorted));
    }

    /// The AAD is the 22 header bytes followed by the encoded context, for
    /// any header.
    #[test]
    fn aad_is_header_then_context(
        id in any::<[u8; 16]>(),
        version in any::<u32>(),
        ctx in context(),
    ) {
        let header = Header { key_id: Uuid::from_bytes(id), key_version: version };
        let mut expected = header.to_bytes().to_vec();
        expected.extend_from_slice(&encode_context(&ctx));
        prop_assert_eq!(aad(&header, &ctx), expected);
    }
}
