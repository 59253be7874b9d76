//! Patroni's configuration file. Per-pod values (name, addresses) and passwords come from
//! the environment (see the StatefulSet); `bootstrap.dcs` seeds the cluster-wide settings
//! the first time the cluster starts; later changes to them go through Patroni's REST API.

use k8s_openapi::api::core::v1::ConfigMap;
use pgpilot_api::cluster::{PatroniSpec, SynchronousMethod, SynchronousMode, TlsMode};
use pgpilot_api::labels;
use serde_json::{Map, Value, json};

use super::{Ctx, backup, typed};
use crate::error::Error;
use pgpilot_postgres::names::{MONITOR_USER, PATRONI_PORT, POSTGRES_PORT, REPLICATION_USER};
use pgpilot_postgres::pgbackrest;

pub use pgpilot_postgres::names::{
    DATA_MOUNT, PATRONI_CONFIG_DIR as CONFIG_DIR, PGDATA, SOCKET_DIR,
};
/// The server certificate, its key and the cluster's CA, mounted with the config file.
pub const TLS_CERT_FILE: &str = "/etc/patroni/tls.crt";
pub const TLS_KEY_FILE: &str = "/etc/patroni/tls.key";
pub const CA_FILE: &str = "/etc/patroni/ca.crt";

/// Parameters pgpilot sets for replication and failover to work.
fn owned_parameters() -> Map<String, Value> {
    let mut p = Map::new();
    for (k, v) in [
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("wal_log_hints", "on"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("unix_socket_directories", SOCKET_DIR),
        // The server certificate, mounted beside patroni.yaml (see the StatefulSet).
        ("ssl", "on"),
        ("ssl_cert_file", TLS_CERT_FILE),
        ("ssl_key_file", TLS_KEY_FILE),
    ] {
        p.insert(k.to_owned(), Value::from(v));
    }
    p
}

/// Parameters pgpilot sets unless the spec does.
fn default_parameters() -> Map<String, Value> {
    // A replica fresh from pg_basebackup starts with a crash-recovery sync of its data
    // directory; file by file that takes ~150 ms, long enough for Patroni's first readiness
    // check to meet "starting up" and sleep a whole second before looking again. One
    // syncfs() of the (already synced) volume takes milliseconds.
    let mut p = Map::new();
    p.insert(
        "recovery_init_sync_method".to_owned(),
        Value::from("syncfs"),
    );
    // PostgreSQL's own default since 12, said out loud: nothing older than TLS 1.2.
    p.insert(
        "ssl_min_protocol_version".to_owned(),
        Value::from("TLSv1.2"),
    );
    p
}

/// The `bootstrap.dcs` section: cluster-wide settings.
pub fn dcs(ctx: &Ctx<'_>) -> Value {
    let spec = &ctx.cluster.spec;
    let patroni = spec.patroni.clone().unwrap_or_default();
    let PatroniSpec {
        ttl,
        loop_wait,
        retry_timeout,
        maximum_lag_on_failover,
        failsafe_mode,
    } = patroni;
    let mut parameters = default_parameters();
    let owned = |list: Vec<(&'static str, Value)>| list.into_iter().map(|(k, v)| (k.to_owned(), v));
    parameters.extend(owned(backup::default_archive_parameters(ctx)));
    parameters.extend(
        spec.postgresql
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str()))),
    );
    // Owned values win: the API refuses them in the spec, this keeps that true regardless.
    parameters.extend(owned_parameters());
    parameters.extend(owned(backup::archive_parameters(ctx)));
    let sync = spec
        .replication
        .as_ref()
        .and_then(|r| r.synchronous.as_ref());
    let mut dcs = json!({
        "ttl": ttl,
        "loop_wait": loop_wait,
        "retry_timeout": retry_timeout,
        "maximum_lag_on_failover": maximum_lag_on_failover,
        "failsafe_mode": failsafe_mode,
        // Quorum also names its standbys sooner: Patroni's priority mode sleeps 2 s after
        // setting synchronous_standby_names before it records the standby in `-sync`.
        "synchronous_mode": match sync.map(|s| s.method) {
            None => json!(false),
            Some(SynchronousMethod::Quorum) => json!("quorum"),
            Some(SynchronousMethod::Priority) => json!(true),
        },
        "synchronous_mode_strict": sync.is_some_and(|s| s.mode == SynchronousMode::Required),
        "synchronous_node_count": sync.map(|s| s.number_of_standbys).unwrap_or(1),
        "pause": spec.maintenance,
        "postgresql": {
            "use_pg_rewind": true,
            "use_slots": true,
            "parameters": parameters,
            // Here rather than in patroni.yaml (which would take precedence): a change reaches
            // every member on its next loop, without a restart or a reload.
            "pg_hba": pg_hba(ctx),
        },
    });
    if ctx.backup().is_some() {
        // Replicas (and a restore) fetch from the archive what streaming cannot give them.
        dcs["postgresql"]["recovery_conf"] =
            json!({"restore_command": pgbackrest::restore_command(&ctx.stanza())});
    }
    dcs
}

