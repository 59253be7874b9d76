//! TLS material: the cluster's CA (made once and kept), the instances' server certificate
//! (issued again when it is missing, signed by another CA, lacks a name or has less than a
//! month left), and the CA certificate published for clients. The server Secret is mounted
//! beside patroni.yaml; its version is part of the token that makes every member reload
//! ([`super::auth`]), which is how PostgreSQL picks up a renewed certificate without a restart.

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
    let ca_config_map = typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": ctx.meta(&names.ca_config_map()),
            "data": {CA_CERT: ca.cert},
        }),
    )?;
    Ok(Material {
        ca_secret,
        server_secret,
        ca_config_map,
        ca_cert: ca.cert,
        reissued,
    })
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
        let m = material(&ctx, &BTreeMap::new(), at(NOW)).unwrap();
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
        let first = material(&ctx, &BTreeMap::new(), at(NOW)).unwrap();
        let existing = by_name(&first);
        assert_eq!(first.reissued, Some(Reissue::Missing));
        let later = material(&ctx, &existing, at(NOW + 30 * 86400)).unwrap();
        assert_eq!(later.ca_secret, first.ca_secret);
        assert_eq!(later.server_secret, first.server_secret, "nothing to write");
        assert_eq!(later.reissued, None);

        let renewed = material(&ctx, &existing, at(NOW + 61 * 86400)).unwrap();
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
        let first = material(&ctx, &BTreeMap::new(), at(NOW)).unwrap();
        let mut existing = by_name(&first);
        existing.remove("db-ca");
        let again = material(&ctx, &existing, at(NOW)).unwrap();
        assert_ne!(again.ca_cert, first.ca_cert);
        assert_eq!(value(&again.server_secret, CA_CERT), again.ca_cert);
        assert_eq!(
            tls::inspect(&value(&again.server_secret, TLS_CERT))
                .unwrap()
                .issuer,
            tls::inspect(&again.ca_cert).unwrap().subject
        );
    }
}
