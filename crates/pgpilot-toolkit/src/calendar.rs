//! Cron calendars in an IANA time zone, for every controller that acts on a schedule (backup
//! schedules, upgrade maintenance windows): the expression (5 fields or a macro) parsed by
//! `croner`, the zone by `chrono-tz` (compiled in: the manager's image has no zoneinfo).
//! Times are Unix seconds. Pure.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Calendar {
    cron: Cron,
    tz: Tz,
}

impl Calendar {
    /// Parses `schedule` in `time_zone` (UTC when `None`); the error says which is wrong,
    /// naming it `schedule` or `timeZone` (the caller prefixes the path of its fields).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Calendar, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            // Spaces around the fields are no error (YAML block scalars leave a newline).
            .parse(schedule.trim())
            .map_err(|e| format!("schedule {schedule:?} is not a cron schedule: {e}"))?;
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                format!("timeZone {name:?} is not an IANA time zone (e.g. Europe/Paris, America/New_York, UTC)")
            })?,
        };
        Ok(Calendar { cron, tz })
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let local = self.tz.timestamp_opt(t, 0).single()?;
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc).timestamp())
    }

    /// The latest run in `(after, now]`: the one due now, if any. Earlier runs in that window
    /// were missed and are not made up for (one run, never a burst).
    pub fn due(&self, after: i64, now: i64) -> Option<i64> {
        let mut due = None;
        let mut t = after;
        // Walk forward; a schedule that fires every minute over a long outage is bounded by
        // jumping close to `now` first.
        if now - after > 7 * 24 * 3600 {
            t = now - 7 * 24 * 3600;
        }
        while let Some(next) = self.next_after(t) {
            if next > now {
                break;
            }
            due = Some(next);
            t = next;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spaces_around_and_between_fields_are_no_error() {
        let plain = super::Calendar::parse("0 3 * * *", None).unwrap();
        let padded = super::Calendar::parse(" 0  3 * *\t*  \n", None).unwrap();
        assert_eq!(plain.next_after(0), padded.next_after(0));
    }

    use super::*;

    /// Unix seconds of a UTC wall-clock time.
    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn five_fields_and_macros_parse_seconds_and_years_do_not() {
        assert!(Calendar::parse("0 3 * * *", None).is_ok());
        assert!(Calendar::parse("@daily", None).is_ok());
        assert!(Calendar::parse("*/15 * * * 1-5", None).is_ok());
        let e = Calendar::parse("0 0 3 * * *", None).unwrap_err();
        assert!(e.contains("not a cron schedule"), "{e}");
        assert!(Calendar::parse("61 * * * *", None).is_err());
        let e = Calendar::parse("@daily", Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("IANA"), "{e}");
    }

    #[test]
    fn the_next_run_is_in_the_schedules_time_zone() {
        let c = Calendar::parse("0 3 * * *", Some("Europe/Paris")).unwrap();
        // 03:00 in Paris in winter is 02:00 UTC.
        assert_eq!(
            c.next_after(utc("2026-12-05T12:00:00Z")),
            Some(utc("2026-12-06T02:00:00Z"))
        );
        // …and 01:00 UTC in summer.
        assert_eq!(
            c.next_after(utc("2026-07-05T12:00:00Z")),
            Some(utc("2026-07-06T01:00:00Z"))
        );
    }

    #[test]
    fn a_time_skipped_by_dst_runs_once_after_the_change() {
        // 2026-03-29: Paris jumps from 02:00 to 03:00; 02:30 does not exist that day.
        let c = Calendar::parse("30 2 * * *", Some("Europe/Paris")).unwrap();
        let next = c.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert!(
            next >= utc("2026-03-29T01:00:00Z") && next <= utc("2026-03-30T00:30:00Z"),
            "one run on the day of the change or right after it, got {}",
            Utc.timestamp_opt(next, 0).unwrap()
        );
        let after = c.next_after(next).unwrap();
        assert_eq!(after, utc("2026-03-30T00:30:00Z"), "then 02:30 CEST");
    }

    #[test]
    fn a_time_repeated_by_dst_runs_once() {
        // 2026-10-25: Paris goes from 03:00 back to 02:00; 02:30 happens twice.
        let c = Calendar::parse("30 2 * * *", Some("Europe/Paris")).unwrap();
        let first = c.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        let second = c.next_after(first).unwrap();
        assert!(first >= utc("2026-10-25T00:30:00Z") && first <= utc("2026-10-25T01:30:00Z"));
        assert_eq!(
            second,
            utc("2026-10-26T01:30:00Z"),
            "the next day, not an hour later"
        );
    }

    #[test]
    fn only_the_latest_missed_run_is_due() {
        let c = Calendar::parse("0 * * * *", None).unwrap();
        // Down from 10:30 to 13:20: 11:00, 12:00 and 13:00 were missed; 13:00 is due.
        assert_eq!(
            c.due(utc("2026-12-05T10:30:00Z"), utc("2026-12-05T13:20:00Z")),
            Some(utc("2026-12-05T13:00:00Z"))
        );
        assert_eq!(
            c.due(utc("2026-12-05T13:00:00Z"), utc("2026-12-05T13:59:59Z")),
            None
        );
        // An exact hit is due.
        assert_eq!(
            c.due(utc("2026-12-05T13:00:00Z"), utc("2026-12-05T14:00:00Z")),
            Some(utc("2026-12-05T14:00:00Z"))
        );
    }

    #[test]
    fn a_long_outage_does_not_walk_every_minute_since() {
        let c = Calendar::parse("* * * * *", None).unwrap();
        let now = utc("2026-12-05T13:20:00Z");
        assert_eq!(c.due(utc("2025-01-01T00:00:00Z"), now), Some(now));
    }

    proptest::proptest! {
        // Schedules and time zones come from users: any text gets an answer, never a panic.
        #[test]
        fn any_schedule_and_time_zone_get_an_answer(
            schedule in "[0-9*/,\\- a-zA-Z@]{0,40}",
            zone in proptest::option::of("[A-Za-z_/+-]{0,30}"),
        ) {
            let _ = Calendar::parse(&schedule, zone.as_deref());
        }
    }
}
