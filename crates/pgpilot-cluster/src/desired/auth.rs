//! Patroni's credentials: the superuser's and the replication user's, in a Secret of their own
//! mounted beside patroni.yaml (not in the environment, which a running Patroni never reads
//! again). When a rotation changes either Secret, this one follows, the kubelet updates the
//! file, and a reload of each member (`POST /reload`) makes Patroni use the new passwords —
//! for replication connections and pg_rewind — without a restart. The tag
//! [`AUTH_TAG`] is a digest of the passwords and of the server certificate (mounted in the
//! same volume, so updated by the kubelet at the same moment) the file goes with, so
//! pgpilot can see which members loaded it; a reload also makes PostgreSQL read a renewed
//! certificate. With TLS required, Patroni's replication and pg_rewind connections check that
//! the primary's certificate comes from the cluster's CA.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use pgpilot_postgres::credentials::PasswordSource;
use pgpilot_postgres::credentials::password_of;
use pgpilot_postgres::names::{REPLICATION_USER, SUPERUSER};
use pgpilot_postgres::patroni::{API_USER, AUTH_TAG, auth_secrets, auth_token};
use serde_json::json;

use super::config::CA_FILE;
use super::{Ctx, typed};
use crate::error::Error;
use pgpilot_api::cluster::TlsMode;

/// The file's name in the Secret and in Patroni's configuration directory.
pub const AUTH_FILE: &str = "auth.yaml";

/// The Secret with Patroni's credentials, and the token its tag carries, from the credential
/// and certificate Secrets this reconcile applies (`desired`): the file and the token are of
/// the same contents, so one write of each Secret is all a change takes.
pub(super) fn auth_secret(ctx: &Ctx<'_>, desired: &[Secret]) -> Result<(Secret, String), Error> {
    let (su, repl) = (ctx.names.superuser_secret(), ctx.names.replication_secret());
    let find = |name: &str| {
        desired
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    };
    let password = |name: &str| {
        find(name)
            .and_then(password_of)
            .ok_or_else(|| Error::Invalid {
                field: "spec",
                message: format!("Secret {name} has no password"),
            })
    };
    let api = ctx.names.patroni_api_secret();
    let token = auth_token(auth_secrets(&ctx.names).each_ref().map(|n| find(n)));
    let mut superuser = json!({"username": SUPERUSER, "password": password(&su)?.expose()});
    let mut replication =
        json!({"username": REPLICATION_USER, "password": password(&repl)?.expose()});
    if ctx.cluster.spec.tls_mode() == TlsMode::Required {
        // By IP, so the CA and not the name: only this cluster's servers have its certificates.
        for user in [&mut superuser, &mut replication] {
            user["sslmode"] = json!("verify-ca");
            user["sslrootcert"] = json!(CA_FILE);
        }
    }
    let yaml = super::patroni_file(
        &json!({
            "postgresql": {"authentication": {"superuser": superuser, "replication": replication}},
            "restapi": {"authentication": {"username": API_USER, "password": password(&api)?.expose()}},
            "tags": {AUTH_TAG: token},
        }),
        AUTH_FILE,
    )?;
    let mut secret: Secret = typed(
        "Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": ctx.meta(&ctx.names.patroni_auth()),
            "type": "Opaque",
        }),
    )?;
    secret.data = Some(BTreeMap::from([(
        AUTH_FILE.to_owned(),
        ByteString(yaml.into_bytes()),
    )]));
    Ok((secret, token))
}

/// The REST API's credentials: made once, kept (like the other credentials, a rotation may
/// change them; auth.yaml follows).
pub(super) fn api_secret(
    ctx: &Ctx<'_>,
    existing: &BTreeMap<String, Secret>,
    passwords: &mut dyn PasswordSource,
) -> Result<Secret, Error> {
    let name = ctx.names.patroni_api_secret();
    let password = existing
        .get(&name)
        .and_then(password_of)
        .unwrap_or_else(|| passwords.new_password());
    let mut secret: Secret = typed(
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": ctx.meta(&name), "type": "Opaque"}),
    )?;
    secret.data = Some(BTreeMap::from([
        (
            "username".to_owned(),
            ByteString(API_USER.as_bytes().to_vec()),
        ),
        (
            "password".to_owned(),
            ByteString(password.expose().as_bytes().to_vec()),
        ),
    ]));
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};
    use crate::desired::secrets::secrets;
    use pgpilot_postgres::credentials::PasswordSource;
    use pgpilot_toolkit::Sensitive;

    struct Fixed;
    impl PasswordSource for Fixed {
        fn new_password(&mut self) -> Sensitive {
            Sensitive::new("pw")
        }
    }

    #[test]
    fn patroni_gets_both_passwords_and_the_token_of_what_is_applied() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let mut creds = secrets(&ctx, &BTreeMap::new(), &mut Fixed, "CA").unwrap();
        creds.push(api_secret(&ctx, &BTreeMap::new(), &mut Fixed).unwrap());
        let (secret, token) = auth_secret(&ctx, &creds).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("db-patroni-auth"));
        let applied = auth_secrets(&ctx.names).map(|n| {
            creds
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(n.as_str()))
                .cloned()
        });
        assert_eq!(token, auth_token(applied.each_ref().map(Option::as_ref)));
        let yaml: serde_json::Value =
            serde_yaml::from_slice(&secret.data.unwrap()[AUTH_FILE].0).unwrap();
        assert_eq!(
            yaml,
            json!({"postgresql": {"authentication": {
                "superuser": {"username": "postgres", "password": "pw"},
                "replication": {"username": "replicator", "password": "pw"}}},
                "restapi": {"authentication": {"username": "pgpilot", "password": "pw"}},
                "tags": {"pgpilot_auth": token}})
        );
    }

    #[test]
    fn with_tls_required_patroni_checks_the_primarys_certificate_against_the_ca() {
        let c = cluster(&format!("{THREE}tls: {{mode: Required}}"));
        let ctx = Ctx::new(&c).unwrap();
        let mut creds = secrets(&ctx, &BTreeMap::new(), &mut Fixed, "CA").unwrap();
        creds.push(api_secret(&ctx, &BTreeMap::new(), &mut Fixed).unwrap());
        let (secret, _) = auth_secret(&ctx, &creds).unwrap();
        let yaml: serde_json::Value =
            serde_yaml::from_slice(&secret.data.unwrap()[AUTH_FILE].0).unwrap();
        for user in ["superuser", "replication"] {
            let auth = &yaml["postgresql"]["authentication"][user];
            assert_eq!(auth["sslmode"], "verify-ca", "{user}");
            assert_eq!(auth["sslrootcert"], "/etc/patroni/ca.crt", "{user}");
        }
    }
}
