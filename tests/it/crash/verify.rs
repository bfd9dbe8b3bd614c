//! The checks after each crash: `check-keys` on the stopped token, then
//! everything the model holds against the restarted gateway.

use super::*;

/// Runs `jobs` with at most 6 in flight; each returns its failures.
async fn all<F>(jobs: Vec<F>) -> Vec<String>
where
    F: Future<Output = Vec<String>> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(6));
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            job.await
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        failures.extend(r.expect("a check panicked"));
    }
    failures
}

/// `kmsgate check-keys` on the stopped gateway's token: exit 0, 0 unsafe,
/// and at least one version per acknowledged key and rotation.
///
/// `check-keys` used to die of SIGSEGV now and then after printing a clean
/// report (its pool threads were still in the library at exit; it now shuts
/// the token down first). A death by a signal is collected in `segfaults`
/// and fails the test at its end, so that one run also shows every other
/// finding.
pub(super) fn check_keys(
    token: &Token,
    model: &Shared,
    checks: &Checks,
    round: usize,
    segfaults: &mut Vec<String>,
) {
    // As Token::run_cli, but keeping the exit status (a signal shows there).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsgate"))
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .env("KMSGATE_TEST_CLOCK_OFFSET_FILE", token.clock_file())
        .arg("check-keys")
        .arg("--config")
        .arg(token.config())
        .output()
        .expect("kmsgate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report_complete = stdout
        .trim_end()
        .ends_with(" key versions checked, 0 unsafe");
    if out.status.code().is_none() && report_complete {
        segfaults.push(format!("round {round}: check-keys {}", out.status));
    } else {
        assert!(
            out.status.success(),
            "round {round}: check-keys failed after the crash ({}):\n{stdout}\n{stderr}",
            out.status
        );
    }
    let summary = stdout.lines().last().unwrap_or_default().trim().to_owned();
    let versions: usize = summary
        .strip_suffix(" key versions checked, 0 unsafe")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("round {round}: check-keys does not report 0 unsafe: {summary:?}\n{stdout}")
        });
    assert!(
        !stdout.contains("UNSAFE"),
        "round {round}: check-keys lists an unsafe version:\n{stdout}"
    );
    let expected: usize = lock(model).keys.values().map(|k| 1 + k.rotations).sum();
    assert!(
        versions >= expected,
        "round {round}: check-keys saw {versions} key versions, the acknowledged keys and rotations need {expected}"
    );
    Checks::add(&checks.check_keys_runs, 1);
    Checks::add(&checks.versions_checked, versions);
    // Key objects of writes cut short before their record: never used,
    // listed so that they can be counted.
    let orphans = stdout
        .lines()
        .filter(|l| l.starts_with("orphan key object "))
        .count();
    checks.orphans.fetch_max(orphans, Ordering::Relaxed);
}

async fn list_keys(kms: &aws_sdk_kms::Client) -> Vec<String> {
    let mut ids = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = within(
            "ListKeys",
            kms.list_keys()
                .limit(1000)
                .set_marker(marker.clone())
                .send(),
        )
        .await
        .unwrap_or_else(|e| panic!("ListKeys: {:?}", error_of(&e)));
        ids.extend(
            out.keys
                .unwrap_or_default()
                .into_iter()
                .filter_map(|k| k.key_id),
        );
        if !out.truncated {
            return ids;
        }
        marker = out.next_marker;
    }
}

async fn on_demand_rotations(kms: &aws_sdk_kms::Client, key: &str) -> Result<usize, String> {
    let mut n = 0;
    let mut marker: Option<String> = None;
    loop {
        let out = within(
            "ListKeyRotations",
            kms.list_key_rotations()
                .key_id(key)
                .limit(1000)
                .set_marker(marker.clone())
                .send(),
        )
        .await
        .map_err(|e| format!("ListKeyRotations {key}: {:?}", error_of(&e)))?;
        n += out
            .rotations
            .unwrap_or_default()
            .iter()
            .filter(|r| r.rotation_type == Some(RotationType::OnDemand))
            .count();
        if !out.truncated {
            return Ok(n);
        }
        marker = out.next_marker;
    }
}

