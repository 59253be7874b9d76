//! A cluster's own PKI. One CA per cluster, whose key only the operator holds, signs one
//! server certificate that PostgreSQL and Patroni's REST API present on every instance.
//!
//! Per cluster, not per namespace: a client that trusts a cluster's CA trusts that cluster's
//! servers and no other (two clusters of one namespace can belong to different teams), a
//! leaked CA key exposes one cluster, and the CA goes away with its cluster. The server
//! certificate names the Services and, by wildcard, every pod behind the headless Service, so
//! scaling needs no new certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgpilot_toolkit::Sensitive;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::names::Names;

/// Keys of the CA Secret (the key stays in it) and of the server Secret (`kubernetes.io/tls`,
/// with the CA certificate beside, as cert-manager writes it).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

const DAY: u64 = 24 * 3600;
/// Ten years: replacing a CA means every client must trust the new one.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);
/// Short, since renewal is automatic and costs nothing but a reload.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(90 * DAY);
/// A server certificate is renewed once less than this is left (a third of its life):
/// a month for the operator to be down or failing before anything expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * DAY);
/// Clocks of the nodes may be behind the operator's.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("{what} is not a PEM certificate or key: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("cannot build a TLS client: {0}")]
    Client(#[from] rustls::Error),
}

/// A CA: its certificate (public) and its key (only in the CA Secret).
#[derive(Clone)]
pub struct Ca {
    pub cert: String,
    pub key: Sensitive,
}

/// A server certificate and its key.
#[derive(Clone)]
pub struct ServerCert {
    pub cert: String,
    pub key: Sensitive,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pgpilot");
    dn.push(DnType::CommonName, cn);
    dn
}

fn valid(params: &mut CertificateParams, now: SystemTime, validity: Duration) {
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + validity).into();
}

/// A new CA for cluster `names` in `namespace`.
pub fn issue_ca(names: &Names, namespace: &str, now: SystemTime) -> Result<Ca, TlsError> {
    issue_named_ca(&format!("pgpilot CA {namespace}/{}", names.cluster), now)
}

/// A new CA whose common name is `cn`, valid for [`CA_VALIDITY`].
pub fn issue_named_ca(cn: &str, now: SystemTime) -> Result<Ca, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    valid(&mut params, now, CA_VALIDITY);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert: cert.pem(),
        key: Sensitive::new(key.serialize_pem()),
    })
}

/// The names a cluster's servers answer to: the three Services (short, namespaced and fully
/// qualified) and every pod behind the headless Service.
pub fn server_names(names: &Names, namespace: &str) -> Vec<String> {
    let mut out = Vec::new();
    for service in [names.rw_service(), names.ro_service(), names.r_service()] {
        out.push(service.clone());
        out.push(format!("{service}.{namespace}"));
        out.push(format!("{service}.{namespace}.svc"));
        out.push(format!("{service}.{namespace}.svc.cluster.local"));
    }
    let pods = names.pods_service();
    out.push(format!("*.{pods}.{namespace}.svc"));
    out.push(format!("*.{pods}.{namespace}.svc.cluster.local"));
    out
}

/// A server certificate for `dns_names`, signed by `ca`.
pub fn issue_server(
    ca: &Ca,
    cn: &str,
    dns_names: &[String],
    now: SystemTime,
) -> Result<ServerCert, TlsError> {
    let ca_key = KeyPair::from_pem(ca.key.expose()).map_err(|e| TlsError::Pem {
        what: "the CA key",
        reason: e.to_string(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(|e| TlsError::Pem {
        what: "the CA certificate",
        reason: e.to_string(),
    })?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name = dn(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Python 3.13's default TLS context (Patroni's members, checking each other) is strict
    // and refuses a certificate without it.
    params.use_authority_key_identifier_extension = true;
    valid(&mut params, now, SERVER_VALIDITY);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(ServerCert {
        cert: cert.pem(),
        key: Sensitive::new(key.serialize_pem()),
    })
}

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// Seconds since the epoch.
    pub not_after: i64,
    /// DNS names and IP addresses (as text) among the subject alternative names.
    pub dns_names: Vec<String>,
    /// The issuer's distinguished name, as text.
    pub issuer: String,
    pub subject: String,
}

/// Reads a PEM certificate.
pub fn inspect(pem: &str) -> Result<CertFacts, TlsError> {
    use x509_parser::prelude::*;
    let bad = |reason: String| TlsError::Pem {
        what: "a certificate",
        reason,
    };
    let (_, pem) = parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let dns_names = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*ip)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertFacts {
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
    })
}

/// Why a server certificate must be issued again, if it must.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reissue {
    /// There is none, or it cannot be read.
    Missing,
    /// Signed by another CA than the cluster's.
    OtherCa,
    /// It lacks one of the names the servers answer to.
    Names,
    /// Less than [`RENEW_BEFORE`] is left.
    Expiring,
}

impl Reissue {
    pub fn as_str(self) -> &'static str {
        match self {
            Reissue::Missing => "missing",
            Reissue::OtherCa => "signed by another CA",
            Reissue::Names => "names changed",
            Reissue::Expiring => "expiring",
        }
    }
}

/// Whether the server certificate `cert` (and the CA certificate stored beside it) can stay,
/// for the cluster's CA `ca_cert`, the `wanted` names, at `now` (seconds).
pub fn reissue(
    cert: Option<&str>,
    stored_ca: Option<&str>,
    ca_cert: &str,
    wanted: &[String],
    now: i64,
) -> Option<Reissue> {
    let Some(facts) = cert.and_then(|c| inspect(c).ok()) else {
        return Some(Reissue::Missing);
    };
    if stored_ca != Some(ca_cert) || !signed_by(cert.unwrap_or_default(), ca_cert) {
        return Some(Reissue::OtherCa);
    }
    if wanted.iter().any(|n| !facts.dns_names.contains(n)) {
        return Some(Reissue::Names);
    }
    if facts.not_after - now < RENEW_BEFORE.as_secs() as i64 {
        return Some(Reissue::Expiring);
    }
    None
}

