//! A small file system for the full-disk tests: a tmpfs of a few hundred
//! KiB mounted on a directory (root only), filled on demand.

use std::path::{Path, PathBuf};
use std::process::Command;

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
