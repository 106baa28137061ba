//! `lockaudit DB [LOCKFILE]`: the dependency audit CI runs offline. It checks `Cargo.lock`
//! against a local copy of the RustSec advisory database (a clone of `advisory-db`) with the
//! `rustsec` crate, as `cargo audit --db DB --no-fetch` does, and reads the same ignore list
//! (`.cargo/audit.toml`, `[advisories] ignore`), so a user with network access gets the same
//! answer from `cargo audit`.
//!
//! It fails on any vulnerability or unsound advisory not on the ignore list, and on an ignore
//! entry that no longer matches anything (a stale exception hides nothing, so it must go);
//! unmaintained crates are listed as warnings.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use rustsec::advisory::{Id, Informational};
use rustsec::report::{Report, Settings};
use rustsec::{Database, Lockfile, WarningKind};

#[derive(serde::Deserialize, Default)]
struct AuditToml {
    #[serde(default)]
    advisories: Advisories,
}

#[derive(serde::Deserialize, Default)]
struct Advisories {
    #[serde(default)]
    ignore: Vec<String>,
}

fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let db = PathBuf::from(args.next().context("usage: lockaudit DB [LOCKFILE]")?);
    let lockfile = args
        .next()
        .map_or_else(|| PathBuf::from("Cargo.lock"), PathBuf::from);
    let root = lockfile.parent().unwrap_or(Path::new("."));
    let config = root.join(".cargo/audit.toml");
    let ignore: Vec<String> = match std::fs::read_to_string(&config) {
        Ok(text) => {
            toml::from_str::<AuditToml>(&text)
                .with_context(|| format!("{}", config.display()))?
                .advisories
                .ignore
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("{}", config.display())),
    };

    let database = Database::open(&db)
        .with_context(|| format!("failed to open the advisory database at {}", db.display()))?;
    let lock = Lockfile::load(&lockfile)
        .with_context(|| format!("failed to read {}", lockfile.display()))?;
    let ids = ignore
        .iter()
        .map(|i| {
            i.parse::<Id>()
                .with_context(|| format!("bad advisory ID {i:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let settings = Settings {
        ignore: ids.clone(),
        informational_warnings: vec![Informational::Unmaintained, Informational::Unsound],
        ..Settings::default()
    };
    let report = Report::generate(&database, &lock, &settings);
    println!(
        "lockaudit: {} advisories in {}, {} packages in {}",
        database.iter().count(),
        db.display(),
        lock.packages.len(),
        lockfile.display()
    );

    let mut failed = false;
    for v in &report.vulnerabilities.list {
        failed = true;
        println!(
            "error: {} {} {}: {} (patched: {})",
            v.advisory.id,
            v.package.name,
            v.package.version,
            v.advisory.title,
            list(
                &v.versions
                    .patched()
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
            ),
        );
    }
    for (kind, warnings) in &report.warnings {
        for w in warnings {
            let fatal = matches!(kind, WarningKind::Unsound);
            failed |= fatal;
            let (id, title) = w
                .advisory
                .as_ref()
                .map(|a| (a.id.to_string(), a.title.clone()))
                .unwrap_or_default();
            println!(
                "{}: {kind} {id} {} {}: {title}",
                if fatal { "error" } else { "warning" },
                w.package.name,
                w.package.version
            );
        }
    }
    // An exception that matches nothing any more hides nothing: it must be removed.
    for (id, parsed) in ignore.iter().zip(&ids) {
        let advisory = database
            .get(parsed)
            .filter(|a| a.metadata.withdrawn.is_none());
        let matched = lock.packages.iter().any(|p| {
            advisory.is_some_and(|a| {
                a.metadata.package == p.name && a.versions.is_vulnerable(&p.version)
            })
        });
        if !matched {
            failed = true;
            println!(
                "error: {id} is ignored in {} but matches no package",
                config.display()
            );
        }
    }
    if failed {
        println!("lockaudit: FAILED");
        Ok(ExitCode::FAILURE)
    } else {
        println!(
            "lockaudit: no vulnerable or unsound package ({} ignored with reasons in {})",
            ignore.len(),
            config.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
