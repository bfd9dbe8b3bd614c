//! `kmsgate backup` and `kmsgate restore`: a consistent copy of a SoftHSM2
//! token's file store, taken while gateways and workers keep serving, and
//! its way back (docs/operations.md, "Backup and restore").
//!
//! Consistent: every key version a copied record names is in the copy, and
//! every write acknowledged before the backup began is in it. The copy is
//! taken under the token lock ([`crate::hsm::token_lock`]) held
//! exclusively: every kmsgate process takes it around each PKCS#11 call
//! that touches SoftHSM2's files, and SoftHSM2 writes an object's file
//! inside the call that creates it. While the copy holds it, no process is
//! inside a token call, and every write acknowledged before is on disk. A
//! record is replaced (new object, then the old one destroyed), never
//! changed in place, and the key version it names is created and confirmed
//! before it (DESIGN.md decision 12), so a copy between two calls never
//! holds a record without its versions.
//!
//! The whole token directory (`directories.tokendir`) is copied, not only
//! the configured token's: SoftHSM2 ties a token to its sub-directory only
//! inside its own binary files, the lock covers the whole directory, and a
//! restore is then "this directory is the tokendir". Other tokens in it are
//! copied as they are; a program other than kmsgate writing to them takes
//! no lock. The lock's own files are not copied.
//!
//! The manifest's keys and aliases are read from the copy, not from the
//! live token, by this binary in a child process whose `softhsm2.conf`
//! names the copy: that proves the copy opens with the PIN, and this
//! process never calls the token while it holds the lock (its own calls
//! would wait for it).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::hsm::{Hsm, objects, select, token_lock};
use crate::server::{self, StartError};

/// The manifest's name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The copied token directory's name in a backup directory.
const TOKENS: &str = "tokens";
const KIND: &str = "kmsgate SoftHSM2 token backup";
const FORMAT: u32 = 1;

/// What `kmsgate backup` writes beside the copy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub format: u32,
    /// RFC 3339, UTC: when the lock was taken (the copy's moment).
    pub time: String,
    pub kmsgate_version: String,
    pub token: TokenId,
    /// How long the backup waited for the token lock and held it.
    pub lock_wait_ms: u64,
    pub lock_held_ms: u64,
    /// SHA-256 (hex) of every copied file, by its path in the backup
    /// directory (`tokens/...`).
    pub files: BTreeMap<String, String>,
    /// The keys and aliases on the copy (not the live token).
    pub keys: Vec<KeyEntry>,
    pub aliases: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenId {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub id: String,
    pub state: String,
    pub spec: String,
    pub versions: Vec<u32>,
    pub primary: u32,
}

/// What the listing child prints: the token's keys and aliases.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub keys: Vec<KeyEntry>,
    pub aliases: BTreeMap<String, String>,
    /// Records without a valid revision (`check-keys` fails on them).
    pub lost_records: usize,
    /// Labels of records whose latest revision two objects hold: a commit
    /// that was settling when the copy was taken (one of them is removed a
    /// moment later on the live token, and only then may the other have
    /// been acknowledged).
    #[serde(default)]
    pub contested: Vec<String>,
}

type Result<T> = std::result::Result<T, StartError>;

/// SoftHSM2's configuration in this process, checked for a file store:
/// (the `softhsm2.conf` path, its text, its token directory).
fn softhsm_store() -> Result<(PathBuf, String, PathBuf)> {
    let conf = token_lock::softhsm_conf();
    let text = fs::read_to_string(&conf).map_err(|e| {
        format!(
            "cannot read SoftHSM2's configuration {} ({e}): set SOFTHSM2_CONF to the file the gateways use",
            conf.display()
        )
    })?;
    let dir = file_store_dir(&conf, &text)?;
    Ok((conf, text, dir))
}

/// The token directory a `softhsm2.conf` (at `conf`, holding `text`)
/// names, if its object store is files.
fn file_store_dir(conf: &Path, text: &str) -> Result<PathBuf> {
    let backend = token_lock::conf_values(text, "objectstore.backend").next();
    if let Some(b) = backend.filter(|b| *b != "file") {
        return Err(format!(
            "{} sets objectstore.backend = {b}: kmsgate backup copies only SoftHSM2's file store \
             (its database store is SQLite, whose files are not copied safely while it writes); \
             stop the gateways and copy the database with sqlite3's .backup",
            conf.display()
        )
        .into());
    }
    let dir = token_lock::token_dir_in(text).ok_or_else(|| {
        format!(
            "{} names no directories.tokendir: cannot find the token's files",
            conf.display()
        )
    })?;
    Ok(dir)
}

