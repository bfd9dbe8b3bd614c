//! The ciphertext blob (format v1) and the canonical encoding of an
//! encryption context.
//!
//! A `CiphertextBlob` must let Decrypt find the key version that made it with
//! nothing but the blob, and it must bind the encryption context so that a
//! different context fails exactly like a tampered byte. So the blob carries a
//! small fixed header (format version, key id, key version, IV length), and
//! that header together with the encoded context is the GCM additional
//! authenticated data. The full specification, with test vectors, is
//! `docs/ciphertext-format.md`; the unit tests below read the vectors from that
//! file, so the two cannot drift apart.
//!
//! ```text
//! blob   = header (22) || iv (12) || ciphertext || tag (16)
//! header = 0x01 || key id (16, UUID bytes) || key version (u32 BE) || iv_len (1) = 12
//! aad    = header || encode_context(ctx)
//! ```

use std::collections::BTreeMap;

use uuid::Uuid;

/// The only format version this module writes and reads.
pub const FORMAT_V1: u8 = 1;
/// Version byte, key id, key version, IV length.
pub const HEADER_LEN: usize = 1 + 16 + 4 + 1;
/// GCM's 96-bit IV: the one length GCM uses without hashing the IV first.
pub const IV_LEN: usize = 12;
/// The full 128-bit GCM tag; shorter tags weaken the forgery bound.
pub const TAG_LEN: usize = 16;
/// Plaintext is never empty in KMS (Encrypt takes 1–4096 bytes, data keys are
/// at least one byte), so a valid blob always holds at least one ciphertext
/// byte.
const MIN_BLOB_LEN: usize = HEADER_LEN + IV_LEN + 1 + TAG_LEN;

/// An encryption context. A `BTreeMap` so that iteration is already in the
/// canonical order (ascending byte order of the keys).
pub type EncryptionContext = BTreeMap<String, String>;

/// What the header says about the key that made a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub key_id: Uuid,
    pub key_version: u32,
}

impl Header {
    /// The 22 header bytes, exactly as they lead the blob and the AAD.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = FORMAT_V1;
        out[1..17].copy_from_slice(self.key_id.as_bytes());
        out[17..21].copy_from_slice(&self.key_version.to_be_bytes());
        // The IV length is written, not implied, so that a later format can
        // admit other lengths without guessing; v1 fixes it at 12.
        out[21] = IV_LEN as u8;
        out
    }
}

/// A length as the u32 big-endian prefix of the encodings below.
///
/// Request bodies are limited far below 4 GiB by the HTTP layer, so a string
/// whose length does not fit cannot reach this function; saturating instead
/// of panicking keeps the server free of panics all the same.
fn len_prefix(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The canonical encoding of an encryption context: the pair count, then each
/// pair in ascending byte order of its key as length-prefixed key and value.
///
/// Length prefixes make the encoding unambiguous: `{"ab": "c"}` and
/// `{"a": "bc"}` encode differently, which a plain concatenation would not.
pub fn encode_context(ctx: &EncryptionContext) -> Vec<u8> {
    let size = 4 + ctx
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_prefix(ctx.len()));
    for (key, value) in ctx {
        out.extend_from_slice(&len_prefix(key.len()));
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&len_prefix(value.len()));
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The GCM additional authenticated data: header bytes, then the encoded
/// context. Never empty, since it always holds the header (SoftHSM2 aborts on
/// an empty AAD).
pub fn aad(header: &Header, ctx: &EncryptionContext) -> Vec<u8> {
    let context = encode_context(ctx);
    let mut out = Vec::with_capacity(HEADER_LEN + context.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&context);
    out
}

/// Builds a blob from the header, the IV the token actually used and the
/// token's output (ciphertext followed by the 16-byte tag).
pub fn assemble(header: &Header, iv: &[u8; IV_LEN], ciphertext_and_tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + IV_LEN + ciphertext_and_tag.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(iv);
    out.extend_from_slice(ciphertext_and_tag);
    out
}

/// A blob split into its parts; `ciphertext_and_tag` borrows from the input.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedBlob<'a> {
    pub header: Header,
    pub iv: [u8; IV_LEN],
    pub ciphertext_and_tag: &'a [u8],
}