/// Whether the certificate `cert` carries a signature of the CA `ca` (both PEM). Two CAs of
/// one cluster have the same name, so the name alone cannot tell.
pub fn signed_by(cert: &str, ca: &str) -> bool {
    use x509_parser::prelude::*;
    let (Ok((_, cert)), Ok((_, ca))) = (
        parse_x509_pem(cert.as_bytes()),
        parse_x509_pem(ca.as_bytes()),
    ) else {
        return false;
    };
    let (Ok(cert), Ok(ca)) = (cert.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// A TLS client configuration that trusts only `ca_pem` (a cluster's CA) and checks the
/// server's name: `verify-full`.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: "the CA certificate",
            reason: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            what: "the CA certificate",
            reason: "no certificate in it".to_owned(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn fixture() -> (Names, Ca, Vec<String>, ServerCert) {
        let names = Names::new("db");
        let ca = issue_ca(&names, "prod", at(NOW)).unwrap();
        let wanted = server_names(&names, "prod");
        let server = issue_server(&ca, "db.prod", &wanted, at(NOW)).unwrap();
        (names, ca, wanted, server)
    }

    #[test]
    fn the_server_certificate_names_every_service_and_pod_and_is_signed_by_the_ca() {
        let (names, ca, wanted, server) = fixture();
        let facts = inspect(&server.cert).unwrap();
        for name in [
            "db-rw",
            "db-rw.prod.svc",
            "db-ro.prod.svc.cluster.local",
            "db-r.prod",
            "*.db-pods.prod.svc",
        ] {
            assert!(
                facts.dns_names.iter().any(|n| n == name),
                "{name}: {facts:?}"
            );
        }
        assert_eq!(facts.dns_names, wanted);
        assert_eq!(facts.issuer, inspect(&ca.cert).unwrap().subject);
        assert_eq!(
            facts.not_after,
            (NOW + SERVER_VALIDITY.as_secs()) as i64,
            "valid for 90 days"
        );
        let pod = names.pod_host("db-1", "prod");
        assert!(
            facts
                .dns_names
                .contains(&format!("*{}", &pod[pod.find('.').unwrap()..]))
        );
        assert!(!ca.key.expose().is_empty() && server.key.expose().contains("PRIVATE KEY"));
    }

    #[test]
    fn the_ca_may_sign_servers_only_and_lives_ten_years() {
        use x509_parser::prelude::*;
        let (_, ca, _, server) = fixture();
        let (_, pem) = parse_x509_pem(ca.cert.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert_eq!(
            cert.validity().not_after.timestamp(),
            (NOW + CA_VALIDITY.as_secs()) as i64
        );
        let (_, pem) = parse_x509_pem(server.cert.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert!(
            cert.extensions().iter().any(|e| matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )),
            "strict verifiers (Python 3.13) want the issuer's key identifier"
        );
        assert!(
            !cert
                .basic_constraints()
                .unwrap()
                .is_some_and(|b| b.value.ca)
        );
        let (_, ca_pem) = parse_x509_pem(ca.cert.as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn a_certificate_is_issued_again_when_missing_foreign_renamed_or_expiring() {
        let (names, ca, wanted, server) = fixture();
        let now = NOW as i64;
        let keep = |cert: Option<&str>, stored: Option<&str>, wanted: &[String], now| {
            reissue(cert, stored, &ca.cert, wanted, now)
        };
        assert_eq!(keep(Some(&server.cert), Some(&ca.cert), &wanted, now), None);
        assert_eq!(
            keep(None, Some(&ca.cert), &wanted, now),
            Some(Reissue::Missing)
        );
        assert_eq!(
            keep(Some("garbage"), Some(&ca.cert), &wanted, now),
            Some(Reissue::Missing)
        );
        let other = issue_ca(&names, "prod", at(NOW)).unwrap();
        let foreign = issue_server(&other, "db.prod", &wanted, at(NOW)).unwrap();
        assert_eq!(
            keep(Some(&foreign.cert), Some(&other.cert), &wanted, now),
            Some(Reissue::OtherCa)
        );
        assert_eq!(
            keep(Some(&server.cert), Some(&other.cert), &wanted, now),
            Some(Reissue::OtherCa),
            "the CA beside it is not the cluster's"
        );
        assert_eq!(
            keep(Some(&foreign.cert), Some(&ca.cert), &wanted, now),
            Some(Reissue::OtherCa),
            "same CA name, another key"
        );
        let more = [wanted.clone(), vec!["db-extra".to_owned()]].concat();
        assert_eq!(
            keep(Some(&server.cert), Some(&ca.cert), &more, now),
            Some(Reissue::Names)
        );
        let renew_at = now + (SERVER_VALIDITY - RENEW_BEFORE).as_secs() as i64;
        assert_eq!(
            keep(Some(&server.cert), Some(&ca.cert), &wanted, renew_at - 1),
            None
        );
        assert_eq!(
            keep(Some(&server.cert), Some(&ca.cert), &wanted, renew_at + 1),
            Some(Reissue::Expiring)
        );
    }

    #[test]
    fn a_client_trusts_the_clusters_ca_and_nothing_else() {
        let (_, ca, _, _) = fixture();
        assert!(client_config(&ca.cert).is_ok());
        assert!(matches!(
            client_config("not a certificate"),
            Err(TlsError::Pem { .. })
        ));
    }
}