/// The module's maker and the configured token's label and serial; refuses
/// a module that is not SoftHSM2.
fn identify(config: &Config) -> Result<TokenId> {
    let module = &config.hsm.module;
    let pkcs11 = Pkcs11::new(module)
        .map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", module.display()))?;
    {
        let _lock = token_lock::shared();
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(format!("C_Initialize of {}: {e}", module.display()).into()),
        }
    }
    let found = (|| -> Result<TokenId> {
        let info = pkcs11.get_library_info()?;
        let manufacturer = info.manufacturer_id().trim().to_owned();
        token_lock::keep_only_for(&manufacturer);
        if !manufacturer.starts_with("SoftHSM") {
            return Err(format!(
                "the module {} is '{manufacturer}' ({}), not SoftHSM2: kmsgate backup copies only \
                 SoftHSM2's file store. Back this token up with its vendor's own tools: a Luna \
                 Backup HSM for Thales Luna, the Security World and its kmdata directory for \
                 Entrust nShield, the cluster's backups for AWS CloudHSM (docs/operations.md, \
                 \"Backup and restore\")",
                module.display(),
                info.library_description().trim()
            )
            .into());
        }
        let _lock = token_lock::shared();
        let slot = select::find_token(&pkcs11, &config.hsm.token())?;
        let token = pkcs11.get_token_info(slot)?;
        Ok(TokenId {
            label: token.label().trim().to_owned(),
            serial: token.serial_number().trim().to_owned(),
            manufacturer,
        })
    })();
    if let Err(e) = pkcs11.finalize() {
        tracing::warn!(error = %e, "C_Finalize failed");
    }
    found
}

/// `kmsgate backup --config FILE --out DIR`.
pub fn backup(config_path: &Path, out: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    // The PIN is needed to open the copy; fail before copying without it.
    server::user_pin(&config)?;
    let token = identify(&config)?;
    let (_, conf_text, tokendir) = softhsm_store()?;
    if let (Ok(live), Ok(parent)) = (
        fs::canonicalize(&tokendir),
        std::path::absolute(out).map(|o| o.parent().map(Path::to_path_buf).unwrap_or(o)),
    ) && fs::canonicalize(&parent).is_ok_and(|p| p.starts_with(&live))
    {
        return Err(format!(
            "{} is inside the token directory {}: put the backup elsewhere",
            out.display(),
            live.display()
        )
        .into());
    }
    prepare_out(out)?;
    let copy = out.join(TOKENS);
    let mut attempt = 1;
    let manifest = loop {
        match copy_once(config_path, &conf_text, &tokendir, out, &token) {
            Ok(Copied::Whole(manifest)) => break *manifest,
            Ok(Copied::Settling(labels)) if attempt < ATTEMPTS => {
                tracing::info!(
                    ?labels,
                    attempt,
                    "a commit was settling in the copy; copying again"
                );
                let _ = fs::remove_dir_all(&copy);
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(Copied::Settling(labels)) => {
                let _ = fs::remove_dir_all(&copy);
                return Err(format!(
                    "in each of {ATTEMPTS} copies a commit was still settling (two revisions of {}): \
                     a gateway stopped between a write and its clean-up leaves that until the \
                     record's next change; change the record (e.g. tag the key) and back up again",
                    labels.join(", ")
                )
                .into());
            }
            Err(e) => {
                // No manifest, no backup: leave nothing that looks like one.
                let _ = fs::remove_dir_all(&copy);
                let _ = fs::remove_file(out.join(MANIFEST));
                return Err(e);
            }
        }
    };
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "backup of token '{}' (serial {}) in {}: {} files, {} keys, {} aliases; \
         waited {} ms for the token lock, held it {} ms (copy {attempt})",
        token.label,
        token.serial,
        out.display(),
        manifest.files.len(),
        manifest.keys.len(),
        manifest.aliases.len(),
        manifest.lock_wait_ms,
        manifest.lock_held_ms,
    )?;
    stdout.flush()?;
    Ok(())
}

/// Copies before [`backup`] gives up on copies that caught a commit
/// settling.
const ATTEMPTS: u32 = 5;

