//! The checker against a real gateway: a few real requests, their true
//! history, which must pass, and doctored copies of it (or of the run's
//! info, or of the audit trail), each of which must be reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{AlgorithmSpec, GrantOperation, OriginType, WrappingKeySpec};
use base64::Engine;

use super::super::history::{Call, Op, Outcome, Result_, RunInfo};
use super::{Report, check};
use crate::common::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes the history as the runner would, one op per request.
struct Recorder {
    ops: Vec<Op>,
    started: Instant,
    clock_days: u64,
}

impl Recorder {
    fn ok(&mut self, call: Call, request_id: Option<&str>, result: Result_) -> u64 {
        self.push(
            call,
            Outcome::Ok {
                request_id: request_id.expect("a request id").to_owned(),
                result,
            },
        )
    }

    fn push(&mut self, call: Call, outcome: Outcome) -> u64 {
        let seq = self.ops.len() as u64;
        let ms = self.started.elapsed().as_millis() as u64;
        self.ops.push(Op {
            seq,
            client: 0,
            gateway: 0,
            start_ms: ms,
            end_ms: ms,
            clock_days: self.clock_days,
            call,
            outcome,
        });
        seq
    }

    async fn create(&mut self, kms: &aws_sdk_kms::Client, external: bool) -> String {
        let mut req = kms.create_key();
        if external {
            req = req.origin(OriginType::External);
        }
        let out = req.send().await.unwrap();
        let id = out.key_metadata().unwrap().key_id().to_owned();
        self.ok(
            Call::CreateKey {
                origin: if external { "EXTERNAL" } else { "AWS_KMS" }.into(),
            },
            out.request_id(),
            Result_ {
                key_id: Some(id.clone()),
                ..Result_::default()
            },
        );
        id
    }

    async fn encrypt(
        &mut self,
        kms: &aws_sdk_kms::Client,
        key: &str,
        text: &str,
        context: &[(&str, &str)],
    ) {
        let mut req = kms
            .encrypt()
            .key_id(key)
            .plaintext(Blob::new(text.as_bytes()));
        for (k, v) in context {
            req = req.encryption_context(*k, *v);
        }
        let out = req.send().await.unwrap();
        self.ok(
            Call::Encrypt {
                key_id: key.into(),
                plaintext_b64: b64(text.as_bytes()),
                context: context
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            },
            out.request_id(),
            Result_ {
                key_id: out.key_id().map(str::to_owned),
                ciphertext_b64: out.ciphertext_blob().map(|b| b64(b.as_ref())),
                ..Result_::default()
            },
        );
    }
}

/// What the scenario made: the gateway, its run directory's parts, and
/// the seqs and keys the doctored histories need.
struct Scenario {
    gw: Gateway,
    audit: PathBuf,
    ops: Vec<Op>,
    info: RunInfo,
    /// Disabled, then enabled again (the EnableKey seq).
    toggled: String,
    enable_seq: u64,
    /// Destroyed at the end of its waiting period (ScheduleKeyDeletion seq).
    doomed: String,
    schedule_seq: u64,
    /// The DescribeKey that found it missing.
    missing_seq: u64,
    /// An Encrypt's seq, a Decrypt's of its ciphertext, and a TagResource's.
    encrypt_seq: u64,
    decrypt_seq: u64,
    tag_seq: u64,
}

