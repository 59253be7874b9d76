//! pgBackRest for a cluster created from another's backups (`spec.bootstrap.restore`): the
//! source's repository as its own configuration file beside the cluster's, the source's
//! Secrets under names of their own, and what Patroni runs to bootstrap from it.
//!
//! The source's repository is kept apart from the cluster's own so that nothing the cluster
//! archives can land in it: a second `repo2` in `pgbackrest.conf` would make every
//! `archive-push` write to both.

use k8s_openapi::api::core::v1::EnvVar;
use pgpilot_api::cluster::{RecoveryTarget, RestoreSpec};
use serde_json::{Map, Value, json};

use super::{
    CONFIG_DIR, ENV_CIPHER_PASS, ENV_S3_KEY, ENV_S3_KEY_SECRET, Error, instance_options,
    process_options, repo_options, repo_path, secret_env_named, stanza, write_section,
};
use crate::names::PGDATA;

/// Key of the source's configuration file in the cluster's pgBackRest ConfigMap.
pub const CONFIG_KEY: &str = "restore.conf";
/// Where the source's object store CA bundle is mounted.
pub const CA_DIR: &str = "/etc/pgbackrest-restore-ca";
/// The source's Secrets in instance pods (pgBackRest's own names hold the cluster's).
const ENV_NAMES: [&str; 3] = [
    "PGPILOT_RESTORE_S3_KEY",
    "PGPILOT_RESTORE_S3_KEY_SECRET",
    "PGPILOT_RESTORE_CIPHER_PASS",
];

/// The source of a restore: its stanza and repository path.
pub struct Source<'a> {
    pub spec: &'a RestoreSpec,
    pub namespace: &'a str,
}

impl<'a> Source<'a> {
    /// The source of `spec`, for a cluster in `namespace`.
    pub fn new(spec: &'a RestoreSpec, namespace: &'a str) -> Self {
        let namespace = spec.source.namespace.as_deref().unwrap_or(namespace);
        Self { spec, namespace }
    }

    pub fn stanza(&self) -> String {
        stanza(self.namespace, &self.spec.source.name)
    }

    pub fn path(&self) -> String {
        repo_path(
            &self.spec.repository.s3.path,
            self.namespace,
            &self.spec.source.name,
        )
    }

    /// The source's repository as options (`repo1-*` and how pgBackRest runs).
    pub fn options(&self) -> Result<Vec<(&'static str, String)>, Error> {
        let mut options = repo_options(&self.spec.repository, &self.path(), CA_DIR)?;
        options.extend(process_options());
        Ok(options)
    }

    /// `restore.conf`: the source's repository, and this pod's PostgreSQL as its stanza's.
    pub fn config_file(&self) -> Result<String, Error> {
        let mut out = String::new();
        write_section(&mut out, "global", &self.options()?)?;
        out.push('\n');
        write_section(&mut out, &self.stanza(), &instance_options())?;
        Ok(out)
    }

    /// The source's options as environment variables, for a Job that reads the source's
    /// repository and nothing else.
    pub fn option_env(&self) -> Result<Vec<EnvVar>, Error> {
        let mut env: Vec<EnvVar> = self
            .options()?
            .into_iter()
            .map(|(option, value)| EnvVar {
                name: format!("PGBACKREST_{}", option.to_uppercase().replace('-', "_")),
                value: Some(value),
                ..Default::default()
            })
            .collect();
        env.push(EnvVar {
            name: "PGBACKREST_STANZA".into(),
            value: Some(self.stanza()),
            ..Default::default()
        });
        env.extend(secret_env_named(
            &self.spec.repository,
            [ENV_S3_KEY, ENV_S3_KEY_SECRET, ENV_CIPHER_PASS],
            false,
        ));
        Ok(env)
    }

    /// The source's Secrets in instance pods: optional, since they are read only while the
    /// first instance bootstraps.
    pub fn instance_env(&self) -> Vec<EnvVar> {
        secret_env_named(&self.spec.repository, ENV_NAMES, true)
    }

    /// A shell command running pgBackRest against the source with `args`: the source's
    /// Secrets under pgBackRest's names for this command only, its configuration file.
    fn command(&self, args: &str) -> String {
        let mut line = format!(
            "env {ENV_S3_KEY}=\"${}\" {ENV_S3_KEY_SECRET}=\"${}\" ",
            ENV_NAMES[0], ENV_NAMES[1]
        );
        if self.spec.repository.encryption.is_some() {
            line.push_str(&format!("{ENV_CIPHER_PASS}=\"${}\" ", ENV_NAMES[2]));
        }
        line.push_str(&format!(
            "pgbackrest --config={CONFIG_DIR}/{CONFIG_KEY} --stanza={} {args}",
            self.stanza()
        ));
        line
    }

