//! Confirming that a write is durable before anyone is told it succeeded
//! (DESIGN.md decision 12).
//!
//! A PKCS#11 module may report success for an object it failed to store:
//! SoftHSM2 on a full disk writes an empty or truncated object file, returns
//! CKR_OK and keeps serving the object from its in-memory copy, so reading
//! the object back through the session that wrote it proves nothing; after
//! a restart the object is gone. What a restart would see is what a fresh
//! PKCS#11 context sees, and one process can initialise a module only once.
//! So by default ([`ReadBack::Process`]) writes are confirmed by a helper
//! process: this same binary, started with [`HELPER_ARG`], with its own
//! context and login on the same token, which reads every new object back
//! from the token's storage. The PIN reaches it on its standard input, never
//! on a command line or in its environment: the helper inherits the
//! gateway's environment without `hsm.pin_env` and every credential's
//! `secret_env` ([`Confirmer::new`]). On both sides the first line, which
//! carries the PIN, is held only in buffers allocated once and wiped when
//! dropped; the helper reads it a byte at a time, so that no read buffer
//! keeps a copy for the helper's lifetime.
//!
//! [`ReadBack::Session`] reads back through the writing session instead:
//! enough only for tokens whose every write reaches their storage before
//! C_CreateObject returns (network HSMs), and for tools that do not write.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::link::PinGate;
use super::objects::APPLICATION;
use super::select::TokenSelector;
use super::{HsmError, TokenSession};

/// The first argument that makes the binary run as the read-back helper.
pub const HELPER_ARG: &str = "__read-back-helper";

/// What the helper answers instead of `ready` when the token refuses the
/// PIN, followed by the code's name.
const REFUSED: &str = "refused ";

/// The longest first line the helper accepts (module path, token and PIN,
/// hex-encoded).
const MAX_HELLO: usize = 64 * 1024;

/// How writes are confirmed durable.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadBack {
    /// A helper process with its own PKCS#11 context reads each new object
    /// back from the token's storage (sees what a restart would see).
    #[default]
    Process,
    /// Read back through the session that wrote it.
    Session,
}

/// What one confirmation asks. The same question is answered through the
/// writing session or by the helper, which gets it as one line of text.
enum Question {
    /// A data object with this label and a value of this SHA-256 exists.
    Data(String, Vec<u8>),
    /// No data object with this label exists.
    NoData(String),
    /// A secret key with this label exists and has this many bytes (32
    /// for an AES-256 key; an HMAC key's length for its spec).
    Key(String, u64),
    /// A signing key pair with this label exists: its private and its
    /// public key object.
    Pair(String),
    /// A secret key with this label exists, of whatever length (an
    /// unwrapped key, whose CKA_VALUE_LEN some tokens leave unset).
    Secret(String),
}

impl Question {
    /// The question as the helper reads it: a verb and hex fields.
    fn line(&self) -> String {
        match self {
            Question::Data(l, digest) => format!(
                "data {} {}\n",
                hex::encode(l.as_bytes()),
                hex::encode(digest)
            ),
            Question::NoData(l) => format!("nodata {}\n", hex::encode(l.as_bytes())),
            Question::Key(l, len) => format!("key {} {len}\n", hex::encode(l.as_bytes())),
            Question::Pair(l) => format!("pair {}\n", hex::encode(l.as_bytes())),
            Question::Secret(l) => format!("secret {}\n", hex::encode(l.as_bytes())),
        }
    }

    /// The inverse of [`line`](Self::line).
    fn parse(line: &str) -> Option<Question> {
        let mut fields = line.split_whitespace();
        let verb = fields.next()?;
        let label = String::from_utf8(hex::decode(fields.next()?).ok()?).ok()?;
        match verb {
            "data" => Some(Question::Data(label, hex::decode(fields.next()?).ok()?)),
            "nodata" => Some(Question::NoData(label)),
            "pair" => Some(Question::Pair(label)),
            "secret" => Some(Question::Secret(label)),
            // A question without a length comes from a gateway that made
            // only AES-256 keys.
            "key" => Some(Question::Key(
                label,
                fields.next().map_or(Some(32), |n| n.parse().ok())?,
            )),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Question::Data(l, _) => format!("record {l}"),
            Question::NoData(l) => format!("removal of {l}"),
            Question::Key(l, _) => format!("key object {l}"),
            Question::Pair(l) => format!("key pair {l}"),
            Question::Secret(l) => format!("imported key object {l}"),
        }
    }