async fn scenario(dir: &Path) -> Scenario {
    let audit = dir.join("audit.jsonl");
    let token = Token::with_config(&format!(
        "[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\ngcm_usage_bound = 1000\n\
         [audit]\npath = \"{}\"\n",
        audit.display()
    ));
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let mut rec = Recorder {
        ops: Vec::new(),
        started: Instant::now(),
        clock_days: 0,
    };

    // A: encrypted under, tagged, aliased, and left disabled.
    let a = rec.create(&kms, false).await;
    let encrypt_seq = rec.ops.len() as u64;
    rec.encrypt(&kms, &a, "a0", &[("who", "a")]).await;
    rec.encrypt(&kms, &a, "a1", &[]).await;
    rec.encrypt(&kms, &a, "a2", &[("x", "1"), ("y", "2")]).await;
    let out = kms
        .generate_data_key()
        .key_id(&a)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::GenerateDataKey {
            key_id: a.clone(),
            context: vec![],
        },
        out.request_id(),
        Result_ {
            key_id: out.key_id().map(str::to_owned),
            ciphertext_b64: out.ciphertext_blob().map(|b| b64(b.as_ref())),
            plaintext_b64: out.plaintext().map(|b| b64(b.as_ref())),
            ..Result_::default()
        },
    );
    let out = kms
        .tag_resource()
        .key_id(&a)
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("team")
                .tag_value("blue")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let tag_seq = rec.ok(
        Call::TagResource {
            key_id: a.clone(),
            tag_key: "team".into(),
            tag_value: "blue".into(),
        },
        out.request_id(),
        Result_::default(),
    );
    let out = kms
        .create_alias()
        .alias_name("alias/nem-a")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::CreateAlias {
            alias: "alias/nem-a".into(),
            key_id: a.clone(),
        },
        out.request_id(),
        Result_::default(),
    );
    let first = match &rec.ops[encrypt_seq as usize].outcome {
        Outcome::Ok { result, .. } => result.ciphertext_b64.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(super::model::b64(&first).unwrap()))
        .encryption_context("who", "a")
        .send()
        .await
        .unwrap();
    let decrypt_seq = rec.ok(
        Call::Decrypt {
            ciphertext_b64: first,
            context: vec![("who".into(), "a".into())],
        },
        out.request_id(),
        Result_ {
            key_id: out.key_id().map(str::to_owned),
            plaintext_b64: out.plaintext().map(|b| b64(b.as_ref())),
            ..Result_::default()
        },
    );
    let out = kms.disable_key().key_id(&a).send().await.unwrap();
    rec.ok(
        Call::DisableKey { key_id: a.clone() },
        out.request_id(),
        Result_::default(),
    );

    // C: disabled and enabled again; a grant and a rotation schedule; a
    // tag whose TagResource got no answer (never sent: it did not happen).
    let c = rec.create(&kms, false).await;
    let out = kms.disable_key().key_id(&c).send().await.unwrap();
    rec.ok(
        Call::DisableKey { key_id: c.clone() },
        out.request_id(),
        Result_::default(),
    );
    let out = kms.enable_key().key_id(&c).send().await.unwrap();
    let enable_seq = rec.ok(
        Call::EnableKey { key_id: c.clone() },
        out.request_id(),
        Result_::default(),
    );
    let out = kms
        .create_grant()
        .key_id(&c)
        .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/app"))
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::CreateGrant {
            key_id: c.clone(),
            grantee: format!("arn:aws:iam::{ACCOUNT}:user/app"),
            operations: vec!["Decrypt".into()],
        },
        out.request_id(),
        Result_ {
            grant_id: out.grant_id().map(str::to_owned),
            ..Result_::default()
        },
    );
    let out = kms
        .enable_key_rotation()
        .key_id(&c)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::EnableKeyRotation {
            key_id: c.clone(),
            period_days: 90,
        },
        out.request_id(),
        Result_::default(),
    );
    let out = kms.rotate_key_on_demand().key_id(&c).send().await.unwrap();
    rec.ok(
        Call::RotateKeyOnDemand { key_id: c.clone() },
        out.request_id(),
        Result_::default(),
    );
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
    );
    let out = kms
        .put_key_policy()
        .key_id(&c)
        .policy(&policy)
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::PutKeyPolicy {
            key_id: c.clone(),
            policy,
        },
        out.request_id(),
        Result_::default(),
    );
    rec.push(
        Call::TagResource {
            key_id: c.clone(),
            tag_key: "maybe".into(),
            tag_value: "so".into(),
        },
        Outcome::Unknown {
            why: "timeout".into(),
        },
    );
    rec.encrypt(&kms, &c, "c0", &[]).await;

    // E: imported material, a ciphertext, the material deleted.
    let e = rec.create(&kms, true).await;
    let material = [7u8; 32];
    let alg = AlgorithmSpec::RsaesOaepSha1;
    let p = crate::import::parameters(&kms, &e, alg.clone(), WrappingKeySpec::Rsa2048).await;
    let wrapped = crate::import::wrap(&p.public_key, &alg, &material);
    let out = crate::import::import(&kms, &e, &p.token, wrapped)
        .await
        .unwrap();
    rec.ok(
        Call::ImportKeyMaterial {
            key_id: e.clone(),
            material_b64: b64(&material),
        },
        out.request_id(),
        Result_::default(),
    );
    rec.encrypt(&kms, &e, "e0", &[("m", "7")]).await;
    let out = kms
        .delete_imported_key_material()
        .key_id(&e)
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::DeleteImportedKeyMaterial { key_id: e.clone() },
        out.request_id(),
        Result_::default(),
    );

    // D: scheduled for deletion, still pending at the end.
    let d = rec.create(&kms, false).await;
    rec.encrypt(&kms, &d, "d0", &[]).await;
    let out = kms
        .schedule_key_deletion()
        .key_id(&d)
        .pending_window_in_days(30)
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::ScheduleKeyDeletion {
            key_id: d.clone(),
            days: 30,
        },
        out.request_id(),
        Result_ {
            key_id: out.key_id().map(str::to_owned),
            key_state: out.key_state().map(|s| s.as_str().to_owned()),
            deletion_date_s: out.deletion_date().map(|d| d.secs()),
            ..Result_::default()
        },
    );

    // B: scheduled for deletion, and destroyed when the clock passes it.
    let b = rec.create(&kms, false).await;
    rec.encrypt(&kms, &b, "b0", &[]).await;
    let out = kms
        .schedule_key_deletion()
        .key_id(&b)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let schedule_seq = rec.ok(
        Call::ScheduleKeyDeletion {
            key_id: b.clone(),
            days: 7,
        },
        out.request_id(),
        Result_ {
            key_id: out.key_id().map(str::to_owned),
            key_state: out.key_state().map(|s| s.as_str().to_owned()),
            deletion_date_s: out.deletion_date().map(|d| d.secs()),
            ..Result_::default()
        },
    );
    gw.token.set_clock_days_ahead(8);
    rec.clock_days = 8;
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing_seq = loop {
        match kms.describe_key().key_id(&b).send().await {
            Ok(_) => {
                assert!(Instant::now() < deadline, "key {b} not destroyed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => {
                let (code, message) = error_of(&err);
                assert_eq!(code, "NotFoundException", "{message}");
                break rec.push(
                    Call::DescribeKey { key_id: b.clone() },
                    Outcome::Err {
                        request_id: err.request_id().map(str::to_owned),
                        status: 400,
                        code,
                        message,
                    },
                );
            }
        }
    };

    let info = RunInfo {
        seed: 0,
        seconds: 0,
        gateways: 1,
        workers_per_gateway: 1,
        gcm_usage_bound: 1000,
        sync_bound_ms: 300,
        token_dir: gw.token.path().display().to_string(),
        audit_files: vec![audit.display().to_string()],
        config: gw.token.config().display().to_string(),
    };
    Scenario {
        gw,
        audit,
        ops: rec.ops,
        info,
        toggled: c,
        enable_seq,
        doomed: b,
        schedule_seq,
        missing_seq,
        encrypt_seq,
        decrypt_seq,
        tag_seq,
    }
}

