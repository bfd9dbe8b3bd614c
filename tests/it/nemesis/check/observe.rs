//! What each gateway says now: its key list, its aliases, and for each key
//! its state, rotation setting, rotations, tags, policy and grants. Reads
//! that fail with a 5xx or no answer are retried a few times (the faults
//! are over, so one that keeps failing is itself a finding).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// One read's answer: the value, or the error's code (`NotFoundException`,
/// ...), or a failure that outlasted the retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read<T> {
    Ok(T),
    Refused(String),
    Failed(String),
}

impl<T> Read<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Read::Ok(t) => Some(t),
            _ => None,
        }
    }

    /// What failed, when a read outlasted its retries.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Read::Failed(f) => Some(f),
            _ => None,
        }
    }
}

/// DescribeKey's parts the checker uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    pub state: String,
    pub enabled: bool,
    pub deletion_date_s: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    pub described: Read<Described>,
    /// The rest only when DescribeKey found the key.
    pub rotation: Option<Read<(bool, u32)>>,
    pub rotations: Option<Read<usize>>,
    pub tags: Option<Read<BTreeMap<String, String>>>,
    pub policy: Option<Read<String>>,
    pub grants: Option<Read<BTreeSet<String>>>,
}

impl KeyView {
    pub fn not_found(&self) -> bool {
        matches!(&self.described, Read::Refused(code) if code == "NotFoundException")
    }
}

/// One gateway's answers.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub listed: Read<BTreeSet<String>>,
    /// Alias name -> target key id.
    pub aliases: Read<BTreeMap<String, Option<String>>>,
    pub keys: BTreeMap<String, KeyView>,
    pub requests: usize,
}

impl Snapshot {
    /// Whether DescribeKey says `key` is gone (NotFoundException).
    pub fn gone(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(KeyView::not_found)
    }
}

/// How long one read may take: the faults are over, so a gateway that
/// does not answer by then is reported rather than waited for.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `send` until it answers, or is refused (a 4xx but
/// ThrottlingException), or 4 attempts have failed or timed out.
pub async fn retried<T, E, Fut>(send: impl Fn() -> Fut) -> Read<T>
where
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    let mut last = String::new();
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
        }
        let err = match tokio::time::timeout(READ_TIMEOUT, send()).await {
            Ok(Ok(t)) => return Read::Ok(t),
            Ok(Err(err)) => err,
            Err(_) => {
                last = format!("no answer within {READ_TIMEOUT:?}");
                continue;
            }
        };
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err
            .as_service_error()
            .and_then(|e| e.code())
            .map(str::to_owned);
        match (status, code) {
            (Some(s), Some(code)) if s < 500 && code != "ThrottlingException" => {
                return Read::Refused(code);
            }
            (s, code) => {
                last = format!(
                    "{} (status {})",
                    code.unwrap_or_else(|| format!("{err:?}").chars().take(200).collect()),
                    s.map_or("none".to_owned(), |s| s.to_string())
                )
            }
        }
    }
    Read::Failed(last)
}

/// Reads a gateway's view of `keys` (and its own list and aliases).
pub async fn snapshot(kms: &aws_sdk_kms::Client, keys: &BTreeSet<String>) -> Snapshot {
    let mut requests = 0;
    let listed = list_keys(kms, &mut requests).await;
    let aliases = list_aliases(kms, &mut requests).await;
    let mut views = BTreeMap::new();
    for key in keys {
        views.insert(key.clone(), key_view(kms, key, &mut requests).await);
    }
    Snapshot {
        listed,
        aliases,
        keys: views,
        requests,
    }
}

pub async fn list_keys(kms: &aws_sdk_kms::Client, requests: &mut usize) -> Read<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut marker: Option<String> = None;
    loop {
        *requests += 1;
        let page = retried(|| {
            kms.list_keys()
                .limit(1000)
                .set_marker(marker.clone())
                .send()
        })
        .await;
        let page = match page {
            Read::Ok(p) => p,
            Read::Refused(c) => return Read::Refused(c),
            Read::Failed(f) => return Read::Failed(f),
        };
        out.extend(
            page.keys()
                .iter()
                .filter_map(|k| k.key_id().map(str::to_owned)),
        );
        match (page.truncated(), page.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_owned()),
            _ => return Read::Ok(out),
        }
    }
}

async fn list_aliases(
    kms: &aws_sdk_kms::Client,
    requests: &mut usize,
) -> Read<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        *requests += 1;
        let page = retried(|| {
            kms.list_aliases()
                .limit(100)
                .set_marker(marker.clone())
                .send()
        })
        .await;
        let page = match page {
            Read::Ok(p) => p,
            Read::Refused(c) => return Read::Refused(c),
            Read::Failed(f) => return Read::Failed(f),
        };
        for a in page.aliases() {
            if let Some(name) = a.alias_name() {
                out.insert(name.to_owned(), a.target_key_id().map(str::to_owned));
            }
        }
        match (page.truncated(), page.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_owned()),
            _ => return Read::Ok(out),
        }
    }
}

