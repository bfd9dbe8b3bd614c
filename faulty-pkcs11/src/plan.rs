//! The fault plan: the rules of the control file named by
//! `FAULTY_PKCS11_CONTROL`, re-read when the file changes, and the decision
//! each call takes from them. The grammar is in README.md.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cryptoki_sys::CK_RV;

use crate::log;

/// How often, at most, a call looks at the control file's metadata.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// The step a stalled call sleeps before looking again.
const STALL_STEP: Duration = Duration::from_millis(10);
/// What `*` does not match: the calls that load and unload the library.
/// Naming them explicitly still works.
const NOT_UNDER_STAR: &[&str] = &["C_Initialize", "C_Finalize", "C_GetInfo"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Fail(CK_RV),
    /// With a duration: stall that long. Without: until the scope ends.
    Stall(Option<Duration>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Once,
    For(Duration),
    Forever,
}

/// A rule as written; two rules are "the same rule" when these are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    /// None for `*`.
    func: Option<String>,
    action: Action,
    scope: Scope,
}

struct Rule {
    spec: Spec,
    loaded: Instant,
    /// For `once`: the one call has been taken.
    used: AtomicBool,
}

impl Rule {
    fn matches(&self, name: &str) -> bool {
        match &self.spec.func {
            Some(f) => f == name,
            None => !NOT_UNDER_STAR.contains(&name),
        }
    }

    /// Whether the rule applies to a call made `now`; takes a `once` rule's
    /// one call (exactly one caller wins it).
    fn claim(&self, now: Instant) -> bool {
        match self.spec.scope {
            Scope::Once => self
                .used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
            Scope::For(d) => now.saturating_duration_since(self.loaded) < d,
            Scope::Forever => true,
        }
    }
}

/// What identifies one version of the control file. With an atomic rename
/// the inode changes even when size and mtime do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

struct Plan {
    stamp: Option<Stamp>,
    checked: Option<Instant>,
    rules: Vec<Arc<Rule>>,
}

static PLAN: Mutex<Plan> = Mutex::new(Plan {
    stamp: None,
    checked: None,
    rules: Vec::new(),
});

fn control() -> Option<&'static Path> {
    static CONTROL: OnceLock<Option<PathBuf>> = OnceLock::new();
    CONTROL
        .get_or_init(|| std::env::var_os("FAULTY_PKCS11_CONTROL").map(PathBuf::from))
        .as_deref()
}

/// The current plan, brought up to date with the control file.
fn current(path: &Path) -> MutexGuard<'static, Plan> {
    let mut plan = PLAN.lock().unwrap_or_else(|e| e.into_inner());
    plan.refresh(path);
    plan
}

impl Plan {
    fn refresh(&mut self, path: &Path) {
        let now = Instant::now();
        if self
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < CHECK_EVERY)
        {
            return;
        }
        self.checked = Some(now);
        let stamp = std::fs::metadata(path).ok().map(|m| Stamp::of(&m));
        if stamp == self.stamp {
            return;
        }
        // Stamp and text from the same open file, so that a file replaced in
        // between is not read twice (which would renew its `once` rules).
        let (stamp, text) = match read(path) {
            Some((stamp, text)) => (Some(stamp), text),
            None => (None, String::new()),
        };
        self.stamp = stamp;
        self.rules = load(&text, now);
    }
}

fn read(path: &Path) -> Option<(Stamp, String)> {
    let mut file = File::open(path).ok()?;
    let stamp = Stamp::of(&file.metadata().ok()?);
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some((stamp, text))
}

fn load(text: &str, now: Instant) -> Vec<Arc<Rule>> {
    let mut rules = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse(line) {
            Some(spec) => rules.push(Arc::new(Rule {
                spec,
                loaded: now,
                used: AtomicBool::new(false),
            })),
            None => log::line(&format!("ignore line {}: {}", i + 1, raw.trim())),
        }
    }
    log::line(&format!("load {} rules", rules.len()));
    rules
}

/// `<function> fail <code> <scope>` or `<function> stall [<duration>] <scope>`.
fn parse(line: &str) -> Option<Spec> {
    let mut words = line.split_whitespace().peekable();
    let func = match words.next()? {
        "*" => None,
        f if crate::NAMES.contains(&f) => Some(f.to_owned()),
        _ => return None,
    };
    let action = match words.next()? {
        "fail" => Action::Fail(code(words.next()?)?),
        "stall" => match words.peek().and_then(|w| duration(w)) {
            Some(d) => {
                words.next();
                Action::Stall(Some(d))
            }
            None => Action::Stall(None),
        },
        _ => return None,
    };
    let scope = match words.next()? {
        "once" => Scope::Once,
        "forever" => Scope::Forever,
        "for" => Scope::For(duration(words.next()?)?),
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(Spec {
        func,
        action,
        scope,
    })
}

/// A CKR code, `0x30` or `48`; CKR_OK is refused (a "failure" returning
/// success without doing the work would leave outputs unset).
fn code(word: &str) -> Option<CK_RV> {
    let rv = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) => CK_RV::from_str_radix(hex, 16).ok()?,
        None => word.parse().ok()?,
    };
    (rv != 0).then_some(rv)
}

/// `500ms`, `3s`, `1.5s`.
fn duration(word: &str) -> Option<Duration> {
    let (number, unit) = if let Some(n) = word.strip_suffix("ms") {
        (n, 0.001)
    } else {
        (word.strip_suffix('s')?, 1.0)
    };
    let n: f64 = number.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| Duration::from_secs_f64(n * unit))
}

/// The plan's answer for a call to `name`: `Some(rv)` to fail it without
/// forwarding, None to forward (after stalling, if a stall rule applies).
pub(crate) fn before_call(name: &'static str) -> Option<CK_RV> {
    let path = control()?;
    let rule = {
        let plan = current(path);
        let now = Instant::now();
        plan.rules
            .iter()
            .find(|r| r.matches(name) && r.claim(now))
            .cloned()?
    };
    match rule.spec.action {
        Action::Fail(rv) => {
            log::line(&format!("fail {name} {rv:#x}"));
            Some(rv)
        }
        Action::Stall(fixed) => {
            log::line(&format!("stall {name}"));
            stall(path, &rule, fixed);
            None
        }
    }
}

/// Blocks until the stall is over: after `fixed` if given, else at the end
/// of a `for` window, else never; and in every case as soon as the control
/// file no longer holds the rule.
fn stall(path: &Path, rule: &Rule, fixed: Option<Duration>) {
    let until = match (fixed, rule.spec.scope) {
        (Some(d), _) => Some(Instant::now() + d),
        (None, Scope::For(window)) => Some(rule.loaded + window),
        (None, _) => None,
    };
    loop {
        let now = Instant::now();
        let step = match until {
            Some(u) if now >= u => return,
            Some(u) => STALL_STEP.min(u - now),
            None => STALL_STEP,
        };
        if !current(path).rules.iter().any(|r| r.spec == rule.spec) {
            return;
        }
        std::thread::sleep(step);
    }
}