    /// Answers the question through `session`.
    fn answer(&self, session: &Session) -> Result<bool, HsmError> {
        match self {
            Question::Data(label, digest) => Ok(data_values(session, label)?
                .iter()
                .any(|v| Sha256::digest(v).as_slice() == digest.as_slice())),
            Question::NoData(label) => Ok(data_values(session, label)?.is_empty()),
            Question::Key(label, len) => key_present(session, label, *len),
            Question::Secret(label) => Ok(!session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?
                .is_empty()),
            Question::Pair(label) => Ok([ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY]
                .into_iter()
                .map(|class| {
                    session.find_objects(&[
                        Attribute::Class(class),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ])
                })
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .all(|found| !found.is_empty())),
        }
    }
}

/// Confirms writes ([`ReadBack`]).
pub struct Confirmer {
    mode: ReadBack,
    helper: Mutex<Option<Helper>>,
    exe: Option<PathBuf>,
    module: PathBuf,
    token: TokenSelector,
    pin: Mutex<SecretString>,
    /// A helper logs in: not while the token refuses the PIN.
    gate: Arc<PinGate>,
    /// Environment variables the helper does not inherit.
    env_remove: Vec<String>,
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn not_durable(what: impl Into<String>) -> HsmError {
    HsmError::NotDurable(what.into())
}

impl Confirmer {
    pub(super) fn new(
        mode: ReadBack,
        module: &Path,
        token: &TokenSelector,
        pin: SecretString,
        env_remove: Vec<String>,
        gate: Arc<PinGate>,
    ) -> Confirmer {
        Confirmer {
            mode,
            helper: Mutex::new(None),
            exe: std::env::current_exe().ok(),
            module: module.to_owned(),
            token: token.clone(),
            pin: Mutex::new(pin),
            gate,
            env_remove,
        }
    }

    /// The PIN read again on a reload: the next helper logs in with it.
    pub(super) fn set_pin(&self, pin: SecretString) {
        let mut held = self.pin.lock().unwrap_or_else(|e| e.into_inner());
        if held.expose_secret() != pin.expose_secret() {
            *held = pin;
            drop(held);
            self.restart_helper();
        }
    }

    /// Confirms that a data object `label` holding `value` is stored.
    pub fn data_stored(&self, s: &TokenSession, label: &str, value: &[u8]) -> Result<(), HsmError> {
        self.ask(
            s,
            Question::Data(label.to_owned(), Sha256::digest(value).to_vec()),
        )
    }

    /// Confirms that no data object `label` is stored any more.
    pub fn data_gone(&self, s: &TokenSession, label: &str) -> Result<(), HsmError> {
        self.ask(s, Question::NoData(label.to_owned()))
    }

    /// Confirms that the signing key pair `label` (both halves) is stored.
    pub fn pair_stored(&self, s: &TokenSession, label: &str) -> Result<(), HsmError> {
        self.ask(s, Question::Pair(label.to_owned()))
    }

    /// Confirms that the secret key `label` is stored, whatever its length.
    pub fn secret_stored(&self, s: &TokenSession, label: &str) -> Result<(), HsmError> {
        self.ask(s, Question::Secret(label.to_owned()))
    }

    /// Confirms that the secret key `label` is stored.
    pub fn key_stored(&self, s: &TokenSession, label: &str, len: usize) -> Result<(), HsmError> {
        self.ask(s, Question::Key(label.to_owned(), len as u64))
    }

    fn ask(&self, s: &TokenSession, q: Question) -> Result<(), HsmError> {
        let answer = match self.mode {
            ReadBack::Session => q.answer(&s.session)?,
            ReadBack::Process => {
                // SoftHSM2 notices another process's new objects through a
                // change signal that can miss a change made right after the
                // last one it saw; a helper then answers "no" for an object
                // that is there. A fresh helper reads the whole token as a
                // restart would, so a "no" is asked once more of a new one.
                let mut yes = self.ask_helper(&q)?;
                if !yes {
                    tracing::info!(question = %q.describe(), "read-back said no; asking a fresh helper");
                    self.restart_helper();
                    yes = self.ask_helper(&q)?;
                }
                yes
            }
        };
        if answer {
            Ok(())
        } else {
            Err(not_durable(q.describe()))
        }
    }