/// Everything acknowledged is there after the restart; unacknowledged
/// writes either landed or not, and their observed outcome becomes the
/// model's.
pub(super) async fn verify(gw: &Gateway, model: &Shared, checks: &Arc<Checks>, round: usize) {
    let kms = gw.client();
    let mut failures = Vec::new();

    // No half-made key: every listed key is an acknowledged one or one of the
    // CreateKey requests in flight at a kill, and is whole (below).
    let listed = list_keys(&kms).await;
    {
        let mut m = lock(model);
        let unknown: Vec<&String> = listed.iter().filter(|k| !m.keys.contains_key(*k)).collect();
        Checks::add(&checks.unanswered[CREATE], m.creates_in_flight);
        Checks::add(&checks.landed[CREATE], unknown.len());
        if unknown.len() > m.creates_in_flight {
            failures.push(format!(
                "ListKeys shows {} keys nobody was told about, but only {} CreateKey requests were unanswered: {unknown:?}",
                unknown.len(),
                m.creates_in_flight
            ));
        }
        for id in unknown.into_iter().cloned().collect::<Vec<_>>() {
            m.keys.insert(
                id,
                KeyModel {
                    kind: Kind::Work,
                    deletion: Deletion::No,
                    rotations: 0,
                    rotations_in_flight: 0,
                },
            );
        }
        // What was not listed now never landed.
        m.creates_in_flight = 0;
        for id in m.keys.keys() {
            if !listed.contains(id) {
                // LOST WRITE: an acknowledged CreateKey is not listed.
                failures.push(format!("acknowledged key {id} is not in ListKeys"));
            }
        }
    }

    // Every key describes OK, in the state acknowledged; every Enabled one
    // makes a data key; rotated keys list their rotations.
    type Todo = (String, Deletion, usize, usize);
    let todo: Vec<Todo> = lock(model)
        .keys
        .iter()
        .map(|(id, k)| (id.clone(), k.deletion, k.rotations, k.rotations_in_flight))
        .collect();
    let mut jobs = Vec::new();
    for (id, deletion, rotations, in_flight) in todo {
        let kms = kms.clone();
        let model = model.clone();
        let checks = checks.clone();
        jobs.push(async move {
            let mut failures = Vec::new();
            let meta = match within("DescribeKey", kms.describe_key().key_id(&id).send()).await {
                Ok(out) => out.key_metadata.unwrap(),
                Err(e) => {
                    // LOST WRITE (or a half-made key): a listed or acknowledged
                    // key that does not describe.
                    return vec![format!("DescribeKey {id}: {:?}", error_of(&e))];
                }
            };
            Checks::add(&checks.keys_described, 1);
            let state = meta.key_state.clone();
            let pending = match (deletion, &state) {
                (Deletion::Yes | Deletion::Maybe, Some(KeyState::PendingDeletion)) => true,
                (Deletion::No | Deletion::Maybe, Some(KeyState::Enabled)) => false,
                _ => {
                    failures.push(format!(
                        "key {id}: state {state:?}, but its deletion was {deletion:?}"
                    ));
                    return failures;
                }
            };
            if deletion == Deletion::Maybe {
                Checks::add(&checks.unanswered[DELETION], 1);
                Checks::add(&checks.landed[DELETION], pending as usize);
            }
            if pending {
                Checks::add(&checks.pending_deletion, 1);
                lock(&model).keys.get_mut(&id).unwrap().deletion = Deletion::Yes;
            } else {
                lock(&model).keys.get_mut(&id).unwrap().deletion = Deletion::No;
                let out = within(
                    "GenerateDataKey",
                    kms.generate_data_key()
                        .key_id(&id)
                        .key_spec(DataKeySpec::Aes256)
                        .encryption_context("crash-check", &id)
                        .send(),
                )
                .await;
                match out {
                    Ok(out) if out.plaintext.as_ref().map(|p| p.as_ref().len()) == Some(32) => {
                        Checks::add(&checks.data_keys, 1)
                    }
                    Ok(out) => failures.push(format!("GenerateDataKey {id}: {out:?}")),
                    Err(e) => failures.push(format!(
                        "Enabled key {id} cannot GenerateDataKey (half-made?): {:?}",
                        error_of(&e)
                    )),
                }
            }
            if rotations + in_flight > 0 {
                match on_demand_rotations(&kms, &id).await {
                    Ok(n) if n >= rotations && n <= rotations + in_flight => {
                        Checks::add(&checks.rotated_keys, 1);
                        Checks::add(&checks.rotations_listed, n);
                        Checks::add(&checks.unanswered[ROTATION], in_flight);
                        Checks::add(&checks.landed[ROTATION], n - rotations);
                        let mut m = lock(&model);
                        let k = m.keys.get_mut(&id).unwrap();
                        k.rotations = n;
                        k.rotations_in_flight = 0;
                    }
                    // LOST WRITE when n < rotations: an acknowledged rotation
                    // is missing.
                    Ok(n) => failures.push(format!(
                        "key {id}: {n} on-demand rotations listed, {rotations} acknowledged and {in_flight} unanswered"
                    )),
                    Err(e) => failures.push(e),
                }
            }
            failures
        });
    }
    failures.extend(all(jobs).await);

    // Aliases resolve to their last acknowledged target or to the target of
    // a write in flight at a kill.
    let aliases: Vec<(String, Option<String>, Vec<String>)> = lock(model)
        .aliases
        .iter()
        .map(|(n, a)| (n.clone(), a.target.clone(), a.in_flight.clone()))
        .collect();
    for (name, target, in_flight) in aliases {
        let out = within("DescribeKey alias", kms.describe_key().key_id(&name).send()).await;
        let got = match out {
            Ok(out) => Some(out.key_metadata.unwrap().key_id),
            Err(e) if error_of(&e).0 == "NotFoundException" => None,
            Err(e) => {
                failures.push(format!("DescribeKey {name}: {:?}", error_of(&e)));
                continue;
            }
        };
        let allowed =
            got.as_ref() == target.as_ref() || got.as_ref().is_some_and(|g| in_flight.contains(g));
        if !allowed {
            // LOST WRITE: the alias does not point where the last
            // acknowledged write put it (nor where an unanswered one would).
            failures.push(format!(
                "{name} resolves to {got:?}; acknowledged {target:?}, unanswered {in_flight:?}"
            ));
            continue;
        }
        Checks::add(&checks.aliases, 1);
        if !in_flight.is_empty() {
            Checks::add(&checks.unanswered[ALIAS], 1);
            Checks::add(&checks.landed[ALIAS], (got != target) as usize);
        }
        let mut m = lock(model);
        match got {
            Some(g) => {
                let a = m.aliases.get_mut(&name).unwrap();
                a.target = Some(g);
                a.in_flight.clear();
            }
            None => {
                m.aliases.remove(&name);
            }
        }
    }

    // Every ciphertext that was returned still decrypts with its context.
    let samples: Vec<Sample> = lock(model).samples.iter().cloned().collect();
    let mut jobs = Vec::new();
    for Sample {
        blob,
        context,
        plaintext,
        key_id: key,
    } in samples
    {
        let kms = kms.clone();
        let checks = checks.clone();
        jobs.push(async move {
            let out = within(
                "Decrypt",
                kms.decrypt()
                    .ciphertext_blob(blob)
                    .set_encryption_context(Some(context.clone()))
                    .send(),
            )
            .await;
            match out {
                Ok(out)
                    if out.plaintext.as_ref().map(|p| p.as_ref()) == Some(&plaintext[..])
                        && out.key_id.as_deref() == Some(key_arn(&key).as_str()) =>
                {
                    Checks::add(&checks.ciphertexts, 1);
                    vec![]
                }
                Ok(out) => vec![format!(
                    "ciphertext under {key} ({context:?}) decrypts to the wrong plaintext or key: {:?}",
                    out.key_id
                )],
                Err(e) => vec![format!(
                    "ciphertext under {key} ({context:?}) no longer decrypts: {:?}",
                    error_of(&e)
                )],
            }
        });
    }
    failures.extend(all(jobs).await);

    assert!(
        failures.is_empty(),
        "round {round}: after the restart {} checks failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        gateway_logs(&gw.token)
    );
}

/// The last lines (audit records left out) of the two newest gateway logs:
/// the killed gateway's and the restarted one's.
fn gateway_logs(token: &Token) -> String {
    let mut logs: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(token.path())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name
                        .strip_prefix("gateway-")?
                        .strip_suffix(".log")?
                        .parse()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    let mut out = String::new();
    for (_, path) in logs.iter().rev().take(2).rev() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("kmsgate::audit"))
            .collect();
        out.push_str(&format!("--- {} (last lines) ---\n", path.display()));
        for l in &lines[lines.len().saturating_sub(25)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
