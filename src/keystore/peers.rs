//! Read-your-writes between the worker processes of one supervisor.
//!
//! Workers on one token see each other's changes through the change marker
//! and their sync rounds, within `sync_interval_ms` (see docs/scaling.md).
//! A client on one endpoint, though, expects what it just changed through
//! one worker to hold on its next request, whichever worker takes it. So
//! the supervisor gives its workers a small shared file of change counters,
//! one 8-byte slot per worker: a worker bumps its own slot after each change
//! it made to the token (before the client hears OK), and every request
//! first compares the others' slots with what this worker last caught up
//! with. When one moved, the worker runs a sync round before it answers.
//! That costs one `pread` per request, and a sync round only after a change.
//!
//! A worker bumps its slot only after it has moved the change marker, so a
//! sync round that starts after the bump was read and finds the marker
//! unmoved since its last full sync has already seen the change. When the
//! marker could not be moved (a token fault, a queue timeout, a stale
//! handle), the worker still bumps, with the slot's low bit set: a worker
//! that sees such a slot move relists the token instead of trusting the
//! marker, and the changing worker moves the marker at its next timed round
//! for gateways outside the supervisor. A slot thus holds the count of the
//! worker's changes times two, plus one if the marker did not move after
//! the last of them.
//!
//! Each slot has one writer, so no lock is needed between processes; a torn
//! read can only cause one sync round too many. The file says nothing about
//! the keys themselves: someone who could write it could at most delay
//! another worker's view until its next timed sync round.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The other workers' slots as read, when one moved since the last
/// catch-up.
#[derive(Debug)]
pub(super) struct Moved {
    slots: Vec<u64>,
    /// A slot that moved says its marker did not: relist the token.
    pub(super) relist: bool,
}

/// The counters file of a supervisor's workers, as one worker uses it.
pub struct PeerChanges {
    file: File,
    /// This worker's slot (0-based).
    me: usize,
    slots: usize,
    /// How many changes this worker has announced.
    mine: AtomicU64,
    /// The others' counters as of the last catch-up.
    seen: Mutex<Vec<u64>>,
    /// One catch-up at a time; the others wait for it and then see it done.
    pub(super) catching_up: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PeerChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerChanges")
            .field("me", &self.me)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl PeerChanges {
    /// Opens the counters file at `path` (made by the supervisor, `slots`
    /// slots of 8 bytes) as worker slot `me`.
    pub fn open(path: &Path, me: usize, slots: usize) -> std::io::Result<PeerChanges> {
        if me >= slots {
            return Err(std::io::Error::other(format!(
                "slot {me} of a changes file with {slots} slots"
            )));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let peers = PeerChanges {
            file,
            me,
            slots,
            mine: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            catching_up: tokio::sync::Mutex::new(()),
        };
        // A restarted worker carries on from its slot's count, so that
        // the others still see its next change as one.
        let now = peers.read()?;
        peers.mine.store(now[me] >> 1, Ordering::Relaxed);
        *peers.seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(peers)
    }

    fn read(&self) -> std::io::Result<Vec<u64>> {
        let mut buf = vec![0u8; self.slots * 8];
        self.file.read_exact_at(&mut buf, 0)?;
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }

    /// Says that this worker changed something on the token; `unmoved`:
    /// the change marker could not be moved after it, so the others must
    /// relist the token to see it.
    pub(super) fn bump(&self, unmoved: bool) {
        let n = self.mine.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = (n << 1) | u64::from(unmoved);
        if let Err(e) = self
            .file
            .write_all_at(&slot.to_le_bytes(), (self.me * 8) as u64)
        {
            tracing::warn!(error = %e, "cannot tell the other workers of a change");
        }
    }

    /// The slots now, if another worker's moved since the last
    /// [`caught_up`](Self::caught_up) (this worker's own slot does not
    /// count).
    pub(super) fn moved(&self) -> Option<Moved> {
        let now = match self.read() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the other workers' changes");
                return None;
            }
        };
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut moved = false;
        let mut relist = false;
        for (i, n) in now.iter().enumerate() {
            if i != self.me && seen.get(i) != Some(n) {
                moved = true;
                relist |= n & 1 == 1;
            }
        }
        moved.then_some(Moved { slots: now, relist })
    }

    /// Records that this worker has caught up with the slots `now`.
    pub(super) fn caught_up(&self, now: Moved) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = now.slots;
    }
}

/// Makes a counters file for `slots` workers at `path` (readable and
/// writable by this user only); it must not exist yet.
pub fn create(path: &Path, slots: usize) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_len((slots * 8) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_by_the_others_and_not_by_its_maker() {
        let dir = std::env::temp_dir().join(format!("kmsgate-peers-{}", uuid::Uuid::new_v4()));
        create(&dir, 3).unwrap();
        let a = PeerChanges::open(&dir, 0, 3).unwrap();
        let b = PeerChanges::open(&dir, 1, 3).unwrap();
        assert!(a.moved().is_none() && b.moved().is_none());
        a.bump(false);
        assert!(a.moved().is_none(), "its own change");
        let now = b.moved().expect("b sees a's change");
        assert!(!now.relist, "the marker moved");
        b.caught_up(now);
        assert!(b.moved().is_none(), "caught up");
        // A change whose marker did not move asks for a relist, once.
        a.bump(true);
        let now = b.moved().expect("b sees a's change");
        assert!(now.relist, "the marker did not move");
        b.caught_up(now);
        assert!(b.moved().is_none(), "caught up");
        // A restarted worker goes on counting from its slot.
        let a2 = PeerChanges::open(&dir, 0, 3).unwrap();
        assert_eq!(a2.mine.load(Ordering::Relaxed), 2);
        a2.bump(false);
        let now = b.moved().expect("b sees a2's change");
        assert!(!now.relist);
        assert_eq!(now.slots[0], 3 << 1);
        assert!(PeerChanges::open(&dir, 3, 3).is_err());
        assert!(create(&dir, 3).is_err(), "never over an existing file");
        std::fs::remove_file(&dir).unwrap();
    }
}
