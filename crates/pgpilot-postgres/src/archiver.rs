//! WAL archiving as the primary itself reports it: `pg_stat_archiver`, the segment being
//! written, and — while archiving fails — pgBackRest's own error from its asynchronous
//! pusher's status file, read through the server (`pg_read_file`, superuser).

use tracing::Instrument;

use crate::pgbackrest;

/// The archiver of one server. Times are microseconds since the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archiver {
    pub last_archived_wal: Option<String>,
    pub last_archived_at: Option<i64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_at: Option<i64>,
    /// The segment being written now (none on a server in recovery).
    pub current_wal: Option<String>,
    /// pgBackRest's error for the failing segment, or its general one, while it fails.
    pub error: Option<String>,
}

impl Archiver {
    /// Whether the latest attempt failed.
    pub fn failing(&self) -> bool {
        match (self.last_failed_at, self.last_archived_at) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Segments written but not archived yet: the current one and those before it since the
    /// last archived one (same timeline; across a timeline switch the count is unknown).
    pub fn pending_segments(&self) -> Option<u64> {
        let current = segment_number(self.current_wal.as_deref()?)?;
        let archived = self.last_archived_wal.as_deref()?;
        let (timeline, last) = (archived.get(..8)?, segment_number(archived)?);
        if self.current_wal.as_deref()?.get(..8)? != timeline {
            return None;
        }
        current.checked_sub(last)
    }
}

/// The position of a WAL segment in its timeline, from its name (`TTTTTTTTLLLLLLLLSSSSSSSS`,
/// with 16 MiB segments: 256 per log file).
fn segment_number(name: &str) -> Option<u64> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * 0x100 + seg)
}

/// Reads the archiver of the server `client` is connected to; `stanza` locates pgBackRest's
/// error files.
pub async fn observe(
    client: &tokio_postgres::Client,
    stanza: &str,
) -> Result<Archiver, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT last_archived_wal, (extract(epoch FROM last_archived_time) * 1000000)::int8, \
                    last_failed_wal, (extract(epoch FROM last_failed_time) * 1000000)::int8, \
                    CASE WHEN pg_is_in_recovery() THEN NULL \
                         ELSE pg_walfile_name(pg_current_wal_lsn()) END \
             FROM pg_stat_archiver",
            &[],
        )
        .instrument(tracing::debug_span!("sql.query", what = "archiver"))
        .await?;
    let mut archiver = Archiver {
        last_archived_wal: row.get(0),
        last_archived_at: row.get(1),
        last_failed_wal: row.get(2),
        last_failed_at: row.get(3),
        current_wal: row.get(4),
        error: None,
    };
    if archiver.failing() {
        let segment = archiver.last_failed_wal.clone().unwrap_or_default();
        let [segment_file, global_file] = pgbackrest::archive_error_files(stanza, &segment);
        archiver.error = client
            .query_one(
                "SELECT coalesce(pg_read_file($1, true), pg_read_file($2, true))",
                &[&segment_file, &global_file],
            )
            .instrument(tracing::debug_span!("sql.query", what = "archive error"))
            .await?
            .get(0);
    }
    Ok(archiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archiver(archived: Option<(&str, i64)>, failed: Option<(&str, i64)>) -> Archiver {
        Archiver {
            last_archived_wal: archived.map(|a| a.0.to_owned()),
            last_archived_at: archived.map(|a| a.1),
            last_failed_wal: failed.map(|f| f.0.to_owned()),
            last_failed_at: failed.map(|f| f.1),
            current_wal: Some("000000010000000100000002".into()),
            error: None,
        }
    }

    #[test]
    fn failing_means_the_latest_attempt_failed() {
        assert!(!archiver(None, None).failing());
        assert!(archiver(None, Some(("000000010000000000000001", 5))).failing());
        assert!(
            archiver(
                Some(("000000010000000000000001", 4)),
                Some(("000000010000000000000002", 5))
            )
            .failing()
        );
        assert!(
            !archiver(
                Some(("000000010000000000000002", 6)),
                Some(("000000010000000000000002", 5))
            )
            .failing()
        );
    }

    #[test]
    fn pending_segments_count_across_log_files_on_one_timeline() {
        let a = archiver(Some(("0000000100000000000000FE", 1)), None);
        assert_eq!(
            a.pending_segments(),
            Some(4),
            "FF, 1/00, 1/01 and the current 1/02"
        );
        let other_timeline = archiver(Some(("0000000200000000000000FE", 1)), None);
        assert_eq!(other_timeline.pending_segments(), None);
        assert_eq!(archiver(None, None).pending_segments(), None);
    }
}