/// Writes `ops` as a run's history in a fresh directory and checks it.
async fn check_history(s: &Scenario, ops: &[Op], info: &RunInfo) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = ops
        .iter()
        .map(|o| serde_json::to_string(o).unwrap() + "\n")
        .collect();
    std::fs::write(dir.path().join("history.jsonl"), lines).unwrap();
    std::fs::write(
        dir.path().join("run.json"),
        serde_json::to_string(info).unwrap(),
    )
    .unwrap();
    check(dir.path(), info, &[s.gw.client()], &s.gw.token).await
}

fn without(ops: &[Op], seq: u64) -> Vec<Op> {
    ops.iter().filter(|o| o.seq != seq).cloned().collect()
}

fn op_mut(ops: &mut [Op], seq: u64) -> &mut Op {
    ops.iter_mut().find(|o| o.seq == seq).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_passes_a_true_history_and_reports_each_doctored_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path()).await;

    let report = check_history(&s, &s.ops, &s.info).await;
    eprintln!("true history:\n{report}");
    assert!(
        report.violations.is_empty(),
        "the true history fails:\n{report}"
    );
    let checks = report.checks.join("\n");
    for made in [
        "1 Decrypts acknowledged during the run of acknowledged ciphertexts gave their plaintext",
        "6 acknowledged ciphertexts decrypted (2 keys enabled or re-imported",
        "1 not, their key destroyed; 1 not, their key pending deletion or without material",
        "1 audit chains verified",
        "kmsgate check-keys clean",
    ] {
        assert!(checks.contains(made), "{made:?} not in:\n{checks}");
    }

    // Each doctored run, and what its report must say.
    let mut failures = Vec::new();
    let mut expect = |what: &str, report: Report, needle: &str| {
        if !report.violations.iter().any(|v| v.contains(needle)) {
            failures.push(format!("{what}: no violation with {needle:?}:\n{report}"));
        }
    };

    // An acknowledged DisableKey the key does not show: its EnableKey
    // left out of the history.
    let report = check_history(&s, &without(&s.ops, s.enable_seq), &s.info).await;
    expect(
        "DisableKey not in effect",
        report,
        &format!("key {}: KeyState Enabled", s.toggled),
    );

    // An acknowledged ciphertext replaced by garbage (its tag changed).
    let mut ops = s.ops.clone();
    if let Outcome::Ok { result, .. } = &mut op_mut(&mut ops, s.encrypt_seq).outcome {
        let mut blob = super::model::b64(result.ciphertext_b64.as_deref().unwrap()).unwrap();
        *blob.last_mut().unwrap() ^= 1;
        result.ciphertext_b64 = Some(b64(&blob));
    }
    let report = check_history(&s, &ops, &s.info).await;
    expect(
        "garbage ciphertext",
        report,
        &format!("ciphertext of Encrypt seq {} ", s.encrypt_seq),
    );

    // A Decrypt during the run that answered another plaintext.
    let mut ops = s.ops.clone();
    if let Outcome::Ok { result, .. } = &mut op_mut(&mut ops, s.decrypt_seq).outcome {
        result.plaintext_b64 = Some(b64(b"forged"));
    }
    let report = check_history(&s, &ops, &s.info).await;
    expect(
        "Decrypt answered another plaintext",
        report,
        &format!(
            "Decrypt seq {} (request {}",
            s.decrypt_seq,
            match &op_mut(&mut ops, s.decrypt_seq).outcome {
                Outcome::Ok { request_id, .. } => request_id.clone(),
                _ => String::new(),
            }
        ),
    );

    // More encryptions than the bound.
    let info = RunInfo {
        gcm_usage_bound: 3,
        ..s.info.clone()
    };
    let report = check_history(&s, &s.ops, &info).await;
    expect(
        "GCM bound",
        report,
        "4 acknowledged GCM encryptions, above the bound of 3",
    );

    // An acknowledged request the audit trail does not have.
    let mut ops = s.ops.clone();
    if let Outcome::Ok { request_id, .. } = &mut op_mut(&mut ops, s.tag_seq).outcome {
        *request_id = "00000000-0000-4000-8000-000000000000".into();
    }
    let report = check_history(&s, &ops, &s.info).await;
    expect(
        "missing audit record",
        report,
        &format!(
            "TagResource seq {} (request 00000000-0000-4000-8000-000000000000, gateway 0) has no audit record",
            s.tag_seq
        ),
    );

    // A key destroyed whose last acknowledged state was Enabled: its
    // ScheduleKeyDeletion left out. Found missing at the end ...
    let ops: Vec<Op> = without(&without(&s.ops, s.schedule_seq), s.missing_seq);
    let report = check_history(&s, &ops, &s.info).await;
    expect(
        "destroyed while enabled",
        report,
        &format!("key {} destroyed (DescribeKey NotFoundException", s.doomed),
    );
    // ... and mid-run, by a request that found it missing.
    let report = check_history(&s, &without(&s.ops, s.schedule_seq), &s.info).await;
    expect(
        "missing mid-run while enabled",
        report,
        &format!(
            "key {} was missing (NotFoundException) for DescribeKey seq {}",
            s.doomed, s.missing_seq
        ),
    );

    // An acknowledged CancelKeyDeletion between the deletion and the
    // request that found the key missing: destroyed after its deletion
    // was cancelled, mid-run and for good at the end.
    let mut ops: Vec<Op> = s.ops.clone();
    let missing = ops.iter().position(|o| o.seq == s.missing_seq).unwrap();
    ops[missing].seq += 1;
    let cancel = op(
        s.missing_seq,
        Call::CancelKeyDeletion {
            key_id: s.doomed.clone(),
        },
        ok("00000000-0000-4000-8000-00000000cance"),
    );
    ops.insert(missing, cancel);
    let report = check_history(&s, &ops, &s.info).await;
    expect(
        "destroyed after an acknowledged cancel",
        report,
        &format!(
            "key {} destroyed (DescribeKey NotFoundException, gone from ListKeys) after CancelKeyDeletion seq {} \
             (request 00000000-0000-4000-8000-00000000cance) was acknowledged; missing from seq {} \
             on: destroyed after its deletion was cancelled (the cancel-versus-destroy race)",
            s.doomed,
            s.missing_seq,
            s.missing_seq + 1
        ),
    );

    // A tampered audit file: one record's operation changed.
    let copy = tempfile::tempdir().unwrap();
    let tampered = copy.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&s.audit).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(
        lines[2].contains("\"eventName\":\"Encrypt\""),
        "{}",
        lines[2]
    );
    lines[2] = lines[2].replace("\"eventName\":\"Encrypt\"", "\"eventName\":\"Decrypt\"");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let info = RunInfo {
        audit_files: vec![tampered.display().to_string()],
        ..s.info.clone()
    };
    let report = check_history(&s, &s.ops, &info).await;
    expect("tampered audit file", report, "kmsgate audit verify");

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ------------------------------------------------ the model and comparisons

