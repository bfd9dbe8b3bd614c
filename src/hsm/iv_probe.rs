//! `kmsgate doctor`'s IV check: which ways of making the AES-GCM IV the
//! token accepts, tried with a session key (never stored on the token):
//!
//! * `caller`: C_Encrypt with an IV kmsgate chose;
//! * `token`: C_Encrypt with a zeroed IV buffer that the token fills with
//!   the IV it chose (a token that encrypts under the zero IV instead does
//!   not offer it);
//! * `token_appended`: the same call, the token returning the IV it chose
//!   after the tag;
//! * `message`: C_EncryptMessage with CKG_GENERATE_RANDOM (PKCS#11 3.0).

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::IvSource;
use super::probe::Finding;

const AAD: &[u8] = b"kmsgate doctor";
const DATA: &[u8] = b"iv probe";

/// What the token did with each IV source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    pub caller: bool,
    pub token: bool,
    pub token_appended: bool,
    pub message: bool,
}

impl Offered {
    fn has(self, source: IvSource) -> bool {
        match source {
            IvSource::Caller => self.caller,
            IvSource::Token => self.token,
            IvSource::TokenAppended => self.token_appended,
            IvSource::Message => self.message,
        }
    }

    fn names(self) -> String {
        let names: Vec<&str> = [
            (self.caller, "\"caller\""),
            (self.token, "\"token\""),
            (self.token_appended, "\"token_appended\""),
            (self.message, "\"message\""),
        ]
        .into_iter()
        .filter_map(|(ok, n)| ok.then_some(n))
        .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// Tries each IV source under a fresh session key.
pub fn offered(session: &Session) -> Result<Offered, cryptoki::error::Error> {
    let key = session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Encrypt(true),
        ],
    )?;
    let zero = with_iv(session, key, [0; 12]);
    let appended =
        |out: &[u8]| out.len() == DATA.len() + 16 + 12 && out[out.len() - 12..] != [0; 12];
    let found = Offered {
        caller: with_iv(session, key, [7; 12]).is_some(),
        token: zero.as_ref().is_some_and(|(iv, _)| *iv != [0; 12]),
        token_appended: zero.as_ref().is_some_and(|(_, out)| appended(out)),
        message: message(session, key).is_some_and(|iv| iv != [0; 12]),
    };
    let _ = session.destroy_object(key);
    Ok(found)
}

/// The IV buffer after C_Encrypt, and the output.
fn with_iv(session: &Session, key: ObjectHandle, mut iv: [u8; 12]) -> Option<([u8; 12], Vec<u8>)> {
    let params = GcmParams::new(&mut iv, AAD, 128.into()).ok()?;
    let out = session
        .encrypt(&Mechanism::AesGcm(params), key, DATA)
        .ok()?;
    Some((iv, out))
}

fn message(session: &Session, key: ObjectHandle) -> Option<[u8; 12]> {
    super::crypto::message_encrypt(session, key, AAD, DATA)
        .ok()
        .map(|(iv, _, _)| iv)
}

/// The doctor's verdict on `configured`.
pub fn finding(session: &Session, configured: IvSource) -> Finding {
    let name = match configured {
        IvSource::Caller => "caller",
        IvSource::Token => "token",
        IvSource::TokenAppended => "token_appended",
        IvSource::Message => "message",
    };
    match offered(session) {
        Ok(o) if o.has(configured) => Finding::pass(
            "IV source",
            format!(
                "hsm.iv_source = \"{name}\" works; the token offers {}",
                o.names()
            ),
        ),
        Ok(o) => Finding::fail(
            "IV source",
            format!(
                "hsm.iv_source = \"{name}\" does not work on this token; it offers {}",
                o.names()
            ),
            "set hsm.iv_source to one the token offers (docs/hsm-vendors.md)",
        ),
        Err(e) => Finding::warn(
            "IV source",
            format!("no session key to try IVs with: {e}"),
            "check by hand that encryption works with the configured hsm.iv_source",
        ),
    }
}
