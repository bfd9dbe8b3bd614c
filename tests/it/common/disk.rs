//! A small file system for the full-disk tests: a tmpfs of a few hundred
//! KiB mounted on a directory (root only), filled on demand.
//!
//! A full-disk test that cannot mount its disk fails: it would test nothing,
//! and cargo hides what a passing test prints. Where `mount` cannot work (no
//! root, no CAP_SYS_ADMIN in a container), `KMSGATE_TEST_NO_MOUNT=1` leaves
//! these tests out on purpose: scripts/test then skips them by name
//! ([`FULL_DISK_TESTS`]) and prints which ones it did not run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The opt-out: `KMSGATE_TEST_NO_MOUNT=1`.
pub const NO_MOUNT: &str = "KMSGATE_TEST_NO_MOUNT";

/// The tests that mount a [`SmallDisk`] (or hide the token directory
/// under a tmpfs); scripts/test names the same ones
/// when [`NO_MOUNT`] is set (tests/it/durability.rs checks both lists).
pub const FULL_DISK_TESTS: [&str; 6] = [
    "durability::a_full_disk_never_loses_an_acknowledged_write",
    "durability::a_nearly_full_disk_never_loses_an_acknowledged_write",
    "audit::with_the_audit_disk_full_requests_fail_and_nothing_acknowledged_is_missing",
    "unreadable_load::a_gateway_whose_listing_comes_back_empty_while_the_directory_is_hidden_waits_for_it",
    "unreadable_load::a_gateway_that_finds_no_change_marker_while_the_directory_is_hidden_waits_for_it",
    "unreadable_load::a_sync_that_lists_nothing_drops_no_key_and_makes_no_marker",
];

/// Whether [`NO_MOUNT`] is set to 1.
pub fn mount_opted_out() -> bool {
    std::env::var(NO_MOUNT).as_deref() == Ok("1")
}

/// A tmpfs mounted on a directory; unmounted when dropped.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    pub fn mount(path: &Path, kib: u64) -> Result<SmallDisk, String> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(SmallDisk {
            path: path.to_owned(),
        })
    }

    /// A disk for a full-disk test: `Some`, or `None` when the mount failed
    /// and [`NO_MOUNT`] says to leave the test out (it says so on stderr).
    /// Panics when the mount fails without the opt-out.
    pub fn mount_or_opt_out(path: &Path, kib: u64) -> Option<SmallDisk> {
        match SmallDisk::mount(path, kib) {
            Ok(disk) => Some(disk),
            Err(e) if mount_opted_out() => {
                eprintln!("SKIPPED ({NO_MOUNT}=1): cannot mount a small tmpfs: {e}");
                None
            }
            Err(e) => panic!(
                "cannot mount a small tmpfs, so this full-disk test would test nothing: {e}\n\
                 run it as root (CAP_SYS_ADMIN), or set {NO_MOUNT}=1 to leave the \
                 full-disk tests out (scripts/test then names them)"
            ),
        }
    }

    /// Fills the file system to the last byte with page-sized files, then
    /// frees `pages` of them again: a disk that is full, or nearly.
    pub fn fill_leaving(&self, pages: usize) {
        use std::io::Write;
        let chunk = vec![0u8; 4096];
        let mut n = 0;
        loop {
            let path = self.path.join(format!("filler-{n}"));
            let Ok(mut f) = std::fs::File::create(&path) else {
                break;
            };
            n += 1;
            if f.write_all(&chunk).and_then(|()| f.flush()).is_err() {
                drop(f);
                let _ = std::fs::remove_file(&path);
                break;
            }
        }
        let free = free_bytes(&self.path);
        assert!(free < 4096, "the disk is not full: {free} bytes free");
        for k in 0..pages {
            std::fs::remove_file(self.path.join(format!("filler-{k}"))).unwrap();
        }
    }

    /// Fills the file system to the very last byte.
    pub fn fill(&self) {
        use std::io::Write;
        let chunk = vec![0u8; 4096];
        for n in 0.. {
            let path = self.path.join(format!("filler-{n}"));
            let Ok(mut f) = std::fs::File::create(&path) else {
                break;
            };
            if f.write_all(&chunk).and_then(|()| f.flush()).is_err() {
                // Fill the last bytes too, then stop.
                let _ = f.write_all(&[0u8; 1]);
                break;
            }
        }
    }

    pub fn free(&self) {
        for e in std::fs::read_dir(&self.path).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("filler-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX)
}
