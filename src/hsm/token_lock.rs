//! A host-wide reader/writer lock around SoftHSM2's file store, so that no
//! process ever reads an object file while another process writes it.
//!
//! SoftHSM2 (2.6) writes an object file through a stdio stream and releases
//! its file lock before the stream is flushed. A process that reads the
//! file in that moment sees it cut short, takes the object as invalid, and
//! never reads that file again until its library is initialised afresh
//! (its generation number says nothing changed). That process's listings
//! then miss the object: the commit protocol would take a rival revision
//! for absent (two winners of one revision, a lost GCM reservation), and a
//! lookup would take a key for missing (issue 17, item 10).
//!
//! So every process of kmsgate on a SoftHSM2 token (gateways, workers,
//! read-back helpers, the CLI) takes this lock around each PKCS#11 call
//! that touches the token's files: shared for calls that read, exclusive
//! for calls that create or destroy objects (the whole write, flush
//! included, happens inside SoftHSM2's call). Reads never overlap a write,
//! so no listing in any process misses an object. The lock is `flock(2)`
//! on two files in SoftHSM2's token directory, so the kernel releases it
//! when a process dies, even by `kill -9`: a writer first takes the
//! turnstile exclusively, which stops new readers from starving it.
//!
//! SoftHSM2 (2.6, and its main branch) has a second way to miss another
//! process's object: it re-reads the token directory only when the token's
//! generation number moved since it last looked, and its own create or
//! destroy moves that number and takes the new value as seen. A process
//! whose write follows another's without a listing between never lists the
//! other's object until a third write. So an exclusive call first lists
//! the token ([`crate::hsm`]'s `Metered`), under the lock: the process
//! catches up with every earlier write before its own moves the number.
//!
//! It is taken only when SoftHSM2's token directory is known (from
//! `SOFTHSM2_CONF` or its default path) and the module says it is SoftHSM
//! ([`keep_only_for`]); other tokens (Kryoptic's database, a vendor's HSM)
//! keep their own consistency and pay nothing. A stopped process holding
//! it stalls the others' token calls until it continues, as a stalled
//! token does; the call deadlines answer the clients meanwhile.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The lock's two files, in SoftHSM2's token directory (SoftHSM2 reads
/// only the directories there, so plain files do not disturb it).
const LOCK_FILE: &str = ".kmsgate-token.lock";
const TURNSTILE_FILE: &str = ".kmsgate-token.turnstile";

/// The directory the lock lives in, if any; decided once per process.
static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
/// Cleared when the module turns out not to be SoftHSM2.
static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// This thread's own open files: `flock` locks belong to an open file,
    /// so threads sharing one would release each other's locks.
    static FILES: RefCell<Option<Files>> = const { RefCell::new(None) };
    /// Whether this thread holds the lock now (a call inside a locked
    /// section does not lock again).
    static HELD: RefCell<bool> = const { RefCell::new(false) };
}

struct Files {
    lock: File,
    turnstile: File,
}

/// SoftHSM2's token directory, as its configuration file names it.
fn softhsm_token_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string(softhsm_conf()).ok()?;
    token_dir_in(&text)
}

/// The `softhsm2.conf` SoftHSM2 reads in this process: `SOFTHSM2_CONF`, or
/// its default path.
pub fn softhsm_conf() -> PathBuf {
    std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"))
}

/// The values given to the setting `name` in the text of a
/// `softhsm2.conf`, in order, trimmed, comments left out.
pub fn conf_values<'a>(conf: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    conf.lines().filter_map(move |line| {
        let line = line.split('#').next()?.trim();
        let (key, value) = line.split_once('=')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// `directories.tokendir` from the text of a `softhsm2.conf`.
pub fn token_dir_in(conf: &str) -> Option<PathBuf> {
    conf_values(conf, "directories.tokendir")
        .find(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn dir() -> Option<&'static Path> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    DIR.get_or_init(softhsm_token_dir).as_deref()
}

/// Whether `name`, an entry of SoftHSM2's token directory, is one of this
/// lock's files (not part of any token).
pub fn is_lock_file(name: &std::ffi::OsStr) -> bool {
    name == LOCK_FILE || name == TURNSTILE_FILE
}

/// The lock's file in the token directory `dir`.
pub fn lock_file_in(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}

/// Keeps the lock only if `manufacturer` (C_GetInfo's) is SoftHSM2's.
pub fn keep_only_for(manufacturer: &str) {
    if !manufacturer.trim().starts_with("SoftHSM") {
        ENABLED.store(false, Ordering::Relaxed);
    }
}

/// Whether this process takes the lock (for `doctor` and the logs).
pub fn path() -> Option<PathBuf> {
    dir().map(|d| d.join(LOCK_FILE))
}

fn open(dir: &Path, name: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(name))
}

/// Runs `f` with this thread's lock files, opening them on first use.
/// Without them (no SoftHSM2, or the files cannot be opened) `f` is not
/// run: the call goes ahead unlocked.
fn with_files(f: impl FnOnce(&Files) -> std::io::Result<()>) -> bool {
    let Some(dir) = dir() else {
        return false;
    };
    FILES.with(|files| {
        let mut files = files.borrow_mut();
        if files.is_none() {
            match (open(dir, LOCK_FILE), open(dir, TURNSTILE_FILE)) {
                (Ok(lock), Ok(turnstile)) => *files = Some(Files { lock, turnstile }),
                (Err(e), _) | (_, Err(e)) => {
                    warn_once(dir, &e);
                    return false;
                }
            }
        }
        let Some(files) = files.as_ref() else {
            return false;
        };
        match f(files) {
            Ok(()) => true,
            Err(e) => {
                warn_once(dir, &e);
                false
            }
        }
    })
}

