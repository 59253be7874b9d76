//! TLS material: the cluster's CA (made once and kept), the instances' server certificate
//! (issued again when it is missing, signed by another CA, lacks a name or has less than a
//! month left), and the CA certificate published for clients. The server Secret is mounted
//! beside patroni.yaml; its version is part of the token that makes every member reload
//! ([`super::auth`]), which is how PostgreSQL picks up a renewed certificate without a restart.
//!
//! With `spec.tls.certificate`, the server certificate and the CA clients trust come from the
//! user's Secret instead (cert-manager's, or their own), copied into the same Secret, so a
//! renewal there reaches the instances by the same reload. The cluster's CA stays for
//! pgBackRest's own TLS.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use pgpilot_postgres::credentials::text_of;
use pgpilot_postgres::tls::{self, CA_CERT, CA_KEY, Ca, Reissue, TLS_CERT, TLS_KEY};
use pgpilot_toolkit::Sensitive;
use serde_json::json;

use super::{Ctx, typed};
use crate::error::Error;

/// The TLS children and the CA certificate they share.
pub(super) struct Material {
    pub ca_secret: Secret,
    pub server_secret: Secret,
    pub ca_config_map: ConfigMap,
    pub ca_cert: String,
    /// Why the server certificate was issued now, if it was.
    pub reissued: Option<Reissue>,
}

/// The server certificate of a user's Secret (`spec.tls.certificate`), checked.
pub struct Provided {
    cert: String,
    key: Sensitive,
    /// The CA clients and pgpilot trust.
    ca: String,
    /// Less than a month left: the user's issuer should have renewed it by now.
    pub expiring: bool,
}

impl std::fmt::Debug for Provided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provided")
            .field("expiring", &self.expiring)
            .finish_non_exhaustive()
    }
}

/// Checks the user's Secret `name` (`secret`, if it exists): `tls.crt` signed by `ca.crt`,
/// a `tls.key`, every name the servers answer to, not expired. The message says what is
/// wrong, never a key.
pub fn provided(
    cluster: &pgpilot_api::PostgresCluster,
    name: &str,
    secret: Option<&Secret>,
    now: SystemTime,
) -> Result<Provided, String> {
    let ctx = Ctx::new(cluster).map_err(|e| e.to_string())?;
    let secret = secret.ok_or_else(|| format!("Secret {name} does not exist (yet)"))?;
    let get = |key: &str| text_of(secret, key).ok_or_else(|| format!("Secret {name} has no {key}"));
    let (cert, key, ca) = (get(TLS_CERT)?, get(TLS_KEY)?, get(CA_CERT)?);
    let facts = tls::inspect(&cert).map_err(|e| format!("Secret {name}: {TLS_CERT}: {e}"))?;
    tls::inspect(&ca).map_err(|e| format!("Secret {name}: {CA_CERT}: {e}"))?;
    if !tls::signed_by(&cert, &ca) {
        return Err(format!(
            "Secret {name}: {TLS_CERT} is not signed by its {CA_CERT} (the CA clients and pgpilot verify it with)"
        ));
    }
    let missing: Vec<String> = tls::server_names(&ctx.names, &ctx.namespace)
        .into_iter()
        .filter(|n| !facts.dns_names.contains(n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "Secret {name}: {TLS_CERT} lacks DNS names the instances answer to: {}",
            missing.join(", ")
        ));
    }
    let epoch = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if facts.not_after <= epoch {
        return Err(format!("Secret {name}: {TLS_CERT} has expired"));
    }
    Ok(Provided {
        cert,
        key: Sensitive::new(key),
        ca,
        expiring: facts.not_after - epoch < tls::RENEW_BEFORE.as_secs() as i64,
    })
}