    /// Patroni's custom bootstrap method: restore `backup_id` into the data directory, then
    /// start PostgreSQL to replay the source's WAL up to `target` (all of it without one) and
    /// promote. Patroni waits for the promotion before it takes the leader lock.
    pub fn bootstrap_method(&self, backup_id: &str, target: Option<&RecoveryTarget>) -> Value {
        // `--delta`: a retry after a restore cut short reuses what it already wrote.
        let restore = format!(
            "mkdir -p -m 0700 {PGDATA} && exec {}",
            self.command(&format!("--set={backup_id} --delta restore"))
        );
        json!({
            "command": format!("/bin/sh -c '{restore}'"),
            "no_params": true,
            "recovery_conf": recovery_conf(
                &self.command("archive-get %f \"%p\""),
                target,
            ),
        })
    }
}

/// An RFC 3339 time (the spec's, checked at admission) as PostgreSQL reads it while it starts:
/// `2026-12-06 01:02:03+00:00`. `Z` is a time zone abbreviation to PostgreSQL, and
/// abbreviations are not loaded yet when the server checks `recovery_target_time` at start-up
/// ("configuration file … contains errors"); a numeric offset always reads.
pub fn postgres_time(rfc3339: &str) -> String {
    let time = rfc3339.replacen(['T', 't'], " ", 1);
    match time.strip_suffix(['Z', 'z']) {
        Some(utc) => format!("{utc}+00:00"),
        None => time,
    }
}

