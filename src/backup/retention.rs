//! Which backups to keep (pure): `spec.backup.retention`'s rules over the backups' times.

use std::collections::BTreeSet;

use chrono::{Datelike, TimeZone, Utc};

use crate::crd::Retention;

/// How many backups are kept when no rule is set.
pub const DEFAULT_KEEP_LAST: u32 = 7;

/// One backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its key.
    pub key: String,
    /// When it was taken, Unix seconds.
    pub taken: i64,
    /// Whether it counts for the rules: verified, or complete when verification is off.
    pub good: bool,
}

/// The keys to delete from `backups`: every good backup no rule keeps. Backups that are not
/// good (failed verification, or not verified yet) are never counted by a rule; failed ones
/// are deleted only when `delete_failed` says so for their key, so a backup whose verification
/// is still to come is never deleted.
pub fn to_delete(
    rules: &Retention,
    backups: &[Candidate],
    delete_failed: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut good: Vec<&Candidate> = backups.iter().filter(|b| b.good).collect();
    good.sort_by(|a, b| b.taken.cmp(&a.taken).then_with(|| b.key.cmp(&a.key)));
    let none_set = rules.keep_last.is_none()
        && rules.keep_hourly.is_none()
        && rules.keep_daily.is_none()
        && rules.keep_weekly.is_none();
    let keep_last = if none_set {
        DEFAULT_KEEP_LAST
    } else {
        rules.keep_last.unwrap_or(0)
    };
    let mut keep: BTreeSet<&str> = good
        .iter()
        .take(keep_last as usize)
        .map(|b| b.key.as_str())
        .collect();
    let mut by_bucket = |n: Option<u32>, bucket: &dyn Fn(i64) -> i64| {
        let Some(n) = n else { return };
        let mut seen = BTreeSet::new();
        for b in &good {
            if seen.len() >= n as usize {
                break;
            }
            // Newest first: the first backup of each bucket is its newest.
            if seen.insert(bucket(b.taken)) {
                keep.insert(b.key.as_str());
            }
        }
    };
    let utc = |t: i64| Utc.timestamp_opt(t, 0).single().unwrap_or_default();
    by_bucket(rules.keep_hourly, &|t| t.div_euclid(3600));
    by_bucket(rules.keep_daily, &|t| t.div_euclid(86400));
    by_bucket(rules.keep_weekly, &|t| {
        let w = utc(t).iso_week();
        i64::from(w.year()) * 100 + i64::from(w.week())
    });
    backups
        .iter()
        .filter(|b| {
            if b.good {
                !keep.contains(b.key.as_str())
            } else {
                delete_failed(&b.key)
            }
        })
        .map(|b| b.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 86400;
    /// A Monday, 00:00 UTC.
    const T0: i64 = 1_772_409_600;

    fn series(times: &[i64]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                key: format!("b{t}"),
                taken: *t,
                good: true,
            })
            .collect()
    }

    fn kept(rules: &str, backups: &[Candidate]) -> Vec<i64> {
        let rules: Retention = serde_yaml_ng::from_str(rules).expect("rules");
        let gone = to_delete(&rules, backups, |_| false);
        let mut k: Vec<i64> = backups
            .iter()
            .filter(|b| !gone.contains(&b.key))
            .map(|b| b.taken - T0)
            .collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn each_rule_and_their_union() {
        // Every 6 hours for 15 days.
        let times: Vec<i64> = (0..60).map(|i| T0 + i * 6 * H).collect();
        let b = series(&times);
        assert_eq!(
            kept("keepLast: 3\n", &b),
            [57 * 6 * H, 58 * 6 * H, 59 * 6 * H]
        );
        // The newest of each of the last 2 days that have one.
        assert_eq!(
            kept("keepDaily: 2\n", &b),
            [13 * D + 18 * H, 14 * D + 18 * H]
        );
        assert_eq!(kept("keepHourly: 2\n", &b), [58 * 6 * H, 59 * 6 * H]);
        // ISO weeks: days 0-6, 7-13, 14: the newest of the last two weeks.
        assert_eq!(
            kept("keepWeekly: 2\n", &b),
            [13 * D + 18 * H, 14 * D + 18 * H]
        );
        assert_eq!(
            kept("keepWeekly: 3\n", &b),
            [6 * D + 18 * H, 13 * D + 18 * H, 14 * D + 18 * H]
        );
        // A backup kept by any rule stays.
        assert_eq!(
            kept("keepLast: 1\nkeepWeekly: 3\n", &b),
            [6 * D + 18 * H, 13 * D + 18 * H, 14 * D + 18 * H]
        );
        assert_eq!(
            kept("keepLast: 2\nkeepDaily: 3\n", &b),
            [
                12 * D + 18 * H,
                13 * D + 18 * H,
                14 * D + 12 * H,
                14 * D + 18 * H
            ]
        );
        // No rule: the last 7.
        assert_eq!(kept("{}\n", &b).len(), DEFAULT_KEEP_LAST as usize);
        // keepLast 0 with nothing else keeps nothing.
        assert!(kept("keepLast: 0\n", &b).is_empty());
    }

    #[test]
    fn backups_that_are_not_good_are_neither_counted_nor_deleted_unless_failed() {
        let mut b = series(&[T0, T0 + H, T0 + 2 * H]);
        b[2].good = false; // the newest: not verified yet
        b.push(Candidate {
            key: "failed".into(),
            taken: T0 + 3 * H,
            good: false,
        });
        let rules: Retention = serde_yaml_ng::from_str("keepLast: 1\n").expect("rules");
        let gone = to_delete(&rules, &b, |k| k == "failed");
        // The unverified newest neither counts (so b{T0+H} is the one kept) nor goes.
        assert_eq!(gone, [format!("b{T0}"), "failed".to_owned()]);
    }
}
