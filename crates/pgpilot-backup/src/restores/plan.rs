//! Which backup a restore starts from, or why none can reach the target: pure, from what the
//! check Job read in the source's repository.

use chrono::{DateTime, SecondsFormat, Utc};
use pgpilot_api::cluster::RecoveryTarget;
use serde::Deserialize;

/// What the check Job writes to its termination message (see `SCRIPT` in the module).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// pgBackRest's status of the stanza: 0 ok, 1 missing stanza path, 2 no valid backups,
    /// 3 missing stanza data, …
    #[serde(default)]
    pub status: Option<StanzaStatus>,
    /// Oldest first.
    #[serde(default)]
    pub backups: Vec<ReportedBackup>,
    /// The newest archived WAL segment and when it reached the repository (Unix seconds).
    #[serde(default)]
    pub last_wal: Option<(String, Option<i64>)>,
    /// Clusters with backups in the source's namespace (when its own stanza is missing).
    #[serde(default)]
    pub others: Vec<String>,
    /// Middle backups were left out to fit the message.
    #[serde(default)]
    pub truncated: bool,
}

/// Label, stop time (Unix seconds), stop LSN.
pub type ReportedBackup = (String, i64, Option<String>);

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct StanzaStatus {
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// A backup the restore can start from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub label: String,
    pub stop: i64,
}

/// The check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Chosen {
        backup: Chosen,
        message: String,
    },
    Refused {
        reason: &'static str,
        message: String,
    },
}

/// What the restore asks for.
pub struct Request<'a> {
    pub stanza: &'a str,
    pub backup_id: Option<&'a str>,
    pub target: Option<&'a RecoveryTarget>,
    /// Unix seconds.
    pub now: i64,
}

pub fn choose(report: &Report, req: &Request<'_>) -> Verdict {
    let refuse = |reason, message: String| Verdict::Refused { reason, message };
    let code = report.status.as_ref().map_or(0, |s| s.code);
    if code == 1 || code == 3 {
        let others = if report.others.is_empty() {
            "no cluster has backups at that repository path".to_owned()
        } else {
            format!("clusters with backups there: {}", report.others.join(", "))
        };
        return refuse(
            "StanzaNotFound",
            format!(
                "the repository has no stanza {} (check spec.bootstrap.restore.source and the repository's bucket and path); {others}",
                req.stanza
            ),
        );
    }
    let Some((oldest, newest)) = report.backups.first().zip(report.backups.last()) else {
        return refuse(
            "NoBackup",
            format!(
                "stanza {} has no backup to restore (WAL alone cannot be restored): back up the source first",
                req.stanza
            ),
        );
    };
    let window = window(report, oldest);
    let labels = || {
        let list: Vec<&str> = report.backups.iter().map(|b| b.0.as_str()).collect();
        format!(
            "{}{}",
            if report.truncated { "…, " } else { "" },
            list.join(", ")
        )
    };
    let given = match req.backup_id {
        Some(id) => match report.backups.iter().find(|b| b.0 == id) {
            Some(b) => Some(b),
            None => {
                return refuse(
                    "BackupNotFound",
                    format!(
                        "backup {id} is not in stanza {}; it holds (oldest first): {}",
                        req.stanza,
                        labels()
                    ),
                );
            }
        },
        None => None,
    };
    let last_wal_time = report.last_wal.as_ref().and_then(|(_, t)| *t);
    let target = req.target;
    let (candidates, goal): (Vec<&ReportedBackup>, String) = match target
        .and_then(|t| t.time.as_deref())
    {
        Some(time) => {
            let Some(at) = DateTime::parse_from_rfc3339(time)
                .ok()
                .map(|t| t.timestamp())
            else {
                return refuse(
                    "InvalidTarget",
                    format!("recoveryTarget.time {time} is not an RFC 3339 time"),
                );
            };
            if at > req.now || last_wal_time.is_some_and(|t| at > t) {
                return refuse(
                    "TargetAfterArchive",
                    format!(
                        "target {time} is after the newest archived WAL: replay would end before reaching it. {window}"
                    ),
                );
            }
            let before: Vec<_> = report.backups.iter().filter(|b| b.1 <= at).collect();
            if before.is_empty() {
                return refuse(
                    "TargetBeforeFirstBackup",
                    format!(
                        "target {time} is before the end of the oldest backup ({}, ended {}). {window}",
                        oldest.0,
                        rfc3339(oldest.1)
                    ),
                );
            }
            (before, format!("time {time}"))
        }
        None => match target.and_then(|t| t.lsn.as_deref()) {
            Some(lsn) => {
                let Some(at) = parse_lsn(lsn) else {
                    return refuse(
                        "InvalidTarget",
                        format!("recoveryTarget.lsn {lsn} is not a WAL location"),
                    );
                };
                let wal_end = report
                    .last_wal
                    .as_ref()
                    .and_then(|(segment, _)| segment_end(segment));
                if wal_end.is_some_and(|end| at > end) {
                    return refuse(
                        "TargetAfterArchive",
                        format!(
                            "target LSN {lsn} is after the end of the newest archived WAL segment. {window}"
                        ),
                    );
                }
                let before: Vec<_> = report
                    .backups
                    .iter()
                    .filter(|b| b.2.as_deref().and_then(parse_lsn).is_some_and(|s| s <= at))
                    .collect();
                if before.is_empty() {
                    return refuse(
                        "TargetBeforeFirstBackup",
                        format!(
                            "target LSN {lsn} is before the end of the oldest backup ({}, stopped at {}). {window}",
                            oldest.0,
                            oldest.2.as_deref().unwrap_or("?")
                        ),
                    );
                }
                (before, format!("LSN {lsn}"))
            }
            None => (
                report.backups.iter().collect(),
                match target {
                    Some(t) if t.xid.is_some() => {
                        format!("transaction {}", t.xid.as_deref().unwrap_or_default())
                    }
                    Some(t) if t.name.is_some() => {
                        format!("restore point {}", t.name.as_deref().unwrap_or_default())
                    }
                    Some(t) if t.immediate == Some(true) => {
                        "the end of the backup (immediate)".to_owned()
                    }
                    _ => "the end of the archived WAL".to_owned(),
                },
            ),
        },
    };
    let backup = match given {
        Some(b) if !candidates.contains(&b) => {
            return refuse(
                "BackupAfterTarget",
                format!(
                    "backup {} ended {}, after the target: a restore cannot go back in time from it; leave backupId empty to take the newest backup before the target",
                    b.0,
                    rfc3339(b.1)
                ),
            );
        }
        Some(b) => b,
        None => candidates.last().copied().unwrap_or(newest),
    };
    Verdict::Chosen {
        backup: Chosen {
            label: backup.0.clone(),
            stop: backup.1,
        },
        message: format!(
            "restoring backup {} of stanza {} (ended {}), then replaying WAL to {goal}. {window}",
            backup.0,
            req.stanza,
            rfc3339(backup.1)
        ),
    }
}