fn op(seq: u64, call: Call, outcome: Outcome) -> Op {
    Op {
        seq,
        client: 0,
        gateway: 0,
        start_ms: 0,
        end_ms: 0,
        clock_days: 0,
        call,
        outcome,
    }
}

fn ok(id: &str) -> Outcome {
    Outcome::Ok {
        request_id: id.into(),
        result: Result_::default(),
    }
}

#[test]
fn the_model_keeps_both_outcomes_of_an_unknown_write_and_none_of_a_refused_one() {
    use super::model::{Clock, KeyState, Model};
    let key = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    let created = Outcome::Ok {
        request_id: "r0".into(),
        result: Result_ {
            key_id: Some(key.into()),
            ..Result_::default()
        },
    };
    let disable = || Call::DisableKey { key_id: key.into() };
    let clock = Clock {
        now_s: 0.0,
        days: 0,
    };
    let states = |ops: &[Op]| -> Vec<KeyState> {
        Model::fold(ops, clock).keys[key]
            .state
            .may
            .iter()
            .cloned()
            .collect()
    };
    let create = op(
        0,
        Call::CreateKey {
            origin: "AWS_KMS".into(),
        },
        created,
    );
    assert_eq!(
        states(&[
            create.clone(),
            op(1, disable(), Outcome::Unknown { why: "cut".into() })
        ]),
        [KeyState::Enabled, KeyState::Disabled]
    );
    let server_error = Outcome::Err {
        request_id: None,
        status: 500,
        code: "KMSInternalException".into(),
        message: String::new(),
    };
    assert_eq!(
        states(&[create.clone(), op(1, disable(), server_error)]),
        [KeyState::Enabled, KeyState::Disabled]
    );
    let refused = Outcome::Err {
        request_id: Some("r1".into()),
        status: 400,
        code: "KMSInvalidStateException".into(),
        message: String::new(),
    };
    assert_eq!(
        states(&[create.clone(), op(1, disable(), refused)]),
        [KeyState::Enabled]
    );
    // An acknowledged write sent long enough after an unknown one decides
    // again (the unknown one may land up to LINGER_MS after it was sent);
    // the history is folded in seq order whatever the file's order.
    let mut enable = op(2, Call::EnableKey { key_id: key.into() }, ok("r2"));
    enable.start_ms = super::model::LINGER_MS + 1;
    assert_eq!(
        states(&[
            enable,
            op(1, disable(), Outcome::Unknown { why: "cut".into() }),
            create,
        ]),
        [KeyState::Enabled]
    );
}

