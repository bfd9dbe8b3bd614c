//! `kmsgate audit verify`: checks a chain across files, oldest first, and
//! names the first line where it breaks and, where the links tell, how.
//!
//! Each line must carry the hash of the line before it and the next
//! sequence number. When a line's `previousHash` does not match:
//! * with the expected sequence, the line before it was changed;
//! * with a later sequence that appears further on, lines were reordered;
//! * with a later sequence that appears nowhere, lines were removed;
//! * with an earlier sequence, lines were reordered (or one duplicated).
//!
//! Several workers writing to one process log each keep a chain of their
//! own, interleaved line by line; each such chain's first line declares
//! its worker (`chainStart`), and every line is checked against the line
//! before it in its own chain. A chain beginning in the middle without that
//! declaration is damage: the chain before it may be cut off.
//!
//! A chain whose first line is not sequence 0 has lost its beginning. A
//! missing end cannot be seen from the lines alone: `--anchor` checks that
//! a line whose hash was kept elsewhere is still there.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::chain::{Link, sha256_hex};

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The files are process logs: the records are the `record=` field of
    /// their `kmsgate::audit` lines (text or JSON log format); other lines
    /// are skipped.
    pub process_log: bool,
    /// The hash of a line that must still be in the chain.
    pub anchor: Option<String>,
    /// The last hash of files verified and pruned before: the first line
    /// must link to it (instead of starting the chain at sequence 0).
    pub continues: Option<String>,
}

/// An intact trail: one chain, or workers' chains side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: usize,
    pub files: usize,
    /// The chain of the last line.
    pub chain_id: Option<String>,
    pub last_sequence: Option<u64>,
    /// The SHA-256 of the last line: keep it to detect a cut-off end later.
    pub last_hash: Option<String>,
    /// Every chain, in the order they began.
    pub chains: Vec<ChainEnd>,
}

/// Where one chain of an intact trail ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEnd {
    pub chain_id: String,
    /// The worker its first line declares.
    pub worker: Option<usize>,
    pub last_sequence: u64,
    /// The SHA-256 of its last line (for `--anchor`).
    pub last_hash: String,
}

impl fmt::Display for Summary {
    /// The verdict line after `OK: `. One chain: its id, last sequence and
    /// last hash; several: each one's, the last hash of each ending its
    /// part.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} records in {} files, ", self.records, self.files)?;
        if self.chains.len() <= 1 {
            return write!(
                f,
                "chain {} up to sequence {}; last hash {}",
                self.chain_id.as_deref().unwrap_or("-"),
                self.last_sequence.map_or("-".to_owned(), |n| n.to_string()),
                self.last_hash.as_deref().unwrap_or("-"),
            );
        }
        write!(f, "{} chains", self.chains.len())?;
        for (i, c) in self.chains.iter().enumerate() {
            let worker = c.worker.map_or(String::new(), |w| format!(" (worker {w})"));
            write!(
                f,
                "{} chain {}{worker} up to sequence {}; last hash {}",
                if i == 0 { ":" } else { ";" },
                c.chain_id,
                c.last_sequence,
                c.last_hash
            )?;
        }
        Ok(())
    }
}

/// A file and a 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The damage found at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Not an audit record at all (changed beyond parsing, or inserted).
    NotARecord,
    /// The file ends in a line without a newline: cut mid-line.
    Incomplete,
    /// The line's content no longer matches the hash the next line holds.
    Changed,
    /// The line's own chain fields were altered.
    LinkChanged,
    /// `count` records are missing before this line.
    Removed { count: u64 },
    /// This line is out of order; `expected` was due here.
    Reordered { expected: u64, sequence: u64 },
    /// The first line is not sequence 0: the beginning is missing.
    BeginningMissing { sequence: u64 },
    /// A new chain begins here: the one before it is cut off.
    NewChain,
    /// The first line does not link to the hash given with `--continues`.
    NotContinuing,
    /// No line has the anchored hash: the chain was cut before it, or the
    /// anchor belongs to another chain.
    AnchorMissing,
}