/// "The repository can restore from … to …", as far as the report tells.
fn window(report: &Report, oldest: &ReportedBackup) -> String {
    let to = match &report.last_wal {
        Some((segment, Some(t))) => format!("{} (WAL {segment} archived)", rfc3339(*t)),
        Some((segment, None)) => format!("WAL {segment}"),
        None => "the end of the newest backup".to_owned(),
    };
    format!(
        "The repository can restore from {} (end of backup {}) to {to}",
        rfc3339(oldest.1),
        oldest.0
    )
}

fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

/// `X/Y` (hex) as a 64-bit position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    // Each half is 32 bits: a longer one would spill into the other.
    let half = |h: &str| u32::from_str_radix(h, 16).ok().map(u64::from);
    Some((half(hi)? << 32) | half(lo)?)
}

/// The position just past a WAL segment (`TTTTTTTTXXXXXXXXYYYYYYYY`, 16 MiB segments).
fn segment_end(segment: &str) -> Option<u64> {
    if segment.len() != 24 {
        return None;
    }
    let log = u64::from_str_radix(&segment[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&segment[16..24], 16).ok()?;
    Some((log << 32) + (seg + 1) * (16 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three backups at 10:00, 11:00, 12:00 UTC on 2026-12-06; WAL archived until 12:30.
    fn report() -> Report {
        serde_json::from_value(serde_json::json!({
            "status": {"code": 0, "message": "ok"},
            "backups": [
                ["20261206-100000F", 1_796_551_200, "0/3000100"],
                ["20261206-100000F_20261206-110000I", 1_796_554_800, "0/5000100"],
                ["20261206-120000F", 1_796_558_400, "0/7000100"]],
            "lastWal": ["000000010000000000000009", 1_796_560_200],
        }))
        .unwrap()
    }

    fn target(yaml: &str) -> RecoveryTarget {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn choose_for(report: &Report, id: Option<&str>, t: Option<&RecoveryTarget>) -> Verdict {
        choose(
            report,
            &Request {
                stanza: "prod-old",
                backup_id: id,
                target: t,
                now: 1_796_600_000,
            },
        )
    }

    fn chosen(v: Verdict) -> String {
        match v {
            Verdict::Chosen { backup, .. } => backup.label,
            other => panic!("{other:?}"),
        }
    }

    fn refused(v: Verdict) -> (&'static str, String) {
        match v {
            Verdict::Refused { reason, message } => (reason, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_newest_backup_before_the_target_time_is_taken() {
        let r = report();
        assert_eq!(
            chosen(choose_for(
                &r,
                None,
                Some(&target("{time: '2026-12-06T11:30:00Z'}"))
            )),
            "20261206-100000F_20261206-110000I"
        );
        // An offset is the same instant.
        assert_eq!(
            chosen(choose_for(
                &r,
                None,
                Some(&target("{time: '2026-12-06T12:30:00+01:00'}"))
            )),
            "20261206-100000F_20261206-110000I"
        );
        assert_eq!(chosen(choose_for(&r, None, None)), "20261206-120000F");
        assert_eq!(
            chosen(choose_for(&r, None, Some(&target("{xid: '1234'}")))),
            "20261206-120000F"
        );
    }

    #[test]
    fn a_target_outside_the_window_is_refused_with_the_window() {
        let r = report();
        let (reason, message) = refused(choose_for(
            &r,
            None,
            Some(&target("{time: '2026-12-06T09:00:00Z'}")),
        ));
        assert_eq!(reason, "TargetBeforeFirstBackup");
        assert!(
            message.contains("The repository can restore from 2026-12-06T10:00:00Z (end of backup 20261206-100000F) to 2026-12-06T12:30:00Z (WAL 000000010000000000000009 archived)"),
            "{message}"
        );
        let (reason, _) = refused(choose_for(
            &r,
            None,
            Some(&target("{time: '2026-12-06T12:31:00Z'}")),
        ));
        assert_eq!(reason, "TargetAfterArchive");
    }

    #[test]
    fn lsn_targets_pick_by_stop_lsn_and_stop_at_the_archive_end() {
        let r = report();
        assert_eq!(
            chosen(choose_for(&r, None, Some(&target("{lsn: '0/6000000'}")))),
            "20261206-100000F_20261206-110000I"
        );
        // Segment 9 ends at 0/A000000.
        assert_eq!(
            chosen(choose_for(&r, None, Some(&target("{lsn: '0/A000000'}")))),
            "20261206-120000F"
        );
        assert_eq!(
            refused(choose_for(&r, None, Some(&target("{lsn: '0/A000001'}")))).0,
            "TargetAfterArchive"
        );
        assert_eq!(
            refused(choose_for(&r, None, Some(&target("{lsn: '0/2000000'}")))).0,
            "TargetBeforeFirstBackup"
        );
    }

    #[test]
    fn a_given_backup_must_exist_and_precede_the_target() {
        let r = report();
        let (reason, message) = refused(choose_for(&r, Some("20261205-000000F"), None));
        assert_eq!(reason, "BackupNotFound");
        assert!(
            message
                .ends_with("20261206-100000F, 20261206-100000F_20261206-110000I, 20261206-120000F"),
            "{message}"
        );
        let t = target("{time: '2026-12-06T11:30:00Z'}");
        assert_eq!(
            refused(choose_for(&r, Some("20261206-120000F"), Some(&t))).0,
            "BackupAfterTarget"
        );
        assert_eq!(
            chosen(choose_for(&r, Some("20261206-100000F"), Some(&t))),
            "20261206-100000F"
        );
    }

    #[test]
    fn a_missing_stanza_names_what_the_namespace_has() {
        let r: Report = serde_json::from_value(serde_json::json!({
            "status": {"code": 1, "message": "missing stanza path"},
            "others": ["db", "orders"]}))
        .unwrap();
        let (reason, message) = refused(choose_for(&r, None, None));
        assert_eq!(reason, "StanzaNotFound");
        assert!(message.contains("no stanza prod-old"), "{message}");
        assert!(
            message.ends_with("clusters with backups there: db, orders"),
            "{message}"
        );
        let r: Report = serde_json::from_value(
            serde_json::json!({"status": {"code": 2, "message": "no valid backups"}}),
        )
        .unwrap();
        assert_eq!(refused(choose_for(&r, None, None)).0, "NoBackup");
    }

    #[test]
    fn lsns_and_segments() {
        assert_eq!(parse_lsn("1/A0"), Some((1 << 32) | 0xA0));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(
            segment_end("000000010000000100000002"),
            Some((1 << 32) + 3 * (16 << 20))
        );
    }

    proptest::proptest! {
        #[test]
        fn an_lsn_reads_back_as_the_position_it_names(hi in proptest::num::u32::ANY, lo in proptest::num::u32::ANY) {
            let position = (u64::from(hi) << 32) | u64::from(lo);
            proptest::prop_assert_eq!(parse_lsn(&format!("{hi:X}/{lo:X}")), Some(position));
        }

        #[test]
        fn any_text_is_an_lsn_or_none_without_panicking(text in ".{0,30}") {
            let _ = parse_lsn(&text);
        }
    }

    #[test]
    fn an_lsn_half_longer_than_32_bits_is_refused() {
        assert_eq!(parse_lsn("0/100000000"), None, "would read as 1/0");
        assert_eq!(parse_lsn("100000000/0"), None);
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
    }
}
