//! The webhook's serving certificate. By default the manager bootstraps it: a CA of its own and
//! a server certificate for the webhook Service, kept in one Secret that every replica reads
//! (the first to find it missing creates it, the others read what it wrote), renewed before it
//! expires. With cert-manager, files it mounts are read instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use pgpilot_postgres::tls::{self, Ca};
use pgpilot_toolkit::Sensitive;

use crate::Error;

/// Key of the Secret with what clients trust: the CA, and the one before while it is valid.
pub const BUNDLE: &str = "bundle.crt";
/// A CA is replaced once less than this is left of it. The old one stays in the bundle until it
/// expires, so a server certificate of either is trusted during the change.
const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A serving certificate, its key, and the CA bundle clients need to trust it.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    pub bundle: String,
    pub cert: String,
    pub key: Sensitive,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A Secret the manager creates and renews, for these DNS names (or IP addresses).
    Secret {
        namespace: String,
        name: String,
        names: Vec<String>,
    },
    /// `tls.crt`, `tls.key` and `ca.crt` in a directory another tool keeps (cert-manager).
    Dir(PathBuf),
}

/// The current material, issuing or renewing it first if the Secret needs it.
pub async fn load(client: &kube::Client, source: &Source) -> Result<Material, Error> {
    match source {
        Source::Dir(dir) => {
            let read = |file: &str| {
                std::fs::read_to_string(dir.join(file)).map_err(|e| Error::Certificate {
                    what: format!("{}", dir.join(file).display()),
                    reason: e.to_string(),
                })
            };
            Ok(Material {
                bundle: read(tls::CA_CERT)?,
                cert: read(tls::TLS_CERT)?,
                key: Sensitive::new(read(tls::TLS_KEY)?),
            })
        }
        Source::Secret {
            namespace,
            name,
            names,
        } => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            match ensure(&api, name, names).await {
                // Another replica wrote it meanwhile: theirs is as good.
                Err(Error::Write(kube::Error::Api(e))) if e.code == 409 => {
                    ensure(&api, name, names).await
                }
                other => other,
            }
        }
    }
}

fn secret_error(name: &str) -> impl Fn(kube::Error) -> Error + '_ {
    move |source| Error::Lookup {
        kind: format!("Secret {name}"),
        source,
    }
}

async fn ensure(api: &Api<Secret>, name: &str, names: &[String]) -> Result<Material, Error> {
    let existing = api.get_opt(name).await.map_err(secret_error(name))?;
    let stored = Stored::of(existing.as_ref());
    let now = SystemTime::now();
    let Some(next) = renew(&stored, names, now)? else {
        return stored.material().ok_or_else(|| Error::Certificate {
            what: format!("Secret {name}"),
            reason: "incomplete".into(),
        });
    };
    let data = next.data();
    let material = next.material().ok_or_else(|| Error::Certificate {
        what: "the webhook certificate".into(),
        reason: "incomplete after issuing".into(),
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                pgpilot_api::labels::MANAGED_BY.into(),
                pgpilot_api::labels::MANAGED_BY_VALUE.into(),
            )])),
            resource_version: existing
                .as_ref()
                .and_then(|s| s.metadata.resource_version.clone()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    // Create, or replace what was read (a conflict means another replica renewed it).
    if existing.is_some() {
        api.replace(name, &PostParams::default(), &secret).await
    } else {
        api.create(&PostParams::default(), &secret).await
    }
    .map_err(Error::Write)?;
    tracing::info!(
        secret = name,
        renewed = existing.is_some(),
        "webhook serving certificate issued"
    );
    Ok(material)
}

/// What the Secret holds.
#[derive(Clone, Default)]
struct Stored {
    ca: Option<String>,
    ca_key: Option<Sensitive>,
    bundle: Option<String>,
    cert: Option<String>,
    key: Option<Sensitive>,
}

impl Stored {
    fn of(secret: Option<&Secret>) -> Stored {
        let data = secret.and_then(|s| s.data.as_ref());
        let text = |k: &str| {
            data.and_then(|d| d.get(k))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
        };
        Stored {
            ca: text(tls::CA_CERT),
            ca_key: text(tls::CA_KEY).map(Sensitive::new),
            bundle: text(BUNDLE),
            cert: text(tls::TLS_CERT),
            key: text(tls::TLS_KEY).map(Sensitive::new),
        }
    }

    fn material(&self) -> Option<Material> {
        Some(Material {
            bundle: self.bundle.clone()?,
            cert: self.cert.clone()?,
            key: self.key.clone()?,
        })
    }

    fn data(&self) -> BTreeMap<String, ByteString> {
        [
            (tls::CA_CERT, self.ca.clone()),
            (
                tls::CA_KEY,
                self.ca_key.as_ref().map(|k| k.expose().to_owned()),
            ),
            (BUNDLE, self.bundle.clone()),
            (tls::TLS_CERT, self.cert.clone()),
            (
                tls::TLS_KEY,
                self.key.as_ref().map(|k| k.expose().to_owned()),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), ByteString(v?.into_bytes()))))
        .collect()
    }
}

fn expires_within(pem: &str, now: SystemTime, within: Duration) -> bool {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    tls::inspect(pem).map_or(true, |f| f.not_after - now < within.as_secs() as i64)
}

