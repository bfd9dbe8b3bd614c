//! The nemesis's cluster: one SoftHSM2 token wrapped in faulty-pkcs11
//! (optionally on a small tmpfs, for the full-disk fault), and two or
//! three gateways on it, each `serve --workers 2` (a supervisor and two
//! worker processes). A gateway the nemesis killed is started again on a
//! new port; the clients always ask [`Cluster::client`] for the gateway's
//! current endpoint.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::disk::SmallDisk;
use crate::common::faulty::faulty_module;
use crate::common::*;
use crate::workers::{alive, children_of, kill, workers_of};

/// The config the nemesis runs with: small GCM bounds (a reservation per
/// encryption, a rotation every few tens of them) and fast background work.
pub fn keys_config(
    gcm_usage_bound: u64,
    sync_interval_ms: u64,
    scheduler_interval_ms: u64,
) -> String {
    format!(
        "[keys]\ngcm_usage_bound = {gcm_usage_bound}\ngcm_reserve_block = 1\n\
         max_on_demand_rotations = 1000\nsync_interval_ms = {sync_interval_ms}\n\
         scheduler_interval_ms = {scheduler_interval_ms}\n"
    )
}

/// One gateway slot: the supervisor now serving it (None while it is down)
/// and its endpoint's client.
struct Member {
    child: Option<Child>,
    client: aws_sdk_kms::Client,
    endpoint: String,
    /// Workers of supervisors the nemesis killed: they stop by themselves
    /// once they notice, and are killed at the end if they have not.
    orphans: Vec<u32>,
}

pub struct Cluster {
    members: Vec<Mutex<Member>>,
    /// The small file system under the token directory, if it mounted
    /// (declared before `token`: unmounted before the directory goes).
    pub disk: Option<SmallDisk>,
    /// Why it did not, if it did not.
    pub disk_error: Option<String>,
    /// Every log a supervisor of this cluster wrote (its workers' too).
    logs: Mutex<Vec<PathBuf>>,
    starts: AtomicU32,
    pub token: Arc<Token>,
}

impl Cluster {
    /// A fresh token behind faulty-pkcs11 with `extra` config, its token
    /// directory on a tmpfs of `disk_kib` if that mounts, and `gateways`
    /// supervisors of two workers each on it.
    pub fn start(extra: &str, gateways: u32, disk_kib: u64) -> Cluster {
        let mut disk = None;
        let mut disk_error = None;
        let token = Token::with_token_dir(extra, |dir| match SmallDisk::mount(dir, disk_kib) {
            Ok(d) => disk = Some(d),
            Err(e) => disk_error = Some(e),
        });
        // As Token::with_faulty_config, on this token directory.
        let config = std::fs::read_to_string(token.config()).unwrap();
        let real = format!("module = \"{}\"", softhsm_module().display());
        assert!(config.contains(&real), "unexpected config:\n{config}");
        let faulty = format!("module = \"{}\"", faulty_module().display());
        let config = config.replacen(&real, &faulty, 1);
        std::fs::write(token.config(), &config).unwrap();
        // Each gateway its own audit trail (its workers write P.w1, P.w2):
        // one config for all would have them write the same files.
        assert!(!config.contains("[audit]"), "unexpected config:\n{config}");
        for g in 0..gateways {
            let audit = Self::audit_path_in(token.path(), g);
            std::fs::write(
                Self::config_path_in(token.path(), g),
                format!("{config}\n[audit]\npath = \"{}\"\n", audit.display()),
            )
            .unwrap();
        }
        let mut cluster = Cluster {
            token,
            disk,
            disk_error,
            members: Vec::new(),
            logs: Mutex::new(Vec::new()),
            starts: AtomicU32::new(0),
        };
        for g in 0..gateways {
            let (child, endpoint) = cluster.spawn(g);
            cluster.members.push(Mutex::new(Member {
                child: Some(child),
                client: client_at(&endpoint, ACCESS_KEY, SECRET, REGION),
                endpoint,
                orphans: Vec::new(),
            }));
        }
        cluster
    }

    fn config_path_in(root: &Path, g: u32) -> PathBuf {
        root.join(format!("gateway-{g}.toml"))
    }

    fn audit_path_in(root: &Path, g: u32) -> PathBuf {
        root.join(format!("audit-gateway-{g}.log"))
    }

    /// Gateway `g`'s audit file (its workers add `.w1`, `.w2`).
    pub fn audit_path(&self, g: u32) -> PathBuf {
        Self::audit_path_in(self.token.path(), g)
    }

