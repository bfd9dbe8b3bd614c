//! The final state of every key and alias, as the gateways answer it,
//! against the model of the history.

use super::Report;
use super::model::{Clock, KeyModel, Model, key_id_of};
use super::observe::{KeyView, Read, Snapshot};

fn same_policy(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The final state of every key and alias (gateway 0's answers, which the
/// others' equal) against the model.
pub fn check_states(model: &Model, snap: &Snapshot, clock: Clock, report: &mut Report) {
    let (mut keys_checked, mut present, mut attrs) = (0, 0, 0);
    let listed = snap.listed.ok();
    if listed.is_none() {
        report.violation(format!("ListKeys failed on gateway 0: {:?}", snap.listed));
    }
    for (id, key) in &model.keys {
        let Some(view) = snap.keys.get(id) else {
            continue;
        };
        keys_checked += 1;
        let in_list = listed.map(|l| l.contains(id));
        match (&view.described, in_list) {
            (Read::Ok(_), Some(false)) => report.violation(format!(
                "key {id}: DescribeKey finds it but ListKeys does not list it"
            )),
            (Read::Refused(c), Some(true)) if c == "NotFoundException" => report.violation(
                format!("key {id}: ListKeys lists it but DescribeKey says NotFoundException"),
            ),
            _ => {}
        }
        let described = match &view.described {
            Read::Ok(d) => Some(d),
            Read::Refused(c) if c == "NotFoundException" => None,
            other => {
                report.violation(format!("key {id}: DescribeKey answers {other:?}"));
                continue;
            }
        };
        let seen = described.map(|d| (d.state.as_str(), d.deletion_date_s));
        if !key.state.may.iter().any(|s| s.fits(seen, clock)) {
            report.violation(match seen {
                None => format!(
                    "key {id} destroyed (DescribeKey NotFoundException{}) but its state should be {} \
                     (test clock +{} days){}",
                    if in_list == Some(false) { ", gone from ListKeys" } else { "" },
                    key.state.expected(),
                    clock.days,
                    if key.state.last_ack.as_ref().is_some_and(|c| c.op == "CancelKeyDeletion") {
                        ": destroyed after its deletion was cancelled (the cancel-versus-destroy race)"
                    } else {
                        ""
                    }
                ),
                Some((state, date)) => format!(
                    "key {id}: KeyState {state} (DeletionDate {date:?}) where {} was expected",
                    key.state.expected()
                ),
            });
        }
        // Missing mid-run after an acknowledged cancel (model.rs reports
        // that), and gone for good: the cancel was acknowledged and the key
        // destroyed anyway.
        if let (None, Some((cancel, missing_seq))) = (seen, &key.missing_after_cancel) {
            report.violation(format!(
                "key {id} destroyed (DescribeKey NotFoundException{}) after CancelKeyDeletion seq {} \
                 (request {}) was acknowledged; missing from seq {missing_seq} on: destroyed after \
                 its deletion was cancelled (the cancel-versus-destroy race)",
                if in_list == Some(false) { ", gone from ListKeys" } else { "" },
                cancel.seq,
                cancel.request_id,
            ));
        }
        let Some(d) = described else {
            continue;
        };
        present += 1;
        if d.enabled != (d.state == "Enabled") {
            report.violation(format!(
                "key {id}: Enabled {} with KeyState {}",
                d.enabled, d.state
            ));
        }
        check_attributes(id, key, view, report, &mut attrs);
    }

    // Aliases: the last acknowledged target, unless that key is gone.
    let mut aliases_checked = 0;
    match snap.aliases.ok() {
        None => report.violation(format!(
            "ListAliases failed on gateway 0: {:?}",
            snap.aliases
        )),
        Some(seen) => {
            for (name, alias) in &model.aliases {
                aliases_checked += 1;
                let target = seen
                    .get(name)
                    .cloned()
                    .flatten()
                    .and_then(|t| key_id_of(&t));
                let fits = match &target {
                    Some(k) => alias.may.contains(&Some(k.clone())) && !snap.gone(k),
                    None => alias
                        .may
                        .iter()
                        .any(|t| t.as_ref().is_none_or(|k| snap.gone(k))),
                };
                if !fits {
                    report.violation(format!(
                        "alias {name} names {target:?}{} where {} was expected",
                        if target.as_deref().is_some_and(|k| snap.gone(k)) {
                            " (a destroyed key)"
                        } else {
                            ""
                        },
                        alias.expected()
                    ));
                }
            }
            for name in seen.keys() {
                if !model.aliases.contains_key(name) && !name.starts_with("alias/aws/") {
                    report.violation(format!("alias {name} exists but no request created it"));
                }
            }
        }
    }

    if let Some(listed) = listed {
        let extra: Vec<&String> = listed
            .iter()
            .filter(|k| !model.keys.contains_key(*k))
            .collect();
        if extra.len() > model.unknown_creates {
            report.violation(format!(
                "{} keys on the token that no acknowledged CreateKey made, but only {} CreateKeys \
                 of unknown outcome: {extra:?}",
                extra.len(),
                model.unknown_creates
            ));
        }
    }
    report.check(format!(
        "{keys_checked} keys' states checked against the model ({present} of them present, with \
         rotation, policy, and {attrs} tags and grants), {aliases_checked} aliases"
    ));
}

fn check_attributes(
    id: &str,
    key: &KeyModel,
    view: &KeyView,
    report: &mut Report,
    attrs: &mut usize,
) {
    if let Some(Read::Ok(rotation)) = &view.rotation
        && !key.rotation.may.contains(rotation)
    {
        report.violation(format!(
            "key {id}: rotation (enabled, period) {rotation:?} where {} was expected",
            key.rotation.expected()
        ));
    }
    if let Some(Read::Ok(tags)) = &view.tags {
        for (tag, attr) in &key.tags {
            *attrs += 1;
            let seen = tags.get(tag).cloned();
            if !attr.may.contains(&seen) {
                report.violation(format!(
                    "key {id}: tag {tag} is {seen:?} where {} was expected",
                    attr.expected()
                ));
            }
        }
        for tag in tags.keys().filter(|t| !key.tags.contains_key(*t)) {
            report.violation(format!("key {id}: tag {tag} exists but no request set it"));
        }
    }
    if let Some(Read::Ok(policy)) = &view.policy
        && !key
            .policy
            .may
            .iter()
            .any(|p| p.as_ref().is_none_or(|p| same_policy(p, policy)))
    {
        report.violation(format!(
            "key {id}: GetKeyPolicy answers another policy than {} ({} bytes)",
            key.policy.expected(),
            policy.len()
        ));
    }
    if let Some(Read::Ok(grants)) = &view.grants {
        for (grant, attr) in &key.grants {
            *attrs += 1;
            if !attr.may.contains(&grants.contains(grant)) {
                report.violation(format!(
                    "key {id}: grant {grant} {} where {} was expected",
                    if grants.contains(grant) {
                        "listed"
                    } else {
                        "missing"
                    },
                    attr.expected()
                ));
            }
        }
        let extra = grants
            .iter()
            .filter(|g| !key.grants.contains_key(*g))
            .count();
        if extra > key.unknown_grants {
            report.violation(format!(
                "key {id}: {extra} grants that no acknowledged CreateGrant made, but only {} \
                 CreateGrants of unknown outcome",
                key.unknown_grants
            ));
        }
    }
    for (what, read) in [
        (
            "GetKeyRotationStatus",
            view.rotation.as_ref().map(Read::failure),
        ),
        (
            "ListKeyRotations",
            view.rotations.as_ref().map(Read::failure),
        ),
        ("ListResourceTags", view.tags.as_ref().map(Read::failure)),
        ("GetKeyPolicy", view.policy.as_ref().map(Read::failure)),
        ("ListGrants", view.grants.as_ref().map(Read::failure)),
    ] {
        if let Some(Some(f)) = read {
            report.violation(format!("key {id}: {what} fails: {f}"));
        }
    }
}
