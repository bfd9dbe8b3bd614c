//! The nemesis's clients: a few tokio tasks, each owning its keys and
//! aliases (history.rs: one owner each, one request at a time), each
//! choosing operations at random from a weighted table and sending every
//! request to a gateway chosen at random, with a deadline. Every request and
//! its outcome goes to the history.
//!
//! A client draws the same number of random values for every step whatever
//! the answers were, so the same seed gives the same sequence of choices;
//! which key a choice lands on, and whether it makes sense there, depends on
//! what earlier requests were answered (and on key ids the token makes).
//!
//! Seldom, and also from the client's seed, a client hangs up: it sends a
//! request by hand and half-closes the connection without reading the
//! answer (`client-half-close`), or gives up after a few milliseconds
//! (`client-timeout`). Both are logged as faults, and the request as an
//! operation with outcome Unknown.
//!
//! With `NEMESIS_FOCUS=races` ([`Focus::Races`]) the clients choose from
//! [`FOCUS_TABLE`] (many CreateKey, RotateKeyOnDemand and 7-day
//! ScheduleKeyDeletion, few reads; AWS_KMS keys only) and, before each
//! choice, cancel at once any deletion whose date the test clock has
//! reached, through another gateway than the one that scheduled it; a
//! client with a deletion pending now and then waits (up to 3 s, polling
//! every 2 ms) for the clock to move, and cancels the moment it does.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, DataKeySpec, GrantOperation, OriginType, Tag, WrappingKeySpec,
};
use base64::Engine;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::history::{Call, Fault, Op, Outcome, Result_};
use super::{Focus, Run};
use crate::common::{ACCOUNT, request_bytes_at};

/// Every request's deadline: past it the outcome is Unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Live keys a client keeps at most.
const MAX_KEYS: usize = 6;
const MAX_ALIASES: usize = 4;
/// Ciphertexts a client keeps to decrypt.
const MAX_BLOBS: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    CreateKey,
    Import,
    DeleteImported,
    Enable,
    Disable,
    Schedule,
    Cancel,
    Rotate,
    EnableRotation,
    DisableRotation,
    Tag,
    Untag,
    Policy,
    Grant,
    Revoke,
    CreateAlias,
    UpdateAlias,
    DeleteAlias,
    Encrypt,
    DataKey,
    Decrypt,
    Describe,
}

const TABLE: &[(Kind, u64)] = &[
    (Kind::CreateKey, 3),
    (Kind::Import, 3),
    (Kind::DeleteImported, 1),
    (Kind::Enable, 3),
    (Kind::Disable, 2),
    (Kind::Schedule, 2),
    (Kind::Cancel, 3),
    (Kind::Rotate, 2),
    (Kind::EnableRotation, 2),
    (Kind::DisableRotation, 1),
    (Kind::Tag, 2),
    (Kind::Untag, 1),
    (Kind::Policy, 1),
    (Kind::Grant, 2),
    (Kind::Revoke, 1),
    (Kind::CreateAlias, 2),
    (Kind::UpdateAlias, 3),
    (Kind::DeleteAlias, 1),
    (Kind::Encrypt, 12),
    (Kind::DataKey, 6),
    (Kind::Decrypt, 5),
    (Kind::Describe, 3),
];

/// `NEMESIS_FOCUS=races`: writes that make key objects, and deletions.
const FOCUS_TABLE: &[(Kind, u64)] = &[
    (Kind::CreateKey, 8),
    (Kind::Rotate, 6),
    (Kind::Schedule, 5),
    (Kind::Cancel, 1),
    (Kind::Enable, 3),
    (Kind::Disable, 1),
    (Kind::CreateAlias, 1),
    (Kind::Encrypt, 4),
    (Kind::DataKey, 1),
    (Kind::Decrypt, 2),
    (Kind::Describe, 1),
];