/// Issue 19, findings 3 and 4: a DisableKey and an UpdateAlias that timed
/// out (no answer within 10 s) landed about two minutes later, after their
/// owner's next acknowledged EnableKey and UpdateAlias; the model folded
/// them in seq order only and reported a lost write.
#[test]
fn an_unanswered_write_may_land_after_later_acknowledged_writes_for_a_while() {
    use super::model::{Clock, KeyState, LINGER_MS, Model};
    let key = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    let other = "6fa459ea-ee8a-3ca4-894e-db77e160355e";
    let clock = Clock {
        now_s: 0.0,
        days: 0,
    };
    let created = |seq, id: &str| {
        op(
            seq,
            Call::CreateKey {
                origin: "AWS_KMS".into(),
            },
            Outcome::Ok {
                request_id: format!("r{seq}"),
                result: Result_ {
                    key_id: Some(id.into()),
                    ..Result_::default()
                },
            },
        )
    };
    let at = |mut o: Op, ms: u64| {
        o.start_ms = ms;
        o.end_ms = ms + 10;
        o
    };
    let unknown = || Outcome::Unknown {
        why: "no answer within 10 s".into(),
    };
    let states = |ops: &[Op]| -> Vec<KeyState> {
        Model::fold(ops, clock).keys[key]
            .state
            .may
            .iter()
            .cloned()
            .collect()
    };
    let disable = at(
        op(1, Call::DisableKey { key_id: key.into() }, unknown()),
        1_000,
    );
    let enable = |ms| at(op(2, Call::EnableKey { key_id: key.into() }, ok("r2")), ms);
    assert_eq!(
        states(&[created(0, key), disable.clone(), enable(120_000)]),
        [KeyState::Enabled, KeyState::Disabled]
    );
    // Past the bound, the acknowledged write decides alone.
    assert_eq!(
        states(&[
            created(0, key),
            disable.clone(),
            enable(1_000 + LINGER_MS + 1)
        ]),
        [KeyState::Enabled]
    );
    // A write to another key does not bring it back.
    let other_enable = at(
        op(
            2,
            Call::EnableKey {
                key_id: other.into(),
            },
            ok("r2"),
        ),
        120_000,
    );
    let m = Model::fold(
        &[created(0, key), created(3, other), disable, other_enable],
        clock,
    );
    assert_eq!(
        m.keys[key].state.may.iter().cloned().collect::<Vec<_>>(),
        [KeyState::Enabled, KeyState::Disabled]
    );

    // The alias the nemesis saw: an unanswered UpdateAlias, then an
    // acknowledged one two minutes later; either target may be in force,
    // and the message names the unanswered write.
    let alias = "alias/nemesis-c1-21";
    let update = |seq, target: &str, outcome| {
        op(
            seq,
            Call::UpdateAlias {
                alias: alias.into(),
                key_id: target.into(),
            },
            outcome,
        )
    };
    let create_alias = op(
        10,
        Call::CreateAlias {
            alias: alias.into(),
            key_id: key.into(),
        },
        ok("r10"),
    );
    let m = Model::fold(
        &[
            created(0, key),
            created(3, other),
            at(create_alias, 500),
            at(update(11, other, unknown()), 1_000),
            at(update(12, key, ok("r12")), 146_000),
        ],
        clock,
    );
    let attr = &m.aliases[alias];
    assert!(attr.may.contains(&Some(other.to_owned())), "{attr:?}");
    assert!(attr.may.contains(&Some(key.to_owned())), "{attr:?}");
    assert!(
        attr.expected().contains("unknown outcomes of seq [11]"),
        "{}",
        attr.expected()
    );
}

