//! Serving the webhooks over TLS, keeping the certificate fresh, and the CA bundle in the
//! ValidatingWebhookConfiguration. Every replica serves (not only the leader): the Service
//! spreads reviews over all ready pods, so a standby answers while the leader is busy.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::certs::{self, Material, Source};
use crate::review::{self, ReviewMetrics, Reviewer};

/// Field manager of the CA bundle in the webhook configuration.
pub const FIELD_MANAGER: &str = "pgpilot-webhook";

/// How the webhook server runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: SocketAddr,
    pub certificate: Source,
    /// The ValidatingWebhookConfiguration whose CA bundle this manager keeps (None: another
    /// tool does, e.g. cert-manager's CA injector).
    pub configuration: Option<String>,
    /// How often the certificate and the CA bundle are checked.
    pub refresh: Duration,
}

/// The certificate rustls presents, swapped in place when it is renewed.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| Arc::clone(&k))
    }
}

fn certified_key(material: &Material) -> Result<Arc<CertifiedKey>, Error> {
    let bad = |what: &str, reason: String| Error::Certificate {
        what: what.into(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(material.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the serving certificate", e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(material.key.expose().as_bytes())
        .map_err(|e| bad("the serving key", e.to_string()))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad("the serving key", e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// Keeps the CA bundle of every webhook of `name` at `bundle`. Returns whether it wrote.
pub async fn inject_ca_bundle(
    client: &kube::Client,
    name: &str,
    bundle: &str,
) -> Result<bool, Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(live) = api.get_opt(name).await.map_err(|source| Error::Lookup {
        kind: format!("ValidatingWebhookConfiguration {name}"),
        source,
    })?
    else {
        tracing::warn!(
            configuration = name,
            "no such ValidatingWebhookConfiguration: no CA bundle to keep"
        );
        return Ok(false);
    };
    let hooks = live.webhooks.unwrap_or_default();
    if hooks.iter().all(|h| {
        h.client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| b.0 == bundle.as_bytes())
    }) {
        return Ok(false);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let patch = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": hooks.iter().map(|h| serde_json::json!({
            "name": h.name,
            "clientConfig": {"caBundle": encoded},
        })).collect::<Vec<_>>(),
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Write)?;
    tracing::info!(
        configuration = name,
        "CA bundle injected into the webhook configuration"
    );
    Ok(true)
}

/// Binds `settings.bind`, loads the certificate (issuing it if needed) and returns the server:
/// it answers reviews until `shutdown`, and renews and re-injects as needed meanwhile.
pub async fn start(
    client: kube::Client,
    settings: Settings,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = ()> + use<>, Error> {
    let material = certs::load(&client, &settings.certificate).await?;
    if let Some(name) = &settings.configuration {
        inject_ca_bundle(&client, name, &material.bundle).await?;
    }
    let resolver = Arc::new(Resolver(RwLock::new(certified_key(&material)?)));
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Certificate {
        what: "the TLS configuration".into(),
        reason: e.to_string(),
    })?
    .with_no_client_auth()
    .with_cert_resolver(resolver.clone());
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| Error::Bind(settings.bind, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Bind(settings.bind, e))?;
    tracing::info!(address = %local, "serving admission webhooks");

    let app = Router::new()
        .route("/validate/{*path}", post(review::handle))
        .with_state(Reviewer {
            client: client.clone(),
            metrics: ReviewMetrics::register(registry),
        });

    let serving = serve(listener, acceptor, app, shutdown.clone());
    let refreshing = refresh(client, settings, material, resolver, shutdown);
    Ok(async move {
        tokio::join!(serving, refreshing);
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a webhook connection");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        // Each connection on its own: a slow handshake holds up no other.
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "webhook connection ended");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn refresh(
    client: kube::Client,
    settings: Settings,
    mut current: Material,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.refresh) => {}
        }
        let material = match certs::load(&client, &settings.certificate).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the webhook certificate");
                continue;
            }
        };
        if let Some(name) = &settings.configuration
            && let Err(e) = inject_ca_bundle(&client, name, &material.bundle).await
        {
            tracing::warn!(error = %e, "cannot keep the webhook configuration's CA bundle");
        }
        if material != current {
            match certified_key(&material) {
                Ok(key) => {
                    if let Ok(mut slot) = resolver.0.write() {
                        *slot = key;
                    }
                    tracing::info!("webhook serving certificate reloaded");
                    current = material;
                }
                Err(e) => tracing::warn!(error = %e, "cannot load the renewed webhook certificate"),
            }
        }
    }
}

impl Settings {
    /// The certificate from a Secret the manager keeps, for `service` in `namespace` and any
    /// `extra` names (e.g. `127.0.0.1` for a manager outside the cluster).
    pub fn bootstrapped(
        bind: SocketAddr,
        namespace: &str,
        secret: &str,
        service: &str,
        extra: &[String],
        configuration: Option<String>,
    ) -> Settings {
        let mut names = certs::service_names(service, namespace);
        names.extend(extra.iter().cloned());
        Settings {
            bind,
            certificate: Source::Secret {
                namespace: namespace.into(),
                name: secret.into(),
                names,
            },
            configuration,
            refresh: Duration::from_secs(60),
        }
    }
}
