//! How records are linked.
//!
//! Every line ends with three fields: `chainId` (a UUID chosen when the
//! chain began), `sequence` (0 for the chain's first line, then +1 per
//! line) and `previousHash`: the lowercase hex SHA-256 of the bytes of the
//! line before it, without its newline. The first line (sequence 0) has no
//! line before it; its `previousHash` is the SHA-256 of the genesis value
//! `kmsgate-audit-genesis:` followed by the chain id.
//!
//! So a line cannot be changed, removed or moved without breaking the link
//! from the line after it, and a missing beginning shows as a first line
//! whose sequence is not 0. What the chain cannot show by itself is a
//! missing end: cut lines off the last file and what is left is still a
//! valid chain. Only a hash kept elsewhere (the one `audit verify` prints)
//! proves that the chain once reached a given line.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a chain's first `previousHash` is the hash of, followed by the
/// chain id.
pub const GENESIS_PREFIX: &str = "kmsgate-audit-genesis:";

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `previousHash` of the first line of chain `chain_id`.
pub fn genesis_hash(chain_id: &str) -> String {
    sha256_hex(format!("{GENESIS_PREFIX}{chain_id}").as_bytes())
}

/// The chain fields of a line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub chain_id: String,
    pub sequence: u64,
    pub previous_hash: String,
}

impl Link {
    /// The chain fields of `line`, if it is a JSON object that has them.
    pub fn of(line: &[u8]) -> Option<Link> {
        serde_json::from_slice(line).ok()
    }
}

/// Where a chain stands: what the next line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub chain_id: String,
    pub next_sequence: u64,
    pub previous_hash: String,
}

impl ChainState {
    /// A new chain, with a fresh id.
    pub fn begin() -> ChainState {
        let chain_id = uuid::Uuid::new_v4().to_string();
        ChainState {
            previous_hash: genesis_hash(&chain_id),
            chain_id,
            next_sequence: 0,
        }
    }

    /// The chain that `last_line` (without its newline) ended, continued;
    /// `None` if that line carries no chain fields.
    pub fn after(last_line: &[u8]) -> Option<ChainState> {
        let link = Link::of(last_line)?;
        Some(ChainState {
            chain_id: link.chain_id,
            next_sequence: link.sequence + 1,
            previous_hash: sha256_hex(last_line),
        })
    }

    /// `record` (a serialised JSON object) with the chain fields added, as
    /// the next line (no newline). [`ChainState::advance`] commits it.
    pub fn link(&self, record: &str) -> String {
        let open = record
            .strip_suffix('}')
            .filter(|r| r.len() > 1)
            .unwrap_or("{\"invalidRecord\":true");
        format!(
            "{open},\"chainId\":\"{}\",\"sequence\":{},\"previousHash\":\"{}\"}}",
            self.chain_id, self.next_sequence, self.previous_hash
        )
    }

    /// Moves past `line`, which [`ChainState::link`] made and which was
    /// written.
    pub fn advance(&mut self, line: &str) {
        self.previous_hash = sha256_hex(line.as_bytes());
        self.next_sequence += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_link_to_the_hash_of_the_line_before_and_start_at_genesis() {
        let mut chain = ChainState::begin();
        let first = chain.link(r#"{"eventName":"ListKeys"}"#);
        let link = Link::of(first.as_bytes()).unwrap();
        assert_eq!(link.sequence, 0);
        assert_eq!(link.previous_hash, genesis_hash(&link.chain_id));
        chain.advance(&first);
        let second = chain.link(r#"{"eventName":"Encrypt"}"#);
        let link2 = Link::of(second.as_bytes()).unwrap();
        assert_eq!(link2.sequence, 1);
        assert_eq!(link2.chain_id, link.chain_id);
        assert_eq!(link2.previous_hash, sha256_hex(first.as_bytes()));
        let v: serde_json::Value = serde_json::from_str(&second).unwrap();
        assert_eq!(v["eventName"], "Encrypt");
    }

    #[test]
    fn a_chain_continues_after_its_last_line() {
        let mut chain = ChainState::begin();
        let line = chain.link(r#"{"a":1}"#);
        chain.advance(&line);
        assert_eq!(ChainState::after(line.as_bytes()), Some(chain));
        assert_eq!(ChainState::after(b"not a record"), None);
    }

    #[test]
    fn the_genesis_value_is_the_documented_one() {
        // docs/security.md: SHA-256("kmsgate-audit-genesis:" + chainId).
        assert_eq!(
            genesis_hash(""),
            sha256_hex(b"kmsgate-audit-genesis:"),
            "prefix"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