fn secret(ctx: &Ctx<'_>, name: &str, kind: &str, data: Vec<(&str, &str)>) -> Result<Secret, Error> {
    let mut secret: Secret = typed(
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": ctx.meta(name), "type": kind}),
    )?;
    secret.data = Some(
        data.into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    Ok(secret)
}

pub(super) fn material(
    ctx: &Ctx<'_>,
    existing: &BTreeMap<String, Secret>,
    now: SystemTime,
    provided: Option<&Provided>,
) -> Result<Material, Error> {
    let names = &ctx.names;
    let kept_ca = existing.get(&names.ca_secret()).and_then(|s| {
        let cert = text_of(s, CA_CERT).filter(|c| tls::inspect(c).is_ok())?;
        Some(Ca {
            cert,
            key: Sensitive::new(text_of(s, CA_KEY)?),
        })
    });
    let ca = match kept_ca {
        Some(ca) => ca,
        None => tls::issue_ca(names, &ctx.namespace, now)?,
    };
    let ca_secret = secret(
        ctx,
        &names.ca_secret(),
        "Opaque",
        vec![(CA_CERT, &ca.cert), (CA_KEY, ca.key.expose())],
    )?;

    if let Some(p) = provided {
        return Ok(Material {
            ca_secret,
            server_secret: secret(
                ctx,
                &names.tls_secret(),
                "kubernetes.io/tls",
                vec![
                    (TLS_CERT, &p.cert),
                    (TLS_KEY, p.key.expose()),
                    (CA_CERT, &p.ca),
                ],
            )?,
            ca_config_map: ca_config_map(ctx, &p.ca)?,
            ca_cert: p.ca.clone(),
            reissued: None,
        });
    }
    let wanted = tls::server_names(names, &ctx.namespace);
    let current = existing.get(&names.tls_secret());
    let text = |key| current.and_then(|s| text_of(s, key));
    let epoch = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let reissued = match tls::reissue(
        text(TLS_CERT).as_deref(),
        text(CA_CERT).as_deref(),
        &ca.cert,
        &wanted,
        epoch,
    ) {
        None if text(TLS_KEY).is_none() => Some(Reissue::Missing),
        why => why,
    };
    let (cert, key) = match (reissued, text(TLS_CERT), text(TLS_KEY)) {
        (None, Some(cert), Some(key)) => (cert, Sensitive::new(key)),
        _ => {
            let cn = format!("{}.{}", names.cluster, ctx.namespace);
            let server = tls::issue_server(&ca, &cn, &wanted, now)?;
            (server.cert, server.key)
        }
    };
    let server_secret = secret(
        ctx,
        &names.tls_secret(),
        "kubernetes.io/tls",
        vec![
            (TLS_CERT, &cert),
            (TLS_KEY, key.expose()),
            (CA_CERT, &ca.cert),
        ],
    )?;
    Ok(Material {
        ca_secret,
        server_secret,
        ca_config_map: ca_config_map(ctx, &ca.cert)?,
        ca_cert: ca.cert,
        reissued,
    })
}

/// When the server certificate in `secret` expires (Unix time).
pub(super) fn not_after(secret: &Secret) -> Option<i64> {
    tls::inspect(&text_of(secret, TLS_CERT)?)
        .ok()
        .map(|facts| facts.not_after)
}

/// The CA certificate clients trust, for them to mount.
fn ca_config_map(ctx: &Ctx<'_>, ca_cert: &str) -> Result<ConfigMap, Error> {
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": ctx.meta(&ctx.names.ca_config_map()),
            "data": {CA_CERT: ca_cert},
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::ResourceExt;

    use super::*;
    use crate::desired::fixtures::{THREE, cluster};

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn by_name(m: &Material) -> BTreeMap<String, Secret> {
        [&m.ca_secret, &m.server_secret]
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
            .collect()
    }

    fn value(s: &Secret, key: &str) -> String {
        text_of(s, key).unwrap()
    }

    #[test]
    fn a_new_cluster_gets_a_ca_a_server_certificate_and_a_published_ca() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let m = material(&ctx, &BTreeMap::new(), at(NOW), None).unwrap();
        assert_eq!(m.ca_secret.metadata.name.as_deref(), Some("db-ca"));
        assert_eq!(m.server_secret.metadata.name.as_deref(), Some("db-tls"));
        assert_eq!(m.server_secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(m.ca_config_map.metadata.name.as_deref(), Some("db-ca-cert"));
        assert_eq!(m.ca_config_map.data.as_ref().unwrap()[CA_CERT], m.ca_cert);
        assert_eq!(value(&m.server_secret, CA_CERT), m.ca_cert);
        assert!(
            m.ca_config_map.data.as_ref().unwrap().len() == 1,
            "no key in the ConfigMap"
        );
        let facts = tls::inspect(&value(&m.server_secret, TLS_CERT)).unwrap();
        assert!(facts.dns_names.contains(&"db-rw.prod.svc".to_owned()));
        assert!(
            m.ca_secret.owner_references().len() == 1
                && m.server_secret.owner_references().len() == 1,
            "both go with the cluster"
        );
    }

    #[test]
    fn a_converged_cluster_keeps_its_certificates_and_a_month_before_expiry_gets_a_new_one() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let first = material(&ctx, &BTreeMap::new(), at(NOW), None).unwrap();
        let existing = by_name(&first);
        assert_eq!(first.reissued, Some(Reissue::Missing));
        let later = material(&ctx, &existing, at(NOW + 30 * 86400), None).unwrap();
        assert_eq!(later.ca_secret, first.ca_secret);
        assert_eq!(later.server_secret, first.server_secret, "nothing to write");
        assert_eq!(later.reissued, None);

        let renewed = material(&ctx, &existing, at(NOW + 61 * 86400), None).unwrap();
        assert_eq!(renewed.reissued, Some(Reissue::Expiring));
        assert_eq!(renewed.ca_secret, first.ca_secret, "the CA stays");
        assert_ne!(
            value(&renewed.server_secret, TLS_CERT),
            value(&first.server_secret, TLS_CERT)
        );
        assert_ne!(
            value(&renewed.server_secret, TLS_KEY),
            value(&first.server_secret, TLS_KEY),
            "a new key too"
        );
    }

    #[test]
    fn a_lost_ca_means_a_new_ca_and_a_server_certificate_it_signed() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let first = material(&ctx, &BTreeMap::new(), at(NOW), None).unwrap();
        let mut existing = by_name(&first);
        existing.remove("db-ca");
        let again = material(&ctx, &existing, at(NOW), None).unwrap();
        assert_ne!(again.ca_cert, first.ca_cert);
        assert_eq!(value(&again.server_secret, CA_CERT), again.ca_cert);
        assert_eq!(
            tls::inspect(&value(&again.server_secret, TLS_CERT))
                .unwrap()
                .issuer,
            tls::inspect(&again.ca_cert).unwrap().subject
        );
    }

    /// A Secret as cert-manager writes it, from another CA than the cluster's, naming `dns`.
    fn users_secret(dns: &[String], now: SystemTime) -> (Secret, String) {
        let ca = tls::issue_ca(&pgpilot_postgres::names::Names::new("users"), "pki", now).unwrap();
        let server = tls::issue_server(&ca, "db", dns, now).unwrap();
        let data = [
            (TLS_CERT, server.cert.clone()),
            (TLS_KEY, server.key.expose().to_owned()),
            (CA_CERT, ca.cert.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect();
        let s = Secret {
            data: Some(data),
            ..Default::default()
        };
        (s, ca.cert)
    }

    #[test]
    fn a_provided_certificate_is_served_and_its_ca_published_and_the_clusters_ca_kept() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let names = tls::server_names(&ctx.names, "prod");
        let (users, users_ca) = users_secret(&names, at(NOW));
        let p = provided(&c, "db-cert", Some(&users), at(NOW)).unwrap();
        assert!(!p.expiring);
        let m = material(&ctx, &BTreeMap::new(), at(NOW), Some(&p)).unwrap();
        assert_eq!(m.reissued, None);
        assert_eq!(m.ca_cert, users_ca);
        assert_eq!(m.ca_config_map.data.as_ref().unwrap()[CA_CERT], users_ca);
        assert_eq!(m.server_secret.metadata.name.as_deref(), Some("db-tls"));
        for key in [TLS_CERT, TLS_KEY, CA_CERT] {
            assert_eq!(value(&m.server_secret, key), value(&users, key), "{key}");
        }
        assert_ne!(
            value(&m.ca_secret, CA_CERT),
            users_ca,
            "pgBackRest keeps the cluster's CA"
        );
        assert!(!format!("{p:?}").contains("PRIVATE"), "Debug shows no key");
    }

    #[test]
    fn an_unfit_provided_certificate_is_refused_saying_why_without_a_key() {
        let c = cluster(THREE);
        let ctx = Ctx::new(&c).unwrap();
        let names = tls::server_names(&ctx.names, "prod");
        let err = |secret: Option<&Secret>, now| provided(&c, "db-cert", secret, now).unwrap_err();

        assert_eq!(err(None, at(NOW)), "Secret db-cert does not exist (yet)");
        let (mut no_key, _) = users_secret(&names, at(NOW));
        no_key.data.as_mut().unwrap().remove(TLS_KEY);
        assert_eq!(err(Some(&no_key), at(NOW)), "Secret db-cert has no tls.key");

        let (short, _) = users_secret(&names[..1], at(NOW));
        let message = err(Some(&short), at(NOW));
        assert!(message.contains("lacks DNS names"), "{message}");
        assert!(message.contains("*.db-pods.prod.svc"), "{message}");

        let (mut other_ca, _) = users_secret(&names, at(NOW));
        let (_, another_ca) = users_secret(&names, at(NOW));
        other_ca
            .data
            .as_mut()
            .unwrap()
            .insert(CA_CERT.into(), ByteString(another_ca.into_bytes()));
        let message = err(Some(&other_ca), at(NOW));
        assert!(message.contains("is not signed by its ca.crt"), "{message}");

        let (fine, _) = users_secret(&names, at(NOW));
        let expiry = tls::inspect(&value(&fine, TLS_CERT)).unwrap().not_after as u64;
        assert!(
            provided(&c, "db-cert", Some(&fine), at(expiry - 86400))
                .unwrap()
                .expiring
        );
        assert_eq!(
            err(Some(&fine), at(expiry + 1)),
            "Secret db-cert: tls.crt has expired"
        );
        for message in [err(Some(&short), at(NOW)), err(Some(&other_ca), at(NOW))] {
            assert!(!message.contains("PRIVATE KEY"), "{message}");
        }
    }
}