/// With `Required`, connections without TLS are refused before any other line (the user's
/// included) is looked at; `all` does not match replication connections, hence two lines.
fn pg_hba(ctx: &Ctx<'_>) -> Vec<String> {
    // Patroni and the operator's exec'd tools connect over the socket as `postgres`.
    let mut hba = vec!["local all all peer".to_owned()];
    let host = match ctx.cluster.spec.tls_mode() {
        TlsMode::Preferred => "host",
        TlsMode::Required => {
            hba.push("hostnossl all all all reject".to_owned());
            hba.push("hostnossl replication all all reject".to_owned());
            "hostssl"
        }
    };
    hba.push(format!(
        "{host} replication {REPLICATION_USER} all scram-sha-256"
    ));
    // The exporter's login works from its own pod only, whatever the user's lines say.
    if ctx.cluster.spec.exporter_enabled() {
        hba.push(format!(
            "{host} all {MONITOR_USER} 127.0.0.1/32 scram-sha-256"
        ));
        hba.push(format!("{host} all {MONITOR_USER} all reject"));
    }
    hba.extend(ctx.cluster.spec.postgresql.pg_hba.iter().cloned());
    hba.push(format!("{host} all all all scram-sha-256"));
    hba
}

fn initdb(ctx: &Ctx<'_>) -> Vec<Value> {
    let Some(init) = ctx
        .cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.initdb.clone())
    else {
        return vec![
            json!({"encoding": "UTF8"}),
            json!({"locale": "C.UTF-8"}),
            Value::from("data-checksums"),
        ];
    };
    let mut args = vec![
        json!({"encoding": init.encoding}),
        json!({"locale": init.locale}),
    ];
    if init.data_checksums {
        args.push(Value::from("data-checksums"));
    }
    args
}

/// How the first instance creates the database: initdb, or a restore of the backup the
/// backup controller chose (`status.restore`; the instances are not created before).
fn bootstrap(ctx: &Ctx<'_>) -> Value {
    let mut bootstrap = json!({"dcs": dcs(ctx), "initdb": initdb(ctx)});
    let chosen = ctx.cluster.status.as_ref().and_then(|s| s.restore.as_ref());
    if let (Some(source), Some(chosen)) = (ctx.restore_source(), chosen) {
        let target = ctx
            .cluster
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.recovery_target.as_ref());
        bootstrap["method"] = json!(RESTORE_METHOD);
        bootstrap[RESTORE_METHOD] = source.bootstrap_method(&chosen.backup_id, target);
    }
    bootstrap
}

/// Name of Patroni's custom bootstrap method that restores a backup.
const RESTORE_METHOD: &str = "pgbackrest";

/// The whole patroni.yaml, as JSON (YAML is a superset).
pub fn patroni_yaml(ctx: &Ctx<'_>) -> Value {
    let version = ctx.cluster.spec.postgresql.version;
    json!({
        "scope": ctx.names.cluster,
        "kubernetes": {
            "namespace": ctx.namespace,
            "labels": ctx.instance_selector(),
            // Patroni finds members by these labels plus `scope_label=<scope>`; the default
            // scope label (`cluster-name`) is not on our pods, so point it at ours.
            "scope_label": labels::CLUSTER,
            "use_endpoints": false,
            "bypass_api_service": false,
            "role_label": labels::ROLE,
            "leader_label_value": labels::ROLE_PRIMARY,
            "follower_label_value": labels::ROLE_REPLICA,
            "standby_leader_label_value": labels::ROLE_PRIMARY,
        },
        // HTTPS with the instances' certificate; the unsafe endpoints (POST, PATCH, …) ask
        // for the credentials in auth.yaml. Members check each other against the CA.
        "restapi": {
            "listen": format!("0.0.0.0:{PATRONI_PORT}"),
            "certfile": TLS_CERT_FILE,
            "keyfile": TLS_KEY_FILE,
        },
        "ctl": {"cacert": CA_FILE},
        "bootstrap": bootstrap(ctx),
        "postgresql": {
            "listen": format!("0.0.0.0:{POSTGRES_PORT}"),
            "data_dir": PGDATA,
            "bin_dir": format!("/usr/lib/postgresql/{version}/bin"),
            "pgpass": "/tmp/pgpass",
            // Patroni's own connections go over the socket (peer): they never depend on the
            // superuser's password, which a rotation changes.
            "use_unix_socket": true,
            // A new replica clones at once instead of waiting for a spread checkpoint.
            "basebackup": [{"checkpoint": "fast"}],
            "parameters": {"unix_socket_directories": SOCKET_DIR},
        },
        "watchdog": {"mode": "off"},
    })
}