/// What the Secret should hold instead of `stored`, or None when it can stay: a new CA when
/// there is none or it expires within a year (the old one kept in the bundle until it
/// expires), a new server certificate when it is missing, of another CA, lacks a name or
/// expires within a month.
fn renew(stored: &Stored, names: &[String], now: SystemTime) -> Result<Option<Stored>, Error> {
    let issue_error = |e: tls::TlsError| Error::Certificate {
        what: "the webhook certificate".into(),
        reason: e.to_string(),
    };
    let current = match (&stored.ca, &stored.ca_key) {
        (Some(cert), Some(key)) if !expires_within(cert, now, CA_RENEW_BEFORE) => Some(Ca {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let (ca, bundle) = match current {
        Some(ca) => {
            let bundle = stored.bundle.clone().unwrap_or_else(|| ca.cert.clone());
            (ca, bundle)
        }
        None => {
            let ca = tls::issue_named_ca("pgpilot webhook CA", now).map_err(issue_error)?;
            // The old CA stays trusted until it expires: servers still presenting a
            // certificate it signed keep working while the new bundle spreads.
            let old = stored
                .ca
                .clone()
                .filter(|c| !expires_within(c, now, Duration::ZERO));
            let bundle = match old {
                Some(old) => format!("{}{}", ca.cert, old),
                None => ca.cert.clone(),
            };
            (ca, bundle)
        }
    };
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let keep_leaf = stored.ca.as_deref() == Some(ca.cert.as_str())
        && stored.key.is_some()
        && tls::reissue(
            stored.cert.as_deref(),
            Some(&ca.cert),
            &ca.cert,
            names,
            now_secs,
        )
        .is_none();
    if keep_leaf && stored.bundle.as_deref() == Some(bundle.as_str()) {
        return Ok(None);
    }
    let leaf = if keep_leaf {
        (stored.cert.clone(), stored.key.clone())
    } else {
        let s = tls::issue_server(&ca, "pgpilot webhook", names, now).map_err(issue_error)?;
        (Some(s.cert), Some(s.key))
    };
    Ok(Some(Stored {
        ca: Some(ca.cert),
        ca_key: Some(ca.key),
        bundle: Some(bundle),
        cert: leaf.0,
        key: leaf.1,
    }))
}

/// The names the webhook Service answers to.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn names() -> Vec<String> {
        service_names("pgpilot-webhook", "pgpilot-system")
    }

    fn first(now: SystemTime) -> Stored {
        renew(&Stored::default(), &names(), now)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("an empty Secret gets a CA and a certificate"))
    }

    #[test]
    fn an_empty_secret_gets_a_ca_and_a_certificate_for_the_service() {
        let now = SystemTime::now();
        let s = first(now);
        let (ca, cert) = (
            s.ca.clone().unwrap_or_default(),
            s.cert.clone().unwrap_or_default(),
        );
        assert!(tls::signed_by(&cert, &ca));
        assert_eq!(s.bundle.as_deref(), Some(ca.as_str()));
        assert_eq!(tls::inspect(&cert).map(|f| f.dns_names).ok(), Some(names()));
        assert!(s.material().is_some());
        // Converged: nothing to write.
        assert!(matches!(renew(&s, &names(), now), Ok(None)));
    }

    #[test]
    fn the_certificate_is_renewed_under_the_same_ca_a_month_before_it_expires() {
        let t0 = SystemTime::now();
        let s = first(t0);
        assert!(matches!(renew(&s, &names(), t0 + 59 * DAY), Ok(None)));
        let later = renew(&s, &names(), t0 + 61 * DAY)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(later.ca, s.ca);
        assert_eq!(later.bundle, s.bundle);
        assert_ne!(later.cert, s.cert);
        // A name the certificate lacks: renewed as well.
        let mut more = names();
        more.push("127.0.0.1".into());
        let renamed = renew(&s, &more, t0).ok().flatten().unwrap_or_default();
        assert_eq!(renamed.ca, s.ca);
        assert_ne!(renamed.cert, s.cert);
    }

    #[test]
    fn a_ca_expiring_within_a_year_is_replaced_and_stays_in_the_bundle() {
        let t0 = SystemTime::now();
        let s = first(t0);
        let t = t0 + (3650 - 300) * DAY;
        let next = renew(&s, &names(), t).ok().flatten().unwrap_or_default();
        let (old_ca, new_ca) = (
            s.ca.clone().unwrap_or_default(),
            next.ca.clone().unwrap_or_default(),
        );
        assert_ne!(old_ca, new_ca);
        assert_eq!(next.bundle, Some(format!("{new_ca}{old_ca}")));
        assert!(tls::signed_by(
            &next.cert.clone().unwrap_or_default(),
            &new_ca
        ));
        // Once the old one expired, it leaves the bundle at the next renewal of the CA only;
        // until then the bundle is what was written.
        assert!(matches!(renew(&next, &names(), t + DAY), Ok(None)));
    }

    #[test]
    fn material_never_shows_the_key() {
        let s = first(SystemTime::now());
        let m = s.material().unwrap_or_else(|| panic!("material"));
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));
    }
}