fn pick(focus: Focus, r: u64) -> Kind {
    match focus {
        Focus::All => super::weighted(TABLE, r),
        Focus::Races => super::weighted(FOCUS_TABLE, r),
    }
}

struct Key {
    id: String,
    external: bool,
    /// The material this client imports (EXTERNAL keys), always the same.
    material: [u8; 32],
    /// (clock days when ScheduleKeyDeletion was sent, its window).
    deletion: Option<(u64, u32)>,
    /// The gateway the last ScheduleKeyDeletion went to.
    scheduled_via: u32,
    grants: Vec<String>,
}

type Context = Vec<(String, String)>;

struct Client {
    id: u32,
    run: Arc<Run>,
    rng: StdRng,
    keys: Vec<Key>,
    aliases: Vec<String>,
    next_alias: u32,
    blobs: VecDeque<(Vec<u8>, Context)>,
}

/// How one request goes out.
#[derive(Clone, Copy)]
enum How {
    Normal,
    /// A deadline of this many milliseconds (the client-timeout fault).
    Impatient(u64),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn error_outcome<E>(e: &SdkError<E, aws_sdk_kms::config::http::HttpResponse>) -> Outcome
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(ctx) => Outcome::Err {
            request_id: e.request_id().map(str::to_owned),
            status: ctx.raw().status().as_u16(),
            code: ctx.err().code().unwrap_or_default().to_owned(),
            message: ctx.err().message().unwrap_or_default().to_owned(),
        },
        other => Outcome::Unknown {
            why: format!("{}", DisplayErrorContext(other)),
        },
    }
}

/// Runs client `id` until the run stops.
pub async fn client(id: u32, seed: u64, run: Arc<Run>) {
    let mut c = Client {
        id,
        run,
        rng: StdRng::seed_from_u64(seed),
        keys: Vec::new(),
        aliases: Vec::new(),
        next_alias: 0,
        blobs: VecDeque::new(),
    };
    while !c.run.stopping() {
        c.step().await;
    }
}

impl Client {
    async fn step(&mut self) {
        let r: [u64; 8] = std::array::from_fn(|_| self.rng.random());
        let pause = r[7] % 20;
        let gateway = (r[0] % u64::from(self.run.cluster.gateways())) as u32;
        let focus = self.run.focus;
        if focus == Focus::Races && self.cancel_when_due(r).await {
            return;
        }
        let mut kind = pick(focus, r[1]);
        let send = match r[3] % 1000 {
            0..15 => How::Impatient(1 + r[6] % 150),
            _ => How::Normal,
        };
        let half_close = (15..30).contains(&(r[3] % 1000));
        if self.keys.len() < 2 || (kind == Kind::CreateKey && self.keys.len() >= MAX_KEYS) {
            kind = if self.keys.len() < MAX_KEYS {
                Kind::CreateKey
            } else if focus == Focus::Races {
                Kind::Rotate
            } else {
                Kind::Encrypt
            };
        }
        // Encryptions go mostly to a client's two oldest keys, so that
        // those reach the GCM usage bound and rotate by themselves.
        let spread = if matches!(kind, Kind::Encrypt | Kind::DataKey) && r[6] % 10 < 6 {
            self.keys.len().min(2)
        } else {
            self.keys.len()
        };
        let k = (r[2] % spread.max(1) as u64) as usize;
        if half_close && kind != Kind::CreateKey && self.hang_up(gateway, kind, k, r).await {
            return;
        }
        self.act(gateway, kind, k, r, send).await;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }

