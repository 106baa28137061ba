#!/usr/bin/env bash
# The dependency audit, offline: Cargo.lock against the RustSec advisory database, with the
# exceptions (and their reasons) in .cargo/audit.toml. These machines cannot fetch the
# database; they carry it as a git bundle, which this clones into a temporary folder.
#
#   ADVISORY_DB=/path/to/advisory-db   use this clone of the database instead of the bundle
#   ADVISORY_DB_BUNDLE=/path/x.bundle  where the bundle is (default: ../shared/ next to the
#                                      checkout, then /work/shared/)
#
# --if-available: say so and succeed when no database is found (CI on a machine without the
# bundle), instead of failing.
#
# With network access, `cargo install cargo-audit && cargo audit` runs the same check against
# the live database (it reads the same .cargo/audit.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

db="${ADVISORY_DB:-}"
if [ -z "$db" ]; then
  bundle="${ADVISORY_DB_BUNDLE:-}"
  if [ -z "$bundle" ]; then
    for b in "$(pwd)/../shared/advisory-db.bundle" /work/shared/advisory-db.bundle; do
      if [ -f "$b" ]; then bundle="$b"; break; fi
    done
  fi
  if [ -z "$bundle" ]; then
    if [ "${1:-}" = "--if-available" ]; then
      echo "scripts/audit.sh: SKIPPED the dependency audit: no advisory database here (set ADVISORY_DB or ADVISORY_DB_BUNDLE)"
      exit 0
    fi
    echo "scripts/audit.sh: FAILED: no advisory database (set ADVISORY_DB or ADVISORY_DB_BUNDLE)" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # The bundle carries one branch, main (its HEAD names none).
  git clone -q -b main "$bundle" "$tmp/advisory-db"
  db="$tmp/advisory-db"
  echo "scripts/audit.sh: advisory database from $bundle ($(git -C "$db" log -1 --format=%cs))"
fi
cargo run -q -p lockaudit -- "$db" Cargo.lock