fn warn_once(dir: &Path, e: &std::io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot take the SoftHSM2 token lock; token calls go ahead without it, and another process's write may be missed until the library is initialised again");
    }
}

/// Held while a PKCS#11 call runs; released when dropped.
#[must_use]
pub struct Guard {
    exclusive: bool,
    locked: bool,
}

impl Guard {
    /// Whether this guard took the lock (SoftHSM2, and not nested).
    pub fn holds(&self) -> bool {
        self.locked
    }
}

/// The lock for a call that only reads the token's files.
pub fn shared() -> Guard {
    take(false)
}

/// The lock for a call that creates or destroys a token object.
pub fn exclusive() -> Guard {
    take(true)
}

fn take(exclusive: bool) -> Guard {
    if HELD.with(|h| *h.borrow()) {
        return Guard {
            exclusive,
            locked: false,
        };
    }
    let locked = with_files(|f| {
        if exclusive {
            f.turnstile.lock()?;
            if let Err(e) = f.lock.lock() {
                let _ = f.turnstile.unlock();
                return Err(e);
            }
        } else {
            f.turnstile.lock_shared()?;
            let held = f.lock.lock_shared();
            let _ = f.turnstile.unlock();
            held?;
        }
        Ok(())
    });
    if locked {
        HELD.with(|h| *h.borrow_mut() = true);
    }
    Guard { exclusive, locked }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.locked {
            return;
        }
        let exclusive = self.exclusive;
        FILES.with(|files| {
            if let Some(f) = files.borrow().as_ref() {
                let _ = f.lock.unlock();
                if exclusive {
                    let _ = f.turnstile.unlock();
                }
            }
        });
        HELD.with(|h| *h.borrow_mut() = false);
    }
}

/// The lock on the token directory `dir` taken exclusively, as a writer
/// takes it, through files of its own (not this thread's): while it is
/// held, no kmsgate process on the host is inside a PKCS#11 call on that
/// token directory. Released when dropped, or by the kernel when the
/// process dies. For `kmsgate backup` and `kmsgate restore`, which call no
/// PKCS#11 function while they hold it (this process's own calls would
/// wait for it).
#[must_use]
pub struct Held {
    lock: File,
    turnstile: File,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.lock.unlock();
        let _ = self.turnstile.unlock();
    }
}

/// Waits for the exclusive lock on the token directory `dir` (through the
/// turnstile, so new readers queue behind it), runs `f` while holding it,
/// and releases it.
pub fn with_exclusive<T>(dir: &Path, f: impl FnOnce() -> T) -> std::io::Result<T> {
    let (lock, turnstile) = (open(dir, LOCK_FILE)?, open(dir, TURNSTILE_FILE)?);
    turnstile.lock()?;
    let held = Held { lock, turnstile };
    held.lock.lock()?;
    let out = f();
    drop(held);
    Ok(out)
}

/// The exclusive lock on the token directory `dir` if no process holds or
/// waits for it now; `None` otherwise. Never waits.
pub fn try_exclusive(dir: &Path) -> std::io::Result<Option<Held>> {
    let (lock, turnstile) = (open(dir, LOCK_FILE)?, open(dir, TURNSTILE_FILE)?);
    if turnstile.try_lock().is_err() {
        return Ok(None);
    }
    if lock.try_lock().is_err() {
        let _ = turnstile.unlock();
        return Ok(None);
    }
    Ok(Some(Held { lock, turnstile }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_directory_is_read_from_softhsm2_conf() {
        let conf = "# SoftHSM v2 configuration file\n\
                    directories.tokendir = /var/lib/softhsm/tokens/ # where\n\
                    objectstore.backend = file\n";
        assert_eq!(
            token_dir_in(conf),
            Some(PathBuf::from("/var/lib/softhsm/tokens/"))
        );
        assert_eq!(token_dir_in("#directories.tokendir = /x\n"), None);
        assert_eq!(token_dir_in("directories.tokendir =\n"), None);
        assert_eq!(token_dir_in("objectstore.backend = file\n"), None);
    }

    #[test]
    fn a_writer_waits_for_readers_and_readers_for_a_writer() {
        let dir = std::env::temp_dir().join(format!("kmsgate-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reader = Files {
            lock: open(&dir, LOCK_FILE).unwrap(),
            turnstile: open(&dir, TURNSTILE_FILE).unwrap(),
        };
        let writer = open(&dir, LOCK_FILE).unwrap();
        reader.lock.lock_shared().unwrap();
        // Another open file (as another process has) cannot write now...
        assert!(writer.try_lock().is_err());
        reader.lock.unlock().unwrap();
        // ...and can once the reader is done; then a reader waits.
        writer.try_lock().unwrap();
        assert!(reader.lock.try_lock_shared().is_err());
        writer.unlock().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_exclusive_holder_keeps_readers_and_other_holders_out() {
        let dir = std::env::temp_dir().join(format!("kmsgate-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reader = open(&dir, LOCK_FILE).unwrap();
        reader.lock_shared().unwrap();
        // A reader inside a call: no exclusive lock without waiting.
        assert!(try_exclusive(&dir).unwrap().is_none());
        reader.unlock().unwrap();
        let held = try_exclusive(&dir).unwrap().expect("free now");
        assert!(reader.try_lock_shared().is_err());
        assert!(try_exclusive(&dir).unwrap().is_none());
        drop(held);
        let seen = with_exclusive(&dir, || reader.try_lock_shared().is_err()).unwrap();
        assert!(seen, "a reader got in while the lock was held");
        reader.try_lock_shared().unwrap();
        reader.unlock().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
