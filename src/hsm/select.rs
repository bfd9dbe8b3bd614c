//! Which token is kmsgate's: by label (always), and, where a module shows
//! several tokens with one label (HSM partitions, HA groups and their
//! members), by serial number and/or slot id as well.

use cryptoki::context::Pkcs11;
use cryptoki::slot::{Slot, TokenInfo};

use super::HsmError;

/// `hsm.token_label`, `hsm.token_serial` and `hsm.slot_id`: every one set
/// must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSelector {
    pub label: String,
    pub serial: Option<String>,
    pub slot_id: Option<u64>,
}

/// Separates the fields of [`TokenSelector::encode`] (a byte no label or
/// serial of a real token holds).
const SEP: char = '\u{1f}';

impl TokenSelector {
    pub fn by_label(label: &str) -> TokenSelector {
        TokenSelector {
            label: label.to_owned(),
            serial: None,
            slot_id: None,
        }
    }

    /// Whether the token in `slot`, described by `info`, is the one.
    pub fn matches(&self, slot: Slot, info: &TokenInfo) -> bool {
        info.label().trim_end() == self.label
            && self
                .serial
                .as_deref()
                .is_none_or(|s| info.serial_number().trim() == s)
            && self.slot_id.is_none_or(|id| slot.id() == id)
    }

    /// The token sought, in words: `'kmsgate', serial 1234, in slot 3`.
    pub fn describe(&self) -> String {
        let mut out = format!("'{}'", self.label);
        if let Some(s) = &self.serial {
            out.push_str(&format!(", serial {s}"));
        }
        if let Some(id) = self.slot_id {
            out.push_str(&format!(", in slot {id}"));
        }
        out
    }

    /// One string, for a helper process's greeting.
    pub(super) fn encode(&self) -> String {
        format!(
            "{}{SEP}{}{SEP}{}",
            self.label,
            self.serial.as_deref().unwrap_or_default(),
            self.slot_id.map(|i| i.to_string()).unwrap_or_default()
        )
    }

    pub(super) fn decode(s: &str) -> Option<TokenSelector> {
        let mut fields = s.split(SEP);
        let label = fields.next()?.to_owned();
        let serial = fields.next().filter(|f| !f.is_empty()).map(str::to_owned);
        let slot_id = match fields.next().filter(|f| !f.is_empty()) {
            Some(id) => Some(id.parse().ok()?),
            None => None,
        };
        Some(TokenSelector {
            label,
            serial,
            slot_id,
        })
    }
}

/// The slot whose initialised token `selector` names. Two matches are
/// refused: kmsgate must never write its keys to whichever comes first.
pub fn find_token(pkcs11: &Pkcs11, selector: &TokenSelector) -> Result<Slot, HsmError> {
    let mut found = None;
    for slot in pkcs11.get_slots_with_initialized_token()? {
        let info = pkcs11.get_token_info(slot)?;
        if selector.matches(slot, &info) {
            if let Some(first) = found {
                return Err(HsmError::Setup(format!(
                    "two initialised tokens match {} (slots {} and {}): set hsm.token_serial or hsm.slot_id",
                    selector.describe(),
                    Slot::id(&first),
                    slot.id()
                )));
            }
            found = Some(slot);
        }
    }
    found.ok_or_else(|| {
        HsmError::Setup(format!(
            "no initialised token {}",
            selector.describe().replacen('\'', "labelled '", 1)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_survives_its_encoding() {
        for s in [
            TokenSelector::by_label("kmsgate"),
            TokenSelector {
                label: "part 1".into(),
                serial: Some("1234-ab".into()),
                slot_id: Some(7),
            },
            TokenSelector {
                label: String::new(),
                serial: None,
                slot_id: Some(0),
            },
        ] {
            assert_eq!(TokenSelector::decode(&s.encode()), Some(s));
        }
        assert_eq!(TokenSelector::decode("x\u{1f}\u{1f}seven"), None);
    }
}
