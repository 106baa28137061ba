//! When backups are due (pure): `spec.backup.schedule` as a cron expression in a time zone, a
//! shorthand, or `@every <duration>`.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

use super::Error;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression on the wall clock of `tz`.
    Cron {
        /// The expression.
        cron: Box<croner::Cron>,
        /// Its time zone.
        tz: chrono_tz::Tz,
    },
    /// A fixed interval after the previous backup, seconds.
    Every(i64),
}

impl Schedule {
    /// Reads `schedule` (and `time_zone`, default UTC).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, Error> {
        let bad = |reason: String| Error::Schedule {
            schedule: schedule.to_owned(),
            reason,
        };
        let text = schedule.trim();
        if let Some(every) = text.strip_prefix("@every") {
            let d = etcd_api::duration::parse_interval(every.trim()).map_err(bad)?;
            if d.as_secs() < 1 {
                return Err(bad("the interval must be at least 1s".into()));
            }
            if d.as_secs() > 366 * 86400 {
                return Err(bad("the interval must be at most 366 days".into()));
            }
            return Ok(Self::Every(d.as_secs() as i64));
        }
        if !text.starts_with('@') && text.split_whitespace().count() != 5 {
            return Err(bad(
                "want 5 fields (minute hour day-of-month month day-of-week)".into(),
            ));
        }
        let cron = croner::Cron::from_str(text).map_err(|e| bad(e.to_string()))?;
        let tz = match time_zone {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| Error::Schedule {
                schedule: schedule.to_owned(),
                reason: format!(
                    "unknown time zone {name:?} (want an IANA name such as Europe/Berlin)"
                ),
            })?,
        };
        // An expression that never fires (31 February) is as wrong as one that does not parse.
        let probe = Self::Cron {
            cron: Box::new(cron),
            tz,
        };
        if probe.next_after(0).is_none() {
            return Err(bad("it never fires".into()));
        }
        Ok(probe)
    }

    /// The first due time strictly after `after` (Unix seconds): for `@every`, one interval
    /// after it (the previous backup).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            Self::Every(secs) => Some(after + secs),
            Self::Cron { cron, tz } => {
                // A wall time that occurs twice (the night clocks go back) resolves to its
                // first instant, which can lie before `after`: search on from there.
                let mut from: DateTime<Utc> = Utc.timestamp_opt(after, 0).single()?;
                for _ in 0..8 {
                    let t = cron
                        .find_next_occurrence(&from.with_timezone(tz), false)
                        .ok()?
                        .timestamp();
                    if t > after {
                        return Some(t);
                    }
                    // Past the repeated hour: a wall time that happens twice runs once.
                    from = Utc.timestamp_opt(from.timestamp() + 3600, 0).single()?;
                }
                None
            }
        }
    }

    /// The time between the next two due times after `at`: what "two intervals without a
    /// backup" (`BackupOverdue`) measures.
    pub fn interval_at(&self, at: i64) -> i64 {
        match self {
            Self::Every(secs) => *secs,
            Self::Cron { .. } => {
                let first = self.next_after(at).unwrap_or(at);
                self.next_after(first)
                    .map_or(86400, |second| second - first)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).expect("time").timestamp()
    }

    #[test]
    fn cron_shorthands_every_and_time_zones() {
        let cases: &[(&str, Option<&str>, &str, &str)] = &[
            (
                "0 */12 * * *",
                None,
                "2026-03-01T05:00:00Z",
                "2026-03-01T12:00:00Z",
            ),
            (
                "@hourly",
                None,
                "2026-03-01T05:00:00Z",
                "2026-03-01T06:00:00Z",
            ),
            (
                "@daily",
                None,
                "2026-03-01T05:00:00Z",
                "2026-03-02T00:00:00Z",
            ),
            (
                "30 2 * * *",
                Some("Europe/Berlin"),
                "2026-03-01T05:00:00Z",
                "2026-03-02T01:30:00Z",
            ),
            (
                "0 0 * * MON",
                None,
                "2026-03-04T00:00:00Z",
                "2026-03-09T00:00:00Z",
            ),
            (
                "@every 10s",
                None,
                "2026-03-01T05:00:00Z",
                "2026-03-01T05:00:10Z",
            ),
            (
                "@every 1h30m",
                None,
                "2026-03-01T05:00:00Z",
                "2026-03-01T06:30:00Z",
            ),
        ];
        for (schedule, tz, after, want) in cases {
            let s = Schedule::parse(schedule, *tz).expect(schedule);
            assert_eq!(s.next_after(at(after)), Some(at(want)), "{schedule} {tz:?}");
        }
        // The night clocks go back in Berlin (2026-10-25, 03:00 CEST → 02:00 CET): 02:30
        // happens twice; the next time after the first one is never in the past.
        let night = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).expect("night");
        let mut t = at("2026-10-24T12:00:00Z");
        for _ in 0..5 {
            let next = night.next_after(t).expect("next");
            assert!(next > t, "{next} <= {t}");
            t = next;
        }
        for after in [
            at("2026-10-25T00:00:00Z"),
            at("2026-10-25T00:40:00Z"),
            at("2026-10-25T01:10:00Z"),
        ] {
            let next = night.next_after(after).expect("next");
            assert!(next > after, "after {after}: {next}");
        }
        let daily = Schedule::parse("0 3 * * *", None).expect("daily");
        assert_eq!(daily.interval_at(at("2026-03-01T05:00:00Z")), 86400);
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        for (schedule, tz, want) in [
            ("every day", None, "5 fields"),
            ("61 * * * *", None, ""),
            ("* * * *", None, "5 fields"),
            ("@every soon", None, ""),
            ("@every 500ms", None, "at least 1s"),
            ("0 0 31 2 *", None, "never fires"),
            ("0 0 * * *", Some("Mars/Olympus"), "unknown time zone"),
        ] {
            let e = Schedule::parse(schedule, tz)
                .expect_err(schedule)
                .to_string();
            assert!(e.contains(schedule) && e.contains(want), "{schedule}: {e}");
        }
    }
}
