//! The audit file: appended to, synced, rotated by size, the chain carried
//! across restarts and rotations.
//!
//! The active file is `PATH`; when the next lines would take it past
//! `max_file_bytes` it is synced and renamed `PATH.<UTC time>-<n>` (say
//! `PATH.20261207T181500Z-000001`), and a new `PATH` begins where the chain
//! left off. At start-up the chain continues from the last line of `PATH`
//! (or, if that is empty, of the newest rotated file). A last line without
//! its newline is a write a crash cut short; it was never acknowledged and
//! is removed.
//!
//! Rotated names never repeat, even after an operator prunes every rotated
//! file (an archive or a log shipper has seen the old names): each name
//! sorts after every name used before it. It carries the time of the
//! rotation to the second, and `n` orders rotations within one second; a
//! name that would not sort after the last one (a clock set back) takes
//! the last one's time with the next `n`. The last name is remembered in
//! the existing rotated files and in `DIR/.NAME.rotated`, so neither a
//! prune of the rotated files nor a clock set back brings an old name
//! back. Names sort in chain order, so `ls` order is the order `kmsgate
//! audit verify` wants. Files named `PATH.000001`, `PATH.000002`, ... by
//! earlier versions sort before them.
//!
//! A failed write or sync leaves the chain where it was: the bytes of the
//! failed batch are cut off again before the next write, so the file only
//! ever holds whole, linked lines.
//!
//! One process writes a chain at a time: the writer holds an exclusive
//! `flock` on `PATH.lock` for as long as it lives. A worker started while
//! its predecessor still finishes the requests it had begun (its
//! supervisor was killed, DESIGN 22) waits for it, up to [`CLAIM_WAIT`];
//! two writers would continue the chain from the same line and break it.
//! The kernel releases the lock of a process that dies, even by `kill -9`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::chain::ChainState;

/// The most of a file's end read to find its last line.
const TAIL_BYTES: u64 = 1 << 20;

/// How long a new writer waits for the previous writer of a chain to end:
/// longer than a gateway's shutdown grace (60 s).
pub const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

pub struct ChainFile {
    path: PathBuf,
    file: File,
    /// `PATH.lock`, locked exclusively while this writer lives.
    _owner: File,
    /// Bytes of whole, written lines in the active file.
    size: u64,
    chain: ChainState,
    max_bytes: u64,
    sync: bool,
    /// A write failed: cut the file back to `size` before the next one.
    torn: bool,
    /// Rotation renamed the active file but opening a new one failed.
    reopen: bool,
    /// The newest rotated name used so far (found or made).
    last_rotated: Option<Rotated>,
}

impl ChainFile {
    pub fn open(path: &Path, max_bytes: u64, sync: bool) -> io::Result<ChainFile> {
        Self::open_within(path, max_bytes, sync, CLAIM_WAIT)
    }

    /// As [`open`](Self::open), waiting at most `wait` for the chain's
    /// previous writer.
    pub fn open_within(
        path: &Path,
        max_bytes: u64,
        sync: bool,
        wait: std::time::Duration,
    ) -> io::Result<ChainFile> {
        let dir = parent(path);
        std::fs::create_dir_all(&dir)?;
        let owner = claim(path, wait)?;
        let last_rotated = rotated(path)?.pop().map(|(r, _)| r).max(remembered(path));
        let mut file = open_active(path)?;
        sync_dir(&dir)?;
        let (last, size) = last_line(&mut file)?;
        let len = file.metadata()?.len();
        if size < len {
            tracing::warn!(
                path = %path.display(),
                bytes = len - size,
                "the audit file ends in a partial line (a write cut short); it is removed"
            );
            file.set_len(size)?;
            file.sync_all()?;
        }
        let last = match last {
            Some(line) => Some(line),
            None => match rotated(path)?.last() {
                Some((_, newest)) => last_line(&mut File::open(newest)?)?.0,
                None => None,
            },
        };
        let chain = match last.as_deref().map(ChainState::after) {
            Some(Some(chain)) => chain,
            Some(None) => {
                tracing::warn!(
                    path = %path.display(),
                    "the last line of the audit log is not an audit record; a new chain begins"
                );
                ChainState::begin()
            }
            None => ChainState::begin(),
        };
        tracing::info!(
            path = %path.display(),
            chain_id = %chain.chain_id,
            sequence = chain.next_sequence,
            "audit log open"
        );
        Ok(ChainFile {
            path: path.to_owned(),
            file,
            _owner: owner,
            size,
            chain,
            max_bytes,
            sync,
            torn: false,
            reopen: false,
            last_rotated,
        })
    }