    fn restart_helper(&self) {
        *self.helper.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn ask_helper(&self, q: &Question) -> Result<bool, HsmError> {
        let mut guard = self.helper.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.spawn()?);
        }
        let Some(helper) = guard.as_mut() else {
            return Err(not_durable("no read-back helper"));
        };
        let line = q.line();
        let mut reply = String::new();
        let io = helper
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| helper.stdin.flush())
            .and_then(|()| helper.stdout.read_line(&mut reply));
        match (io, reply.trim()) {
            (Ok(n), "yes") if n > 0 => Ok(true),
            (Ok(n), "no") if n > 0 => Ok(false),
            (io, other) => {
                // The helper is broken or cannot reach the token: start a
                // new one next time; this write is not confirmed.
                *guard = None;
                Err(not_durable(format!(
                    "read-back helper failed ({}): {}",
                    q.describe(),
                    match io {
                        Err(e) => e.to_string(),
                        Ok(_) => other.to_owned(),
                    }
                )))
            }
        }
    }

    fn spawn(&self) -> Result<Helper, HsmError> {
        // The helper logs in: its turn is this process's (`PinGate`).
        let _turn = self.gate.turn()?;
        let exe = self
            .exe
            .as_ref()
            .ok_or_else(|| not_durable("cannot find the kmsgate binary for read-back"))?;
        let mut command = Command::new(exe);
        command
            .arg(HELPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for var in &self.env_remove {
            command.env_remove(var);
        }
        let mut child = command
            .spawn()
            .map_err(|e| not_durable(format!("cannot start the read-back helper: {e}")))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(not_durable("read-back helper has no pipes"));
        };
        let hello = hello_line(&[
            self.module.as_os_str().as_encoded_bytes(),
            self.token.encode().as_bytes(),
            self.pin
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expose_secret()
                .as_bytes(),
        ]);
        let mut helper = Helper {
            child,
            stdin: {
                stdin
                    .write_all(&hello)
                    .and_then(|()| stdin.flush())
                    .map_err(|e| not_durable(format!("read-back helper: {e}")))?;
                stdin
            },
            stdout: BufReader::new(stdout),
        };
        let mut ready = String::new();
        match helper.stdout.read_line(&mut ready) {
            Ok(n) if n > 0 && ready.trim() == "ready" => Ok(helper),
            Ok(_) if ready.starts_with(REFUSED) => Err(self
                .gate
                .refuse_named(ready.trim_start_matches(REFUSED).trim())),
            _ => Err(not_durable(format!(
                "read-back helper did not start: {}",
                ready.trim()
            ))),
        }
    }
}

/// The helper's first line: each field hex-encoded, separated by spaces,
/// ended by a newline, in one buffer allocated at its final size (so no
/// reallocation leaves a copy of the PIN behind) and wiped when dropped.
fn hello_line(fields: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let len = fields.iter().map(|f| 2 * f.len() + 1).sum();
    let mut line = Zeroizing::new(vec![b' '; len]);
    let mut at = 0;
    for f in fields {
        let end = at + 2 * f.len();
        if let Some(out) = line.get_mut(at..end) {
            // Cannot fail: `out` is exactly twice as long as `f`.
            let _ = hex::encode_to_slice(f, out);
        }
        at = end + 1;
    }
    if let Some(last) = line.last_mut() {
        *last = b'\n';
    }
    line
}

/// Reads one line (without its newline) from `input` a byte at a time, so
/// that nothing past it is read into any buffer, into a buffer allocated
/// once and wiped when dropped. None at the end of the input, on an error,
/// or past `max` bytes.
fn read_secret_line(input: &mut impl Read, max: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(max));
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) if byte[0] == b'\n' => return Some(line),
            Ok(_) if line.len() < max => line.push(byte[0]),
            Ok(_) => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The helper's first line, parsed: module, token and PIN (wiped when
/// dropped).
fn parse_hello(hello: &[u8]) -> Option<(PathBuf, TokenSelector, AuthPin)> {
    let mut fields = hello
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let (Some(module), Some(token), Some(pin_hex), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    let module = PathBuf::from(std::ffi::OsString::from_vec(hex::decode(module).ok()?));
    let token = TokenSelector::decode(&String::from_utf8(hex::decode(token).ok()?).ok()?)?;
    let mut pin = Zeroizing::new(vec![0u8; pin_hex.len() / 2]);
    hex::decode_to_slice(pin_hex, &mut pin[..]).ok()?;
    let pin = AuthPin::from(std::str::from_utf8(&pin).ok()?);
    Some((module, token, pin))
}

fn data_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(APPLICATION.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn data_values(session: &Session, label: &str) -> Result<Vec<Vec<u8>>, HsmError> {
    let mut out = Vec::new();
    for h in session.find_objects(&data_template(label))? {
        let attrs = match session.get_attributes(h, &[AttributeType::Value]) {
            Ok(a) => a,
            // Removed since the listing (another gateway's superseded or
            // losing revision): not there.
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::ObjectHandleInvalid,
                _,
            )) => continue,
            Err(e) => return Err(e.into()),
        };
        for a in attrs {
            if let Attribute::Value(v) = a {
                out.push(v);
            }
        }
    }
    Ok(out)
}

