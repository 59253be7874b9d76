//! Credentials. Each password is generated once, with a CSPRNG, and kept: an existing
//! Secret's password is never replaced here (the rotation controller owns changes). Keys
//! derived from it (uri, jdbc-uri, pgpass, …) are restored if someone removed them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::RngExt;
use serde_json::json;

use super::{Ctx, typed};
use crate::error::Error;
use crate::names::{POSTGRES_PORT, REPLICATION_USER, SUPERUSER};
use pgpilot_api::cluster::{Ensure, PvcPolicy};

/// Makes new passwords.
pub trait PasswordSource {
    fn new_password(&mut self) -> String;
}

/// 32 letters and digits from the thread's CSPRNG (ChaCha, seeded by the OS): ~190 bits,
/// and safe in URIs, JDBC URLs and pgpass files without escaping.
pub struct Csprng;

impl PasswordSource for Csprng {
    fn new_password(&mut self) -> String {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| {
                const ALPHABET: &[u8] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])
            })
            .collect()
    }
}

pub(crate) fn existing_password(existing: &BTreeMap<String, Secret>, name: &str) -> Option<String> {
    let secret = existing.get(name)?;
    let bytes = secret.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

/// The Secrets of a cluster: superuser, replication, and one per declared login role.
pub(super) fn secrets(
    ctx: &Ctx<'_>,
    existing: &BTreeMap<String, Secret>,
    passwords: &mut dyn PasswordSource,
) -> Result<Vec<Secret>, Error> {
    let spec = &ctx.cluster.spec;
    let mut wanted = vec![
        (
            ctx.names.superuser_secret(),
            SUPERUSER.to_owned(),
            "postgres".to_owned(),
        ),
        (
            ctx.names.replication_secret(),
            REPLICATION_USER.to_owned(),
            "postgres".to_owned(),
        ),
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
            .map(|d| d.name.clone())
            .unwrap_or_else(|| "postgres".to_owned());
        wanted.push((ctx.names.role_secret(&role.name), role.name.clone(), dbname));
    }
    wanted
        .into_iter()
        .map(|(name, user, dbname)| {
            let password =
                existing_password(existing, &name).unwrap_or_else(|| passwords.new_password());
            credential_secret(ctx, &name, &user, &password, &dbname)
        })
        .collect()
}

fn credential_secret(
    ctx: &Ctx<'_>,
    name: &str,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Secret, Error> {
    let host = ctx.names.rw_host(&ctx.namespace);
    let port = POSTGRES_PORT;
    let data: BTreeMap<&str, String> = BTreeMap::from([
        ("username", user.to_owned()),
        ("password", password.to_owned()),
        ("host", host.clone()),
        ("port", port.to_string()),
        ("dbname", dbname.to_owned()),
        (
            "uri",
            format!("postgresql://{user}:{password}@{host}:{port}/{dbname}"),
        ),
        (
            "jdbc-uri",
            format!("jdbc:postgresql://{host}:{port}/{dbname}?user={user}&password={password}"),
        ),
        ("pgpass", format!("{host}:{port}:*:{user}:{password}\n")),
    ]);
    let mut metadata = ctx.meta(name);
    // Volumes kept after the cluster is deleted are of use only with the passwords stored in
    // them: the Secrets stay too (no owner), and a cluster created again with this name adopts
    // both.
    let retained = ctx.cluster.spec.pvc_retention().when_deleted == PvcPolicy::Retain;
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
    secret.data = Some(
        data.into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
            .collect(),
    );
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};

    struct Counter(u32);
    impl PasswordSource for Counter {
        fn new_password(&mut self) -> String {
            self.0 += 1;
            format!("generated{}", self.0)
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
        let owners = |spec: &str| {
            let c = cluster(spec);
            let ctx = Ctx::new(&c).unwrap();
            secrets(&ctx, &BTreeMap::new(), &mut Counter(0))
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
        assert_eq!(owners(THREE), [0, 0, 0], "whenDeleted defaults to Retain");
        let deleted =
            format!("{THREE}persistentVolumeClaimRetentionPolicy: {{whenDeleted: Delete}}\n");
        assert_eq!(owners(&deleted), [1, 1, 1]);
    }

    #[test]
    fn superuser_replication_and_each_login_role_get_a_secret() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let got = secrets(&ctx, &BTreeMap::new(), &mut Counter(0)).unwrap();
        let names = names(&got);
        assert_eq!(
            names,
            ["db-superuser", "db-replication", "db-app-user-credentials"]
        );
        let app = &got[2];
        assert_eq!(value(app, "username"), "app_user");
        assert_eq!(value(app, "dbname"), "shop");
        assert_eq!(value(app, "host"), "db-rw.prod.svc");
        assert_eq!(value(app, "port"), "5432");
        assert_eq!(
            value(app, "uri"),
            "postgresql://app_user:generated3@db-rw.prod.svc:5432/shop"
        );
        assert_eq!(
            value(app, "jdbc-uri"),
            "jdbc:postgresql://db-rw.prod.svc:5432/shop?user=app_user&password=generated3"
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
        let first = secrets(&ctx, &BTreeMap::new(), &mut Counter(0)).unwrap();
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
        let again = secrets(&ctx, &existing, &mut Counter(100)).unwrap();
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a.data, b.data, "{:?} changed", a.metadata.name);
        }
    }

    #[test]
    fn roles_without_login_or_marked_absent_get_no_secret() {
        let c = cluster(
            "
instances: 1
postgresql: {version: 17}
storage: {size: 1Gi}
roles: [{name: readers, login: false}, {name: old, ensure: Absent}, {name: app}]
",
        );
        let ctx = Ctx::new(&c).unwrap();
        let got = secrets(&ctx, &BTreeMap::new(), &mut Counter(0)).unwrap();
        let names = names(&got);
        assert_eq!(
            names,
            ["db-superuser", "db-replication", "db-app-credentials"]
        );
        assert_eq!(value(&got[2], "dbname"), "postgres");
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = Csprng.new_password();
        let b = Csprng.new_password();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
