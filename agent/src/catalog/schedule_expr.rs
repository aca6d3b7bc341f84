//! Maintenance-window schedules: an RFC 5545 RRULE (optionally with its own DTSTART and
//! TZID) or a five-field cron expression, read in an IANA time zone.

use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use croner::Cron;
use rrule::RRuleSet;

/// A parsed schedule of window starts.
#[derive(Clone, Debug)]
pub enum WindowSchedule {
    /// RFC 5545 recurrence.
    RRule(Box<RRuleSet>),
    /// Cron expression with the zone it is read in.
    Cron(Box<Cron>, chrono_tz::Tz),
}

impl WindowSchedule {
    /// Parse `text` (RRULE or cron) in time zone `tz`. Errors say which form was
    /// assumed and what is wrong.
    pub fn parse(text: &str, tz: chrono_tz::Tz) -> Result<Self, String> {
        let t = text.trim();
        let upper = t.to_ascii_uppercase();
        let looks_rrule =
            upper.starts_with("RRULE:") || upper.starts_with("DTSTART") || upper.contains("FREQ=");
        if looks_rrule {
            let body = if upper.contains("DTSTART") {
                t.to_string()
            } else {
                let rule = t
                    .strip_prefix("RRULE:")
                    .or_else(|| t.strip_prefix("rrule:"))
                    .unwrap_or(t);
                // Without DTSTART, occurrences are anchored at midnight of 2020-01-01 in `tz`.
                if tz == chrono_tz::UTC {
                    format!("DTSTART:20200101T000000Z\nRRULE:{rule}")
                } else {
                    format!("DTSTART;TZID={}:20200101T000000\nRRULE:{rule}", tz.name())
                }
            };
            let set = RRuleSet::from_str(&body).map_err(|e| format!("invalid RRULE: {e}"))?;
            return Ok(WindowSchedule::RRule(Box::new(set)));
        }
        let fields = t.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "expected an RRULE such as FREQ=WEEKLY;BYDAY=SU;BYHOUR=2 or a five-field cron expression such as \"0 2 * * SUN\", got {t:?}"
            ));
        }
        let cron = Cron::from_str(t).map_err(|e| format!("invalid cron expression: {e}"))?;
        Ok(WindowSchedule::Cron(Box::new(cron), tz))
    }

    /// The first window start strictly after `at`.
    pub fn next_start_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            WindowSchedule::RRule(set) => {
                let tz = rrule::Tz::UTC;
                let after = at.with_timezone(&tz);
                let r = (**set).clone().after(after).all(1);
                r.dates.first().map(|d| d.with_timezone(&Utc))
            }
            WindowSchedule::Cron(cron, tz) => cron
                .find_next_occurrence(&at.with_timezone(tz), false)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
        }
    }

    /// The start of the window in progress at `at`, given windows last `duration`.
    pub fn active_start(&self, at: DateTime<Utc>, duration: Duration) -> Option<DateTime<Utc>> {
        let from = at - duration;
        let start = match self {
            WindowSchedule::RRule(set) => {
                let tz = rrule::Tz::UTC;
                let r = (**set)
                    .clone()
                    .after(from.with_timezone(&tz))
                    .before((at + Duration::seconds(1)).with_timezone(&tz))
                    .all(u16::MAX);
                r.dates
                    .into_iter()
                    .map(|d| d.with_timezone(&Utc))
                    .rfind(|d| *d <= at)
            }
            WindowSchedule::Cron(cron, tz) => cron
                .find_previous_occurrence(&at.with_timezone(tz), true)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
        }?;
        (start <= at && at < start + duration).then_some(start)
    }
}

/// Midnight UTC of a date, for tests and callers that need a fixed anchor.
pub fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrule_in_a_zone_follows_daylight_saving() {
        // Sundays 02:30 Berlin time: 01:30 UTC in winter, 00:30 UTC in summer.
        let s = WindowSchedule::parse(
            "FREQ=WEEKLY;BYDAY=SU;BYHOUR=2;BYMINUTE=30",
            chrono_tz::Europe::Berlin,
        )
        .unwrap();
        // 2024-03-31 is the spring-forward day in Berlin; 02:30 does not exist that day.
        let winter = s.next_start_after(utc(2024, 3, 20, 0, 0)).unwrap();
        assert_eq!(winter, utc(2024, 3, 24, 1, 30));
        let summer = s.next_start_after(utc(2024, 4, 1, 0, 0)).unwrap();
        assert_eq!(summer, utc(2024, 4, 7, 0, 30));
        assert!(
            s.active_start(utc(2024, 4, 7, 0, 45), Duration::minutes(60))
                .is_some()
        );
        assert!(
            s.active_start(utc(2024, 4, 7, 1, 45), Duration::minutes(60))
                .is_none()
        );
    }

    #[test]
    fn cron_and_errors() {
        let s = WindowSchedule::parse("0 2 * * SUN", chrono_tz::UTC).unwrap();
        assert_eq!(
            s.next_start_after(utc(2024, 1, 1, 0, 0)).unwrap(),
            utc(2024, 1, 7, 2, 0)
        );
        assert!(
            WindowSchedule::parse("FREQ=SOMETIMES", chrono_tz::UTC)
                .unwrap_err()
                .starts_with("invalid RRULE")
        );
        assert!(
            WindowSchedule::parse("61 2 * * *", chrono_tz::UTC)
                .unwrap_err()
                .starts_with("invalid cron")
        );
        assert!(
            WindowSchedule::parse("weekly", chrono_tz::UTC)
                .unwrap_err()
                .starts_with("expected an RRULE")
        );
    }
}