/// What one copy holds.
enum Copied {
    /// Whole writes only: its manifest is written.
    Whole(Box<Manifest>),
    /// A commit settling (these labels): to be copied again.
    Settling(Vec<String>),
}

/// One copy of `tokendir` into `out`, and its manifest unless it caught a
/// commit settling.
fn copy_once(
    config_path: &Path,
    conf_text: &str,
    tokendir: &Path,
    out: &Path,
    token: &TokenId,
) -> Result<Copied> {
    let copy = out.join(TOKENS);
    let started = Instant::now();
    let mut time = String::new();
    let mut held = Duration::ZERO;
    let mut waited = Duration::ZERO;
    let n = match token_lock::with_exclusive(tokendir, || {
        time = now_rfc3339();
        waited = started.elapsed();
        let at = Instant::now();
        let r = copy_tree(tokendir, &copy, None, true);
        held = at.elapsed();
        r
    }) {
        Err(e) => {
            return Err(
                format!("cannot take the token lock in {}: {e}", tokendir.display()).into(),
            );
        }
        Ok(Err(e)) => return Err(format!("cannot copy {}: {e}", tokendir.display()).into()),
        Ok(Ok(n)) => n,
    };
    // The copy's bytes were taken under the lock; making them durable
    // needs no lock, and the manifest is written only after.
    sync_tree(&copy)?;
    File::open(out)?.sync_all()?;
    tracing::debug!(files = n, "copied");
    let listing = list_copy(config_path, conf_text, &copy, out)?;
    if !listing.contested.is_empty() {
        return Ok(Copied::Settling(listing.contested));
    }
    remove_lock_files(&copy);
    let manifest = Manifest {
        kind: KIND.to_owned(),
        format: FORMAT,
        time,
        kmsgate_version: env!("CARGO_PKG_VERSION").to_owned(),
        token: token.clone(),
        lock_wait_ms: millis(waited),
        lock_held_ms: millis(held),
        files: hash_tree(out, &copy)?,
        keys: listing.keys,
        aliases: listing.aliases,
    };
    write_manifest(out, &manifest)?;
    Ok(Copied::Whole(Box::new(manifest)))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::from(SystemTime::now())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// DIR must be new or empty; it is made (or left) 0700.
fn prepare_out(out: &Path) -> Result<()> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty: a backup goes into a new or empty directory",
                    out.display()
                )
                .into());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .mode(0o700)
                .create(out)
                .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        }
        Err(e) => return Err(format!("cannot read {}: {e}", out.display()).into()),
    }
    fs::set_permissions(out, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Copies the directory `from` into `to` (which must not exist): 0700
/// directories, 0600 files, not yet fsynced ([`sync_tree`]). The lock's
/// files at the top are left out. With `expect`, every file's SHA-256 must
/// be the one it names for its path (`tokens/...`), and nothing else may
/// be there. Returns how many files were copied.
fn copy_tree(
    from: &Path,
    to: &Path,
    expect: Option<&BTreeMap<String, String>>,
    top: bool,
) -> std::io::Result<usize> {
    copy_dir(from, to, expect, top, TOKENS)
}

/// fsyncs every file and directory under `dir`, and `dir`.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

fn copy_dir(
    from: &Path,
    to: &Path,
    expect: Option<&BTreeMap<String, String>>,
    top: bool,
    rel: &str,
) -> std::io::Result<usize> {
    DirBuilder::new().mode(0o700).create(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o700))?;
    let mut count = 0;
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if top && token_lock::is_lock_file(&name) {
            continue;
        }
        let path = entry.path();
        let target = to.join(&name);
        let inner = format!("{rel}/{}", name.to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            count += copy_dir(&path, &target, expect, false, &inner)?;
        } else if kind.is_file() {
            let bytes = fs::read(&path)?;
            if let Some(expect) = expect
                && expect.get(&inner) != Some(&sha256_hex(&bytes))
            {
                return Err(std::io::Error::other(format!(
                    "{inner} changed since it was checked"
                )));
            }
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(&bytes)?;
            count += 1;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is neither a file nor a directory; not copied",
                path.display()
            )));
        }
    }
    Ok(count)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The SHA-256 of every file under `dir`, by its path relative to `base`.
fn hash_tree(base: &Path, dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned();
                if !kind.is_file() {
                    return Err(format!("{rel} is not a regular file").into());
                }
                out.insert(rel, sha256_hex(&fs::read(&path)?));
            }
        }
    }
    Ok(out)
}

