//! The expected state: a fold of each key's and each alias's history (in
//! `seq` order, which the ownership rule makes total per key). Every
//! attribute keeps the set of values it may have: an acknowledged write
//! replaces the set with what the write makes of it, a write that may or
//! may not have happened (`Unknown`, or a 5xx) adds what it would make,
//! and a refusal (4xx) changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;

use super::super::history::{Call, Op, Outcome};

/// The test clock when the checker looks: the gateways' time in seconds
/// and the offset in whole days.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now_s: f64,
    pub days: u64,
}

impl Clock {
    /// Reads the offset the gateways add to the system time.
    pub fn read(offset_file: &std::path::Path) -> Clock {
        let offset = std::fs::read_to_string(offset_file)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Clock {
            now_s: system + offset,
            days: (offset / 86_400.0).floor().max(0.0) as u64,
        }
    }
}

/// When a scheduled deletion falls due: the date the gateway answered
/// (acknowledged) and, always, the test-clock day it falls due at the
/// latest estimate (`clock_days` at send + the waiting period).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    pub date_s: Option<i64>,
    pub days: u64,
}

impl Due {
    pub fn is_due(&self, clock: Clock) -> bool {
        match self.date_s {
            Some(date) => date as f64 <= clock.now_s + 5.0,
            None => self.days <= clock.days,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingImport,
    PendingDeletion(Due),
    /// Destroyed: the history saw it missing.
    Deleted,
}

impl KeyState {
    /// Whether DescribeKey's answer (`None`: NotFound) fits this state.
    pub fn fits(&self, seen: Option<(&str, Option<i64>)>, clock: Clock) -> bool {
        match (self, seen) {
            (KeyState::Deleted, None) => true,
            (KeyState::PendingDeletion(due), None) => due.is_due(clock),
            (KeyState::Enabled, Some((s, _))) => s == "Enabled",
            (KeyState::Disabled, Some((s, _))) => s == "Disabled",
            (KeyState::PendingImport, Some((s, _))) => s == "PendingImport",
            (KeyState::PendingDeletion(due), Some((s, date))) => {
                s == "PendingDeletion"
                    && match (due.date_s, date) {
                        (Some(want), Some(got)) => (want - got).abs() <= 1,
                        _ => true,
                    }
            }
            _ => false,
        }
    }

    /// May the key be destroyed by `clock`?
    pub fn may_be_gone(&self, clock: Clock) -> bool {
        match self {
            KeyState::Deleted => true,
            KeyState::PendingDeletion(due) => due.is_due(clock),
            _ => false,
        }
    }
}

/// A request that decided an attribute.
#[derive(Clone, Debug)]
pub struct Cause {
    pub seq: u64,
    pub request_id: String,
    pub op: String,
}

/// One attribute's possible values, with what decided them.
#[derive(Clone, Debug)]
pub struct Attr<T: Ord + Clone> {
    pub may: BTreeSet<T>,
    /// The last acknowledged write, and the writes after it that may or
    /// may not have happened.
    pub last_ack: Option<Cause>,
    pub unknown_after: Vec<u64>,
}

impl<T: Ord + Clone + std::fmt::Debug> Attr<T> {
    pub fn new(value: T) -> Self {
        Attr {
            may: BTreeSet::from([value]),
            last_ack: None,
            unknown_after: Vec::new(),
        }
    }

    /// An acknowledged write: `step` gives, for each value the attribute
    /// may have had, what the write makes of it and whether the write
    /// would have been accepted in it. Values in which it would have been
    /// refused are dropped (the acknowledgement rules them out), unless
    /// that drops them all (then the model knows less than the gateway).
    pub fn ack(&mut self, cause: Cause, step: impl Fn(&T) -> Vec<(T, bool)>) {
        let all: Vec<(T, bool)> = self.may.iter().flat_map(&step).collect();
        let accepted: BTreeSet<T> = all
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(t, _)| t.clone())
            .collect();
        self.may = if accepted.is_empty() {
            all.into_iter().map(|(t, _)| t).collect()
        } else {
            accepted
        };
        self.last_ack = Some(cause);
        self.unknown_after.clear();
    }

    /// A write that may or may not have taken effect.
    pub fn maybe(&mut self, seq: u64, step: impl Fn(&T) -> Vec<(T, bool)>) {
        let applied: Vec<T> = self
            .may
            .iter()
            .flat_map(&step)
            .filter(|(_, ok)| *ok)
            .map(|(t, _)| t)
            .collect();
        self.may.extend(applied);
        if !self.unknown_after.contains(&seq) {
            self.unknown_after.push(seq);
        }
    }

    /// "one of {..} after <op> seq S (request R), unknown later: seq ..."
    pub fn expected(&self) -> String {
        let mut s = format!("one of {:?}", self.may);
        match &self.last_ack {
            Some(c) => s.push_str(&format!(
                " after {} seq {} (request {})",
                c.op, c.seq, c.request_id
            )),
            None => s.push_str(" (no acknowledged write)"),
        }
        if !self.unknown_after.is_empty() {
            s.push_str(&format!(
                ", then unknown outcomes of seq {:?}",
                self.unknown_after
            ));
        }
        s
    }
}

/// An acknowledged ciphertext and what it must decrypt to.
#[derive(Clone, Debug)]
pub struct Ciphertext {
    pub seq: u64,
    pub request_id: String,
    pub op: &'static str,
    /// The key the blob's header names (else the request's key).
    pub key: Option<String>,
    pub key_version: Option<u32>,
    pub blob: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub context: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct KeyModel {
    pub external: bool,
    pub state: Attr<KeyState>,
    /// (enabled, period in days when enabled, else 0)
    pub rotation: Attr<(bool, u32)>,
    pub tags: BTreeMap<String, Attr<Option<String>>>,
    /// `None`: the default policy (not compared).
    pub policy: Attr<Option<String>>,
    pub grants: BTreeMap<String, Attr<bool>>,
    /// CreateGrants whose grant id the history does not have.
    pub unknown_grants: usize,
    /// Materials imported (acknowledged or maybe), oldest first.
    pub materials: Vec<Vec<u8>>,
    /// The acknowledged CancelKeyDeletion that was the key's last
    /// acknowledged state change when a request found it missing (that
    /// request's seq): if it is gone at the end too, it was destroyed
    /// after its deletion was cancelled (states.rs).
    pub missing_after_cancel: Option<(Cause, u64)>,
}

/// What the whole history says should be.
#[derive(Debug, Default)]
pub struct Model {
    pub keys: BTreeMap<String, KeyModel>,
    pub aliases: BTreeMap<String, Attr<Option<String>>>,
    pub ciphertexts: Vec<Ciphertext>,
    /// Acknowledged GCM encryptions per (key, version), with the last
    /// request that counted.
    pub gcm_uses: BTreeMap<(String, u32), (u64, Cause)>,
    /// CreateKeys that may have made a key the history cannot name.
    pub unknown_creates: usize,
    /// Violations found in the history itself (a key missing mid-run).
    pub violations: Vec<String>,
    pub ops_on_unknown_keys: usize,
}

/// A key id from any KeyId form but an alias (`None`).
pub fn key_id_of(s: &str) -> Option<String> {
    if let Some((_, id)) = s.split_once(":key/") {
        return Some(id.to_owned());
    }
    if s.starts_with("alias/") || s.contains(":alias/") {
        return None;
    }
    Some(s.to_owned())
}

pub fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// The operation's name (`Call`'s tag), as the audit trail names it.
pub fn op_name(call: &Call) -> String {
    serde_json::to_value(call)
        .ok()
        .and_then(|v| v["op"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// How an outcome bears on the model.
enum Effect {
    Ack,
    Maybe,
    Refused,
}

fn effect(outcome: &Outcome) -> Effect {
    match outcome {
        Outcome::Ok { .. } => Effect::Ack,
        Outcome::Err { status, .. } if *status >= 500 => Effect::Maybe,
        Outcome::Err { .. } => Effect::Refused,
        Outcome::Unknown { .. } => Effect::Maybe,
    }
}

fn request_id(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok { request_id, .. } => request_id.clone(),
        Outcome::Err { request_id, .. } => request_id.clone().unwrap_or_default(),
        Outcome::Unknown { .. } => String::new(),
    }
}

/// The state transition of a key-state write: what it makes of `s`, and
/// whether the gateway accepts it in `s`.
fn state_step(call: &Call, op: &Op, external: bool, s: &KeyState) -> Vec<(KeyState, bool)> {
    use KeyState::*;
    let same = vec![(s.clone(), false)];
    match (call, s) {
        (_, Deleted) => vec![(Deleted, false)],
        (Call::EnableKey { .. }, Enabled | Disabled) => vec![(Enabled, true)],
        (Call::DisableKey { .. }, Enabled | Disabled) => vec![(Disabled, true)],
        (Call::ScheduleKeyDeletion { days, .. }, Enabled | Disabled | PendingImport) => {
            let date_s = match &op.outcome {
                Outcome::Ok { result, .. } => result.deletion_date_s,
                _ => None,
            };
            vec![(
                PendingDeletion(Due {
                    date_s,
                    days: op.clock_days + u64::from(*days),
                }),
                true,
            )]
        }
        // Disabled, or waiting for material again if it has none (the
        // model does not follow an EXTERNAL key's material that far).
        (Call::CancelKeyDeletion { .. }, PendingDeletion(_)) if external => {
            vec![(Disabled, true), (PendingImport, true)]
        }
        (Call::CancelKeyDeletion { .. }, PendingDeletion(_)) => vec![(Disabled, true)],
        // Only a key waiting for material takes it (a re-import follows a
        // DeleteImportedKeyMaterial), and is Enabled after.
        (Call::ImportKeyMaterial { .. }, PendingImport) => vec![(Enabled, true)],
        (Call::DeleteImportedKeyMaterial { .. }, Enabled | Disabled | PendingImport) => {
            vec![(PendingImport, true)]
        }
        // A key pending deletion stays so (without its material).
        (Call::DeleteImportedKeyMaterial { .. }, PendingDeletion(_)) => vec![(s.clone(), true)],
        _ => same,
    }
}

/// Whether a NotFoundException to this call means its key is missing.
fn names_only_a_key(call: &Call) -> Option<&str> {
    match call {
        Call::ImportKeyMaterial { key_id, .. }
        | Call::DeleteImportedKeyMaterial { key_id }
        | Call::EnableKey { key_id }
        | Call::DisableKey { key_id }
        | Call::ScheduleKeyDeletion { key_id, .. }
        | Call::CancelKeyDeletion { key_id }
        | Call::RotateKeyOnDemand { key_id }
        | Call::EnableKeyRotation { key_id, .. }
        | Call::DisableKeyRotation { key_id }
        | Call::TagResource { key_id, .. }
        | Call::UntagResource { key_id, .. }
        | Call::PutKeyPolicy { key_id, .. }
        | Call::Encrypt { key_id, .. }
        | Call::GenerateDataKey { key_id, .. }
        | Call::DescribeKey { key_id } => Some(key_id),
        _ => None,
    }
}

/// How long after it was sent a write that got no answer may still take
/// effect. A request that has started to change the token finishes whatever
/// the client does (DESIGN.md decision 22), and before that a write waits
/// for its worker's earlier writes (scheduled rotations among them) with no
/// deadline: the 30-minute run of issue 19 saw a DisableKey and an
/// UpdateAlias that timed out land about two minutes later, after their
/// owner's next acknowledged write.
pub const LINGER_MS: u64 = 600_000;

/// Whether an unanswered `call` may land after later requests: the writes
/// the model follows, but CreateKey, CreateGrant (counted once, with no
/// id to follow) and ImportKeyMaterial (whose material list keeps its
/// order).
fn lingers(call: &Call) -> bool {
    matches!(
        call,
        Call::EnableKey { .. }
            | Call::DisableKey { .. }
            | Call::ScheduleKeyDeletion { .. }
            | Call::CancelKeyDeletion { .. }
            | Call::DeleteImportedKeyMaterial { .. }
            | Call::EnableKeyRotation { .. }
            | Call::DisableKeyRotation { .. }
            | Call::TagResource { .. }
            | Call::UntagResource { .. }
            | Call::PutKeyPolicy { .. }
            | Call::RevokeGrant { .. }
            | Call::CreateAlias { .. }
            | Call::UpdateAlias { .. }
            | Call::DeleteAlias { .. }
    )
}

impl Model {
    /// Folds `ops` (any order; sorted here by `seq`). `clock` is the test
    /// clock now: a key found missing mid-run must have been due by then.
    /// A write that got no answer is applied as maybe-done where it was
    /// sent and again after each acknowledged write to its key or alias
    /// sent within [`LINGER_MS`] of it: it may land after those.
    pub fn fold(ops: &[Op], clock: Clock) -> Model {
        let mut ops: Vec<&Op> = ops.iter().collect();
        ops.sort_by_key(|o| o.seq);
        let mut m = Model::default();
        let mut unanswered: Vec<&Op> = Vec::new();
        for op in ops {
            m.apply(op, clock);
            if matches!(op.outcome, Outcome::Unknown { .. }) && lingers(&op.call) {
                unanswered.push(op);
            } else if matches!(effect(&op.outcome), Effect::Ack) {
                unanswered.retain(|u| u.start_ms + LINGER_MS >= op.start_ms);
                let target = m.target(&op.call);
                if target.is_some() {
                    for u in &unanswered {
                        if m.target(&u.call) == target {
                            m.apply(u, clock);
                        }
                    }
                }
            }
        }
        m
    }

    /// The key or alias a write changes, as the model resolves it now.
    fn target(&self, call: &Call) -> Option<String> {
        match call {
            Call::CreateAlias { alias, .. }
            | Call::UpdateAlias { alias, .. }
            | Call::DeleteAlias { alias } => Some(format!("alias {alias}")),
            Call::RevokeGrant { key_id, .. } | Call::CreateGrant { key_id, .. } => {
                self.resolve(key_id)
            }
            other => names_only_a_key(other).and_then(|k| self.resolve(k)),
        }
    }

    /// The key a KeyId names now (an alias through the model, when it
    /// names one key for certain).
    fn resolve(&self, key_id: &str) -> Option<String> {
        if let Some(id) = key_id_of(key_id) {
            return Some(id);
        }
        let name = key_id
            .rsplit_once(":alias/")
            .map_or(key_id.to_owned(), |(_, n)| format!("alias/{n}"));
        let alias = self.aliases.get(&name)?;
        match alias.may.iter().collect::<Vec<_>>().as_slice() {
            [Some(id)] => Some(id.clone()),
            _ => None,
        }
    }

    fn apply(&mut self, op: &Op, clock: Clock) {
        let name = op_name(&op.call);
        let cause = Cause {
            seq: op.seq,
            request_id: request_id(&op.outcome),
            op: name.clone(),
        };
        let effect = effect(&op.outcome);

        if let Call::CreateKey { origin } = &op.call {
            match (&effect, &op.outcome) {
                (Effect::Ack, Outcome::Ok { result, .. }) => {
                    let Some(id) = result.key_id.as_deref().and_then(key_id_of) else {
                        self.unknown_creates += 1;
                        return;
                    };
                    let external = origin == "EXTERNAL";
                    let mut state = Attr::new(if external {
                        KeyState::PendingImport
                    } else {
                        KeyState::Enabled
                    });
                    state.last_ack = Some(cause);
                    self.keys.insert(
                        id,
                        KeyModel {
                            external,
                            state,
                            rotation: Attr::new((false, 0)),
                            tags: BTreeMap::new(),
                            policy: Attr::new(None),
                            grants: BTreeMap::new(),
                            unknown_grants: 0,
                            materials: Vec::new(),
                            missing_after_cancel: None,
                        },
                    );
                }
                (Effect::Maybe, _) => self.unknown_creates += 1,
                _ => {}
            }
            return;
        }

        if let Call::CreateAlias { alias, key_id } | Call::UpdateAlias { alias, key_id } = &op.call
        {
            let create = matches!(op.call, Call::CreateAlias { .. });
            let target = key_id_of(key_id).or_else(|| self.resolve(key_id));
            let attr = self
                .aliases
                .entry(alias.clone())
                .or_insert_with(|| Attr::new(None));
            let step = |s: &Option<String>| vec![(target.clone(), s.is_none() == create)];
            match effect {
                Effect::Ack => attr.ack(cause, step),
                Effect::Maybe => attr.maybe(op.seq, step),
                Effect::Refused => {}
            }
            return;
        }
        if let Call::DeleteAlias { alias } = &op.call {
            let attr = self
                .aliases
                .entry(alias.clone())
                .or_insert_with(|| Attr::new(None));
            let step = |s: &Option<String>| vec![(None, s.is_some())];
            match effect {
                Effect::Ack => attr.ack(cause, step),
                Effect::Maybe => attr.maybe(op.seq, step),
                Effect::Refused => {}
            }
            return;
        }

        // Ciphertexts and their GCM uses, keyed by the blob's own header.
        if let (Call::Encrypt { .. } | Call::GenerateDataKey { .. }, Outcome::Ok { result, .. }) =
            (&op.call, &op.outcome)
        {
            let (key_id, context, plaintext) = match &op.call {
                Call::Encrypt {
                    key_id,
                    plaintext_b64,
                    context,
                } => (key_id, context, b64(plaintext_b64)),
                Call::GenerateDataKey { key_id, context } => (
                    key_id,
                    context,
                    result.plaintext_b64.as_deref().and_then(b64),
                ),
                _ => unreachable!("matched above"),
            };
            let blob = result
                .ciphertext_b64
                .as_deref()
                .and_then(b64)
                .unwrap_or_default();
            let header = kmsgate::blob::parse(&blob).ok().map(|p| p.header);
            let key = header
                .as_ref()
                .map(|h| h.key_id.to_string())
                .or_else(|| self.resolve(key_id));
            if let (Some(h), Some(k)) = (&header, &key) {
                let entry = self
                    .gcm_uses
                    .entry((k.clone(), h.key_version))
                    .or_insert((0, cause.clone()));
                entry.0 += 1;
                entry.1 = cause.clone();
            }
            if let Some(plaintext) = plaintext {
                self.ciphertexts.push(Ciphertext {
                    seq: op.seq,
                    request_id: cause.request_id.clone(),
                    op: if matches!(op.call, Call::Encrypt { .. }) {
                        "Encrypt"
                    } else {
                        "GenerateDataKey"
                    },
                    key,
                    key_version: header.map(|h| h.key_version),
                    blob,
                    plaintext,
                    context: context.clone(),
                });
            }
        }

        let Some(key_id) = names_only_a_key(&op.call)
            .map(str::to_owned)
            .or_else(|| match &op.call {
                Call::CreateGrant { key_id, .. } | Call::RevokeGrant { key_id, .. } => {
                    Some(key_id.clone())
                }
                _ => None,
            })
            .and_then(|k| self.resolve(&k))
        else {
            return;
        };
        let Some(key) = self.keys.get_mut(&key_id) else {
            self.ops_on_unknown_keys += 1;
            return;
        };

        // A key answered missing mid-run must have been destroyed, which
        // only the end of a waiting period does. (Named through an alias,
        // it may be the alias that was missing.)
        if let Outcome::Err { code, .. } = &op.outcome
            && code == "NotFoundException"
            && names_only_a_key(&op.call).is_some_and(|k| key_id_of(k).is_some())
        {
            if !key.state.may.iter().any(|s| s.may_be_gone(clock)) {
                if let Some(c) = &key.state.last_ack
                    && c.op == "CancelKeyDeletion"
                {
                    key.missing_after_cancel = Some((c.clone(), op.seq));
                }
                self.violations.push(format!(
                    "key {key_id} was missing (NotFoundException) for {name} seq {} (request {}, gateway {}), \
                     but its state was {}",
                    op.seq,
                    cause.request_id,
                    op.gateway,
                    key.state.expected()
                ));
            }
            key.state.may = BTreeSet::from([KeyState::Deleted]);
            key.state.last_ack = Some(cause);
            key.state.unknown_after.clear();
            return;
        }

        let external = key.external;
        match &op.call {
            Call::EnableKey { .. }
            | Call::DisableKey { .. }
            | Call::ScheduleKeyDeletion { .. }
            | Call::CancelKeyDeletion { .. }
            | Call::ImportKeyMaterial { .. }
            | Call::DeleteImportedKeyMaterial { .. } => {
                if let Call::ImportKeyMaterial { material_b64, .. } = &op.call
                    && !matches!(effect, Effect::Refused)
                    && let Some(material) = b64(material_b64)
                {
                    key.materials.retain(|m| *m != material);
                    key.materials.push(material);
                }
                let step = |s: &KeyState| state_step(&op.call, op, external, s);
                match effect {
                    Effect::Ack => key.state.ack(cause, step),
                    Effect::Maybe => key.state.maybe(op.seq, step),
                    Effect::Refused => {}
                }
            }
            Call::EnableKeyRotation { period_days, .. } => {
                let step = |_: &(bool, u32)| vec![((true, *period_days), true)];
                match effect {
                    Effect::Ack => key.rotation.ack(cause, step),
                    Effect::Maybe => key.rotation.maybe(op.seq, step),
                    Effect::Refused => {}
                }
            }
            Call::DisableKeyRotation { .. } => {
                let step = |_: &(bool, u32)| vec![((false, 0), true)];
                match effect {
                    Effect::Ack => key.rotation.ack(cause, step),
                    Effect::Maybe => key.rotation.maybe(op.seq, step),
                    Effect::Refused => {}
                }
            }
            Call::TagResource {
                tag_key, tag_value, ..
            } => {
                let attr = key
                    .tags
                    .entry(tag_key.clone())
                    .or_insert_with(|| Attr::new(None));
                let step = |_: &Option<String>| vec![(Some(tag_value.clone()), true)];
                match effect {
                    Effect::Ack => attr.ack(cause, step),
                    Effect::Maybe => attr.maybe(op.seq, step),
                    Effect::Refused => {}
                }
            }
            Call::UntagResource { tag_key, .. } => {
                let attr = key
                    .tags
                    .entry(tag_key.clone())
                    .or_insert_with(|| Attr::new(None));
                let step = |_: &Option<String>| vec![(None, true)];
                match effect {
                    Effect::Ack => attr.ack(cause, step),
                    Effect::Maybe => attr.maybe(op.seq, step),
                    Effect::Refused => {}
                }
            }
            Call::PutKeyPolicy { policy, .. } => {
                let step = |_: &Option<String>| vec![(Some(policy.clone()), true)];
                match effect {
                    Effect::Ack => key.policy.ack(cause, step),
                    Effect::Maybe => key.policy.maybe(op.seq, step),
                    Effect::Refused => {}
                }
            }
            Call::CreateGrant { .. } => match (&effect, &op.outcome) {
                (Effect::Ack, Outcome::Ok { result, .. }) => match &result.grant_id {
                    Some(id) => {
                        let mut attr = Attr::new(true);
                        attr.last_ack = Some(cause);
                        key.grants.insert(id.clone(), attr);
                    }
                    None => key.unknown_grants += 1,
                },
                (Effect::Maybe, _) => key.unknown_grants += 1,
                _ => {}
            },
            Call::RevokeGrant { grant_id, .. } => {
                if let Some(attr) = key.grants.get_mut(grant_id) {
                    let step = |_: &bool| vec![(false, true)];
                    match effect {
                        Effect::Ack => attr.ack(cause, step),
                        Effect::Maybe => attr.maybe(op.seq, step),
                        Effect::Refused => {}
                    }
                }
            }
            _ => {}
        }
    }
}