/// The blob is not a v1 blob. Deliberately carries no detail: the caller
/// answers `InvalidCiphertextException` with no message, as AWS does.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed ciphertext blob")]
pub struct MalformedBlob;

/// Splits a blob into header, IV and ciphertext||tag. Checks only the
/// structure; authenticity is the token's GCM decryption to decide.
pub fn parse(blob: &[u8]) -> Result<ParsedBlob<'_>, MalformedBlob> {
    if blob.len() < MIN_BLOB_LEN {
        return Err(MalformedBlob);
    }
    let (header, rest) = blob.split_at(HEADER_LEN);
    if header[0] != FORMAT_V1 || usize::from(header[21]) != IV_LEN {
        return Err(MalformedBlob);
    }
    let key_id: [u8; 16] = header[1..17].try_into().map_err(|_| MalformedBlob)?;
    let key_version: [u8; 4] = header[17..21].try_into().map_err(|_| MalformedBlob)?;
    let (iv, ciphertext_and_tag) = rest.split_at(IV_LEN);
    Ok(ParsedBlob {
        header: Header {
            key_id: Uuid::from_bytes(key_id),
            key_version: u32::from_be_bytes(key_version),
        },
        iv: iv.try_into().map_err(|_| MalformedBlob)?,
        ciphertext_and_tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::Aes256Gcm;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use proptest::prelude::*;

    const DOC: &str = include_str!("../docs/ciphertext-format.md");

    /// One vector from the `kmsgate-test-vectors` block of the format doc.
    #[derive(Debug, Default)]
    struct Vector {
        name: String,
        master_key: Vec<u8>,
        key_id: String,
        key_version: u32,
        iv: Vec<u8>,
        context: String,
        plaintext: Vec<u8>,
        aad: String,
        blob: String,
    }

    /// Reads the fenced block: `name: value` lines, vectors separated by blank
    /// lines, each starting with `vector:`.
    fn doc_vectors() -> Vec<Vector> {
        let block = DOC
            .split("```kmsgate-test-vectors\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the doc has a kmsgate-test-vectors block");
        let mut vectors = Vec::new();
        for chunk in block.split("\n\n").filter(|c| !c.trim().is_empty()) {
            let mut v = Vector::default();
            for line in chunk.lines() {
                let (field, value) = line.split_once(": ").expect("`field: value` line");
                let value = value.trim();
                match field {
                    "vector" => v.name = value.to_owned(),
                    "master_key" => v.master_key = hex::decode(value).unwrap(),
                    "key_id" => v.key_id = value.to_owned(),
                    "key_version" => v.key_version = value.parse().unwrap(),
                    "iv" => v.iv = hex::decode(value).unwrap(),
                    "context" => v.context = value.to_owned(),
                    "plaintext" => v.plaintext = hex::decode(value).unwrap(),
                    "aad" => v.aad = value.to_owned(),
                    "blob" => v.blob = value.to_owned(),
                    other => panic!("unknown field {other:?} in vector {}", v.name),
                }
            }
            vectors.push(v);
        }
        vectors
    }

    /// What this module plus a software AES-256-GCM make of a vector's inputs:
    /// (aad hex, blob hex).
    fn compute(v: &Vector) -> (String, String) {
        let header = Header {
            key_id: v.key_id.parse().unwrap(),
            key_version: v.key_version,
        };
        let ctx: EncryptionContext = serde_json::from_str(&v.context).unwrap();
        let aad = aad(&header, &ctx);
        let iv: [u8; IV_LEN] = v.iv.as_slice().try_into().unwrap();
        let cipher = Aes256Gcm::new_from_slice(&v.master_key).unwrap();
        let sealed = cipher
            .encrypt(
                &iv.into(),
                Payload {
                    msg: &v.plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        (
            hex::encode(&aad),
            hex::encode(assemble(&header, &iv, &sealed)),
        )
    }

    #[test]
    fn doc_vectors_match_this_module_and_aes_gcm() {
        let vectors = doc_vectors();
        assert!(vectors.len() >= 3, "the doc promises at least 3 vectors");
        for v in &vectors {
            let (aad, blob) = compute(v);
            assert_eq!(aad, v.aad, "AAD of vector {}", v.name);
            assert_eq!(blob, v.blob, "blob of vector {}", v.name);
        }
    }

    #[test]
    fn doc_vectors_parse_back_and_decrypt() {
        for v in doc_vectors() {
            let blob = hex::decode(&v.blob).unwrap();
            let parsed = parse(&blob).unwrap();
            assert_eq!(parsed.header.key_id, v.key_id.parse::<Uuid>().unwrap());
            assert_eq!(parsed.header.key_version, v.key_version);
            assert_eq!(parsed.iv.as_slice(), v.iv.as_slice());
            assert_eq!(parsed.ciphertext_and_tag.len(), v.plaintext.len() + TAG_LEN);
            assert_eq!(
                blob.len(),
                v.plaintext.len() + HEADER_LEN + IV_LEN + TAG_LEN
            );

            // Decrypt needs only the blob and the context.
            let ctx: EncryptionContext = serde_json::from_str(&v.context).unwrap();
            let cipher = Aes256Gcm::new_from_slice(&v.master_key).unwrap();
            let aad = aad(&parsed.header, &ctx);
            let plaintext = cipher
                .decrypt(
                    &parsed.iv.into(),
                    Payload {
                        msg: parsed.ciphertext_and_tag,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(plaintext, v.plaintext, "vector {}", v.name);
        }
    }

    #[test]
    fn doc_vectors_cover_empty_two_pair_and_non_ascii_contexts() {
        let contexts: Vec<EncryptionContext> = doc_vectors()
            .iter()
            .map(|v| serde_json::from_str(&v.context).unwrap())
            .collect();
        assert!(contexts.iter().any(|c| c.is_empty()));
        assert!(contexts.iter().any(|c| c.len() == 2));
        assert!(
            contexts
                .iter()
                .any(|c| c.iter().any(|(k, v)| !k.is_ascii() || !v.is_ascii()))
        );
    }

    #[test]
    fn a_different_context_fails_decryption() {
        let v = &doc_vectors()[1];
        let blob = hex::decode(&v.blob).unwrap();
        let parsed = parse(&blob).unwrap();
        let mut ctx: EncryptionContext = serde_json::from_str(&v.context).unwrap();
        ctx.insert("extra".into(), "pair".into());
        let cipher = Aes256Gcm::new_from_slice(&v.master_key).unwrap();
        let aad = aad(&parsed.header, &ctx);
        let result = cipher.decrypt(
            &parsed.iv.into(),
            Payload {
                msg: parsed.ciphertext_and_tag,
                aad: &aad,
            },
        );
        assert!(result.is_err());
    }

    #[test]
    fn header_layout_is_version_key_id_version_iv_len() {
        let header = Header {
            key_id: "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap(),
            key_version: 0x0102_0304,
        };
        assert_eq!(
            hex::encode(header.to_bytes()),
            "01\
             00112233445566778899aabbccddeeff\
             01020304\
             0c"
        );
    }

    #[test]
    fn empty_context_encodes_as_a_zero_count() {
        assert_eq!(encode_context(&EncryptionContext::new()), [0, 0, 0, 0]);
    }

    #[test]
    fn context_pairs_are_sorted_by_key_bytes_and_length_prefixed() {
        let ctx: EncryptionContext = [("b", "2"), ("a", "xy")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            hex::encode(encode_context(&ctx)),
            "00000002\
             00000001 61 00000002 7879\
             00000001 62 00000001 32"
                .replace(' ', "")
        );
    }

    #[test]
    fn length_prefixes_separate_ab_c_from_a_bc() {
        let one: EncryptionContext = [("ab".to_owned(), "c".to_owned())].into();
        let two: EncryptionContext = [("a".to_owned(), "bc".to_owned())].into();
        assert_ne!(encode_context(&one), encode_context(&two));
    }

    #[test]
    fn aad_is_header_then_context_and_never_empty() {
        let header = Header {
            key_id: Uuid::nil(),
            key_version: 7,
        };
        let aad = aad(&header, &EncryptionContext::new());
        assert_eq!(aad.len(), HEADER_LEN + 4);
        assert_eq!(&aad[..HEADER_LEN], &header.to_bytes());
    }

    fn valid_blob() -> Vec<u8> {
        let header = Header {
            key_id: Uuid::from_bytes([7; 16]),
            key_version: 3,
        };
        assemble(&header, &[9; IV_LEN], &[5; TAG_LEN + 1])
    }

    #[test]
    fn the_shortest_valid_blob_is_51_bytes() {
        let blob = valid_blob();
        assert_eq!(blob.len(), 51);
        assert!(parse(&blob).is_ok());
        assert_eq!(parse(&blob[..50]), Err(MalformedBlob));
        assert_eq!(parse(&[]), Err(MalformedBlob));
    }

    #[test]
    fn other_version_bytes_are_rejected() {
        for version in [0u8, 2, 0xff] {
            let mut blob = valid_blob();
            blob[0] = version;
            assert_eq!(parse(&blob), Err(MalformedBlob), "version {version}");
        }
    }

    #[test]
    fn iv_lengths_other_than_12_are_rejected() {
        for iv_len in [0u8, 11, 13, 16] {
            let mut blob = valid_blob();
            blob[21] = iv_len;
            assert_eq!(parse(&blob), Err(MalformedBlob), "iv_len {iv_len}");
        }
    }

    #[test]
    fn encrypting_4096_bytes_fits_the_6144_byte_blob_limit() {
        let header = Header {
            key_id: Uuid::nil(),
            key_version: u32::MAX,
        };
        let blob = assemble(&header, &[0; IV_LEN], &vec![0; 4096 + TAG_LEN]);
        assert_eq!(blob.len(), 4146);
        assert!(blob.len() <= 6144);
    }

    /// The inverse of `encode_context`, for the tests only: if every encoding
    /// decodes back to its map, no two maps can share an encoding.
    fn decode_context(mut bytes: &[u8]) -> Option<EncryptionContext> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if bytes.len() < n {
                return None;
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Some(head)
        }
        fn take_len(bytes: &mut &[u8]) -> Option<usize> {
            let raw: [u8; 4] = take(bytes, 4)?.try_into().ok()?;
            Some(u32::from_be_bytes(raw) as usize)
        }
        fn take_str(bytes: &mut &[u8]) -> Option<String> {
            let n = take_len(bytes)?;
            String::from_utf8(take(bytes, n)?.to_vec()).ok()
        }
        let count = take_len(&mut bytes)?;
        let mut ctx = EncryptionContext::new();
        for _ in 0..count {
            let key = take_str(&mut bytes)?;
            let value = take_str(&mut bytes)?;
            ctx.insert(key, value);
        }
        bytes.is_empty().then_some(ctx)
    }

    fn small_context() -> impl Strategy<Value = EncryptionContext> {
        // A tiny alphabet makes collisions between keys, values and their
        // concatenations likely, which is what injectivity has to survive.
        prop::collection::btree_map("[ab\u{e9}]{0,3}", "[ab\u{e9}]{0,3}", 0..4)
    }

    proptest! {
        #[test]
        fn parse_inverts_assemble(
            key_id in any::<[u8; 16]>(),
            key_version in any::<u32>(),
            iv in any::<[u8; IV_LEN]>(),
            sealed in prop::collection::vec(any::<u8>(), TAG_LEN + 1..200),
        ) {
            let header = Header { key_id: Uuid::from_bytes(key_id), key_version };
            let blob = assemble(&header, &iv, &sealed);
            let parsed = parse(&blob).unwrap();
            prop_assert_eq!(parsed, ParsedBlob { header, iv, ciphertext_and_tag: &sealed });
        }

        #[test]
        fn encode_context_is_injective(a in small_context(), b in small_context()) {
            prop_assert_eq!(a == b, encode_context(&a) == encode_context(&b));
        }

        #[test]
        fn encode_context_decodes_back(ctx in small_context()) {
            prop_assert_eq!(decode_context(&encode_context(&ctx)), Some(ctx));
        }

        #[test]
        fn parse_never_panics_on_near_valid_bytes(
            mut bytes in prop::collection::vec(any::<u8>(), HEADER_LEN..120),
        ) {
            // Random bytes almost always fail on the version byte; fixing the
            // two checked bytes drives parse through its length handling.
            bytes[0] = FORMAT_V1;
            bytes[21] = IV_LEN as u8;
            prop_assert_eq!(parse(&bytes).is_ok(), bytes.len() >= MIN_BLOB_LEN);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(parsed) = parse(&bytes) {
                prop_assert_eq!(bytes[0], FORMAT_V1);
                prop_assert!(parsed.ciphertext_and_tag.len() > TAG_LEN);
            }
        }
    }
}
