//! Wall-clock time for everything that is dated: creation and deletion
//! dates, rotation schedules.
//!
//! The clock is injected so that tests can move it: a deletion waiting
//! period is at least seven days and a rotation period at least ninety, and
//! no test waits that long. [`OffsetClock`] reads a number of seconds from a
//! file at every reading and adds it to the system time; the gateway uses it
//! only when `KMSGATE_TEST_CLOCK_OFFSET_FILE` is set, and says so loudly.
//! That variable is a test hook: only a build with the `test-hooks` cargo
//! feature (what `cargo test` builds) reads it; any other build never looks.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable that makes the gateway use an [`OffsetClock`]
/// (in builds with the `test-hooks` feature only).
#[cfg(feature = "test-hooks")]
pub const OFFSET_FILE_ENV: &str = "KMSGATE_TEST_CLOCK_OFFSET_FILE";

pub trait Clock: Send + Sync {
    /// Seconds since the epoch, with millisecond precision (what AWS sends).
    fn now(&self) -> f64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (d.as_millis() as f64) / 1000.0
    }
}

/// The system time plus the number of seconds written in a file (0 when the
/// file is missing or unreadable).
pub struct OffsetClock {
    pub file: PathBuf,
}

impl Clock for OffsetClock {
    fn now(&self) -> f64 {
        let offset = std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        SystemClock.now() + offset
    }
}

/// The system clock: without the `test-hooks` feature nothing else exists.
#[cfg(not(feature = "test-hooks"))]
pub fn from_env() -> Box<dyn Clock> {
    Box::new(SystemClock)
}

/// The clock the environment asks for (a build with the `test-hooks`
/// feature).
#[cfg(feature = "test-hooks")]
pub fn from_env() -> Box<dyn Clock> {
    match std::env::var_os(OFFSET_FILE_ENV) {
        Some(file) => {
            tracing::warn!(
                file = ?file,
                "{OFFSET_FILE_ENV} is set: dates come from a test clock, not the system clock"
            );
            Box::new(OffsetClock { file: file.into() })
        }
        None => Box::new(SystemClock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_adds_the_seconds_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("offset");
        let clock = OffsetClock { file: file.clone() };
        let before = SystemClock.now();
        assert!((clock.now() - before).abs() < 5.0, "no file: no offset");
        std::fs::write(&file, "86400\n").unwrap();
        assert!((clock.now() - before - 86_400.0).abs() < 5.0);
    }
}
