//! The log level, changeable while the gateway runs: `main` installs the
//! subscriber with a reloadable filter and registers here how to replace
//! it; the config's `log_level` is applied at start and again on SIGHUP.

use std::sync::OnceLock;

type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static RELOAD: OnceLock<Reload> = OnceLock::new();

/// Registers how the process's log filter is replaced (once, by `main`).
pub fn set_reloader(reload: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) {
    let _ = RELOAD.set(Box::new(reload));
}

/// Replaces the log filter with `directives` (`info`, `warn`,
/// `kmsgate=debug,info`: tracing's EnvFilter syntax).
pub fn set_level(directives: &str) -> Result<(), String> {
    match RELOAD.get() {
        Some(reload) => reload(directives),
        None => Err("this process's log level cannot be changed".into()),
    }
}

/// Applies the config's `log_level`, if it has one, and says so.
pub fn apply(level: Option<&str>, when: &str) {
    let Some(level) = level else {
        return;
    };
    match set_level(level) {
        Ok(()) => tracing::info!(log_level = level, "{when}: log level set"),
        Err(e) => tracing::warn!(log_level = level, error = %e, "{when}: log level not changed"),
    }
}
