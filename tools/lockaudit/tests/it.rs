//! The audit binary against a small advisory database and lockfiles made here: it fails on a
//! vulnerable or unsound package, passes when the advisory is ignored, fails on an ignore
//! entry that matches nothing, and warns (without failing) on an unmaintained crate.

use std::path::Path;
use std::process::Command;

fn advisory(db: &Path, id: &str, package: &str, informational: Option<&str>, patched: &str) {
    let dir = db.join("crates").join(package);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let informational = informational
        .map(|i| format!("informational = \"{i}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "```toml\n[advisory]\nid = \"{id}\"\npackage = \"{package}\"\ndate = \"2026-01-01\"\n\
         {informational}\n[versions]\npatched = [\"{patched}\"]\n```\n\n# {package} is bad\n\n\
         Details.\n"
    );
    std::fs::write(dir.join(format!("{id}.md")), text).expect("write advisory");
}

fn lockfile(root: &Path, packages: &[(&str, &str)], ignore: &[&str]) {
    let mut text = String::from("version = 4\n");
    for (name, version) in packages {
        text.push_str(&format!(
            "\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nsource = \
             \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{}\"\n",
            "0".repeat(64)
        ));
    }
    std::fs::write(root.join("Cargo.lock"), text).expect("write lockfile");
    let _ = std::fs::remove_dir_all(root.join(".cargo"));
    if !ignore.is_empty() {
        std::fs::create_dir_all(root.join(".cargo")).expect("mkdir");
        let list: Vec<String> = ignore.iter().map(|i| format!("\"{i}\"")).collect();
        std::fs::write(
            root.join(".cargo/audit.toml"),
            format!("[advisories]\nignore = [{}]\n", list.join(", ")),
        )
        .expect("write audit.toml");
    }
}

/// (what, packages as (name, version), ignore list, passes, output must contain)
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    bool,
    &'static str,
);

#[test]
fn the_audit_fails_on_what_is_not_accepted() {
    let db = tempfile::tempdir().expect("tempdir");
    advisory(db.path(), "RUSTSEC-2099-0001", "weak", None, ">= 2.0.0");
    advisory(
        db.path(),
        "RUSTSEC-2099-0002",
        "shaky",
        Some("unsound"),
        ">= 1.5.0",
    );
    advisory(
        db.path(),
        "RUSTSEC-2099-0003",
        "old",
        Some("unmaintained"),
        ">= 9.0.0",
    );
    let root = tempfile::tempdir().expect("tempdir");
    let cases: [Case; 8] = [
        (
            "an unsound package ignored with a reason",
            &[("shaky", "1.0.0")],
            &["RUSTSEC-2099-0002"],
            true,
            "1 ignored",
        ),
        (
            "nothing affected",
            &[("weak", "2.1.0"), ("fine", "1.0.0")],
            &[],
            true,
            "no vulnerable",
        ),
        (
            "a vulnerable package",
            &[("weak", "1.9.0")],
            &[],
            false,
            "error: RUSTSEC-2099-0001 weak 1.9.0",
        ),
        (
            "ignored with a reason",
            &[("weak", "1.9.0")],
            &["RUSTSEC-2099-0001"],
            true,
            "1 ignored",
        ),
        (
            "an unsound package",
            &[("shaky", "1.0.0")],
            &[],
            false,
            "error: unsound RUSTSEC-2099-0002",
        ),
        (
            "unmaintained only warns",
            &[("old", "1.0.0")],
            &[],
            true,
            "warning: unmaintained RUSTSEC-2099-0003",
        ),
        (
            "a stale exception",
            &[("weak", "2.0.0")],
            &["RUSTSEC-2099-0001"],
            false,
            "matches no package",
        ),
        (
            "an unknown ID in the list",
            &[("fine", "1.0.0")],
            &["RUSTSEC-2099-0009"],
            false,
            "matches no package",
        ),
    ];
    for (what, packages, ignore, passes, wanted) in cases {
        lockfile(root.path(), packages, ignore);
        let out = Command::new(env!("CARGO_BIN_EXE_lockaudit"))
            .arg(db.path())
            .arg(root.path().join("Cargo.lock"))
            .output()
            .expect("run lockaudit");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), passes, "{what}: {text}");
        assert!(text.contains(wanted), "{what}: wanted {wanted:?} in {text}");
    }
    // No database at all: a clear error, not a pass.
    let out = Command::new(env!("CARGO_BIN_EXE_lockaudit"))
        .arg(root.path().join("missing"))
        .arg(root.path().join("Cargo.lock"))
        .output()
        .expect("run lockaudit");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed to open the advisory database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