fn key_present(session: &Session, label: &str, len: u64) -> Result<bool, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    for h in session.find_objects(&template)? {
        let attrs = session.get_attributes(h, &[AttributeType::ValueLen])?;
        if attrs
            .iter()
            .any(|a| matches!(a, Attribute::ValueLen(n) if u64::from(*n) == len))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The helper process: reads the module, token label and PIN from its
/// first line of standard input, logs in, says `ready`, then answers one
/// question per line with `yes` or `no` (or `error ...`) until its input
/// closes. Exits non-zero if it cannot reach the token.
pub fn helper_main() -> i32 {
    let mut out = std::io::stdout().lock();
    // Standard input read directly, never through the process's buffered
    // `Stdin`, whose buffer would keep the PIN for the helper's lifetime.
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return 2;
    };
    let mut raw = std::fs::File::from(fd);
    let Some(hello) = read_secret_line(&mut raw, MAX_HELLO) else {
        return 2;
    };
    let Some((module, token, pin)) = parse_hello(&hello) else {
        let _ = writeln!(out, "error bad greeting");
        return 2;
    };
    drop(hello);
    // Questions carry no secret: buffered from here on.
    let mut input = BufReader::new(raw);
    let session = match helper_session(&module, &token, &pin) {
        Ok(s) => s,
        Err(HsmError::Pkcs11(cryptoki::error::Error::Pkcs11(rv, _)))
            if super::link::pin_refusal(rv).is_some() =>
        {
            let code = super::link::pin_refusal(rv).unwrap_or_default();
            let _ = writeln!(out, "{REFUSED}{code}");
            return 1;
        }
        Err(e) => {
            let _ = writeln!(out, "error {e}");
            return 1;
        }
    };
    if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
        return 1;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        let result = match Question::parse(&line) {
            Some(q) => {
                let _lock = super::token_lock::shared();
                q.answer(&session)
            }
            None => Err(HsmError::Setup(format!("unknown question {}", line.trim()))),
        };
        let reply = match result {
            Ok(true) => "yes".to_owned(),
            Ok(false) => "no".to_owned(),
            Err(e) => format!("error {e}"),
        };
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            return 1;
        }
    }
}

fn helper_session(
    module: &Path,
    token: &TokenSelector,
    pin: &AuthPin,
) -> Result<Session, HsmError> {
    let pkcs11 = Pkcs11::new(module)?;
    // The helper reads the token as the gateway does: under the same lock.
    let _lock = super::token_lock::shared();
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    super::token_lock::keep_only_for(pkcs11.get_library_info()?.manufacturer_id());
    let slot = super::select::find_token(&pkcs11, token)?;
    let session = pkcs11.open_ro_session(slot)?;
    match session.login(UserType::User, Some(pin)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(session)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_line_is_read_without_buffering_past_it_or_reallocating() {
        let token = TokenSelector {
            label: "kmsgate".into(),
            serial: None,
            slot_id: None,
        };
        let hello = hello_line(&[
            b"/usr/lib/softhsm/libsofthsm2.so",
            token.encode().as_bytes(),
            b"pin 4711",
        ]);
        // Sized once: no reallocation left a copy of the PIN behind.
        assert_eq!(hello.capacity(), hello.len());
        assert_eq!(hello.last(), Some(&b'\n'));

        let mut input: Vec<u8> = hello.to_vec();
        input.extend_from_slice(b"next question\n");
        let mut input = std::io::Cursor::new(input);
        let line = read_secret_line(&mut input, MAX_HELLO).unwrap();
        let buffer = line.as_ptr();
        assert_eq!(line.capacity(), MAX_HELLO);
        // Nothing past the line was read: the questions are still there.
        let mut rest = String::new();
        input.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "next question\n");

        let (module, read_token, pin) = parse_hello(&line).unwrap();
        assert_eq!(line.as_ptr(), buffer);
        assert_eq!(module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(read_token.encode(), token.encode());
        assert_eq!(pin.expose_secret(), "pin 4711");

        let long = vec![b'a'; MAX_HELLO + 1];
        assert!(read_secret_line(&mut std::io::Cursor::new(long), MAX_HELLO).is_none());
        assert!(parse_hello(b"00 11").is_none());
        assert!(parse_hello(b"00 11 2 33").is_none());
    }

    #[test]
    fn key_questions_carry_the_length_and_old_ones_mean_aes_256() {
        let q = Question::Key("kmsgate/key/x/v1/n".into(), 28);
        match Question::parse(&q.line()) {
            Some(Question::Key(l, 28)) => assert_eq!(l, "kmsgate/key/x/v1/n"),
            other => panic!("{:?}", other.map(|q| q.describe())),
        }
        let old = format!("key {}", hex::encode("kmsgate/key/y/v1"));
        assert!(matches!(Question::parse(&old), Some(Question::Key(_, 32))));
        let bad = format!("key {} many", hex::encode("kmsgate/key/y/v1"));
        assert!(Question::parse(&bad).is_none());
        let pair = Question::Pair("kmsgate/key/z/v1/n".into());
        assert!(
            matches!(Question::parse(&pair.line()), Some(Question::Pair(l)) if l == "kmsgate/key/z/v1/n")
        );
    }
}