    /// Links `records` to the chain and appends them (synced in sync
    /// mode). On error the chain and the file are as they were before,
    /// except for lines of an earlier rotated file, which stay.
    pub fn append(&mut self, records: &[String]) -> io::Result<()> {
        if self.reopen {
            self.file = open_active(&self.path)?;
            sync_dir(&parent(&self.path))?;
            self.reopen = false;
            self.size = 0;
            self.torn = false;
        }
        if self.torn {
            self.file.set_len(self.size)?;
            self.torn = false;
        }
        let mut chain = self.chain.clone();
        let mut buf = Vec::new();
        for record in records {
            let line = chain.link(record);
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 + 1 > self.max_bytes {
                self.write(&mut buf, &chain)?;
                self.rotate()?;
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            chain.advance(&line);
        }
        self.write(&mut buf, &chain)
    }

    fn write(&mut self, buf: &mut Vec<u8>, chain: &ChainState) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(buf).and_then(|()| {
            if self.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            self.torn = true;
            return Err(e);
        }
        self.size += buf.len() as u64;
        self.chain = chain.clone();
        buf.clear();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let name = Rotated::next(&now_stamp(), self.last_rotated.as_ref());
        let to = name.path(&self.path);
        // Remembered first: a crash after the rename must not let the
        // name come back once the file is pruned.
        remember(&self.path, &name)?;
        std::fs::rename(&self.path, &to)?;
        self.last_rotated = Some(name);
        self.reopen = true;
        self.file = open_active(&self.path)?;
        sync_dir(&parent(&self.path))?;
        self.reopen = false;
        self.size = 0;
        tracing::info!(rotated = %to.display(), "audit file rotated");
        Ok(())
    }

    /// Syncs what async mode wrote.
    pub fn close(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::error!(error = %e, "audit file: final sync failed");
        }
    }
}

/// The lock file `PATH.lock`, locked exclusively: waits up to `wait` for
/// another process that holds it.
fn claim(path: &Path, wait: std::time::Duration) -> io::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock)?
    };
    let until = std::time::Instant::now() + wait;
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        if std::time::Instant::now() >= until {
            return Err(io::Error::other(format!(
                "the audit file {} is still written by another process after {} s \
                 (a previous worker finishing its requests, or another gateway or \
                 worker configured with the same [audit] path)",
                path.display(),
                wait.as_secs()
            )));
        }
        if !told {
            tracing::warn!(path = %path.display(), "the audit file's previous writer is still running; waiting for it to finish");
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn open_active(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The suffix of a rotated file's name, in the order the files were
/// rotated: earlier versions' `NNNNNN` first, then `<UTC time>-<n>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rotated {
    /// `PATH.000001`, ... (kmsgate before names carried the time).
    Numbered(u64),
    /// `PATH.20261207T181500Z-000001`: the time (`YYYYMMDDTHHMMSSZ`) and
    /// the rotation's number within that second.
    Stamped(String, u64),
}

impl Rotated {
    /// The suffix of `name` after `PATH.`, if it is a rotated file's.
    pub fn parse(suffix: &str) -> Option<Rotated> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if suffix.len() == 6 && digits(suffix) {
            return suffix.parse().ok().map(Rotated::Numbered);
        }
        let (stamp, n) = suffix.split_once('-')?;
        let all_digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
        let b = stamp.as_bytes();
        let stamp_ok = b.len() == 16
            && b.get(8) == Some(&b'T')
            && b.get(15) == Some(&b'Z')
            && b.get(..8).is_some_and(all_digits)
            && b.get(9..15).is_some_and(all_digits);
        if !(stamp_ok && n.len() == 6 && digits(n)) {
            return None;
        }
        Some(Rotated::Stamped(stamp.to_owned(), n.parse().ok()?))
    }

    /// The name for a rotation at `stamp` that sorts after `last`.
    pub fn next(stamp: &str, last: Option<&Rotated>) -> Rotated {
        let now = Rotated::Stamped(stamp.to_owned(), 1);
        match last {
            Some(Rotated::Stamped(s, n)) if last >= Some(&now) => {
                Rotated::Stamped(s.clone(), n + 1)
            }
            _ => now,
        }
    }

    fn suffix(&self) -> String {
        match self {
            Rotated::Numbered(n) => format!("{n:06}"),
            Rotated::Stamped(stamp, n) => format!("{stamp}-{n:06}"),
        }
    }

    /// The rotated file of `path` with this name.
    pub fn path(&self, path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{}", self.suffix()));
        PathBuf::from(name)
    }
}

/// The time now, as rotated names carry it.
fn now_stamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Where the last rotated name of `path` is kept: `DIR/.NAME.rotated`, a
/// hidden file, so that neither `PATH.*` (what an operator hands to
/// `audit verify` or prunes) nor a prune of the rotated files takes it.
fn memory(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.rotated"))
}

/// The last rotated name of `path` as [`remember`] kept it (`None` if
/// none was kept: no rotation yet, or by an earlier version).
fn remembered(path: &Path) -> Option<Rotated> {
    let text = std::fs::read_to_string(memory(path)).ok()?;
    Rotated::parse(text.trim())
}

/// Keeps `name` as the last rotated name of `path`.
fn remember(path: &Path, name: &Rotated) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(memory(path))?;
    file.write_all(format!("{}\n", name.suffix()).as_bytes())?;
    file.sync_data()
}

