//! The log named by `FAULTY_PKCS11_LOG`: one line per event, appended.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

static LOG: OnceLock<Option<Mutex<File>>> = OnceLock::new();

/// Appends `text` and a newline to the log, if there is one. Errors are
/// ignored: the log must never change what a call returns.
pub(crate) fn line(text: &str) {
    let log = LOG.get_or_init(|| {
        let path = std::env::var_os("FAULTY_PKCS11_LOG")?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    });
    if let Some(file) = log {
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        // One write of the whole line, so that lines from several processes
        // sharing the file (O_APPEND) do not interleave.
        let _ = file.write_all(format!("{text}\n").as_bytes());
    }
}
