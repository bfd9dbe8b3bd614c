//! scripts/test's filtered runs of this suite cannot silently run nothing:
//! scripts/test-filters checks every filter and skip against the suite's
//! test names before a run, and scripts/test's own lists (the Kryoptic
//! modules and skips, the full-disk tests) select tests of this suite.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The words of the bash array `NAME=( ... )` in scripts/test, comments
/// left out.
pub(crate) fn script_array(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("scripts/test")).unwrap();
    let opening = format!("\n{name}=(\n");
    let start = text
        .find(&opening)
        .unwrap_or_else(|| panic!("no array {name} in scripts/test"))
        + opening.len();
    let end = text[start..].find("\n)").expect("the array ends") + start;
    text[start..end]
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}

/// This test binary's `--list` and `--list --ignored`, written to files in
/// `dir`, as scripts/test writes them.
fn listings(dir: &Path) -> (PathBuf, PathBuf) {
    let list = |extra: &[&str], file: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success());
        let path = dir.join(file);
        std::fs::write(&path, &out.stdout).unwrap();
        path
    };
    (list(&[], "all"), list(&["--ignored"], "ignored"))
}

/// The names in a `--list` output.
fn names(list: &Path) -> Vec<String> {
    std::fs::read_to_string(list)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// scripts/test-filters on this suite with these test binary arguments:
/// (exit code, stdout, stderr).
fn test_filters(args: &[String]) -> (Option<i32>, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (all, ignored) = listings(tmp.path());
    let out = Command::new(Path::new(ROOT).join("scripts/test-filters"))
        .arg(all)
        .arg(ignored)
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn skips(patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .flat_map(|p| ["--skip".to_owned(), p.clone()])
        .collect()
}

#[test]
fn every_filter_and_skip_of_scripts_test_selects_tests_of_this_suite() {
    let modules = script_array("kryoptic_modules");
    let skipped = script_array("kryoptic_skips");
    assert!(modules.len() > 10, "{modules:?}");
    let mut args = modules.clone();
    args.extend(skips(&skipped));
    let (code, out, err) = test_filters(&args);
    assert_eq!(code, Some(0), "{err}");

    // The count is libtest's: a test runs when it is not ignored, a module
    // filter is part of its name and no skip is.
    let tmp = tempfile::tempdir().unwrap();
    let (all, ignored) = listings(tmp.path());
    let ignored = names(&ignored);
    let runnable: Vec<String> = names(&all)
        .into_iter()
        .filter(|t| !ignored.contains(t))
        .collect();
    let expected = runnable
        .iter()
        .filter(|t| modules.iter().any(|m| t.contains(m.as_str())))
        .filter(|t| !skipped.iter().any(|s| t.contains(s.as_str())))
        .count();
    assert!(expected > 0);
    assert_eq!(out, format!("{expected}\n"), "{err}");
    for m in &modules {
        assert!(err.contains(&format!("filter {m} ")), "{m}: {err}");
    }

    // KMSGATE_TEST_NO_MOUNT=1 skips exactly the full-disk tests.
    let full_disk = script_array("full_disk_tests");
    assert_eq!(full_disk, crate::common::disk::FULL_DISK_TESTS);
    let (code, out, err) = test_filters(&skips(&full_disk));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{}\n", runnable.len() - full_disk.len()));
}

#[test]
fn a_filter_or_skip_that_selects_nothing_stops_the_run_by_name() {
    let args = |a: &[&str]| -> Vec<String> { a.iter().map(|s| (*s).to_owned()).collect() };
    // A renamed module.
    let (code, out, err) = test_filters(&args(&["hmac::", "gatway::"]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("the filter 'gatway::' selects no test that runs"),
        "{err}"
    );
    assert!(!err.contains("the filter 'hmac::'"), "{err}");
    // A renamed test among the skips.
    let (code, out, err) = test_filters(&args(&["hmac::", "--skip", "hmac::no_such_test"]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("the skip 'hmac::no_such_test' matches no test the filters select"),
        "{err}"
    );
    // A module whose every test is skipped, and one that has only an
    // ignored test, run nothing either.
    for filter in ["durability::", "unreadable::inject_child"] {
        let (code, _, err) = test_filters(&args(&[filter, "--skip", "durability::"]));
        assert_eq!(code, Some(1), "{filter}: {err}");
        assert!(
            err.contains(&format!("the filter '{filter}' selects no test")),
            "{err}"
        );
    }
    // A filter spelt right passes and counts.
    let (code, out, err) = test_filters(&args(&["hmac::"]));
    assert_eq!(code, Some(0), "{err}");
    let n: usize = out.trim().parse().unwrap();
    assert!(n > 0, "{out}");
}