/// The rotated files of `path`, oldest first.
pub fn rotated(path: &Path) -> io::Result<Vec<(Rotated, PathBuf)>> {
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(parent(path))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(r) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base)?.strip_prefix('.'))
            .and_then(Rotated::parse)
        else {
            continue;
        };
        found.push((r, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// The last whole line of `file` (without its newline), and the length of
/// the file up to and including that line's newline.
fn last_line(file: &mut File) -> io::Result<(Option<Vec<u8>>, u64)> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|b| *b == b'\n') else {
        // No newline in the tail: a partial line only (or an empty file).
        return Ok((None, if start == 0 { 0 } else { len }));
    };
    let begin = tail[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = tail[begin..end].to_vec();
    Ok((Some(line), start + end as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::Link;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn one_process_writes_a_chain_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let first = ChainFile::open(&path, 1000, true).unwrap();
        // Another open file of the lock, as another process has: refused
        // while the first writer lives (flock locks belong to the open
        // file, so this holds within one process too).
        let e = ChainFile::open_within(&path, 1000, true, std::time::Duration::from_millis(300))
            .err()
            .expect("a second writer is refused");
        assert!(
            e.to_string().contains("still written by another process"),
            "{e}"
        );
        drop(first);
        ChainFile::open_within(&path, 1000, true, std::time::Duration::from_millis(300)).unwrap();
    }

    #[test]
    fn the_chain_continues_across_rotation_and_restart_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let record = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
        let mut f = ChainFile::open(&path, 1000, true).unwrap();
        f.append(&vec![record.clone(); 3]).unwrap();
        f.append(&vec![record.clone(); 6]).unwrap();
        drop(f);
        let rotated: Vec<_> = rotated(&path).unwrap();
        assert!(rotated.len() >= 2, "{rotated:?}");
        assert!(
            matches!(&rotated[0].0, Rotated::Stamped(_, 1)),
            "{rotated:?}"
        );
        assert_eq!(rotated[0].0.path(&path), rotated[0].1);
        // A crash in the middle of a write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"partial\":")
            .unwrap();
        let mut f = ChainFile::open(&path, 1000, true).unwrap();
        f.append(std::slice::from_ref(&record)).unwrap();
        let mut all = Vec::new();
        for (_, p) in &rotated {
            all.extend(lines(p));
        }
        all.extend(lines(&path));
        assert_eq!(all.len(), 10);
        let links: Vec<Link> = all
            .iter()
            .map(|l| Link::of(l.as_bytes()).unwrap())
            .collect();
        for (i, l) in links.iter().enumerate() {
            assert_eq!(l.sequence, i as u64);
            assert_eq!(l.chain_id, links[0].chain_id);
            if i > 0 {
                assert_eq!(
                    l.previous_hash,
                    crate::audit::chain::sha256_hex(all[i - 1].as_bytes())
                );
            }
        }
    }

    #[test]
    fn rotated_names_sort_after_every_earlier_one_and_never_repeat() {
        let at = |s: &str, n| Rotated::Stamped(s.to_owned(), n);
        let t1 = "20261207T181500Z";
        let t2 = "20261207T181501Z";
        assert_eq!(Rotated::next(t1, None), at(t1, 1));
        assert_eq!(Rotated::next(t1, Some(&Rotated::Numbered(7))), at(t1, 1));
        // Within one second, and with the clock set back.
        assert_eq!(Rotated::next(t1, Some(&at(t1, 1))), at(t1, 2));
        assert_eq!(Rotated::next(t1, Some(&at(t2, 4))), at(t2, 5));
        assert_eq!(Rotated::next(t2, Some(&at(t1, 9))), at(t2, 1));
        // Names parse back, and sort as they were made.
        for r in [Rotated::Numbered(12), at(t1, 3)] {
            let p = r.path(Path::new("/a/audit.log"));
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                Rotated::parse(name.strip_prefix("audit.log.").unwrap()),
                Some(r)
            );
        }
        assert!(Rotated::Numbered(999_999) < at(t1, 1));
        assert!(at(t1, 2) < at(t2, 1));
        for bad in [
            "lock",
            "w1",
            "12345",
            "20261207T181500Z",
            "20261207X181500Z-000001",
            // 16 bytes, not all ASCII: refused, never sliced mid-character.
            "2026120é181500Z-000001",
        ] {
            assert_eq!(Rotated::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_do_not_come_back_after_every_rotated_file_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let record = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
        let mut used = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let mut f = ChainFile::open(&path, 1000, true).unwrap();
            f.append(&vec![record.clone(); 9]).unwrap();
            drop(f);
            let now = rotated(&path).unwrap();
            assert!(now.len() >= 2, "{now:?}");
            for (_, p) in now {
                assert!(used.insert(p.clone()), "{} used twice", p.display());
                std::fs::remove_file(p).unwrap();
            }
        }
    }
}
