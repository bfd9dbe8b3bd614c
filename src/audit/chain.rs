//! How records are linked.
//!
//! Every line ends with three fields: `chainId` (a UUID chosen when the
//! chain began), `sequence` (0 for the chain's first line, then +1 per
//! line) and `previousHash`: the lowercase hex SHA-256 of the bytes of the
//! line before it, without its newline. The first line (sequence 0) has no
//! line before it; its `previousHash` is the SHA-256 of the genesis value
//! `kmsgate-audit-genesis:` followed by the chain id.
//!
//! A worker of `serve --workers N` writing to the shared process log
//! declares itself in the first line of its chain: before the chain fields
//! that line has `chainStart` = `{"worker": N, "pid": P}`. Several workers'
//! chains then interleave in one log, and `audit verify` follows each by
//! its id; a chain that begins in the middle of the log without that
//! declaration is still damage (the chain before it may be cut off).
//!
//! So a line cannot be changed, removed or moved without breaking the link
//! from the line after it, and a missing beginning shows as a first line
//! whose sequence is not 0. What the chain cannot show by itself is a
//! missing end: cut lines off the last file and what is left is still a
//! valid chain. Only a hash kept elsewhere (the one `audit verify` prints)
//! proves that the chain once reached a given line.

use serde::{Deserialize, Serialize};
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

/// What the first line of a worker's chain declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStart {
    /// The worker's number (1, 2, ...).
    pub worker: usize,
    /// Its process id.
    pub pid: u32,
}

/// The chain fields of a line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub chain_id: String,
    pub sequence: u64,
    pub previous_hash: String,
    /// Only in the first line of a worker's chain.
    #[serde(default)]
    pub chain_start: Option<ChainStart>,
}

impl Link {
    /// The first line of a chain: sequence 0, linked to the genesis value.
    pub fn begins_chain(&self) -> bool {
        self.sequence == 0 && self.previous_hash == genesis_hash(&self.chain_id)
    }

    /// The first line of a chain that declares the worker writing it.
    pub fn begins_worker_chain(&self) -> bool {
        self.begins_chain() && self.chain_start.is_some()
    }
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
    /// Declared in the chain's first line (a worker's chain).
    pub start: Option<ChainStart>,
}

impl ChainState {
    /// A new chain, with a fresh id.
    pub fn begin() -> ChainState {
        let chain_id = uuid::Uuid::new_v4().to_string();
        ChainState {
            previous_hash: genesis_hash(&chain_id),
            chain_id,
            next_sequence: 0,
            start: None,
        }
    }

    /// A new chain of a worker, whose first line declares `start`.
    pub fn begin_declared(start: ChainStart) -> ChainState {
        ChainState {
            start: Some(start),
            ..ChainState::begin()
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
            start: None,
        })
    }

    /// `record` (a serialised JSON object) with the chain fields added, as
    /// the next line (no newline). [`ChainState::advance`] commits it.
    pub fn link(&self, record: &str) -> String {
        let open = record
            .strip_suffix('}')
            .filter(|r| r.len() > 1)
            .unwrap_or("{\"invalidRecord\":true");
        let start = match self.start {
            Some(s) if self.next_sequence == 0 => format!(
                ",\"chainStart\":{{\"worker\":{},\"pid\":{}}}",
                s.worker, s.pid
            ),
            _ => String::new(),
        };
        format!(
            "{open}{start},\"chainId\":\"{}\",\"sequence\":{},\"previousHash\":\"{}\"}}",
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
    fn a_workers_chain_declares_it_in_its_first_line_only() {
        let start = ChainStart {
            worker: 2,
            pid: 4711,
        };
        let mut chain = ChainState::begin_declared(start);
        let first = chain.link(r#"{"eventName":"ListKeys"}"#);
        chain.advance(&first);
        let second = chain.link(r#"{"eventName":"ListKeys"}"#);
        let (l1, l2) = (
            Link::of(first.as_bytes()).unwrap(),
            Link::of(second.as_bytes()).unwrap(),
        );
        assert_eq!(l1.chain_start, Some(start));
        assert!(l1.begins_worker_chain());
        assert_eq!(l2.chain_start, None);
        assert!(!l2.begins_chain());
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(
            v["chainStart"],
            serde_json::json!({"worker": 2, "pid": 4711})
        );
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