    fn spawn(&self, g: u32) -> (Child, String) {
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let log = self.token.path().join(format!("gateway-{g}-start-{n}.log"));
        self.logs.lock().unwrap().push(log.clone());
        let env = self.token.faulty_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        spawn_serve_with(
            &self.token,
            &Self::config_path_in(self.token.path(), g),
            &["--workers", "2"],
            &env,
            &log,
            Duration::from_secs(90),
        )
    }

    pub fn gateways(&self) -> u32 {
        self.members.len() as u32
    }

    /// The client of gateway `g`'s current endpoint.
    pub fn client(&self, g: u32) -> aws_sdk_kms::Client {
        self.members[g as usize].lock().unwrap().client.clone()
    }

    /// One client per gateway, each with a fresh connection pool.
    pub fn fresh_clients(&self) -> Vec<aws_sdk_kms::Client> {
        (0..self.gateways())
            .map(|g| {
                let endpoint = self.members[g as usize].lock().unwrap().endpoint.clone();
                client_at(&endpoint, ACCESS_KEY, SECRET, REGION)
            })
            .collect()
    }

    /// Gateway `g`'s address (host:port) and endpoint URL.
    pub fn address(&self, g: u32) -> (String, String) {
        let endpoint = self.members[g as usize].lock().unwrap().endpoint.clone();
        let addr = endpoint.trim_start_matches("http://").to_owned();
        (addr, endpoint)
    }

    /// Gateway `g`'s supervisor pid, if it is up.
    pub fn supervisor(&self, g: u32) -> Option<u32> {
        let mut m = self.members[g as usize].lock().unwrap();
        let child = m.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Gateway `g`'s worker pids now.
    pub fn workers(&self, g: u32) -> Vec<u32> {
        self.supervisor(g).map(workers_of).unwrap_or_default()
    }

    /// The read-back helpers of gateway `g`'s workers now.
    pub fn helpers(&self, g: u32) -> Vec<u32> {
        self.workers(g)
            .into_iter()
            .flat_map(|w| children_of(w, "__read-back-helper"))
            .collect()
    }

    /// SIGKILLs gateway `g`'s supervisor (its workers notice and stop);
    /// returns its pid.
    pub fn kill_supervisor(&self, g: u32) -> Option<u32> {
        let mut m = self.members[g as usize].lock().unwrap();
        let mut child = m.child.take()?;
        let pid = child.id();
        let workers = workers_of(pid);
        let _ = child.kill();
        let _ = child.wait();
        m.orphans.extend(workers);
        Some(pid)
    }

    /// Starts gateway `g` again if it is down (up to three tries); returns
    /// the new endpoint and the errors of the tries that failed, or, if it
    /// did not start, the errors its logs show.
    pub fn restart_if_down(&self, g: u32) -> Result<Option<(String, String)>, String> {
        if self.supervisor(g).is_some() {
            return Ok(None);
        }
        let mut errors = String::new();
        for attempt in 1..=3 {
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn(g)));
            match started {
                Ok((child, endpoint)) => {
                    let mut m = self.members[g as usize].lock().unwrap();
                    m.child = Some(child);
                    m.client = client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
                    m.endpoint = endpoint.clone();
                    return Ok(Some((endpoint, errors)));
                }
                Err(panic) => {
                    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                    let lines: Vec<&str> = text
                        .lines()
                        .filter(|l| l.contains("ERROR") && !l.contains("audit: record"))
                        .collect();
                    errors.push_str(&format!("try {attempt}: {}\n", lines.join(" | ")));
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        Err(errors)
    }

    /// Every log a supervisor of this cluster wrote so far.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.logs.lock().unwrap().clone()
    }

    /// The token's own directory inside `tokens/` (SoftHSM2 makes one per
    /// token).
    pub fn token_subdir(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.token.path().join("tokens"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
    }

    /// Stops every gateway: SIGTERM to the supervisors, SIGKILL to whatever
    /// is left after 10 s (workers and orphans included).
    pub fn stop(&self) {
        let mut leftovers = Vec::new();
        for m in &self.members {
            let mut m = m.lock().unwrap();
            leftovers.append(&mut m.orphans);
            if let Some(child) = m.child.as_mut() {
                leftovers.extend(workers_of(child.id()));
                kill("CONT", child.id());
                kill("TERM", child.id());
            }
        }
        for pid in &leftovers {
            kill("CONT", *pid);
        }
        for m in &self.members {
            let mut m = m.lock().unwrap();
            if let Some(mut child) = m.child.take() {
                let started = std::time::Instant::now();
                while started.elapsed() < Duration::from_secs(10)
                    && matches!(child.try_wait(), Ok(None))
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for pid in leftovers {
            if alive(pid) {
                kill("KILL", pid);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `from` (a directory) into `to` with `cp -a`.
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status();
}
