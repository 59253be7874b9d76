//! `status`: one screen about a cluster, from its status, the resources that name it, its
//! certificates and its recent Events. Gathering reads; [`render`] is pure.

use std::fmt::Write;

use anyhow::Result;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pgpilot_api::{
    BackupSchedule, PostgresBackup, PostgresCluster, PostgresUpgrade, SecretRotation,
};
use pgpilot_postgres::names::Names;
use pgpilot_postgres::tls::{CA_CERT, TLS_CERT};

use crate::client::{Related, Target};

/// Everything the screen shows.
pub struct Snapshot {
    pub cluster: PostgresCluster,
    pub backups: Vec<PostgresBackup>,
    pub schedules: Vec<BackupSchedule>,
    pub upgrades: Vec<PostgresUpgrade>,
    pub rotations: Vec<SecretRotation>,
    /// (what, expiry as seconds since the epoch, or why it is unknown).
    pub certificates: Vec<(String, Result<i64, String>)>,
    pub events: Vec<Event>,
    pub now: i64,
}

pub async fn run(target: &Target, name: &str) -> Result<()> {
    let snapshot = gather(target, name).await?;
    print!("{}", render(&snapshot));
    Ok(())
}

pub async fn gather(target: &Target, name: &str) -> Result<Snapshot> {
    let cluster = target.cluster(name).await?;
    let Related {
        backups,
        schedules,
        upgrades,
        rotations,
    } = target.related(name).await?;
    let mut events = target.events_of(name).await?;
    events.sort_by_key(event_time);
    let names = Names {
        cluster: name.to_owned(),
    };
    let server_secret = cluster
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.certificate.as_ref())
        .map_or_else(|| names.tls_secret(), |c| c.secret_name.clone());
    let ca = target
        .api::<ConfigMap>()
        .get_opt(&names.ca_config_map())
        .await
        .map_err(|e| e.to_string())
        .and_then(|cm| {
            cm.and_then(|cm| cm.data?.get(CA_CERT).cloned())
                .ok_or_else(|| "not found".to_owned())
        })
        .and_then(|pem| expiry(pem.as_bytes()));
    let server = target
        .api::<Secret>()
        .get_opt(&server_secret)
        .await
        .map_err(|e| e.to_string())
        .and_then(|s| {
            s.and_then(|s| s.data?.get(TLS_CERT).cloned())
                .ok_or_else(|| "not found".to_owned())
        })
        .and_then(|pem| expiry(&pem.0));
    Ok(Snapshot {
        cluster,
        backups,
        schedules,
        upgrades,
        rotations,
        certificates: vec![
            (format!("CA (ConfigMap {})", names.ca_config_map()), ca),
            (format!("server (Secret {server_secret})"), server),
        ],
        events,
        now: Timestamp::now().as_second(),
    })
}

/// The notAfter of the first certificate in a PEM bundle.
fn expiry(pem: &[u8]) -> Result<i64, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

fn event_time(e: &Event) -> i64 {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .unwrap_or_default()
}

/// `5m`, `3h`, `2d` ago or ahead.
fn span(secs: i64) -> String {
    let s = secs.abs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn bytes(n: i64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{} KiB", n / 1024),
        _ => format!("{} MiB", n / 1_048_576),
    }
}

fn secs(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_second())
}