pub(super) fn patroni_config(ctx: &Ctx<'_>) -> Result<ConfigMap, Error> {
    let yaml = super::patroni_file(&patroni_yaml(ctx), "patroni.yaml")?;
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": ctx.meta(&ctx.names.patroni_config()),
            "data": {"patroni.yaml": yaml},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{BACKED_UP, THREE, cluster};

    #[test]
    fn user_parameters_reach_the_dcs_and_owned_ones_win() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let dcs = dcs(&ctx);
        let params = &dcs["postgresql"]["parameters"];
        assert_eq!(params["shared_buffers"], "256MB");
        assert_eq!(params["wal_level"], "replica");
        assert_eq!(params["wal_log_hints"], "on");
        assert_eq!(params["recovery_init_sync_method"], "syncfs");
        assert_eq!(dcs["ttl"], 30);
        assert_eq!(dcs["loop_wait"], 10);
        assert_eq!(dcs["synchronous_mode"], false);
        // An API server restart does not stop writes while the members reach each other.
        assert_eq!(dcs["failsafe_mode"], true);
    }

    #[test]
    fn defaults_yield_to_the_spec() {
        let c = cluster(
            "instances: 1\npostgresql: {version: 17, parameters: {recovery_init_sync_method: fsync}}\nstorage: {size: 1Gi}",
        );
        let dcs = dcs(&Ctx::new(&c).unwrap());
        assert_eq!(
            dcs["postgresql"]["parameters"]["recovery_init_sync_method"],
            "fsync"
        );
    }

    #[test]
    fn a_backed_up_cluster_archives_to_its_stanza_and_fetches_from_it() {
        let c = cluster(BACKED_UP);
        let dcs = dcs(&Ctx::new(&c).unwrap());
        let params = &dcs["postgresql"]["parameters"];
        assert_eq!(params["archive_mode"], "on");
        assert_eq!(
            params["archive_command"],
            "pgbackrest --stanza=prod-db archive-push \"%p\""
        );
        assert_eq!(params["archive_timeout"], "60s");
        assert_eq!(
            dcs["postgresql"]["recovery_conf"]["restore_command"],
            "pgbackrest --stanza=prod-db archive-get %f \"%p\""
        );
        let c = cluster(&BACKED_UP.replace(
            "postgresql: {version: 17}",
            "postgresql: {version: 17, parameters: {archive_timeout: 5min}}",
        ));
        let dcs = super::dcs(&Ctx::new(&c).unwrap());
        assert_eq!(dcs["postgresql"]["parameters"]["archive_timeout"], "5min");

        let c = cluster(THREE);
        let dcs = super::dcs(&Ctx::new(&c).unwrap());
        assert!(
            dcs["postgresql"]["parameters"]
                .get("archive_mode")
                .is_none()
        );
        assert!(dcs["postgresql"].get("recovery_conf").is_none());
    }

    #[test]
    fn synchronous_modes_map_to_patroni() {
        let required = cluster(
            "instances: 3\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nreplication: {synchronous: {mode: Required, numberOfStandbys: 2}}\npatroni: {ttl: 10, loopWait: 2, retryTimeout: 4}",
        );
        let ctx = Ctx::new(&required).unwrap();
        let dcs = dcs(&ctx);
        assert_eq!(dcs["synchronous_mode"], "quorum");
        assert_eq!(dcs["synchronous_mode_strict"], true);
        assert_eq!(dcs["synchronous_node_count"], 2);
        assert_eq!(
            (
                dcs["ttl"].as_i64(),
                dcs["loop_wait"].as_i64(),
                dcs["retry_timeout"].as_i64()
            ),
            (Some(10), Some(2), Some(4))
        );
        let priority = cluster(
            "instances: 3\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nreplication: {synchronous: {method: Priority}}",
        );
        let dcs = super::dcs(&Ctx::new(&priority).unwrap());
        assert_eq!(dcs["synchronous_mode"], true);
        assert_eq!(dcs["synchronous_mode_strict"], false);
        assert_eq!(dcs["synchronous_node_count"], 1);
    }

    #[test]
    fn patroni_uses_configmaps_labels_pods_by_role_and_runs_the_versioned_binaries() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let y = patroni_yaml(&ctx);
        assert_eq!(y["scope"], "db");
        assert_eq!(y["kubernetes"]["use_endpoints"], false);
        assert_eq!(y["kubernetes"]["role_label"], "pgpilot.io/role");
        assert_eq!(y["kubernetes"]["leader_label_value"], "primary");
        assert_eq!(y["kubernetes"]["labels"]["pgpilot.io/cluster"], "db");
        assert_eq!(
            y["kubernetes"]["scope_label"], "pgpilot.io/cluster",
            "members must be found by our labels"
        );
        assert_eq!(y["postgresql"]["bin_dir"], "/usr/lib/postgresql/17/bin");
        assert_eq!(y["postgresql"]["data_dir"], PGDATA);
        assert!(
            y["postgresql"].get("pg_hba").is_none(),
            "pg_hba lives in the DCS, where changes apply live"
        );
        let hba: Vec<&str> = y["bootstrap"]["dcs"]["postgresql"]["pg_hba"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(hba.last(), Some(&"host all all all scram-sha-256"));
        assert!(
            !hba.iter().any(|l| l.contains("trust")),
            "no trust auth: {hba:?}"
        );
    }

    #[test]
    fn tls_is_always_on_and_required_refuses_plain_connections_first() {
        let lines = |spec: &str| {
            let c = cluster(spec);
            let dcs = dcs(&Ctx::new(&c).unwrap());
            assert_eq!(dcs["postgresql"]["parameters"]["ssl"], "on");
            assert_eq!(
                dcs["postgresql"]["parameters"]["ssl_cert_file"],
                TLS_CERT_FILE
            );
            assert_eq!(
                dcs["postgresql"]["parameters"]["ssl_min_protocol_version"],
                "TLSv1.2"
            );
            serde_json::from_value::<Vec<String>>(dcs["postgresql"]["pg_hba"].clone()).unwrap()
        };
        let c = cluster(THREE);
        let y = patroni_yaml(&Ctx::new(&c).unwrap());
        assert_eq!(
            y["restapi"]["certfile"], TLS_CERT_FILE,
            "the REST API over HTTPS"
        );
        assert_eq!(y["restapi"]["keyfile"], TLS_KEY_FILE);
        assert_eq!(y["ctl"]["cacert"], CA_FILE, "members check each other");
        let base = "instances: 2\npostgresql: {version: 17, pgHba: ['host all app 10.0.0.0/8 scram-sha-256']}\nstorage: {size: 1Gi}";
        assert_eq!(
            lines(base),
            [
                "local all all peer",
                "host replication replicator all scram-sha-256",
                "host all pgpilot_monitor 127.0.0.1/32 scram-sha-256",
                "host all pgpilot_monitor all reject",
                "host all app 10.0.0.0/8 scram-sha-256",
                "host all all all scram-sha-256",
            ]
        );
        assert_eq!(
            lines(&format!("{base}\ntls: {{mode: Required}}")),
            [
                "local all all peer",
                "hostnossl all all all reject",
                "hostnossl replication all all reject",
                "hostssl replication replicator all scram-sha-256",
                "hostssl all pgpilot_monitor 127.0.0.1/32 scram-sha-256",
                "hostssl all pgpilot_monitor all reject",
                "host all app 10.0.0.0/8 scram-sha-256",
                "hostssl all all all scram-sha-256",
            ]
        );
        assert_eq!(
            lines(&format!(
                "{base}\nmonitoring: {{exporter: {{enabled: false}}}}"
            )),
            [
                "local all all peer",
                "host replication replicator all scram-sha-256",
                "host all app 10.0.0.0/8 scram-sha-256",
                "host all all all scram-sha-256",
            ],
            "no exporter, no monitor login"
        );
    }

    #[test]
    fn initdb_defaults_to_utf8_c_locale_and_checksums() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        assert_eq!(
            Value::from(initdb(&ctx)),
            json!([{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"])
        );
        let c = cluster(
            "instances: 1\npostgresql: {version: 17}\nstorage: {size: 1Gi}\nbootstrap: {initdb: {dataChecksums: false, locale: en_US.UTF-8}}",
        );
        let ctx = Ctx::new(&c).unwrap();
        assert_eq!(
            Value::from(initdb(&ctx)),
            json!([{"encoding": "UTF8"}, {"locale": "en_US.UTF-8"}])
        );
    }

    #[test]
    fn a_restore_bootstraps_from_the_backup_the_backup_controller_chose() {
        let mut c = cluster(crate::desired::fixtures::RESTORED);
        let y = patroni_yaml(&Ctx::new(&c).unwrap());
        assert!(y["bootstrap"].get("method").is_none(), "no choice yet: {y}");

        c.status = Some(
            serde_json::from_value(json!({"restore": {
            "stanza": "prod-old", "backupId": "20261206-010000F"}}))
            .unwrap(),
        );
        let y = patroni_yaml(&Ctx::new(&c).unwrap());
        assert_eq!(y["bootstrap"]["method"], "pgbackrest");
        let method = &y["bootstrap"]["pgbackrest"];
        let command = method["command"].as_str().unwrap();
        assert!(
            command.contains("--stanza=prod-old --set=20261206-010000F --delta restore"),
            "{command}"
        );
        assert_eq!(
            method["recovery_conf"]["recovery_target_time"],
            "2026-12-06 01:02:03+00:00"
        );
        // No archiving of its own: no archive settings, no restore_command of its own stanza.
        assert!(
            y["bootstrap"]["dcs"]["postgresql"]
                .get("recovery_conf")
                .is_none()
        );
    }

    /// Rendered patroni.yaml as Patroni's YAML reader (PyYAML, YAML 1.1) would take each
    /// scalar: values that YAML 1.1 reads as booleans, null, numbers or times must be quoted.
    #[test]
    fn values_yaml_1_1_would_read_as_something_else_are_quoted() {
        let mut c = cluster(THREE);
        let risky = [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "n",
            "Y",
            "true",
            "~",
            "null",
            "012",
            "0o17",
            "0x1F",
            "1_000",
            "1:30",
            ".inf",
            "-.inf",
            ".nan",
            "1e3",
            "2026-12-07",
            "",
        ];
        for (n, v) in risky.iter().enumerate() {
            c.spec
                .postgresql
                .parameters
                .insert(format!("p{n}.x"), (*v).to_owned());
        }
        let ctx = Ctx::new(&c).unwrap();
        let cm = patroni_config(&ctx).unwrap();
        let yaml = &cm.data.unwrap()["patroni.yaml"];
        for (n, v) in risky.iter().enumerate() {
            let line = yaml
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("\"p{n}.x\":")))
                .unwrap();
            let value = line.split_once(": ").map_or("", |(_, v)| v);
            assert!(value.starts_with('"'), "{v:?} is not quoted: {line}");
        }
    }

    /// Characters YAML would fold into a space inside a quoted string, or refuse in a stream,
    /// arrive escaped and read back as they were.
    #[test]
    fn line_break_and_refused_characters_are_escaped() {
        let mut c = cluster(THREE);
        let odd = "a\u{2028}b\u{85}c\u{7f}d\u{feff}e\u{9f}f";
        c.spec
            .postgresql
            .parameters
            .insert("application_name".into(), odd.into());
        let ctx = Ctx::new(&c).unwrap();
        let yaml = patroni_config(&ctx).unwrap().data.unwrap()["patroni.yaml"].clone();
        assert!(
            !yaml
                .chars()
                .any(|c| "\u{2028}\u{85}\u{7f}\u{feff}\u{9f}".contains(c))
        );
        assert!(
            yaml.contains(r#""a\u2028b\u0085c\u007fd\ufeffe\u009ff""#),
            "{yaml}"
        );
        let read: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            read["bootstrap"]["dcs"]["postgresql"]["parameters"]["application_name"],
            odd
        );
    }

    proptest::proptest! {
        // The rendered patroni.yaml reads back as exactly what was built, whatever the user's
        // parameters and pg_hba lines hold, and every parameter the user sets and pgpilot does
        // not own reaches the DCS section unchanged.
        #[test]
        fn patroni_yaml_reads_back_as_built(
            parameters in proptest::collection::btree_map("[a-z_]{1,12}(\\.[a-z_]{1,8})?", ".{0,30}", 0..8),
            hba in proptest::collection::vec(".{0,40}", 0..4),
        ) {
            let mut c = cluster(THREE);
            c.spec.postgresql.parameters = parameters.clone();
            c.spec.postgresql.pg_hba = hba;
            let ctx = Ctx::new(&c).unwrap();
            let cm = patroni_config(&ctx).unwrap();
            let text = &cm.data.unwrap()["patroni.yaml"];
            let read: Value = serde_yaml::from_str(text).unwrap();
            proptest::prop_assert_eq!(&read, &patroni_yaml(&ctx));
            let dcs = &read["bootstrap"]["dcs"]["postgresql"]["parameters"];
            let owned = owned_parameters();
            for (name, value) in &parameters {
                if !owned.contains_key(name) {
                    proptest::prop_assert_eq!(dcs[name].as_str(), Some(value.as_str()));
                }
            }
        }
    }
}
