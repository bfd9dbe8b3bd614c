//! docs/configuration.md checked against the code: every key its tables
//! document exists, every key the code reads is documented, and every TOML
//! example in it parses (tests only).

use std::collections::{BTreeMap, BTreeSet};

use super::Config;

/// A config with only what is required: the base the examples and probes
/// are laid over.
const BASE: &str = r#"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "kmsgate"
pin_file = "/dev/null"
"#;

/// One XKS store with its one credential: the base of the `[[xks.stores]]`
/// probes.
const XKS_STORE: &str = "[[xks.stores]]\nname = \"s\"\npath_prefix = \"\"\nregion = \"us-east-1\"\n[[xks.stores.credentials]]\naccess_key_id = \"AAAAAAAAAAAAAAAAAAAA\"\nsecret_env = \"S\"\n";

/// The tables of the reference, by the name their heading gives them
/// (`""` is the top level).
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut table: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
            table = if heading == "Top level" {
                Some(String::new())
            } else {
                heading
                    .split('`')
                    .nth(1)
                    .filter(|t| t.starts_with('['))
                    .map(|t| t.trim_matches(|c| c == '[' || c == ']').to_owned())
            };
            continue;
        }
        let (Some(t), Some(row)) = (&table, line.strip_prefix("| `")) else {
            continue;
        };
        let key = row.split('`').next().unwrap_or_default();
        if !key.starts_with('[') && !key.is_empty() {
            out.entry(t.clone()).or_default().insert(key.to_owned());
        }
    }
    out
}

/// A config with `[table] key = value` laid over [`BASE`].
fn with(table: &str, line: &str) -> String {
    match table {
        "" => format!("{line}\n{BASE}"),
        "hsm" => BASE.replace("[hsm]\n", &format!("[hsm]\n{line}\n")),
        "auth.credentials" => {
            format!("{BASE}\n[[auth.credentials]]\naccess_key_id = \"AKIAEXAMPLE\"\n{line}\n")
        }
        "auth.principals" => format!("{BASE}\n[[auth.principals]]\nname = \"p\"\n{line}\n"),
        "tls" => {
            format!("{BASE}\n[tls]\ncert_chain_file = \"/c\"\nprivate_key_file = \"/k\"\n{line}\n")
        }
        "xks.stores" => {
            format!("{BASE}\n{XKS_STORE}").replacen("region = ", &format!("{line}\nregion = "), 1)
        }
        "xks.stores.credentials" => format!("{BASE}\n{XKS_STORE}{line}\n"),
        "xks.stores.keys" => {
            format!("{BASE}\n{XKS_STORE}[[xks.stores.keys]]\nkey = \"k\"\n{line}\n")
        }
        "xks.stores.mtls" => format!(
            "{BASE}\n{XKS_STORE}[xks.stores.mtls]\nclient_ca_file = \"/c\"\nsubject = \"s\"\n{line}\n"
        ),
        "xks.stores.authorization" => format!(
            "{BASE}\n{XKS_STORE}[[xks.stores.authorization]]\nname = \"r\"\neffect = \"deny\"\n{line}\n"
        ),
        t => format!("{BASE}\n[{t}]\n{line}\n"),
    }
}

/// The keys the code reads in `table`: serde names them all when it
/// refuses an unknown one ("unknown field `x`, expected one of `a`, ...").
fn in_code(table: &str) -> BTreeSet<String> {
    let probe = "zz_no_such_key = 1";
    let err = toml::from_str::<Config>(&with(table, probe))
        .err()
        .unwrap_or_else(|| panic!("[{table}] took an unknown key"))
        .to_string();
    let expected = err
        .split("expected one of ")
        .nth(1)
        .or_else(|| err.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("[{table}]: no list of fields in: {err}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_documented_key_exists_and_every_key_is_documented() {
    let docs = documented();
    let tables = [
        "",
        "hsm",
        "auth",
        "auth.credentials",
        "auth.principals",
        "keys",
        "http",
        "tls",
        "audit",
        "metrics",
        "xks",
        "xks.stores",
        "xks.stores.credentials",
        "xks.stores.keys",
        "xks.stores.mtls",
        "xks.stores.authorization",
    ];
    // Every table the reference documents is checked here, so a new one
    // cannot be left out (as `[metrics]` was).
    let unchecked: Vec<_> = docs
        .keys()
        .filter(|t| !tables.contains(&t.as_str()))
        .collect();
    assert!(
        unchecked.is_empty(),
        "tables docs/configuration.md documents that this test does not check: {unchecked:?}"
    );
    for table in tables {
        let code = in_code(table);
        let documented = docs.get(table).cloned().unwrap_or_default();
        // Sub-tables are documented as rows of their parent (`[hsm]`,
        // `[[auth.credentials]]`): their names are in `code` but not rows.
        let undocumented: Vec<_> = code
            .iter()
            .filter(|k| !documented.contains(*k) && !docs.contains_key(&qualified(table, k)))
            .collect();
        let unknown: Vec<_> = documented.difference(&code).collect();
        assert!(
            undocumented.is_empty(),
            "[{table}]: keys the code reads but docs/configuration.md does not document: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "[{table}]: keys docs/configuration.md documents but the code does not read: {unknown:?}"
        );
    }
}

fn qualified(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

#[test]
fn every_toml_example_in_the_reference_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut examples = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                examples.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    assert!(examples.len() >= 3, "found {} examples", examples.len());
    for example in examples {
        let mut merged: toml::Table = toml::from_str(BASE).unwrap();
        let table: toml::Table = toml::from_str(&example)
            .unwrap_or_else(|e| panic!("an example is not TOML ({e}):\n{example}"));
        for (k, v) in table {
            match (merged.get_mut(&k), v) {
                (Some(toml::Value::Table(into)), toml::Value::Table(from)) => into.extend(from),
                (_, v) => {
                    merged.insert(k, v);
                }
            }
        }
        if let Err(e) = toml::from_str::<Config>(&toml::to_string(&merged).unwrap()) {
            panic!("an example does not parse as kmsgate's config ({e}):\n{example}");
        }
    }
}
