//! Serving the webhooks over TLS, keeping the certificate fresh, and the CA bundle in the
//! ValidatingWebhookConfiguration. Every replica serves (not only the leader): the Service
//! spreads reviews over all ready pods, so a standby answers while the leader is busy.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// Connections served at once; more wait to be accepted. The port is open to every pod (the
/// API server's address is not known), so a flood must not take the controllers' file
/// descriptors.
const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake, or a request's headers, that take longer are dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, connections get this long to finish the reviews under way.
const DRAIN: Duration = Duration::from_secs(5);

/// The certificate rustls presents (none until loaded), swapped in place when renewed.
#[derive(Debug, Default)]
struct Resolver(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().and_then(|k| k.clone())
    }
}

impl Resolver {
    fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(key);
        }
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
    let certified = CertifiedKey::new(chain, key);
    // Files another tool rewrites may be read half old, half new.
    certified
        .keys_match()
        .map_err(|e| bad("the serving certificate and key", e.to_string()))?;
    Ok(Arc::new(certified))
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

/// A running webhook server: it answers reviews until shutdown, and `ready` turns true once
/// it has a certificate the API server trusts.
pub struct Server {
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub run: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Binds `settings.bind` (a busy port fails at once). The certificate is loaded, issued or
/// renewed in the background, retried until it is there: a webhook that cannot start yet
/// never stops the controllers.
pub async fn start(
    client: kube::Client,
    settings: Settings,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> Result<Server, Error> {
    let resolver = Arc::new(Resolver::default());
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
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let serving = serve(listener, acceptor, app, shutdown.clone());
    let refreshing = refresh(client, settings, resolver, ready_tx, shutdown);
    Ok(Server {
        ready,
        run: Box::pin(async move {
            tokio::join!(serving, refreshing);
        }),
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        connections.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(CLIENT_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = shutdown.cancelled() => None,
            };
            let ended = match ended {
                Some(r) => r,
                // Finish the reviews under way (HTTP/2: GOAWAY), then close.
                None => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(DRAIN, conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
        // Reap what ended, so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

/// Loads the certificate until it is there, then checks it (and the CA bundle) every
/// `settings.refresh`. A new certificate is presented only once the bundle that trusts it is
/// in the configuration.
async fn refresh(
    client: kube::Client,
    settings: Settings,
    resolver: Arc<Resolver>,
    ready: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut current: Option<Material> = None;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // Until the first certificate: retry soon (1 s, doubling to the refresh period).
        wait = if current.is_some() {
            settings.refresh
        } else {
            (wait * 2).clamp(Duration::from_secs(1), settings.refresh)
        };
        let material = match certs::load(&client, &settings.certificate).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the webhook certificate");
                continue;
            }
        };
        if let Some(name) = &settings.configuration
            && let Err(e) = inject_ca_bundle(&client, name, &material.bundle).await
        {
            tracing::warn!(error = %e, "cannot keep the webhook configuration's CA bundle");
            if current.as_ref().is_none_or(|c| c.bundle != material.bundle) {
                // The API server would not trust the new certificate yet: keep the old one
                // (or stay unready), and try again.
                continue;
            }
        }
        if current.as_ref() == Some(&material) {
            continue;
        }
        match certified_key(&material) {
            Ok(key) => {
                resolver.set(key);
                tracing::info!(
                    first = current.is_none(),
                    "webhook serving certificate loaded"
                );
                current = Some(material);
                ready.send_replace(true);
            }
            Err(e) => tracing::warn!(error = %e, "cannot load the webhook certificate"),
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