pub async fn key_view(kms: &aws_sdk_kms::Client, key: &str, requests: &mut usize) -> KeyView {
    *requests += 1;
    let described = match retried(|| kms.describe_key().key_id(key).send()).await {
        Read::Ok(out) => match out.key_metadata() {
            Some(m) => Read::Ok(Described {
                state: m
                    .key_state()
                    .map_or(String::new(), |s| s.as_str().to_owned()),
                enabled: m.enabled(),
                deletion_date_s: m.deletion_date().map(|d| d.secs()),
            }),
            None => Read::Failed("DescribeKey without KeyMetadata".into()),
        },
        Read::Refused(c) => Read::Refused(c),
        Read::Failed(f) => Read::Failed(f),
    };
    let mut view = KeyView {
        described,
        rotation: None,
        rotations: None,
        tags: None,
        policy: None,
        grants: None,
    };
    if view.described.ok().is_none() {
        return view;
    }
    *requests += 5;
    view.rotation = Some(
        match retried(|| kms.get_key_rotation_status().key_id(key).send()).await {
            Read::Ok(o) => Read::Ok(if o.key_rotation_enabled() {
                (true, o.rotation_period_in_days().unwrap_or(0) as u32)
            } else {
                (false, 0)
            }),
            Read::Refused(c) => Read::Refused(c),
            Read::Failed(f) => Read::Failed(f),
        },
    );
    view.rotations = Some(count_rotations(kms, key, requests).await);
    view.tags = Some(tags(kms, key, requests).await);
    view.policy = Some(
        match retried(|| {
            kms.get_key_policy()
                .key_id(key)
                .policy_name("default")
                .send()
        })
        .await
        {
            Read::Ok(o) => Read::Ok(o.policy().unwrap_or_default().to_owned()),
            Read::Refused(c) => Read::Refused(c),
            Read::Failed(f) => Read::Failed(f),
        },
    );
    view.grants = Some(grants(kms, key, requests).await);
    view
}

async fn count_rotations(
    kms: &aws_sdk_kms::Client,
    key: &str,
    requests: &mut usize,
) -> Read<usize> {
    let mut n = 0;
    let mut marker: Option<String> = None;
    loop {
        let page = retried(|| {
            kms.list_key_rotations()
                .key_id(key)
                .limit(1000)
                .set_marker(marker.clone())
                .send()
        })
        .await;
        let page = match page {
            Read::Ok(p) => p,
            Read::Refused(c) => return Read::Refused(c),
            Read::Failed(f) => return Read::Failed(f),
        };
        n += page.rotations().len();
        match (page.truncated(), page.next_marker()) {
            (true, Some(m)) => {
                *requests += 1;
                marker = Some(m.to_owned());
            }
            _ => return Read::Ok(n),
        }
    }
}

async fn tags(
    kms: &aws_sdk_kms::Client,
    key: &str,
    requests: &mut usize,
) -> Read<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let page = retried(|| {
            kms.list_resource_tags()
                .key_id(key)
                .limit(50)
                .set_marker(marker.clone())
                .send()
        })
        .await;
        let page = match page {
            Read::Ok(p) => p,
            Read::Refused(c) => return Read::Refused(c),
            Read::Failed(f) => return Read::Failed(f),
        };
        for t in page.tags() {
            out.insert(t.tag_key().to_owned(), t.tag_value().to_owned());
        }
        match (page.truncated(), page.next_marker()) {
            (true, Some(m)) => {
                *requests += 1;
                marker = Some(m.to_owned());
            }
            _ => return Read::Ok(out),
        }
    }
}

async fn grants(
    kms: &aws_sdk_kms::Client,
    key: &str,
    requests: &mut usize,
) -> Read<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut marker: Option<String> = None;
    loop {
        let page = retried(|| {
            kms.list_grants()
                .key_id(key)
                .limit(100)
                .set_marker(marker.clone())
                .send()
        })
        .await;
        let page = match page {
            Read::Ok(p) => p,
            Read::Refused(c) => return Read::Refused(c),
            Read::Failed(f) => return Read::Failed(f),
        };
        out.extend(
            page.grants()
                .iter()
                .filter_map(|g| g.grant_id().map(str::to_owned)),
        );
        match (page.truncated(), page.next_marker()) {
            (true, Some(m)) => {
                *requests += 1;
                marker = Some(m.to_owned());
            }
            _ => return Read::Ok(out),
        }
    }
}
