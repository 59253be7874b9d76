//! When a rotation is due: an interval after the last one (or the object's creation), or the
//! next run of a cron schedule in its time zone, each plus the object's own jitter, so that a
//! fleet created at once does not rotate at once. Pure; times are Unix seconds.

use pgpilot_api::rotation::RotationTiming;
use pgpilot_toolkit::calendar::Calendar;
use sha2::{Digest, Sha256};

/// `spec.rotateEvery`, parsed.
#[derive(Clone, Debug)]
pub struct Timing {
    every: Every,
    /// Seconds.
    jitter: i64,
}

#[derive(Clone, Debug)]
enum Every {
    /// Seconds.
    Interval(i64),
    Schedule(Box<Calendar>),
}

impl Timing {
    /// The error names the field at fault (`interval`, `schedule`, `timeZone`, `jitter`).
    pub fn parse(t: &RotationTiming) -> Result<Timing, String> {
        let every = match (&t.interval, &t.schedule) {
            (Some(i), None) => Every::Interval(seconds(i, "interval")?.max(1)),
            (None, Some(s)) => {
                Every::Schedule(Box::new(Calendar::parse(s, t.time_zone.as_deref())?))
            }
            _ => return Err("rotateEvery needs exactly one of interval and schedule".to_owned()),
        };
        let jitter = match &t.jitter {
            Some(j) => seconds(j, "jitter")?,
            None => 0,
        };
        Ok(Timing { every, jitter })
    }

    /// When the rotation after the one at `last` (or, before the first, the object's
    /// creation) is due, for the object whose UID is `seed`.
    pub fn next_due(&self, last: i64, seed: &str) -> Option<i64> {
        let on_time = match &self.every {
            Every::Interval(every) => last.checked_add(*every)?,
            Every::Schedule(calendar) => calendar.next_after(last)?,
        };
        on_time.checked_add(offset(seed, self.jitter))
    }
}

/// An offset in `[0, jitter)` seconds of `seed`'s own: the same on every reconcile and manager,
/// spread evenly over objects.
pub fn offset(seed: &str, jitter: i64) -> i64 {
    let Ok(jitter) = u64::try_from(jitter) else {
        return 0;
    };
    if jitter == 0 {
        return 0;
    }
    let hash = Sha256::digest(seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::try_from(u64::from_be_bytes(first) % jitter).unwrap_or(0)
}

/// A duration such as `720h` or `1h30m` in whole seconds.
fn seconds(s: &str, field: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{field} {s:?} is not a duration such as 720h or 1h30m: {e}"))?;
    i64::try_from(d.as_secs()).map_err(|_| format!("{field} {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn timing(
        interval: Option<&str>,
        schedule: Option<&str>,
        tz: Option<&str>,
        jitter: Option<&str>,
    ) -> RotationTiming {
        RotationTiming {
            interval: interval.map(Into::into),
            schedule: schedule.map(Into::into),
            time_zone: tz.map(Into::into),
            jitter: jitter.map(Into::into),
        }
    }

    /// 2026-12-06T00:00:00Z.
    const DEC_6: i64 = 1_796_515_200;

    #[test]
    fn an_interval_counts_from_the_last_rotation() {
        let t = Timing::parse(&timing(Some("720h"), None, None, None)).unwrap();
        assert_eq!(t.next_due(DEC_6, "uid"), Some(DEC_6 + 720 * 3600));
        let t = Timing::parse(&timing(Some("1h30m"), None, None, None)).unwrap();
        assert_eq!(t.next_due(DEC_6, "uid"), Some(DEC_6 + 5400));
    }

    #[test]
    fn a_schedule_runs_in_its_time_zone() {
        // 04:00 in Paris on the 1st is 03:00 UTC in winter.
        let t =
            Timing::parse(&timing(None, Some("0 4 1 * *"), Some("Europe/Paris"), None)).unwrap();
        assert_eq!(t.next_due(DEC_6, "uid"), Some(1_798_772_400));
        let e = Timing::parse(&timing(None, Some("0 4 1 * *"), Some("Mars/Olympus"), None))
            .unwrap_err();
        assert!(e.starts_with("timeZone \"Mars/Olympus\""), "{e}");
    }

    #[test]
    fn jitter_is_an_offset_of_each_objects_own_within_the_bound() {
        let t = Timing::parse(&timing(Some("24h"), None, None, Some("30m"))).unwrap();
        let due = t.next_due(DEC_6, "uid-1").unwrap();
        assert!((DEC_6 + 86_400..DEC_6 + 86_400 + 1800).contains(&due));
        assert_eq!(t.next_due(DEC_6, "uid-1"), Some(due), "stable");
        let offsets: std::collections::BTreeSet<i64> = (0..200)
            .map(|i| offset(&format!("uid-{i}"), 1800))
            .collect();
        assert!(offsets.len() > 150, "spread: {}", offsets.len());
        assert!(offsets.iter().all(|o| (0..1800).contains(o)));
        assert_eq!(offset("uid-1", 0), 0);
    }

    #[test]
    fn a_bad_duration_names_its_field() {
        let e = Timing::parse(&timing(Some("a month"), None, None, None)).unwrap_err();
        assert!(e.starts_with("interval \"a month\""), "{e}");
        let e = Timing::parse(&timing(Some("1h"), None, None, Some("soon"))).unwrap_err();
        assert!(e.starts_with("jitter \"soon\""), "{e}");
    }
}