/// The screen, as text.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let c = &s.cluster;
    let st = c.status.clone().unwrap_or_default();
    let ago = |t: i64| format!("{} ago", span(s.now - t));
    let _ = writeln!(
        out,
        "Cluster     {}/{}   PostgreSQL {}   phase {}{}",
        c.namespace().unwrap_or_default(),
        c.name_any(),
        st.version.unwrap_or(c.spec.postgresql.version),
        st.phase.map_or("-".to_owned(), |p| format!("{p:?}")),
        match (c.spec.paused, c.spec.maintenance) {
            (true, _) => "   PAUSED (spec.paused)",
            (false, true) => "   MAINTENANCE (no automatic failover)",
            _ => "",
        }
    );
    if let Some(image) = &st.image {
        let _ = writeln!(out, "Image       {image}");
    }
    if let Some(e) = &st.endpoints {
        let _ = writeln!(
            out,
            "Endpoints   rw {}   ro {}   any {}",
            e.read_write, e.read_only, e.any
        );
    }
    for cond in &st.conditions {
        let normal = match cond.type_.as_str() {
            "Ready"
            | "VersionCurrent"
            | "ParametersAccepted"
            | "RolesAndDatabasesReady"
            | "StorageResized"
            | "ContinuousArchiving"
            | "ClusterReconciled" => cond.status == "True",
            "Degraded" | "Stalled" => cond.status == "False",
            _ => true,
        };
        if !normal {
            let _ = writeln!(
                out,
                "  ! {} {} {}: {}",
                cond.type_, cond.status, cond.reason, cond.message
            );
        }
    }

    let _ = writeln!(
        out,
        "\nInstances   {}/{} ready",
        st.ready_instances, c.spec.instances
    );
    let _ = writeln!(
        out,
        "  {:<24} {:<15} {:<11} {:<6} {:<9} {:<10} VERSION",
        "NAME", "ROLE", "STATE", "READY", "TIMELINE", "LAG"
    );
    for i in &st.instances {
        let _ = writeln!(
            out,
            "  {:<24} {:<15} {:<11} {:<6} {:<9} {:<10} {}",
            i.name,
            i.role.as_deref().unwrap_or("-"),
            i.state.as_deref().unwrap_or("-"),
            if i.ready { "yes" } else { "no" },
            i.timeline.map_or("-".into(), |t| t.to_string()),
            i.lag_bytes.map_or("-".into(), bytes),
            i.postgres_version.as_deref().unwrap_or("-"),
        );
    }

    let _ = writeln!(out, "\nBackups");
    match (&c.spec.backup, &st.backup) {
        (None, _) => {
            let _ = writeln!(out, "  no spec.backup: no WAL archive, no backups");
        }
        (Some(_), b) => {
            let b = b.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "  repository {}   last WAL archived {}{}",
                b.repository.as_deref().unwrap_or("(not created yet)"),
                b.last_archived_wal.as_deref().unwrap_or("-"),
                secs(&b.last_archived_time).map_or(String::new(), |t| format!(" ({})", ago(t)))
            );
            if let Some(failed) = &b.last_failed_wal {
                let _ = writeln!(out, "  ! archiving failed at {failed}");
            }
            match (
                secs(&b.first_recoverability_point),
                secs(&b.last_recoverability_point),
            ) {
                (Some(from), Some(to)) => {
                    let _ = writeln!(
                        out,
                        "  recoverable from {} to {}",
                        Timestamp::from_second(from).map_or(from.to_string(), |t| t.to_string()),
                        Timestamp::from_second(to).map_or(to.to_string(), |t| t.to_string())
                    );
                }
                _ => {
                    let _ = writeln!(out, "  not recoverable yet (no backup)");
                }
            }
        }
    }
    for sch in &s.schedules {
        let sst = sch.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "  schedule {} \"{}\" {:?}{}   next {}",
            sch.name_any(),
            sch.spec.schedule,
            sch.spec.backup_type,
            if sch.spec.suspend { " (suspended)" } else { "" },
            secs(&sst.next_schedule_time).map_or("-".into(), |t| format!("in {}", span(t - s.now)))
        );
    }
    for b in s.backups.iter().rev().take(5) {
        let bst = b.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<32} {:<12} {:<10} {:<22} {}",
            b.name_any(),
            format!("{:?}", b.spec.backup_type),
            bst.phase.map_or("-".into(), |p| format!("{p:?}")),
            bst.backup_id.as_deref().unwrap_or("-"),
            bst.size.clone().or(bst.error.clone()).unwrap_or_default()
        );
    }

    let _ = writeln!(out, "\nCertificates");
    for (what, expiry) in &s.certificates {
        let _ = match expiry {
            Ok(t) if *t < s.now => writeln!(out, "  ! {what}: EXPIRED {} ago", span(s.now - t)),
            Ok(t) => writeln!(out, "  {what}: expires in {}", span(t - s.now)),
            Err(why) => writeln!(out, "  {what}: unknown ({why})"),
        };
    }

    if !s.upgrades.is_empty() {
        let _ = writeln!(out, "\nUpgrades");
        for u in s.upgrades.iter().rev().take(3) {
            let ust = u.status.clone().unwrap_or_default();
            let message = ust
                .conditions
                .iter()
                .find(|c| c.type_ == "Progressing")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} → {} ({})   {}   {message}",
                u.name_any(),
                u.spec.target_version,
                u.spec.target_image,
                ust.phase.map_or("-".into(), |p| format!("{p:?}")),
            );
        }
    }
    if !s.rotations.is_empty() {
        let _ = writeln!(out, "\nRotations");
        for r in &s.rotations {
            let rst = r.status.clone().unwrap_or_default();
            let ready = rst.conditions.iter().find(|c| c.type_ == "Ready");
            let _ = writeln!(
                out,
                "  {} role {}   {} rotation(s), last {}, next {}{}",
                r.name_any(),
                r.spec
                    .target
                    .postgres_role
                    .as_ref()
                    .map_or("-", |t| t.role.as_str()),
                rst.rotations,
                secs(&rst.last_rotation_time).map_or("never".into(), ago),
                secs(&rst.next_rotation_time)
                    .map_or("-".into(), |t| format!("in {}", span(t - s.now))),
                ready
                    .filter(|c| c.status != "True")
                    .map_or(String::new(), |c| format!(
                        "   ! {}: {}",
                        c.reason, c.message
                    ))
            );
        }
    }

    let _ = writeln!(out, "\nEvents (latest 10)");
    if s.events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in s.events.iter().rev().take(10).rev() {
        let _ = writeln!(
            out,
            "  {:>4} {:<7} {:<24} {:<22} {}",
            span(s.now - event_time(e)),
            e.type_.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-"),
            e.involved_object.name.as_deref().unwrap_or("-"),
            e.message.as_deref().unwrap_or("").trim()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn snapshot() -> Snapshot {
        let cluster: PostgresCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {"instances": 2, "postgresql": {"version": 17}, "storage": {"size": "1Gi"},
                "backup": {"repository": {"s3": {"endpoint": "minio:9000", "bucket": "b",
                    "credentials": {"secretName": "s3"}}}}},
            "status": {"phase": "Degraded", "version": 17, "readyInstances": 1,
                "image": "pg:17",
                "endpoints": {"readWrite": "db-rw.prod.svc:5432", "readOnly": "db-ro.prod.svc:5432",
                    "any": "db-any.prod.svc:5432"},
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "InstancesNotReady",
                     "message": "1/2 instances ready", "lastTransitionTime": "2027-01-15T08:00:00Z"},
                    {"type": "Degraded", "status": "True", "reason": "InstancesNotReady",
                     "message": "1/2", "lastTransitionTime": "2027-01-15T08:00:00Z"},
                    {"type": "Progressing", "status": "True", "reason": "Reconciling",
                     "message": "", "lastTransitionTime": "2027-01-15T08:00:00Z"}],
                "instances": [
                    {"name": "db-0", "role": "primary", "state": "running", "ready": true,
                     "timeline": 2, "postgresVersion": "17.6"},
                    {"name": "db-1", "role": "replica", "state": "starting", "ready": false,
                     "lagBytes": 2048}],
                "backup": {"repository": "s3://b/db", "lastArchivedWal": "000000020000000000000007",
                    "lastArchivedTime": "2027-01-15T07:59:00Z",
                    "firstRecoverabilityPoint": "2027-01-14T00:00:00Z",
                    "lastRecoverabilityPoint": "2027-01-15T07:59:00Z"}}
        }))
        .unwrap();
        let backup: PostgresBackup = serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresBackup",
            "metadata": {"name": "db-nightly-1", "namespace": "prod"},
            "spec": {"cluster": {"name": "db"}, "type": "Full"},
            "status": {"phase": "Completed", "backupId": "20270115-020000F", "size": "24.1 MiB"}
        }))
        .unwrap();
        Snapshot {
            cluster,
            backups: vec![backup],
            schedules: vec![],
            upgrades: vec![],
            rotations: vec![],
            certificates: vec![
                ("CA".into(), Ok(NOW + 300 * 86400)),
                ("server".into(), Ok(NOW - 3600)),
            ],
            events: vec![],
            now: NOW,
        }
    }

    #[test]
    fn the_screen_shows_roles_lag_endpoints_the_window_and_what_is_wrong() {
        let text = render(&snapshot());
        for want in [
            "Cluster     prod/db   PostgreSQL 17   phase Degraded",
            "Endpoints   rw db-rw.prod.svc:5432",
            "! Ready False InstancesNotReady: 1/2 instances ready",
            "! Degraded True InstancesNotReady",
            "Instances   1/2 ready",
            "db-1                     replica         starting    no     -         2 KiB",
            "repository s3://b/db   last WAL archived 000000020000000000000007 (1m ago)",
            "recoverable from 2027-01-14T00:00:00Z to 2027-01-15T07:59:00Z",
            "db-nightly-1                     Full         Completed  20270115-020000F       24.1 MiB",
            "CA: expires in 300d",
            "! server: EXPIRED 1h ago",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Progressing is not a problem; Ready and Degraded above are.
        assert!(!text.contains("! Progressing"), "{text}");
    }
}