/// The listing child leaves the lock's files in the copy: they belong to
/// no token.
fn remove_lock_files(tokendir: &Path) {
    if let Ok(entries) = fs::read_dir(tokendir) {
        for e in entries.flatten() {
            if token_lock::is_lock_file(&e.file_name()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn write_manifest(out: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out.join(MANIFEST))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    File::open(out)?.sync_all()?;
    Ok(())
}

/// Lists the token in the copy `tokendir` through this binary in a child
/// process, with a `softhsm2.conf` (SoftHSM2's `conf_text` with its
/// tokendir replaced) in a private temporary directory.
fn list_copy(config_path: &Path, conf_text: &str, tokendir: &Path, out: &Path) -> Result<Listing> {
    let scratch = std::env::temp_dir().join(format!(
        "kmsgate-backup-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    DirBuilder::new().mode(0o700).create(&scratch)?;
    let listed = (|| {
        let absolute = std::path::absolute(tokendir)?;
        let mut conf: String = conf_text
            .lines()
            .filter(|l| token_lock::token_dir_in(l).is_none())
            .map(|l| format!("{l}\n"))
            .collect();
        conf.push_str(&format!("directories.tokendir = {}\n", absolute.display()));
        let conf_path = scratch.join("softhsm2.conf");
        fs::write(&conf_path, conf)?;
        run_listing(
            config_path,
            &[("SOFTHSM2_CONF", conf_path.as_os_str())],
            out,
        )
    })();
    let _ = fs::remove_dir_all(&scratch);
    listed
}

/// Runs `kmsgate backup --list` on the token `config_path` names, with
/// `env` added, and reads its listing.
fn run_listing(config_path: &Path, env: &[(&str, &OsStr)], out: &Path) -> Result<Listing> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the kmsgate binary: {e}"))?;
    let child = Command::new(exe)
        .args(["backup", "--list", "--config"])
        .arg(config_path)
        .arg("--out")
        .arg(out)
        .envs(env.iter().copied())
        .env("KMSGATE_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start kmsgate to read the copy: {e}"))?;
    if !child.status.success() {
        return Err(format!(
            "the copy's token did not open ({}): {}",
            child.status,
            String::from_utf8_lossy(&child.stderr).trim()
        )
        .into());
    }
    Ok(serde_json::from_slice(&child.stdout)
        .map_err(|e| format!("the listing of the copy does not parse: {e}"))?)
}

/// `kmsgate backup --list` (internal): the keys and aliases of the token
/// the config names, as SoftHSM2's `SOFTHSM2_CONF` finds it, as one JSON
/// object on stdout.
pub async fn list(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let (state, hsm) = server::build_for_command(&config).await?;
    let objects = hsm
        .pool()
        .run_within(Duration::from_secs(120), Duration::from_secs(600), |s| {
            objects::read_data(s, None)
        })
        .await;
    let listing = (|| -> Result<Listing> {
        let contested = contested(&objects?);
        let store = &state.store;
        let keys = store
            .all_keys()?
            .iter()
            .map(|k| KeyEntry {
                id: k.record.key_id.to_string(),
                state: format!("{:?}", k.record.state),
                spec: k.record.key_spec.as_str().to_owned(),
                versions: k.record.versions.iter().map(|v| v.version).collect(),
                primary: k.record.primary_version,
            })
            .collect();
        let aliases = store
            .all_aliases()?
            .into_iter()
            .map(|a| (a.name, a.target.to_string()))
            .collect();
        let lost_records = store
            .unreadable_records()
            .iter()
            .filter(|r| !r.superseded)
            .count();
        Ok(Listing {
            keys,
            aliases,
            lost_records,
            contested,
        })
    })();
    drop(state);
    Hsm::shutdown_when_released(hsm, Duration::from_secs(5));
    let listing = listing?;
    let mut stdout = std::io::stdout();
    serde_json::to_writer(&mut stdout, &listing)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

/// The labels of kmsgate's records whose highest revision more than one
/// object holds (records are JSON with a `revision`, absent meaning 0).
fn contested(objects: &[objects::DataObject]) -> Vec<String> {
    let mut top: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for o in objects {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&o.value) else {
            continue;
        };
        if !value.is_object() {
            continue;
        }
        let revision = value
            .get("revision")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let entry = top.entry(o.label.as_str()).or_insert((revision, 0));
        if revision > entry.0 {
            *entry = (revision, 1);
        } else if revision == entry.0 {
            entry.1 += 1;
        }
    }
    top.into_iter()
        .filter(|(_, (_, n))| *n > 1)
        .map(|(label, _)| label.to_owned())
        .collect()
}

/// `kmsgate restore --from DIR --config FILE [--force]`.
pub fn restore(from: &Path, config_path: &Path, force: bool) -> Result<()> {
    let manifest = read_manifest(from)?;
    check_files(from, &manifest)?;
    let config = Config::load(config_path)?;
    if config.hsm.token_label != manifest.token.label {
        return Err(format!(
            "the config names the token '{}', the backup holds '{}' (serial {})",
            config.hsm.token_label, manifest.token.label, manifest.token.serial
        )
        .into());
    }
    let (_, _, tokendir) = softhsm_store()?;
    if !tokendir.exists() {
        DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&tokendir)
            .map_err(|e| format!("cannot create {}: {e}", tokendir.display()))?;
    }
    let users = processes_using(&tokendir);
    if !users.is_empty() {
        return Err(in_use(
            &tokendir,
            &format!("processes {users:?} have its token lock open"),
        ));
    }
    let Some(held) = token_lock::try_exclusive(&tokendir)
        .map_err(|e| format!("cannot open the token lock in {}: {e}", tokendir.display()))?
    else {
        return Err(in_use(&tokendir, "a process holds its token lock"));
    };
    let present: Vec<PathBuf> = fs::read_dir(&tokendir)?
        .filter_map(|e| e.ok())
        .filter(|e| !token_lock::is_lock_file(&e.file_name()))
        .map(|e| e.path())
        .collect();
    let mut set_aside = None;
    if !present.is_empty() {
        if !force {
            return Err(format!(
                "{} is not empty ({} entries): restore puts a token in place only in an empty \
                 token directory; --force moves what is there aside first",
                tokendir.display(),
                present.len()
            )
            .into());
        }
        set_aside = Some(move_aside(&tokendir, &present)?);
    }
    let source = from.join(TOKENS);
    let mut placed = 0;
    let mut names: Vec<_> = fs::read_dir(&source)?.collect::<std::io::Result<_>>()?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name();
        let rel = format!("{TOKENS}/{}", name.to_string_lossy());
        if entry.file_type()?.is_dir() {
            let target = tokendir.join(&name);
            placed += copy_dir(&entry.path(), &target, Some(&manifest.files), false, &rel)?;
            sync_tree(&target)?;
        } else {
            return Err(format!("{rel}: only token directories are restored").into());
        }
    }
    File::open(&tokendir)?.sync_all()?;
    drop(held);
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "restored {placed} files of token '{}' (serial {}, backed up {}) into {}{}",
        manifest.token.label,
        manifest.token.serial,
        manifest.time,
        tokendir.display(),
        set_aside
            .map(|p| format!("; what was there is in {}", p.display()))
            .unwrap_or_default()
    )?;
    stdout.flush()?;
    // The restored token as a gateway would load it: the keys and aliases
    // the manifest names, then check-keys' verdict.
    let listing = run_listing(config_path, &[], from)?;
    if listing.keys != manifest.keys || listing.aliases != manifest.aliases {
        return Err(format!(
            "the restored token lists {} keys and {} aliases, not the {} keys and {} aliases of the manifest",
            listing.keys.len(),
            listing.aliases.len(),
            manifest.keys.len(),
            manifest.aliases.len()
        )
        .into());
    }
    writeln!(
        stdout,
        "the restored token opens: {} keys and {} aliases, as the manifest lists; check-keys:",
        listing.keys.len(),
        listing.aliases.len()
    )?;
    stdout.flush()?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the kmsgate binary: {e}"))?;
    let status = Command::new(exe)
        .args(["check-keys", "--config"])
        .arg(config_path)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run check-keys: {e}"))?;
    if !status.success() {
        return Err("check-keys found problems on the restored token (see above)".into());
    }
    writeln!(stdout, "restore complete: check-keys is clean")?;
    stdout.flush()?;
    Ok(())
}

