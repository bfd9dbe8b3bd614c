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
//! on a command line.
//!
//! [`ReadBack::Session`] reads back through the writing session instead:
//! enough only for tokens whose every write reaches their storage before
//! C_CreateObject returns (network HSMs), and for tools that do not write.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::objects::APPLICATION;
use super::select::TokenSelector;
use super::{HsmError, TokenSession};

/// The first argument that makes the binary run as the read-back helper.
pub const HELPER_ARG: &str = "__read-back-helper";

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
    pin: SecretString,
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
    ) -> Confirmer {
        Confirmer {
            mode,
            helper: Mutex::new(None),
            exe: std::env::current_exe().ok(),
            module: module.to_owned(),
            token: token.clone(),
            pin,
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
        let exe = self
            .exe
            .as_ref()
            .ok_or_else(|| not_durable("cannot find the kmsgate binary for read-back"))?;
        let mut child = Command::new(exe)
            .arg(HELPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| not_durable(format!("cannot start the read-back helper: {e}")))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(not_durable("read-back helper has no pipes"));
        };
        let hello = format!(
            "{} {} {}\n",
            hex::encode(self.module.as_os_str().as_encoded_bytes()),
            hex::encode(self.token.encode().as_bytes()),
            hex::encode(self.pin.expose_secret().as_bytes()),
        );
        let mut helper = Helper {
            child,
            stdin: {
                stdin
                    .write_all(hello.as_bytes())
                    .and_then(|()| stdin.flush())
                    .map_err(|e| not_durable(format!("read-back helper: {e}")))?;
                stdin
            },
            stdout: BufReader::new(stdout),
        };
        let mut ready = String::new();
        match helper.stdout.read_line(&mut ready) {
            Ok(n) if n > 0 && ready.trim() == "ready" => Ok(helper),
            _ => Err(not_durable(format!(
                "read-back helper did not start: {}",
                ready.trim()
            ))),
        }
    }
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
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let mut hello = String::new();
    if input.read_line(&mut hello).unwrap_or(0) == 0 {
        return 2;
    }
    let fields: Vec<Vec<u8>> = hello
        .split_whitespace()
        .filter_map(|f| hex::decode(f).ok())
        .collect();
    hello.clear();
    let [module, token, pin] = fields.as_slice() else {
        let _ = writeln!(out, "error bad greeting");
        return 2;
    };
    let module = PathBuf::from(String::from_utf8_lossy(module).into_owned());
    let Some(token) = TokenSelector::decode(&String::from_utf8_lossy(token)) else {
        let _ = writeln!(out, "error bad greeting");
        return 2;
    };
    let pin = AuthPin::new(String::from_utf8_lossy(pin).into_owned().into());
    drop(fields);
    let session = match helper_session(&module, &token, &pin) {
        Ok(s) => s,
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
            Some(q) => q.answer(&session),
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
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
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