/// Where and how the chain breaks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Location,
    pub damage: Damage,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = &self.at;
        match &self.damage {
            Damage::NotARecord => write!(f, "{at}: not an audit record (changed or inserted)"),
            Damage::Incomplete => write!(f, "{at}: partial last line (the file was cut mid-line)"),
            Damage::Changed => write!(
                f,
                "{at}: changed (it does not match the hash the next line holds)"
            ),
            Damage::LinkChanged => write!(f, "{at}: changed (its chain fields were altered)"),
            Damage::Removed { count } => {
                write!(f, "{at}: {count} line(s) removed before this line")
            }
            Damage::Reordered { expected, sequence } => write!(
                f,
                "{at}: reordered (sequence {sequence} where {expected} was due)"
            ),
            Damage::BeginningMissing { sequence } => write!(
                f,
                "{at}: the chain's beginning is missing (first line is sequence {sequence}, not 0)"
            ),
            Damage::NotContinuing => write!(
                f,
                "{at}: does not continue from the given hash (lines before it are missing or changed)"
            ),
            Damage::NewChain => write!(
                f,
                "{at}: a new chain begins here; the chain before it may be cut off"
            ),
            Damage::AnchorMissing => write!(
                f,
                "{at}: no line has the anchored hash (the chain was cut before it)"
            ),
        }
    }
}

struct Item {
    at: Location,
    bytes: Vec<u8>,
    link: Option<Link>,
    incomplete: bool,
}

/// Checks the chain across `files` (oldest first).
pub fn verify(files: &[PathBuf], options: &Options) -> io::Result<Result<Summary, Problem>> {
    let mut items = Vec::new();
    for file in files {
        read_items(file, options.process_log, &mut items)?;
    }
    let mut position: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(l) = &item.link {
            position.entry((&l.chain_id, l.sequence)).or_insert(i);
        }
    }
    // The last line of each chain seen so far, and the order they began in.
    let mut last: HashMap<&str, (&Item, &Link)> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let problem = |damage| {
            Ok(Err(Problem {
                at: item.at.clone(),
                damage,
            }))
        };
        if item.incomplete {
            return problem(Damage::Incomplete);
        }
        let Some(link) = &item.link else {
            return problem(Damage::NotARecord);
        };
        let Some(&(p, pl)) = last.get(link.chain_id.as_str()) else {
            if order.is_empty() {
                if let Some(h) = &options.continues {
                    if link.previous_hash != h.to_ascii_lowercase() {
                        return problem(Damage::NotContinuing);
                    }
                } else if link.sequence != 0 {
                    return problem(Damage::BeginningMissing {
                        sequence: link.sequence,
                    });
                } else if !link.begins_chain() {
                    return problem(Damage::LinkChanged);
                }
            } else if !link.begins_worker_chain() {
                // Workers' chains run side by side, each declared by its
                // first line; any other chain beginning here cuts off the
                // one before it.
                return problem(if link.begins_chain() {
                    Damage::NewChain
                } else if first_lines_declare_workers(&items, &order) {
                    Damage::BeginningMissing {
                        sequence: link.sequence,
                    }
                } else {
                    Damage::LinkChanged
                });
            }
            order.push(&link.chain_id);
            last.insert(&link.chain_id, (item, link));
            continue;
        };
        let expected = pl.sequence + 1;
        let links = link.previous_hash == sha256_hex(&p.bytes);
        if links && link.sequence == expected {
            last.insert(&link.chain_id, (item, link));
            continue;
        }
        if links {
            return problem(Damage::LinkChanged);
        }
        if link.sequence == expected {
            return Ok(Err(Problem {
                at: p.at.clone(),
                damage: Damage::Changed,
            }));
        }
        let later = position
            .get(&(link.chain_id.as_str(), expected))
            .is_some_and(|&j| j > i);
        let damage = if link.sequence > expected && !later {
            Damage::Removed {
                count: link.sequence - expected,
            }
        } else {
            Damage::Reordered {
                expected,
                sequence: link.sequence,
            }
        };
        return problem(damage);
    }
    if let Some(anchor) = &options.anchor {
        let anchor = anchor.to_ascii_lowercase();
        if !items.iter().any(|it| sha256_hex(&it.bytes) == anchor) {
            let at = items.last().map_or_else(
                || Location {
                    file: files.last().cloned().unwrap_or_default(),
                    line: 0,
                },
                |it| it.at.clone(),
            );
            return Ok(Err(Problem {
                at,
                damage: Damage::AnchorMissing,
            }));
        }
    }
    let chains: Vec<ChainEnd> = order
        .iter()
        .filter_map(|id| last.get(id))
        .map(|(item, link)| ChainEnd {
            chain_id: link.chain_id.clone(),
            worker: items
                .iter()
                .filter_map(|it| it.link.as_ref())
                .find(|l| l.chain_id == link.chain_id)
                .and_then(|l| l.chain_start.map(|s| s.worker)),
            last_sequence: link.sequence,
            last_hash: sha256_hex(&item.bytes),
        })
        .collect();
    let newest = items
        .iter()
        .rev()
        .find_map(|it| it.link.as_ref())
        .and_then(|l| chains.iter().find(|c| c.chain_id == l.chain_id));
    Ok(Ok(Summary {
        records: items.len(),
        files: files.len(),
        chain_id: newest.map(|c| c.chain_id.clone()),
        last_sequence: newest.map(|c| c.last_sequence),
        last_hash: newest.map(|c| c.last_hash.clone()),
        chains,
    }))
}