fn in_use(tokendir: &Path, why: &str) -> StartError {
    format!(
        "a gateway is using {} ({why}): stop every gateway on this token directory before a restore",
        tokendir.display()
    )
    .into()
}

fn read_manifest(from: &Path) -> Result<Manifest> {
    let path = from.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (not a kmsgate backup?)",
            path.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{} does not parse: {e}", path.display()))?;
    if manifest.kind != KIND || manifest.format != FORMAT {
        return Err(format!(
            "{} is a '{}' of format {}, not a '{KIND}' of format {FORMAT}",
            path.display(),
            manifest.kind,
            manifest.format
        )
        .into());
    }
    Ok(manifest)
}

/// Every file of the copy has the manifest's hash, and the copy holds
/// exactly the files the manifest lists.
fn check_files(from: &Path, manifest: &Manifest) -> Result<()> {
    let found = hash_tree(from, &from.join(TOKENS))?;
    if found.is_empty() {
        return Err(format!("{} holds no token files", from.join(TOKENS).display()).into());
    }
    let mut problems = Vec::new();
    for (path, hash) in &manifest.files {
        match found.get(path) {
            None => problems.push(format!("{path} is missing")),
            Some(h) if h != hash => problems.push(format!("{path} does not match its SHA-256")),
            Some(_) => {}
        }
    }
    for path in found.keys() {
        if !manifest.files.contains_key(path) {
            problems.push(format!("{path} is not in the manifest"));
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "the backup in {} does not match its manifest, refusing to restore it: {}",
            from.display(),
            problems.join("; ")
        )
        .into());
    }
    Ok(())
}

