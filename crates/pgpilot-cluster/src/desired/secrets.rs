//! Credentials. Each password is generated once, with a CSPRNG, and kept: an existing
//! Secret's password is never replaced here (the rotation controller owns changes). Keys
//! derived from it (uri, jdbc-uri, pgpass, …) are restored if someone removed them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use pgpilot_postgres::credentials::{
    Endpoint, Login, PasswordSource, password_of, render, user_of,
};
use pgpilot_toolkit::Sensitive;
use serde_json::json;

use super::{Ctx, typed};
use crate::error::Error;
use kube::ResourceExt;
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::{Ensure, PvcPolicy, RoleSpec};
use pgpilot_postgres::names::Names;
use pgpilot_postgres::names::{MONITOR_USER, POSTGRES_PORT, REPLICATION_USER, SUPERUSER};

/// A credential Secret to exist: its name, the role and the database it connects to.
pub(crate) struct Wanted {
    pub secret: String,
    pub user: String,
    pub dbname: String,
}

/// The credential Secrets a cluster has: superuser, replication, one per declared login
/// role, and the exporter's.
pub(crate) fn wanted(cluster: &PostgresCluster) -> Vec<Wanted> {
    let names = Names::new(&cluster.name_any());
    let spec = &cluster.spec;
    let login = |secret, user: &str, dbname: &str| Wanted {
        secret,
        user: user.to_owned(),
        dbname: dbname.to_owned(),
    };
    let mut wanted = vec![
        login(names.superuser_secret(), SUPERUSER, "postgres"),
        login(names.replication_secret(), REPLICATION_USER, "postgres"),
    ];
    for role in spec
        .roles
        .iter()
        .filter(|r| r.login && r.ensure == Ensure::Present)
    {
        // The role's own database if it owns one, else `postgres`.
        let dbname = spec
            .databases
            .iter()
            .find(|d| d.owner.as_deref() == Some(role.name.as_str()) && d.ensure == Ensure::Present)
            .map(|d| d.name.as_str())
            .unwrap_or("postgres");
        wanted.push(login(names.role_secret(&role.name), &role.name, dbname));
    }
    if spec.exporter_enabled() {
        wanted.push(login(
            names.role_secret(MONITOR_USER),
            MONITOR_USER,
            "postgres",
        ));
    }
    wanted
}

/// The role the exporter logs in as: reads every statistics view (`pg_monitor`), nothing
/// else; a few connections at most (the exporter holds one).
pub(crate) fn monitor_role() -> RoleSpec {
    RoleSpec {
        name: MONITOR_USER.to_owned(),
        ensure: Ensure::Present,
        login: true,
        create_db: false,
        create_role: false,
        superuser: false,
        connection_limit: 3,
        in_roles: vec!["pg_monitor".to_owned()],
    }
}

/// The Secrets of a cluster, each with its existing password or a new one.
pub(super) fn secrets(
    ctx: &Ctx<'_>,
    existing: &BTreeMap<String, Secret>,
    passwords: &mut dyn PasswordSource,
    ca: &str,
) -> Result<Vec<Secret>, Error> {
    wanted(ctx.cluster)
        .into_iter()
        .map(|w| {
            let secret = existing.get(&w.secret);
            let password = secret
                .and_then(password_of)
                .unwrap_or_else(|| passwords.new_password());
            // An AlternatingUsers rotation may have pointed the Secret at one of the role's
            // login alternates: it stays there.
            let user = secret.map_or_else(|| w.user.clone(), |s| user_of(s, &w.user));
            credential_secret(ctx, &w.secret, &user, &password, &w.dbname, ca)
        })
        .collect()
}