/// The recovery settings of a restore: where WAL comes from, and where replay stops.
pub fn recovery_conf(restore_command: &str, target: Option<&RecoveryTarget>) -> Value {
    let mut conf = Map::new();
    let mut set = |k: &str, v: &str| {
        conf.insert(k.to_owned(), Value::from(v));
    };
    set("restore_command", restore_command);
    set(
        "recovery_target_timeline",
        target
            .and_then(|t| t.timeline.as_deref())
            .unwrap_or("latest"),
    );
    if let Some(t) = target {
        if let Some(time) = &t.time {
            set("recovery_target_time", &postgres_time(time));
        } else if let Some(lsn) = &t.lsn {
            set("recovery_target_lsn", lsn);
        } else if let Some(xid) = &t.xid {
            set("recovery_target_xid", xid);
        } else if let Some(name) = &t.name {
            set("recovery_target_name", name);
        } else if t.immediate == Some(true) {
            set("recovery_target", "immediate");
        }
        set(
            "recovery_target_inclusive",
            if t.inclusive { "on" } else { "off" },
        );
        // Open for writes at the target, rather than pause there.
        set("recovery_target_action", "promote");
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> RestoreSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const SPEC: &str = "source: {name: old}\nrepository:\n  s3: {endpoint: 'minio.storage.svc:9000', bucket: backups, credentials: {secretName: s3-old}, caBundle: {name: minio-ca, key: ca.crt}}\n  encryption: {passphrase: {name: cipher, key: pass}}";

    #[test]
    fn the_source_is_found_by_its_name_in_this_namespace_or_its_own() {
        let s = spec(SPEC);
        let src = Source::new(&s, "prod");
        assert_eq!(src.stanza(), "prod-old");
        assert_eq!(src.path(), "/pgbackrest/prod/old");
        let s = spec(
            "source: {name: old, namespace: apps}\nrepository: {s3: {endpoint: s3.example.com, bucket: b, path: /x/, credentials: {secretName: s}}}",
        );
        let src = Source::new(&s, "prod");
        assert_eq!(src.stanza(), "apps-old");
        assert_eq!(src.path(), "/x/apps/old");
    }

    #[test]
    fn the_source_config_names_its_repository_and_this_pods_postgres() {
        let s = spec(SPEC);
        let conf = Source::new(&s, "prod").config_file().unwrap();
        for line in [
            "repo1-path=/pgbackrest/prod/old",
            "repo1-s3-endpoint=minio.storage.svc",
            "repo1-storage-port=9000",
            "repo1-storage-ca-file=/etc/pgbackrest-restore-ca/ca.crt",
            "repo1-cipher-type=aes-256-cbc",
            "[prod-old]",
            "pg1-path=/var/lib/postgresql/data/pgdata",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing in\n{conf}");
        }
        // It is only read: no retention (an expire with it could delete the source's backups),
        // no TLS server.
        assert!(
            !conf.contains("retention") && !conf.contains("tls-server"),
            "{conf}"
        );
    }

    #[test]
    fn a_job_gets_the_source_as_environment_with_secrets_by_reference() {
        let s = spec(SPEC);
        let env = Source::new(&s, "prod").option_env().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap();
        assert_eq!(
            get("PGBACKREST_REPO1_S3_BUCKET").value.as_deref(),
            Some("backups")
        );
        assert_eq!(get("PGBACKREST_STANZA").value.as_deref(), Some("prod-old"));
        assert_eq!(
            get("PGBACKREST_LOG_LEVEL_FILE").value.as_deref(),
            Some("off")
        );
        let key = get("PGBACKREST_REPO1_S3_KEY");
        assert!(key.value.is_none());
        assert_eq!(
            key.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "s3-old"
        );
        assert!(get("PGBACKREST_REPO1_CIPHER_PASS").value_from.is_some());
    }

    #[test]
    fn patroni_restores_the_chosen_backup_with_the_sources_secrets_then_replays_to_the_target() {
        let s = spec(SPEC);
        let target: RecoveryTarget =
            serde_yaml::from_str("{time: '2026-12-06T01:02:03Z', inclusive: false}").unwrap();
        let m = Source::new(&s, "prod").bootstrap_method("20261206-010000F", Some(&target));
        let command = m["command"].as_str().unwrap();
        assert!(command.starts_with("/bin/sh -c 'mkdir -p -m 0700 /var/lib/postgresql/data/pgdata && exec env PGBACKREST_REPO1_S3_KEY=\"$PGPILOT_RESTORE_S3_KEY\" PGBACKREST_REPO1_S3_KEY_SECRET=\"$PGPILOT_RESTORE_S3_KEY_SECRET\" PGBACKREST_REPO1_CIPHER_PASS=\"$PGPILOT_RESTORE_CIPHER_PASS\" pgbackrest --config=/etc/pgbackrest/restore.conf --stanza=prod-old --set=20261206-010000F --delta restore'"), "{command}");
        assert_eq!(m["no_params"], true);
        let rc = &m["recovery_conf"];
        assert!(
            rc["restore_command"]
                .as_str()
                .unwrap()
                .ends_with("--stanza=prod-old archive-get %f \"%p\"")
        );
        assert_eq!(rc["recovery_target_time"], "2026-12-06 01:02:03+00:00");
        assert_eq!(rc["recovery_target_inclusive"], "off");
        assert_eq!(rc["recovery_target_action"], "promote");
        assert_eq!(rc["recovery_target_timeline"], "latest");
    }

    #[test]
    fn without_a_target_replay_runs_to_the_end_of_the_archive() {
        let rc = recovery_conf("x", None);
        assert_eq!(
            rc,
            json!({"restore_command": "x", "recovery_target_timeline": "latest"})
        );
        let immediate: RecoveryTarget =
            serde_yaml::from_str("{immediate: true, timeline: current}").unwrap();
        let rc = recovery_conf("x", Some(&immediate));
        assert_eq!(rc["recovery_target"], "immediate");
        assert_eq!(rc["recovery_target_timeline"], "current");
    }

    #[test]
    fn instance_pods_hold_the_sources_secrets_optionally_under_names_of_their_own() {
        let s = spec(SPEC);
        let env = Source::new(&s, "prod").instance_env();
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ENV_NAMES);
        assert!(env.iter().all(|e| {
            e.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .optional
                == Some(true)
        }));
    }

    #[test]
    fn target_times_reach_postgresql_with_a_numeric_offset() {
        for (spec, conf) in [
            ("2026-12-06T01:02:03Z", "2026-12-06 01:02:03+00:00"),
            ("2026-12-06T01:02:03.250Z", "2026-12-06 01:02:03.250+00:00"),
            ("2026-12-06T03:02:03+02:00", "2026-12-06 03:02:03+02:00"),
            ("2026-12-05T20:02:03-05:00", "2026-12-05 20:02:03-05:00"),
        ] {
            assert_eq!(postgres_time(spec), conf);
        }
    }
}