/// Moves `entries` of `tokendir` into a new sibling directory, so nothing
/// is lost by a forced restore.
fn move_aside(tokendir: &Path, entries: &[PathBuf]) -> Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = tokendir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens".to_owned());
    let aside = tokendir.with_file_name(format!("{name}.before-restore-{stamp}"));
    DirBuilder::new()
        .mode(0o700)
        .create(&aside)
        .map_err(|e| format!("cannot create {}: {e}", aside.display()))?;
    for entry in entries {
        let Some(n) = entry.file_name() else {
            continue;
        };
        fs::rename(entry, aside.join(n)).map_err(|e| {
            format!(
                "cannot move {} aside into {}: {e}",
                entry.display(),
                aside.display()
            )
        })?;
    }
    File::open(&aside)?.sync_all()?;
    File::open(tokendir)?.sync_all()?;
    Ok(aside)
}

/// Processes (that this user may inspect) with the token lock of
/// `tokendir` open: every kmsgate process on a SoftHSM2 token keeps it open
/// once it has made a token call, between calls too.
fn processes_using(tokendir: &Path) -> Vec<u32> {
    let Ok(dir) = fs::canonicalize(tokendir) else {
        return Vec::new();
    };
    let lock = token_lock::lock_file_in(&dir);
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == lock))
        {
            found.push(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_leaves_out_the_lock_files_and_is_private() {
        let root = std::env::temp_dir().join(format!("kmsgate-backup-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let live = root.join("live");
        fs::create_dir_all(live.join("tok")).unwrap();
        fs::write(live.join("tok/a.object"), b"abc").unwrap();
        fs::write(live.join(".kmsgate-token.lock"), b"").unwrap();
        fs::write(live.join(".kmsgate-token.turnstile"), b"").unwrap();
        let out = root.join("out");
        assert_eq!(copy_tree(&live, &out, None, true).unwrap(), 1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&out.join("tok")), 0o700);
        assert_eq!(mode(&out.join("tok/a.object")), 0o600);
        assert!(!out.join(".kmsgate-token.lock").exists());
        let hashes = hash_tree(&root, &out).unwrap();
        assert_eq!(
            hashes.get("out/tok/a.object").map(String::as_str),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(hashes.len(), 1);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn only_softhsm2_file_store_is_copied() {
        let conf = Path::new("/etc/softhsm/softhsm2.conf");
        let files = "directories.tokendir = /var/lib/softhsm/tokens\nobjectstore.backend = file\n";
        assert_eq!(
            file_store_dir(conf, files).unwrap(),
            PathBuf::from("/var/lib/softhsm/tokens")
        );
        // The default backend is files.
        assert!(file_store_dir(conf, "directories.tokendir = /t\n").is_ok());
        let db = "directories.tokendir = /t\nobjectstore.backend = db # sqlite\n";
        let refused = file_store_dir(conf, db).unwrap_err().to_string();
        assert!(refused.contains("objectstore.backend = db"), "{refused}");
        assert!(file_store_dir(conf, "objectstore.backend = file\n").is_err());
    }
}
