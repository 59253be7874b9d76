//! pgBackRest's `info --output=json`: the stanzas of a repository, their backups and the WAL
//! they keep. Parsed leniently (unknown fields ignored, missing ones `None`): the output of
//! one pgBackRest version is read by an operator built against another.

use serde::Deserialize;

/// One stanza of `info --output=json` (the output is a list of them).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Stanza {
    pub name: String,
    #[serde(default)]
    pub backup: Vec<Backup>,
    #[serde(default)]
    pub archive: Vec<Archive>,
    #[serde(default)]
    pub status: Option<Status>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Status {
    pub code: i64,
    pub message: String,
}

/// The WAL kept for one database version.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Archive {
    pub id: String,
    pub min: Option<String>,
    pub max: Option<String>,
}

/// One backup.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Backup {
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub annotation: Option<std::collections::BTreeMap<String, String>>,
    pub timestamp: Timestamps,
    pub info: Sizes,
    pub archive: WalRange,
    #[serde(default)]
    pub lsn: Option<LsnRange>,
    /// The backup it depends on (for `diff` and `incr`).
    #[serde(default)]
    pub prior: Option<String>,
    /// pgBackRest found page checksum errors while copying.
    #[serde(default)]
    pub error: Option<bool>,
}

/// Unix seconds.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Timestamps {
    pub start: i64,
    pub stop: i64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Sizes {
    /// Database size the backup covers.
    pub size: i64,
    /// Bytes copied by this backup (all of them for a full one).
    pub delta: i64,
    pub repository: RepositorySizes,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct RepositorySizes {
    /// Stored bytes of the backup with what it depends on.
    pub size: i64,
    /// Stored bytes of this backup alone.
    pub delta: i64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct WalRange {
    pub start: Option<String>,
    pub stop: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct LsnRange {
    pub start: Option<String>,
    pub stop: Option<String>,
}

/// Parses the output of `pgbackrest info --output=json`.
pub fn parse(json: &str) -> Result<Vec<Stanza>, serde_json::Error> {
    serde_json::from_str(json)
}

impl Stanza {
    /// The backup carrying annotation `key` = `value` (the newest, should there be several).
    pub fn annotated(&self, key: &str, value: &str) -> Option<&Backup> {
        self.backup.iter().rev().find(|b| {
            b.annotation
                .as_ref()
                .and_then(|a| a.get(key))
                .is_some_and(|v| v == value)
        })
    }

    /// The oldest backup in the repository: a restore cannot reach before its end.
    pub fn oldest(&self) -> Option<&Backup> {
        self.backup.iter().min_by_key(|b| b.timestamp.stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a backup Job reported on the e2e tier (pgBackRest 2.55.1's `info --output=json`
    /// after an incremental backup, kept to the oldest backup and the new one).
    const INFO: &str = include_str!("fixtures/report-full-and-incr.json");

    #[test]
    fn backups_are_found_by_annotation_and_the_oldest_bounds_a_restore() {
        let stanzas = parse(INFO).unwrap();
        let s = &stanzas[0];
        assert_eq!(s.name, "e2e-archive-474ad18f-good");
        let incr = s
            .annotated("pgpilot.io/backup", "97bdcada-b4de-481f-aa16-525ec00e861f")
            .unwrap();
        assert_eq!(incr.kind, "incr");
        assert_eq!(incr.label, "20261205-220815F_20261205-220820I");
        assert_eq!(incr.prior.as_deref(), Some("20261205-220815F"));
        assert_eq!(incr.info.repository.delta, 72986);
        assert_eq!(
            incr.archive.start.as_deref(),
            Some("000000010000000000000006")
        );
        assert!(s.annotated("pgpilot.io/backup", "nobody").is_none());
        assert_eq!(s.oldest().unwrap().label, "20261205-220815F");
        assert_eq!(
            s.archive[0].max.as_deref(),
            Some("000000010000000000000006")
        );
    }

    proptest::proptest! {
        // pgBackRest's report is outside data: whatever JSON (or not) it holds, no panic.
        #[test]
        fn any_report_is_read_without_panicking(text in ".{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn any_json_shaped_like_a_report_is_read_without_panicking(
            name in "[a-z-]{0,12}",
            status in proptest::num::i64::ANY,
            size in proptest::option::of(proptest::num::i64::ANY),
            label in ".{0,20}",
        ) {
            let json = serde_json::json!([{
                "name": name,
                "status": {"code": status, "message": label},
                "backup": [{"label": label, "info": {"size": size}, "timestamp": {"start": status, "stop": size}}],
            }]);
            let _ = parse(&json.to_string());
        }
    }
}