/// Whether the first line of every chain in `order` declares a worker.
fn first_lines_declare_workers(items: &[Item], order: &[&str]) -> bool {
    order.iter().all(|id| {
        items
            .iter()
            .filter_map(|it| it.link.as_ref())
            .find(|l| l.chain_id == *id)
            .is_some_and(|l| l.chain_start.is_some())
    })
}

fn read_items(file: &Path, process_log: bool, items: &mut Vec<Item>) -> io::Result<()> {
    let text = std::fs::read(file)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    let ends_whole = text.is_empty() || text.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    if text.ends_with(b"\n") || text.is_empty() {
        lines.pop();
    }
    let count = lines.len();
    for (n, line) in lines.into_iter().enumerate() {
        let at = Location {
            file: file.to_owned(),
            line: n + 1,
        };
        let incomplete = !ends_whole && n + 1 == count;
        let bytes = if process_log {
            match record_in_log_line(line) {
                Some(r) => r,
                None => continue,
            }
        } else {
            line.to_vec()
        };
        items.push(Item {
            link: Link::of(&bytes),
            bytes,
            at,
            incomplete: incomplete && !process_log,
        });
    }
    Ok(())
}

/// The record of a process-log line on the `kmsgate::audit` target.
fn record_in_log_line(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        if v["target"] != "kmsgate::audit" {
            return None;
        }
        return Some(v["fields"]["record"].as_str()?.as_bytes().to_vec());
    }
    let (_, rest) = text.split_once(" kmsgate::audit: ")?;
    let (_, record) = rest.split_once("record=")?;
    Some(record.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::ChainState;

    /// `n` chained lines.
    fn chain(n: usize) -> Vec<String> {
        let mut c = ChainState::begin();
        (0..n)
            .map(|i| {
                let line = c.link(&format!("{{\"eventName\":\"Op{i}\"}}"));
                c.advance(&line);
                line
            })
            .collect()
    }

    fn check(files: &[Vec<String>]) -> Result<Summary, Problem> {
        check_raw(
            &files
                .iter()
                .map(|f| f.iter().map(|l| format!("{l}\n")).collect::<String>())
                .collect::<Vec<_>>(),
        )
    }

    fn check_raw(files: &[String]) -> Result<Summary, Problem> {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, text).unwrap();
                p
            })
            .collect();
        verify(&paths, &Options::default())
            .unwrap()
            .map_err(|mut p| {
                p.at.file = p.at.file.file_name().unwrap().into();
                p
            })
    }

    fn at(file: &str, line: usize, damage: Damage) -> Result<Summary, Problem> {
        Err(Problem {
            at: Location {
                file: file.into(),
                line,
            },
            damage,
        })
    }

    #[test]
    fn an_intact_chain_across_files_verifies_and_names_its_last_hash() {
        let lines = chain(5);
        let s = check(&[lines[..2].to_vec(), lines[2..].to_vec()]).unwrap();
        assert_eq!(s.records, 5);
        assert_eq!(s.last_sequence, Some(4));
        assert_eq!(s.last_hash, Some(sha256_hex(lines[4].as_bytes())));
    }

    #[test]
    fn a_changed_line_is_named() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("Op2", "Op9");
        assert_eq!(check(&[lines.clone()]), at("f0", 3, Damage::Changed));
        lines[2] = "garbage".into();
        assert_eq!(check(&[lines]), at("f0", 3, Damage::NotARecord));
    }

    #[test]
    fn a_removed_line_is_named_by_the_line_after_the_gap() {
        let mut lines = chain(5);
        lines.remove(1);
        assert_eq!(check(&[lines]), at("f0", 2, Damage::Removed { count: 1 }));
    }

    #[test]
    fn reordered_lines_are_named() {
        let mut lines = chain(5);
        lines.swap(1, 2);
        assert_eq!(
            check(&[lines]),
            at(
                "f0",
                2,
                Damage::Reordered {
                    expected: 1,
                    sequence: 2
                }
            )
        );
    }

    #[test]
    fn a_missing_beginning_a_cut_file_and_a_partial_line_are_named() {
        let lines = chain(6);
        assert_eq!(
            check(&[lines[2..].to_vec()]),
            at("f0", 1, Damage::BeginningMissing { sequence: 2 })
        );
        // The first of two files lost its last two lines.
        assert_eq!(
            check(&[lines[..2].to_vec(), lines[4..].to_vec()]),
            at("f1", 1, Damage::Removed { count: 2 })
        );
        let partial = format!("{}\n{}", lines[0], &lines[1][..20]);
        assert_eq!(check_raw(&[partial]), at("f0", 2, Damage::Incomplete));
    }

    #[test]
    fn a_new_chain_inside_the_files_is_named_and_an_anchor_is_checked() {
        let mut lines = chain(2);
        lines.extend(chain(2));
        assert_eq!(check(&[lines]), at("f0", 3, Damage::NewChain));

        let lines = chain(3);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        let anchored = |hash: &str| {
            verify(
                std::slice::from_ref(&p),
                &Options {
                    anchor: Some(hash.to_owned()),
                    ..Options::default()
                },
            )
            .unwrap()
        };
        assert!(anchored(&sha256_hex(lines[1].as_bytes())).is_ok());
        let continued = |hash: &str| {
            verify(
                std::slice::from_ref(&p),
                &Options {
                    continues: Some(hash.to_owned()),
                    ..Options::default()
                },
            )
            .unwrap()
        };
        std::fs::write(&p, format!("{}\n", lines[2])).unwrap();
        assert!(continued(&sha256_hex(lines[1].as_bytes())).is_ok());
        let gap = continued(&sha256_hex(lines[0].as_bytes())).unwrap_err();
        assert_eq!(gap.damage, Damage::NotContinuing);
        std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        let cut = anchored(&sha256_hex(lines[2].as_bytes())).unwrap_err();
        assert_eq!(cut.damage, Damage::AnchorMissing);
    }

    /// `n` chained lines of a worker's chain.
    fn worker_chain(worker: usize, n: usize) -> Vec<String> {
        let mut c = ChainState::begin_declared(crate::audit::chain::ChainStart {
            worker,
            pid: 100 + worker as u32,
        });
        (0..n)
            .map(|i| {
                let line = c.link(&format!("{{\"eventName\":\"W{worker}Op{i}\"}}"));
                c.advance(&line);
                line
            })
            .collect()
    }

    /// `a` and `b` interleaved: a0 b0 a1 b1 ...
    fn interleaved(a: &[String], b: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..a.len().max(b.len()) {
            out.extend(a.get(i).cloned());
            out.extend(b.get(i).cloned());
        }
        out
    }

    #[test]
    fn workers_chains_side_by_side_verify_and_damage_in_either_is_named() {
        let (w1, w2) = (worker_chain(1, 4), worker_chain(2, 3));
        let lines = interleaved(&w1, &w2);
        let s = check(std::slice::from_ref(&lines)).unwrap();
        assert_eq!(s.records, 7);
        assert_eq!(s.chains.len(), 2);
        assert_eq!(s.chains[0].worker, Some(1));
        assert_eq!(s.chains[0].last_sequence, 3);
        assert_eq!(s.chains[1].last_hash, sha256_hex(w2[2].as_bytes()));
        assert!(s.to_string().contains("2 chains"), "{s}");

        // a0 b0 a1 b1 a2 b2 a3: b1 (line 4) edited, named by b2.
        let mut edited = lines.clone();
        edited[3] = edited[3].replace("W2Op1", "W2Op9");
        assert_eq!(check(&[edited]), at("f0", 4, Damage::Changed));
        let mut removed = lines.clone();
        removed.remove(2);
        assert_eq!(check(&[removed]), at("f0", 4, Damage::Removed { count: 1 }));
        let mut swapped = lines.clone();
        swapped.swap(2, 4);
        assert_eq!(
            check(&[swapped]),
            at(
                "f0",
                3,
                Damage::Reordered {
                    expected: 1,
                    sequence: 2
                }
            )
        );
        // A worker chain's first line removed.
        let mut headless = lines.clone();
        headless.remove(1);
        assert_eq!(
            check(&[headless]),
            at("f0", 3, Damage::BeginningMissing { sequence: 1 })
        );
        // A chain that declares no worker still may not begin mid-way.
        let mut undeclared = w1.clone();
        undeclared.extend(chain(2));
        assert_eq!(check(&[undeclared]), at("f0", 5, Damage::NewChain));
    }

    #[test]
    fn records_are_read_from_a_process_log() {
        let lines = chain(2);
        let log = format!(
            "2026-11-23T10:00:00Z  INFO kmsgate::server: listening\n\
             2026-11-23T10:00:01Z  INFO request{{id=1}}: kmsgate::audit: record={}\n\
             {}\n",
            lines[0],
            serde_json::json!({"target": "kmsgate::audit", "fields": {"record": lines[1]}})
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, log).unwrap();
        let options = Options {
            process_log: true,
            ..Options::default()
        };
        let s = verify(&[p], &options).unwrap().unwrap();
        assert_eq!(s.records, 2);
    }
}