fn credential_secret(
    ctx: &Ctx<'_>,
    name: &str,
    user: &str,
    password: &Sensitive,
    dbname: &str,
    ca: &str,
) -> Result<Secret, Error> {
    let endpoint = Endpoint {
        host: ctx.names.rw_host(&ctx.namespace),
        port: POSTGRES_PORT,
        ca: Some(ca.to_owned()),
    };
    let login = Login {
        user,
        password,
        dbname,
    };
    let mut metadata = ctx.meta(name);
    // Volumes kept after the cluster is deleted are of use only with the passwords stored in
    // them: the Secrets stay too (no owner), and a cluster created again with this name adopts
    // both. Until a volume exists (or its StatefulSet, which makes the claims) they go with
    // the cluster.
    let retained =
        ctx.cluster.spec.pvc_retention().when_deleted == PvcPolicy::Retain && ctx.volumes_exist;
    if retained && let Some(m) = metadata.as_object_mut() {
        m.remove("ownerReferences");
    }
    let mut secret: Secret = typed(
        "Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
        }),
    )?;
    secret.data = Some(render(&login, &endpoint));
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};

    struct Counter(u32);
    impl PasswordSource for Counter {
        fn new_password(&mut self) -> Sensitive {
            self.0 += 1;
            Sensitive::new(format!("generated{}", self.0))
        }
    }

    fn names(secrets: &[Secret]) -> Vec<String> {
        secrets
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect()
    }

    fn value(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn secrets_outlive_the_cluster_exactly_when_its_volumes_do() {
        let owners = |spec: &str, volumes_exist: bool| {
            let c = cluster(spec);
            let mut ctx = Ctx::new(&c).unwrap();
            ctx.volumes_exist = volumes_exist;
            secrets(&ctx, &BTreeMap::new(), &mut Counter(0), "CA")
                .unwrap()
                .iter()
                .map(|s| {
                    s.metadata
                        .owner_references
                        .clone()
                        .unwrap_or_default()
                        .len()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            owners(THREE, true),
            [0, 0, 0, 0],
            "whenDeleted defaults to Retain"
        );
        assert_eq!(
            owners(THREE, false),
            [1, 1, 1, 1],
            "no volume was ever made"
        );
        let deleted =
            format!("{THREE}persistentVolumeClaimRetentionPolicy: {{whenDeleted: Delete}}\n");
        assert_eq!(owners(&deleted, true), [1, 1, 1, 1]);
    }

    #[test]
    fn superuser_replication_each_login_role_and_the_exporter_get_a_secret() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let got = secrets(&ctx, &BTreeMap::new(), &mut Counter(0), "CA").unwrap();
        let names = names(&got);
        assert_eq!(
            names,
            [
                "db-superuser",
                "db-replication",
                "db-app-user-credentials",
                "db-pgpilot-monitor-credentials"
            ]
        );
        assert_eq!(value(&got[3], "username"), "pgpilot_monitor");
        let without = cluster(&format!(
            "{THREE}monitoring: {{exporter: {{enabled: false}}}}\n"
        ));
        let without = secrets(
            &Ctx::new(&without).unwrap(),
            &BTreeMap::new(),
            &mut Counter(0),
            "CA",
        );
        assert_eq!(without.unwrap().len(), 3, "no exporter, no monitor login");
        let app = &got[2];
        assert_eq!(value(app, "username"), "app_user");
        assert_eq!(value(app, "dbname"), "shop");
        assert_eq!(value(app, "host"), "db-rw.prod.svc");
        assert_eq!(value(app, "port"), "5432");
        assert_eq!(
            value(app, "uri"),
            "postgresql://app_user:generated3@db-rw.prod.svc:5432/shop?sslmode=require"
        );
        assert_eq!(
            value(app, "jdbc-uri"),
            "jdbc:postgresql://db-rw.prod.svc:5432/shop?user=app_user&password=generated3&sslmode=require"
        );
        assert_eq!(
            value(app, "ca.crt"),
            "CA",
            "the cluster's CA, for verify-full"
        );
        assert_eq!(
            value(app, "pgpass"),
            "db-rw.prod.svc:5432:*:app_user:generated3\n"
        );
    }

    #[test]
    fn an_existing_password_is_never_replaced() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let first = secrets(&ctx, &BTreeMap::new(), &mut Counter(0), "CA").unwrap();
        let mut existing: BTreeMap<String, Secret> = first
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
            .collect();
        // Someone stripped the derived keys of one Secret: they come back, same password.
        let stripped = existing.get_mut("db-app-user-credentials").unwrap();
        stripped
            .data
            .as_mut()
            .unwrap()
            .retain(|k, _| k == "password");
        let again = secrets(&ctx, &existing, &mut Counter(100), "CA").unwrap();
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a.data, b.data, "{:?} changed", a.metadata.name);
        }
    }

    #[test]
    fn a_secret_a_rotation_pointed_at_an_alternate_login_stays_there() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let mut existing: BTreeMap<String, Secret> =
            secrets(&ctx, &BTreeMap::new(), &mut Counter(0), "CA")
                .unwrap()
                .into_iter()
                .map(|s| (s.metadata.name.clone().unwrap(), s))
                .collect();
        let rotated = existing.get_mut("db-app-user-credentials").unwrap();
        let data = rotated.data.as_mut().unwrap();
        data.insert(
            "username".into(),
            k8s_openapi::ByteString(b"app_user_b".to_vec()),
        );
        data.insert(
            "password".into(),
            k8s_openapi::ByteString(b"rotated".to_vec()),
        );
        let again = secrets(&ctx, &existing, &mut Counter(100), "CA").unwrap();
        assert_eq!(value(&again[2], "username"), "app_user_b");
        assert_eq!(
            value(&again[2], "uri"),
            "postgresql://app_user_b:rotated@db-rw.prod.svc:5432/shop?sslmode=require"
        );
    }

    #[test]
    fn roles_without_login_or_marked_absent_get_no_secret() {
        let c = cluster(
            "
instances: 1
postgresql: {version: 17}
storage: {size: 1Gi}
roles: [{name: readers, login: false}, {name: old, ensure: Absent}, {name: app}]
monitoring: {exporter: {enabled: false}}
",
        );
        let ctx = Ctx::new(&c).unwrap();
        let got = secrets(&ctx, &BTreeMap::new(), &mut Counter(0), "CA").unwrap();
        let names = names(&got);
        assert_eq!(
            names,
            ["db-superuser", "db-replication", "db-app-credentials"]
        );
        assert_eq!(value(&got[2], "dbname"), "postgres");
    }
}