#[test]
fn two_gateways_answering_differently_are_a_difference() {
    use super::observe::{Read, Snapshot};
    use std::collections::{BTreeMap, BTreeSet};
    let snap = |target: &str| Snapshot {
        listed: Read::Ok(BTreeSet::from(["k".to_owned()])),
        aliases: Read::Ok(BTreeMap::from([(
            "alias/a".to_owned(),
            Some(target.to_owned()),
        )])),
        keys: BTreeMap::new(),
        requests: 0,
    };
    assert!(super::gateways::differences(&[snap("k"), snap("k")]).is_empty());
    let diffs = super::gateways::differences(&[snap("k"), snap("other")]);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].starts_with("ListAliases differs"), "{diffs:?}");
}

#[test]
fn the_audit_chains_under_a_path_are_the_path_and_each_workers_file_with_their_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "audit.jsonl.w1.000002",
        "audit.jsonl.w1",
        "audit.jsonl.w1.000001",
        "audit.jsonl.w1.20261207T181500Z-000002",
        "audit.jsonl.w1.20261207T181500Z-000001",
        ".audit.jsonl.w1.rotated",
        "audit.jsonl.w2",
        "audit.jsonl.w10",
        "audit.jsonl.w10.000001",
        "audit.jsonl.lock",
        "other.jsonl",
    ] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    let names = |path: &Path| -> Vec<Vec<String>> {
        super::audit::chains(path)
            .iter()
            .map(|files| {
                files
                    .iter()
                    .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        names(&dir.path().join("audit.jsonl")),
        [
            vec![
                "audit.jsonl.w1.000001",
                "audit.jsonl.w1.000002",
                "audit.jsonl.w1.20261207T181500Z-000001",
                "audit.jsonl.w1.20261207T181500Z-000002",
                "audit.jsonl.w1"
            ],
            vec!["audit.jsonl.w10.000001", "audit.jsonl.w10"],
            vec!["audit.jsonl.w2"],
        ]
    );
    std::fs::write(dir.path().join("single.log.000001"), "").unwrap();
    std::fs::write(dir.path().join("single.log"), "").unwrap();
    assert_eq!(
        names(&dir.path().join("single.log")),
        [vec!["single.log.000001", "single.log"]]
    );
    assert!(names(&dir.path().join("missing.log")).is_empty());
}

#[test]
fn check_keys_runs_on_a_token_behind_faulty_pkcs11() {
    let token = Token::faulty();
    let info = RunInfo {
        seed: 0,
        seconds: 0,
        gateways: 0,
        workers_per_gateway: 0,
        gcm_usage_bound: 1,
        sync_bound_ms: 0,
        token_dir: token.path().display().to_string(),
        audit_files: vec![],
        config: token.config().display().to_string(),
    };
    let mut report = Report::default();
    super::check_keys(&info, &token, &mut report);
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(
        report.checks,
        ["kmsgate check-keys clean: 0 key versions checked, 0 unsafe"]
    );
}

#[test]
fn a_key_named_through_an_alias_and_not_found_may_be_a_missing_alias() {
    use super::model::{Clock, Model};
    let key = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    let created = Outcome::Ok {
        request_id: "r0".into(),
        result: Result_ {
            key_id: Some(key.into()),
            ..Result_::default()
        },
    };
    let not_found = || Outcome::Err {
        request_id: Some("r2".into()),
        status: 400,
        code: "NotFoundException".into(),
        message: String::new(),
    };
    let describe = |key_id: &str| Call::DescribeKey {
        key_id: key_id.into(),
    };
    let clock = Clock {
        now_s: 0.0,
        days: 0,
    };
    let history = |named: &str| {
        Model::fold(
            &[
                op(
                    0,
                    Call::CreateKey {
                        origin: "AWS_KMS".into(),
                    },
                    created.clone(),
                ),
                op(
                    1,
                    Call::CreateAlias {
                        alias: "alias/a".into(),
                        key_id: key.into(),
                    },
                    ok("r1"),
                ),
                op(2, describe(named), not_found()),
            ],
            clock,
        )
        .violations
    };
    assert!(history("alias/a").is_empty());
    let by_id = history(key);
    assert_eq!(by_id.len(), 1, "{by_id:?}");
    assert!(
        by_id[0].contains("was missing (NotFoundException) for DescribeKey seq 2 (request r2"),
        "{by_id:?}"
    );
    let by_arn = history(&key_arn(key));
    assert_eq!(by_arn.len(), 1, "{by_arn:?}");
}

/// As the nemesis runs it: a supervisor with two workers (audit chains
/// `P.w1`, `P.w2`) and a single gateway (`P`) on one token, requests
/// through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_passes_a_true_history_across_two_gateways_one_with_two_workers() {
    let token = Token::with_config("[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n");
    let audit = token.path().join("audit.jsonl");
    let mut config = std::fs::read_to_string(token.config()).unwrap();
    config.push_str(&format!("\n[audit]\npath = \"{}\"\n", audit.display()));
    std::fs::write(token.config(), config).unwrap();
    let sup = crate::workers::Supervised::start(token.clone(), "2");
    let gw = Gateway::start_on(token.clone());
    let clients = [sup.client(), gw.client()];
    let mut rec = Recorder {
        ops: Vec::new(),
        started: Instant::now(),
        clock_days: 0,
    };
    let mut keys = Vec::new();
    for i in 0..4 {
        let kms = &clients[i % 2];
        let k = rec.create(kms, false).await;
        rec.encrypt(&clients[(i + 1) % 2], &k, "x", &[]).await;
        rec.encrypt(kms, &k, "y", &[("a", "b")]).await;
        keys.push(k);
    }
    let out = clients[0]
        .disable_key()
        .key_id(&keys[0])
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::DisableKey {
            key_id: keys[0].clone(),
        },
        out.request_id(),
        Result_::default(),
    );
    let out = clients[1]
        .create_alias()
        .alias_name("alias/s")
        .target_key_id(&keys[1])
        .send()
        .await
        .unwrap();
    rec.ok(
        Call::CreateAlias {
            alias: "alias/s".into(),
            key_id: keys[1].clone(),
        },
        out.request_id(),
        Result_::default(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = RunInfo {
        seed: 0,
        seconds: 0,
        gateways: 2,
        workers_per_gateway: 2,
        gcm_usage_bound: 1000,
        sync_bound_ms: 500,
        token_dir: token.path().display().to_string(),
        audit_files: vec![audit.display().to_string()],
        config: token.config().display().to_string(),
    };
    let dir = tempfile::tempdir().unwrap();
    let lines: String = rec
        .ops
        .iter()
        .map(|o| serde_json::to_string(o).unwrap() + "\n")
        .collect();
    std::fs::write(dir.path().join("history.jsonl"), lines).unwrap();
    let report = check(dir.path(), &info, &clients, &token).await;
    assert!(report.violations.is_empty(), "{report}");
    let checks = report.checks.join("\n");
    for made in [
        "2 gateways' answers compared for 4 keys",
        "8 acknowledged ciphertexts decrypted (1 keys enabled",
        "(3 files, 3 chains)",
        "3 audit chains verified",
    ] {
        assert!(checks.contains(made), "{made:?} not in:\n{checks}");
    }
}
