//! The load: CreateKey, alias, rotation, deletion and GenerateDataKey
//! writers recording every request in the model, and the SIGKILL that
//! catches some of them in flight.

use super::*;

struct Load {
    kms: aws_sdk_kms::Client,
    model: Shared,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    round: usize,
}

impl Load {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    async fn pause(rng: &mut Rng, max_ms: u64) {
        tokio::time::sleep(Duration::from_millis(rng.range(0, max_ms))).await;
    }

    async fn create_keys(self, mut rng: Rng) {
        for _ in 0..CREATES_PER_ROUND {
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() {
                return;
            }
            lock(&self.model).creates_in_flight += 1;
            let sent = Instant::now();
            match self.kms.create_key().description("crash work").send().await {
                Ok(out) => {
                    note_latency(&self.model, "CreateKey", sent);
                    let id = out.key_metadata.unwrap().key_id;
                    let mut m = lock(&self.model);
                    m.creates_in_flight -= 1;
                    m.acked.creates += 1;
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
                Err(e) => return note_error(&self.model, &self.killed, "CreateKey", &e),
            }
        }
    }

    async fn write_aliases(self, mut rng: Rng) {
        while self.running() {
            Self::pause(&mut rng, 30).await;
            let name = format!("alias/crash-{}", rng.range(0, ALIASES as u64 - 1));
            let (exists, target) = {
                let mut m = lock(&self.model);
                let keys = m.work_keys();
                let current = m.aliases.get(&name).and_then(|a| a.target.clone());
                let others: Vec<String> = keys
                    .into_iter()
                    .filter(|k| Some(k) != current.as_ref())
                    .collect();
                let Some(target) = rng.pick(&others).cloned() else {
                    continue;
                };
                let a = m.aliases.entry(name.clone()).or_default();
                if a.target.is_none() && !a.in_flight.is_empty() {
                    // Its creation's fate is unknown until the next check.
                    continue;
                }
                a.in_flight.push(target.clone());
                (a.target.is_some(), target)
            };
            let sent = Instant::now();
            let result = if exists {
                self.kms
                    .update_alias()
                    .alias_name(&name)
                    .target_key_id(&target)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("UpdateAlias {name} -> {target}: {e:?}"))
            } else {
                self.kms
                    .create_alias()
                    .alias_name(&name)
                    .target_key_id(&target)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("CreateAlias {name} -> {target}: {e:?}"))
            };
            match result {
                Ok(()) => {
                    note_latency(&self.model, "alias write", sent);
                    let mut m = lock(&self.model);
                    m.acked.alias_writes += 1;
                    let a = m.aliases.get_mut(&name).unwrap();
                    a.target = Some(target);
                    a.in_flight.clear();
                }
                Err(e) => return note_error(&self.model, &self.killed, "alias write", &e),
            }
        }
    }

    async fn rotate(self, mut rng: Rng) {
        for _ in 0..ROTATIONS_PER_ROUND {
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() {
                return;
            }
            let key = {
                let mut m = lock(&self.model);
                let Some(key) = rng.pick(&m.work_keys()).cloned() else {
                    return;
                };
                m.keys.get_mut(&key).unwrap().rotations_in_flight += 1;
                key
            };
            let sent = Instant::now();
            match self.kms.rotate_key_on_demand().key_id(&key).send().await {
                Ok(_) => {
                    note_latency(&self.model, "RotateKeyOnDemand", sent);
                    let mut m = lock(&self.model);
                    m.acked.rotations += 1;
                    let k = m.keys.get_mut(&key).unwrap();
                    k.rotations += 1;
                    k.rotations_in_flight -= 1;
                }
                Err(e) => {
                    return note_error(&self.model, &self.killed, "RotateKeyOnDemand", &e);
                }
            }
        }
    }

    async fn schedule(&self, key: &str) -> bool {
        lock(&self.model).keys.get_mut(key).unwrap().deletion = Deletion::Maybe;
        let sent = Instant::now();
        match self
            .kms
            .schedule_key_deletion()
            .key_id(key)
            .pending_window_in_days(7)
            .send()
            .await
        {
            Ok(out) => {
                note_latency(&self.model, "ScheduleKeyDeletion", sent);
                assert_eq!(out.key_state, Some(KeyState::PendingDeletion));
                let mut m = lock(&self.model);
                m.acked.deletions += 1;
                m.keys.get_mut(key).unwrap().deletion = Deletion::Yes;
                true
            }
            Err(e) => {
                note_error(&self.model, &self.killed, "ScheduleKeyDeletion", &e);
                false
            }
        }
    }

    async fn delete_keys(self, mut rng: Rng) {
        // Doomed keys of earlier rounds whose scheduling never happened.
        let leftovers: Vec<String> = lock(&self.model)
            .keys
            .iter()
            .filter(|(_, k)| k.kind == Kind::Doomed && k.deletion == Deletion::No)
            .map(|(id, _)| id.clone())
            .collect();
        for key in leftovers {
            Self::pause(&mut rng, 20).await;
            if !self.running() || !self.schedule(&key).await {
                return;
            }
        }
        for _ in 0..DOOMED_PER_ROUND {
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() {
                return;
            }
            lock(&self.model).creates_in_flight += 1;
            let sent = Instant::now();
            let key = match self
                .kms
                .create_key()
                .description("crash doomed")
                .send()
                .await
            {
                Ok(out) => {
                    note_latency(&self.model, "CreateKey", sent);
                    out.key_metadata.unwrap().key_id
                }
                Err(e) => return note_error(&self.model, &self.killed, "CreateKey", &e),
            };
            {
                let mut m = lock(&self.model);
                m.creates_in_flight -= 1;
                m.acked.creates += 1;
                m.keys.insert(
                    key.clone(),
                    KeyModel {
                        kind: Kind::Doomed,
                        deletion: Deletion::No,
                        rotations: 0,
                        rotations_in_flight: 0,
                    },
                );
            }
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() || !self.schedule(&key).await {
                return;
            }
        }
    }

    async fn data_keys(self, mut rng: Rng, task: usize) {
        let mut n = 0;
        while self.running() {
            // Busy, not saturating: writes must still get a session.
            Self::pause(&mut rng, 6).await;
            let Some(key) = rng.pick(&lock(&self.model).work_keys()).cloned() else {
                return;
            };
            n += 1;
            let context = HashMap::from([
                ("crash-round".to_owned(), self.round.to_string()),
                ("request".to_owned(), format!("{task}-{n}")),
            ]);
            let sent = Instant::now();
            match self
                .kms
                .generate_data_key()
                .key_id(&key)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(context.clone()))
                .send()
                .await
            {
                Ok(out) => {
                    note_latency(&self.model, "GenerateDataKey", sent);
                    let plaintext = out.plaintext.unwrap().into_inner();
                    assert_eq!(plaintext.len(), 32);
                    let mut m = lock(&self.model);
                    m.acked.data_keys += 1;
                    m.samples.push_back(Sample {
                        blob: out.ciphertext_blob.unwrap(),
                        context,
                        plaintext,
                        key_id: key,
                    });
                    while m.samples.len() > SAMPLE {
                        m.samples.pop_front();
                    }
                }
                Err(e) => return note_error(&self.model, &self.killed, "GenerateDataKey", &e),
            }
        }
    }
}

/// Runs the load on `gw` for `kill_after`, then kills the gateway with
/// SIGKILL while requests are in flight; returns the token.
pub(super) async fn load_and_kill(
    gw: Gateway,
    model: &Shared,
    rng: &mut Rng,
    round: usize,
    kill_after: Duration,
) -> Arc<Token> {
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let load = || Load {
        kms: gw.client(),
        model: model.clone(),
        killed: killed.clone(),
        stop: stop.clone(),
        round,
    };
    let tasks = vec![
        tokio::spawn(load().create_keys(rng.fork())),
        tokio::spawn(load().write_aliases(rng.fork())),
        tokio::spawn(load().rotate(rng.fork())),
        tokio::spawn(load().delete_keys(rng.fork())),
        tokio::spawn(load().data_keys(rng.fork(), 0)),
        tokio::spawn(load().data_keys(rng.fork(), 1)),
    ];
    tokio::time::sleep(kill_after).await;
    killed.store(true, Ordering::SeqCst);
    let token = gw.crash();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        // A task still waiting on the dead gateway after this long is
        // abandoned; what it sent stays recorded as in flight.
        let abort = t.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(joined) => joined.expect("a load task panicked"),
            Err(_) => abort.abort(),
        }
    }
    token
}