    /// Sends `fut` (the request `call` to `gateway`) and records it;
    /// returns its answer when it was a 2xx.
    async fn send<O, E>(
        &mut self,
        gateway: u32,
        call: Call,
        how: How,
        fut: impl Future<Output = Result<O, SdkError<E, aws_sdk_kms::config::http::HttpResponse>>>,
        result: impl FnOnce(&O) -> Result_,
    ) -> (Option<O>, Outcome)
    where
        O: RequestId,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let rec = &self.run.rec;
        let seq = rec.next_seq();
        let start_ms = rec.now_ms();
        let clock_days = self.run.clock_days.load(Ordering::SeqCst);
        let deadline = match how {
            How::Normal => REQUEST_TIMEOUT,
            How::Impatient(ms) => Duration::from_millis(ms),
        };
        let (answer, outcome) = match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(out)) => {
                let outcome = Outcome::Ok {
                    request_id: out.request_id().unwrap_or_default().to_owned(),
                    result: result(&out),
                };
                (Some(out), outcome)
            }
            Ok(Err(e)) => (None, error_outcome(&e)),
            Err(_) => {
                let why = match how {
                    How::Normal => format!("no answer within {} s", deadline.as_secs()),
                    How::Impatient(ms) => {
                        rec.fault(&Fault {
                            start_ms,
                            end_ms: rec.now_ms(),
                            kind: "client-timeout".into(),
                            target: format!("client {} -> gateway {gateway}", self.id),
                            detail: format!("seq {seq}: gave up after {ms} ms"),
                        });
                        format!("client gave up after {ms} ms (client-timeout fault)")
                    }
                };
                (None, Outcome::Unknown { why })
            }
        };
        rec.op(&Op {
            seq,
            client: self.id,
            gateway,
            start_ms,
            end_ms: rec.now_ms(),
            clock_days,
            call,
            outcome: outcome.clone(),
        });
        (answer, outcome)
    }

    fn context(&self, r: u64) -> Context {
        if r.is_multiple_of(2) {
            Vec::new()
        } else {
            vec![
                ("client".to_owned(), format!("c{}", self.id)),
                ("n".to_owned(), format!("{}", r % 100)),
            ]
        }
    }

    async fn act(&mut self, gateway: u32, kind: Kind, k: usize, r: [u64; 8], how: How) {
        let kms = self.run.cluster.client(gateway);
        if kind == Kind::CreateKey {
            let external = r[4].is_multiple_of(4) && self.run.focus == Focus::All;
            let origin = if external { "EXTERNAL" } else { "AWS_KMS" };
            let mut req = kms.create_key();
            if external {
                req = req.origin(OriginType::External);
            }
            let (out, _) = self
                .send(
                    gateway,
                    Call::CreateKey {
                        origin: origin.into(),
                    },
                    how,
                    req.send(),
                    |o| Result_ {
                        key_id: o.key_metadata.as_ref().map(|m| m.key_id.clone()),
                        ..Default::default()
                    },
                )
                .await;
            if let Some(id) = out.and_then(|o| o.key_metadata).map(|m| m.key_id) {
                // From this step's draws, so that an answer never changes
                // how many values the client draws.
                let mut material = [0u8; 32];
                for (chunk, v) in material.chunks_mut(8).zip([r[4], r[5], r[6], r[7]]) {
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
                self.keys.push(Key {
                    id,
                    external,
                    material,
                    deletion: None,
                    scheduled_via: 0,
                    grants: Vec::new(),
                });
            }
            return;
        }
        let key = self.keys[k].id.clone();
        let outcome = match kind {
            Kind::CreateKey => unreachable!("handled above"),
            Kind::Import | Kind::DeleteImported if !self.keys[k].external => {
                self.describe(&kms, gateway, &key, how).await
            }
            Kind::Import => self.import(&kms, gateway, k, how).await,
            Kind::DeleteImported => {
                let fut = kms.delete_imported_key_material().key_id(&key).send();
                let call = Call::DeleteImportedKeyMaterial {
                    key_id: key.clone(),
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::Enable => {
                let fut = kms.enable_key().key_id(&key).send();
                let call = Call::EnableKey {
                    key_id: key.clone(),
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::Disable => {
                let fut = kms.disable_key().key_id(&key).send();
                let call = Call::DisableKey {
                    key_id: key.clone(),
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::Schedule => {
                let days = match self.run.focus {
                    Focus::All => 7 + (r[4] % 24) as u32,
                    Focus::Races => 7,
                };
                let sent_at = self.run.clock_days.load(Ordering::SeqCst);
                let fut = kms
                    .schedule_key_deletion()
                    .key_id(&key)
                    .pending_window_in_days(days as i32)
                    .send();
                let call = Call::ScheduleKeyDeletion {
                    key_id: key.clone(),
                    days,
                };
                let (out, outcome) = self
                    .send(gateway, call, how, fut, |o| Result_ {
                        key_id: o.key_id.clone(),
                        key_state: o.key_state.as_ref().map(|s| s.as_str().to_owned()),
                        deletion_date_s: o.deletion_date.map(|d| d.secs()),
                        ..Default::default()
                    })
                    .await;
                if out.is_some() || matches!(outcome, Outcome::Unknown { .. }) {
                    self.keys[k].deletion = Some((sent_at, days));
                    self.keys[k].scheduled_via = gateway;
                }
                outcome
            }
            Kind::Cancel => {
                let now = self.run.clock_days.load(Ordering::SeqCst);
                let near_due = self.keys[k]
                    .deletion
                    .is_some_and(|(at, days)| now + 3 >= at + u64::from(days));
                // (The focus mix always sends it: cancel_when_due chose it.)
                if !near_due && !r[4].is_multiple_of(3) && self.run.focus == Focus::All {
                    self.describe(&kms, gateway, &key, how).await
                } else {
                    let fut = kms.cancel_key_deletion().key_id(&key).send();
                    let call = Call::CancelKeyDeletion {
                        key_id: key.clone(),
                    };
                    let (out, outcome) = self
                        .send(gateway, call, how, fut, |o| Result_ {
                            key_id: o.key_id.clone(),
                            ..Default::default()
                        })
                        .await;
                    if out.is_some() {
                        self.keys[k].deletion = None;
                    }
                    outcome
                }
            }
            Kind::Rotate => {
                let fut = kms.rotate_key_on_demand().key_id(&key).send();
                let call = Call::RotateKeyOnDemand {
                    key_id: key.clone(),
                };
                self.send(gateway, call, how, fut, |o| Result_ {
                    key_id: o.key_id.clone(),
                    ..Default::default()
                })
                .await
                .1
            }
            Kind::EnableRotation => {
                let period_days = 90 + (r[4] % 31) as u32;
                let fut = kms
                    .enable_key_rotation()
                    .key_id(&key)
                    .rotation_period_in_days(period_days as i32)
                    .send();
                let call = Call::EnableKeyRotation {
                    key_id: key.clone(),
                    period_days,
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::DisableRotation => {
                let fut = kms.disable_key_rotation().key_id(&key).send();
                let call = Call::DisableKeyRotation {
                    key_id: key.clone(),
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::Tag => {
                let (tag_key, tag_value) = (format!("t{}", r[4] % 4), format!("v{}", r[5] % 1000));
                let fut = kms
                    .tag_resource()
                    .key_id(&key)
                    .tags(
                        Tag::builder()
                            .tag_key(&tag_key)
                            .tag_value(&tag_value)
                            .build()
                            .unwrap_or_else(|e| panic!("a tag: {e}")),
                    )
                    .send();
                let call = Call::TagResource {
                    key_id: key.clone(),
                    tag_key,
                    tag_value,
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::Untag => {
                let tag_key = format!("t{}", r[4] % 4);
                let fut = kms.untag_resource().key_id(&key).tag_keys(&tag_key).send();
                let call = Call::UntagResource {
                    key_id: key.clone(),
                    tag_key,
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::Policy => {
                let policy = format!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Root{n}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#,
                    n = r[4] % 100
                );
                let fut = kms.put_key_policy().key_id(&key).policy(&policy).send();
                let call = Call::PutKeyPolicy {
                    key_id: key.clone(),
                    policy,
                };
                self.send(gateway, call, how, fut, |_| Result_::default())
                    .await
                    .1
            }
            Kind::Grant => {
                let grantee = format!("arn:aws:iam::{ACCOUNT}:user/grantee-{}", r[4] % 3);
                let operations = if r[5].is_multiple_of(2) {
                    vec![GrantOperation::Encrypt, GrantOperation::Decrypt]
                } else {
                    vec![GrantOperation::GenerateDataKey]
                };
                let names = operations.iter().map(|o| o.as_str().to_owned()).collect();
                let fut = kms
                    .create_grant()
                    .key_id(&key)
                    .grantee_principal(&grantee)
                    .set_operations(Some(operations))
                    .send();
                let call = Call::CreateGrant {
                    key_id: key.clone(),
                    grantee,
                    operations: names,
                };
                let (out, outcome) = self
                    .send(gateway, call, how, fut, |o| Result_ {
                        grant_id: o.grant_id.clone(),
                        ..Default::default()
                    })
                    .await;
                if let Some(g) = out.and_then(|o| o.grant_id) {
                    self.keys[k].grants.push(g);
                }
                outcome
            }
            Kind::Revoke if self.keys[k].grants.is_empty() => {
                self.describe(&kms, gateway, &key, how).await
            }
            Kind::Revoke => {
                let i = (r[4] % self.keys[k].grants.len() as u64) as usize;
                let grant_id = self.keys[k].grants[i].clone();
                let fut = kms.revoke_grant().key_id(&key).grant_id(&grant_id).send();
                let call = Call::RevokeGrant {
                    key_id: key.clone(),
                    grant_id,
                };
                let (out, outcome) = self
                    .send(gateway, call, how, fut, |_| Result_::default())
                    .await;
                if out.is_some() {
                    self.keys[k].grants.remove(i);
                }
                outcome
            }
            Kind::CreateAlias | Kind::UpdateAlias | Kind::DeleteAlias => {
                self.alias(&kms, gateway, kind, &key, r, how).await
            }
            Kind::Encrypt => {
                let len = 1 + (r[4] % 48) as usize;
                let plaintext: Vec<u8> = r[5]
                    .to_le_bytes()
                    .iter()
                    .chain(r[6].to_le_bytes().iter())
                    .copied()
                    .cycle()
                    .take(len)
                    .collect();
                let context = self.context(r[5]);
                let mut req = kms
                    .encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(plaintext.clone()));
                for (k, v) in &context {
                    req = req.encryption_context(k, v);
                }
                let call = Call::Encrypt {
                    key_id: key.clone(),
                    plaintext_b64: b64(&plaintext),
                    context: context.clone(),
                };
                let (out, outcome) = self
                    .send(gateway, call, how, req.send(), |o| Result_ {
                        key_id: o.key_id.clone(),
                        ciphertext_b64: o.ciphertext_blob.as_ref().map(|b| b64(b.as_ref())),
                        ..Default::default()
                    })
                    .await;
                if let Some(blob) = out.and_then(|o| o.ciphertext_blob) {
                    self.keep(blob.into_inner(), context);
                }
                outcome
            }
            Kind::DataKey => {
                let context = self.context(r[5]);
                let mut req = kms
                    .generate_data_key()
                    .key_id(&key)
                    .key_spec(DataKeySpec::Aes256);
                for (k, v) in &context {
                    req = req.encryption_context(k, v);
                }
                let call = Call::GenerateDataKey {
                    key_id: key.clone(),
                    context: context.clone(),
                };
                let (out, outcome) = self
                    .send(gateway, call, how, req.send(), |o| Result_ {
                        key_id: o.key_id.clone(),
                        ciphertext_b64: o.ciphertext_blob.as_ref().map(|b| b64(b.as_ref())),
                        plaintext_b64: o.plaintext.as_ref().map(|b| b64(b.as_ref())),
                        ..Default::default()
                    })
                    .await;
                if let Some(blob) = out.and_then(|o| o.ciphertext_blob) {
                    self.keep(blob.into_inner(), context);
                }
                outcome
            }
            Kind::Decrypt if self.blobs.is_empty() => self.describe(&kms, gateway, &key, how).await,
            Kind::Decrypt => {
                let (blob, context) = self.blobs[(r[4] % self.blobs.len() as u64) as usize].clone();
                let mut req = kms.decrypt().ciphertext_blob(Blob::new(blob.clone()));
                for (k, v) in &context {
                    req = req.encryption_context(k, v);
                }
                let call = Call::Decrypt {
                    ciphertext_b64: b64(&blob),
                    context,
                };
                self.send(gateway, call, how, req.send(), |o| Result_ {
                    key_id: o.key_id.clone(),
                    plaintext_b64: o.plaintext.as_ref().map(|b| b64(b.as_ref())),
                    ..Default::default()
                })
                .await
                .1
            }
            Kind::Describe => self.describe(&kms, gateway, &key, how).await,
        };
        // A key the token no longer has is left alone from now on (whether
        // that was right is the checker's question).
        if let Outcome::Err { code, .. } = &outcome
            && code == "NotFoundException"
            && kind != Kind::Decrypt
        {
            self.keys.remove(k);
        }
    }

    /// The first key whose deletion date the test clock has reached (by
    /// the client's estimate).
    fn due_key(&self) -> Option<usize> {
        let now = self.run.clock_days.load(Ordering::SeqCst);
        self.keys.iter().position(|k| {
            k.deletion
                .is_some_and(|(at, days)| now >= at + u64::from(days))
        })
    }

    /// Focus mode: cancels a deletion as soon as its date has come,
    /// through another gateway than the one that scheduled it (whose
    /// scheduler may be destroying the key right now); one time in three
    /// with a deletion pending and none due, first waits up to 3 s for the
    /// clock to move, and half of those times cancels 0 to 40 ms before an
    /// announced jump lands instead (the cancel then commits while
    /// schedulers that read the moved clock decide to destroy). Returns
    /// whether it sent a cancel.
    async fn cancel_when_due(&mut self, r: [u64; 8]) -> bool {
        let mut due = self.due_key();
        if due.is_none()
            && self.keys.iter().any(|k| k.deletion.is_some())
            && (r[3] / 1000).is_multiple_of(3)
        {
            let early = (r[3] / 3000).is_multiple_of(2).then_some(r[6] % 40);
            let before = self.run.clock_days.load(Ordering::SeqCst);
            let waited = std::time::Instant::now();
            while self.run.clock_days.load(Ordering::SeqCst) == before
                && waited.elapsed() < Duration::from_secs(3)
                && !self.run.stopping()
            {
                let jump_at = self.run.jump_at_ms.load(Ordering::SeqCst);
                if let Some(ms) = early
                    && jump_at != 0
                    && self.run.rec.now_ms() + ms >= jump_at
                {
                    due = self.keys.iter().position(|k| k.deletion.is_some());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            due = due.or_else(|| self.due_key());
        }
        let Some(k) = due else {
            return false;
        };
        let n = self.run.cluster.gateways();
        let via = self.keys[k].scheduled_via;
        let gateway = if n > 1 {
            (via + 1 + (r[0] % u64::from(n - 1)) as u32) % n
        } else {
            via
        };
        let id = self.keys[k].id.clone();
        self.act(gateway, Kind::Cancel, k, r, How::Normal).await;
        // Refused (past its date) or unknown: not cancelled again; the
        // key's next request tells (NotFound drops it).
        if let Some(key) = self.keys.iter_mut().find(|key| key.id == id) {
            key.deletion = None;
        }
        true
    }

    fn keep(&mut self, blob: Vec<u8>, context: Context) {
        if self.blobs.len() >= MAX_BLOBS {
            self.blobs.pop_front();
        }
        self.blobs.push_back((blob, context));
    }

    async fn describe(
        &mut self,
        kms: &aws_sdk_kms::Client,
        gateway: u32,
        key: &str,
        how: How,
    ) -> Outcome {
        let fut = kms.describe_key().key_id(key).send();
        let call = Call::DescribeKey {
            key_id: key.to_owned(),
        };
        self.send(gateway, call, how, fut, |o| Result_ {
            key_id: o.key_metadata.as_ref().map(|m| m.key_id.clone()),
            key_state: o
                .key_metadata
                .as_ref()
                .and_then(|m| m.key_state.as_ref())
                .map(|s| s.as_str().to_owned()),
            ..Default::default()
        })
        .await
        .1
    }

    /// GetParametersForImport (not in the history: it changes no key), then
    /// ImportKeyMaterial of the key's one material.
    async fn import(
        &mut self,
        kms: &aws_sdk_kms::Client,
        gateway: u32,
        k: usize,
        how: How,
    ) -> Outcome {
        let key = self.keys[k].id.clone();
        let alg = AlgorithmSpec::RsaesOaepSha1;
        let params = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kms.get_parameters_for_import()
                .key_id(&key)
                .wrapping_algorithm(alg.clone())
                .wrapping_key_spec(WrappingKeySpec::Rsa2048)
                .send(),
        )
        .await;
        let Ok(Ok(params)) = params else {
            return Outcome::Unknown {
                why: "GetParametersForImport failed; nothing imported".into(),
            };
        };
        let (Some(token), Some(public_key)) = (params.import_token, params.public_key) else {
            return Outcome::Unknown {
                why: "GetParametersForImport answered without a token".into(),
            };
        };
        let material = self.keys[k].material;
        let wrapped = crate::import::wrap(public_key.as_ref(), &alg, &material);
        let fut = crate::import::import(kms, &key, token.as_ref(), wrapped);
        let call = Call::ImportKeyMaterial {
            key_id: key.clone(),
            material_b64: b64(&material),
        };
        self.send(gateway, call, how, fut, |_| Result_::default())
            .await
            .1
    }

    async fn alias(
        &mut self,
        kms: &aws_sdk_kms::Client,
        gateway: u32,
        kind: Kind,
        key: &str,
        r: [u64; 8],
        how: How,
    ) -> Outcome {
        if kind == Kind::CreateAlias || self.aliases.is_empty() {
            if self.aliases.len() >= MAX_ALIASES {
                return self.describe(kms, gateway, key, how).await;
            }
            let alias = format!("alias/nemesis-c{}-{}", self.id, self.next_alias);
            self.next_alias += 1;
            let fut = kms
                .create_alias()
                .alias_name(&alias)
                .target_key_id(key)
                .send();
            let call = Call::CreateAlias {
                alias: alias.clone(),
                key_id: key.to_owned(),
            };
            let (_, outcome) = self
                .send(gateway, call, how, fut, |_| Result_::default())
                .await;
            // Kept unless refused: an Unknown one may exist.
            if !matches!(outcome, Outcome::Err { .. }) {
                self.aliases.push(alias);
            }
            return outcome;
        }
        let i = (r[4] % self.aliases.len() as u64) as usize;
        let alias = self.aliases[i].clone();
        if kind == Kind::UpdateAlias {
            let fut = kms
                .update_alias()
                .alias_name(&alias)
                .target_key_id(key)
                .send();
            let call = Call::UpdateAlias {
                alias,
                key_id: key.to_owned(),
            };
            return self
                .send(gateway, call, how, fut, |_| Result_::default())
                .await
                .1;
        }
        let fut = kms.delete_alias().alias_name(&alias).send();
        let call = Call::DeleteAlias { alias };
        let (out, outcome) = self
            .send(gateway, call, how, fut, |_| Result_::default())
            .await;
        if out.is_some() {
            self.aliases.remove(i);
        }
        outcome
    }

    /// The client-half-close fault: the request `kind` on key `k`, written
    /// by hand to `gateway` (whole, or cut in the middle of its body), the
    /// sending side shut, and the connection dropped after a moment without
    /// reading the answer. Returns false if `kind` has no hand-written form.
    async fn hang_up(&mut self, gateway: u32, kind: Kind, k: usize, r: [u64; 8]) -> bool {
        let key = self.keys[k].id.clone();
        let (target, body, call) = match kind {
            Kind::Enable => (
                "EnableKey",
                serde_json::json!({ "KeyId": key }),
                Call::EnableKey { key_id: key },
            ),
            Kind::Disable => (
                "DisableKey",
                serde_json::json!({ "KeyId": key }),
                Call::DisableKey { key_id: key },
            ),
            Kind::Cancel => (
                "CancelKeyDeletion",
                serde_json::json!({ "KeyId": key }),
                Call::CancelKeyDeletion { key_id: key },
            ),
            Kind::Rotate => (
                "RotateKeyOnDemand",
                serde_json::json!({ "KeyId": key }),
                Call::RotateKeyOnDemand { key_id: key },
            ),
            Kind::Tag => {
                let (tag_key, tag_value) = (format!("t{}", r[4] % 4), format!("v{}", r[5] % 1000));
                (
                    "TagResource",
                    serde_json::json!({ "KeyId": key, "Tags": [{ "TagKey": tag_key, "TagValue": tag_value }] }),
                    Call::TagResource {
                        key_id: key,
                        tag_key,
                        tag_value,
                    },
                )
            }
            Kind::UpdateAlias if !self.aliases.is_empty() => {
                let alias = self.aliases[(r[4] % self.aliases.len() as u64) as usize].clone();
                (
                    "UpdateAlias",
                    serde_json::json!({ "AliasName": alias, "TargetKeyId": key }),
                    Call::UpdateAlias { alias, key_id: key },
                )
            }
            _ => return false,
        };
        let whole = !r[6].is_multiple_of(3);
        let hold_ms = r[6] % 50;
        let (addr, endpoint) = self.run.cluster.address(gateway);
        let rec = &self.run.rec;
        let seq = rec.next_seq();
        let start_ms = rec.now_ms();
        let clock_days = self.run.clock_days.load(Ordering::SeqCst);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let bytes = request_bytes_at(
            &addr,
            &endpoint,
            Some(&format!("TrentService.{target}")),
            &body,
            Some(SystemTime::now()),
            &[],
        );
        let cut = if whole {
            bytes.len()
        } else {
            bytes.len() - body.len() / 2
        };
        let sent = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.write_all(&bytes[..cut])?;
            s.shutdown(std::net::Shutdown::Write)?;
            s.set_read_timeout(Some(Duration::from_millis(hold_ms.max(1))))?;
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            Ok(())
        })
        .await;
        let detail = match &sent {
            Ok(Ok(())) => format!(
                "seq {seq}: {target} {}, write side shut, dropped after {hold_ms} ms",
                if whole { "sent whole" } else { "cut mid-body" }
            ),
            Ok(Err(e)) => format!("seq {seq}: {target} not sent: {e}"),
            Err(e) => format!("seq {seq}: {target}: {e}"),
        };
        rec.fault(&Fault {
            start_ms,
            end_ms: rec.now_ms(),
            kind: "client-half-close".into(),
            target: format!("client {} -> gateway {gateway}", self.id),
            detail: detail.clone(),
        });
        rec.op(&Op {
            seq,
            client: self.id,
            gateway,
            start_ms,
            end_ms: rec.now_ms(),
            clock_days,
            call,
            outcome: Outcome::Unknown {
                why: format!("client-half-close fault: {detail}"),
            },
        });
        true
    }
}
