//! Patroni's REST API on each instance (port 8008): what the members report, and the
//! actions the operator asks of them (dynamic configuration, switchover, re-initialize).
//! Every call has a short timeout and its own span; a member that does not answer is
//! reported as unknown, never guessed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pgpilot_toolkit::Sensitive;

use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use crate::names::{Names, PATRONI_PORT};

#[derive(Debug, thiserror::Error)]
#[error("Patroni {call} on {member}: {reason}")]
pub struct PatroniError {
    pub call: &'static str,
    pub member: String,
    pub reason: String,
}

/// One member's own view (the status document of GET /health).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct MemberStatus {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    /// e.g. 170012 for 17.12.
    #[serde(default)]
    pub server_version: Option<i64>,
    #[serde(default)]
    pub timeline: Option<i64>,
    #[serde(default)]
    pub pending_restart: bool,
    /// A replica's WAL receiver as it says itself: `streaming` once it follows the primary.
    #[serde(default)]
    pub replication_state: Option<String>,
    /// Tags from its configuration, among them [`AUTH_TAG`].
    #[serde(default)]
    pub tags: BTreeMap<String, Value>,
}

/// Tag in the credentials file pgpilot mounts beside patroni.yaml: which passwords and server
/// certificate it goes with ([`auth_token`]). A member that reports the
/// current one has loaded the current passwords.
pub const AUTH_TAG: &str = "pgpilot_auth";

impl MemberStatus {
    /// The [`AUTH_TAG`] this member's configuration carries.
    pub fn auth_token(&self) -> Option<&str> {
        self.tags.get(AUTH_TAG)?.as_str()
    }
}

/// The Secrets whose contents every member must have loaded: the superuser's and the
/// replication user's credentials, the server certificate, the REST API's credentials.
pub fn auth_secrets(names: &Names) -> [String; 4] {
    [
        names.superuser_secret(),
        names.replication_secret(),
        names.tls_secret(),
        names.patroni_api_secret(),
    ]
}

/// The [`AUTH_TAG`] for the [`auth_secrets`] as they are: a digest of what the members load
/// from them (the three passwords and the server certificate), so a write that changes none of
/// these (a re-render, an annotation, a rotation dropping its kept previous password) asks no
/// member to load anything again. The tag is readable on Patroni's API and the pods, so the
/// digest is an HMAC keyed with the REST API's password: it tells nothing of the passwords.
pub fn auth_token(secrets: [Option<&k8s_openapi::api::core::v1::Secret>; 4]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    let [su, repl, tls, api] = secrets;
    let password = |s: Option<&k8s_openapi::api::core::v1::Secret>| {
        s.and_then(crate::credentials::password_of)
            .map(|p| p.expose().as_bytes().to_vec())
    };
    let certificate = tls.and_then(|s| Some(s.data.as_ref()?.get(crate::tls::TLS_CERT)?.0.clone()));
    let key = password(api).unwrap_or_default();
    // HMAC takes a key of any length, an empty one included.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
        return String::new();
    };
    for part in [password(su), password(repl), certificate, password(api)] {
        // Length-prefixed, and absent apart from empty: no two inputs read the same.
        match part {
            Some(bytes) => {
                mac.update(&[1]);
                mac.update(&(bytes.len() as u64).to_be_bytes());
                mac.update(&bytes);
            }
            None => mac.update(&[0]),
        }
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The user pgpilot, the members and patronictl authenticate as on the REST API's unsafe
/// endpoints.
pub const API_USER: &str = "pgpilot";

/// One entry of GET /cluster.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClusterMember {
    pub name: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub timeline: Option<i64>,
    /// Bytes behind the leader, or the string "unknown".
    #[serde(default)]
    pub lag: Option<Value>,
}

/// GET /cluster: the members as the DCS sees them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClusterView {
    #[serde(default)]
    pub members: Vec<ClusterMember>,
    /// Maintenance mode.
    #[serde(default)]
    pub pause: bool,
}

impl ClusterMember {
    pub fn lag_bytes(&self) -> Option<i64> {
        self.lag.as_ref().and_then(Value::as_i64)
    }
}

/// Patroni's role names as pgpilot shows them: the leader is the `primary` (Patroni 3 said
/// `master`).
pub fn normalize_role(role: &str) -> String {
    match role {
        "leader" | "master" | "primary" | "standby_leader" => "primary".to_owned(),
        other => other.to_owned(),
    }
}

/// `170012` → `17.12`; `150020` → `15.20`; pre-10 style `90624` → `9.6.24`.
pub fn version_string(server_version: i64) -> String {
    let major = server_version / 10000;
    if major >= 10 {
        format!("{major}.{}", server_version % 10000)
    } else {
        format!(
            "{major}.{}.{}",
            (server_version / 100) % 100,
            server_version % 100
        )
    }
}

/// How long a switchover, restart or re-initialization may take to answer: Patroni answers
/// when it is done, which takes longer than a read.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How pgpilot reaches one cluster's members.
#[derive(Clone, Default)]
pub struct Access {
    /// The cluster's CA certificate (PEM): members that answer HTTPS must show a
    /// certificate it signed for their pod's name (`<pod>.<domain>`).
    pub ca: Option<String>,
    /// `<pods Service>.<namespace>.svc`.
    pub domain: String,
    /// The password of [`API_USER`], for the unsafe endpoints (POST, PATCH).
    pub password: Option<Sensitive>,
    /// The members that answer HTTPS (their pod's probes say so); the others get plain HTTP.
    pub https: BTreeSet<String>,
}

/// Makes the clients of each cluster's REST APIs. Shared: one plain client, one TLS client
/// per CA, and the pods' addresses by name (pgpilot does not rely on cluster DNS, so the TLS
/// clients resolve `<pod>.<domain>` from what the pods' status says).
#[derive(Clone)]
pub struct Patroni {
    plain: reqwest::Client,
    by_ca: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    addresses: PodAddresses,
}

/// Pod names to IP addresses, filled before each request.
#[derive(Clone, Default)]
struct PodAddresses(Arc<RwLock<HashMap<String, IpAddr>>>);

impl PodAddresses {
    /// Records `host`'s address; the write lock only when it is new or moved (a pod's IP
    /// changes when it is recreated), so steady requests only read.
    fn learn(&self, host: &str, addr: IpAddr) {
        let known = self.0.read().ok().and_then(|m| m.get(host).copied());
        if known != Some(addr)
            && let Ok(mut m) = self.0.write()
        {
            m.insert(host.to_owned(), addr);
        }
    }
}

impl reqwest::dns::Resolve for PodAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found = self
            .0
            .read()
            .ok()
            .and_then(|m| m.get(name.as_str()).copied());
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let ip = found.ok_or_else(|| format!("no pod address for {name}"))?;
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::new(ip, PATRONI_PORT as u16)));
            Ok(addrs)
        })
    }
}

fn client_error(reason: String) -> PatroniError {
    PatroniError {
        call: "client",
        member: String::new(),
        reason,
    }
}

/// How long a TCP handshake with a member may take. Inside a cluster network it takes
/// milliseconds, a member not listening refuses at once, and a lost SYN is sent again only
/// after a second (Linux's initial retransmission timeout), so a longer wait rescues nothing;
/// an address nothing answers at (a dead node, a partition, kwok's fake pods) costs every
/// reconcile that asks it this much.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(5))
}

impl Patroni {
    pub fn new() -> Result<Self, PatroniError> {
        Ok(Self {
            plain: builder().build().map_err(|e| client_error(e.to_string()))?,
            by_ca: Arc::default(),
            addresses: PodAddresses::default(),
        })
    }

    /// The client of one cluster's members.
    pub fn api(&self, access: Access) -> Result<PatroniApi, PatroniError> {
        let tls = match &access.ca {
            None => None,
            Some(ca) => {
                let mut by_ca = self
                    .by_ca
                    .lock()
                    .map_err(|_| client_error("poisoned client cache".to_owned()))?;
                let client = match by_ca.get(ca) {
                    Some(c) => c.clone(),
                    None => {
                        let config = crate::tls::client_config(ca)
                            .map_err(|e| client_error(e.to_string()))?;
                        let c = builder()
                            .tls_backend_preconfigured(config)
                            .dns_resolver(self.addresses.clone())
                            .https_only(true)
                            .build()
                            .map_err(|e| client_error(e.to_string()))?;
                        by_ca.insert(ca.clone(), c.clone());
                        c
                    }
                };
                Some(client)
            }
        };
        Ok(PatroniApi {
            plain: self.plain.clone(),
            tls,
            addresses: self.addresses.clone(),
            access,
        })
    }
}

/// A client for one cluster's members, addressed by pod name and IP.
#[derive(Clone)]
pub struct PatroniApi {
    plain: reqwest::Client,
    tls: Option<reqwest::Client>,
    addresses: PodAddresses,
    access: Access,
}

impl PatroniApi {
    /// A request to `path` on `member` at `ip`: HTTPS by name when the member answers it,
    /// with the API's credentials on the unsafe methods.
    fn request(
        &self,
        method: reqwest::Method,
        member: &str,
        ip: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = match (&self.tls, self.access.https.contains(member), ip.parse()) {
            (Some(tls), true, Ok(addr)) => {
                let host = format!("{member}.{}", self.access.domain);
                self.addresses.learn(&host, addr);
                tls.request(
                    method.clone(),
                    format!("https://{host}:{PATRONI_PORT}{path}"),
                )
            }
            _ => self
                .plain
                .request(method.clone(), format!("http://{ip}:{PATRONI_PORT}{path}")),
        };
        match &self.access.password {
            Some(password) if method != reqwest::Method::GET => {
                request.basic_auth(API_USER, Some(password.expose()))
            }
            _ => request,
        }
    }

    async fn send(
        &self,
        call: &'static str,
        member: &str,
        request: reqwest::RequestBuilder,
        any_status: bool,
    ) -> Result<String, PatroniError> {
        let error = |reason: String| PatroniError {
            call,
            member: member.to_owned(),
            reason,
        };
        let span =
            tracing::debug_span!("patroni.call", call, member, status = tracing::field::Empty);
        async {
            let response = request.send().await.map_err(|e| error(e.to_string()))?;
            let status = response.status();
            tracing::Span::current().record("status", status.as_u16());
            let body = response.text().await.map_err(|e| error(e.to_string()))?;
            if status.is_success() || any_status {
                Ok(body)
            } else {
                // Patroni's error bodies are short plain text ("no good candidates", …).
                Err(error(format!("{status}: {}", body.trim())))
            }
        }
        .instrument(span)
        .await
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        call: &'static str,
        member: &str,
        body: &str,
    ) -> Result<T, PatroniError> {
        serde_json::from_str(body).map_err(|e| PatroniError {
            call,
            member: member.to_owned(),
            reason: format!("unexpected answer: {e}"),
        })
    }

    /// GET /health: the member's status document, as GET /patroni returns it, but answered
    /// at once. /patroni retries its query every second while PostgreSQL starts up, which
    /// held whole reconciles for 1.5 s while replicas started. /health answers 503 when
    /// PostgreSQL is not running, with the same body (whose `state` says why), so any status
    /// with a parsable body counts.
    pub async fn member(&self, member: &str, ip: &str) -> Result<MemberStatus, PatroniError> {
        let body = self
            .send(
                "member",
                member,
                self.request(reqwest::Method::GET, member, ip, "/health"),
                true,
            )
            .await?;
        Self::parse("member", member, &body)
    }

    /// GET /cluster.
    pub async fn cluster(&self, member: &str, ip: &str) -> Result<ClusterView, PatroniError> {
        let body = self
            .send(
                "cluster",
                member,
                self.request(reqwest::Method::GET, member, ip, "/cluster"),
                false,
            )
            .await?;
        Self::parse("cluster", member, &body)
    }

    /// GET /config: the dynamic configuration in the DCS.
    pub async fn config(&self, member: &str, ip: &str) -> Result<Value, PatroniError> {
        let body = self
            .send(
                "config",
                member,
                self.request(reqwest::Method::GET, member, ip, "/config"),
                false,
            )
            .await?;
        Self::parse("config", member, &body)
    }

    /// PATCH /config: a JSON merge patch of the dynamic configuration.
    pub async fn patch_config(
        &self,
        member: &str,
        ip: &str,
        patch: &Value,
    ) -> Result<(), PatroniError> {
        self.send(
            "patch-config",
            member,
            self.request(reqwest::Method::PATCH, member, ip, "/config")
                .json(patch),
            false,
        )
        .await
        .map(drop)
    }

    /// POST `/{call}` with `body`: an action Patroni answers when it is done.
    async fn act(
        &self,
        call: &'static str,
        member: &str,
        ip: &str,
        body: Value,
    ) -> Result<(), PatroniError> {
        let request = self
            .request(reqwest::Method::POST, member, ip, &format!("/{call}"))
            .timeout(ACTION_TIMEOUT)
            .json(&body);
        self.send(call, member, request, false).await.map(drop)
    }

    /// POST /switchover on the leader: hand the primary role to `candidate` (or the one
    /// Patroni picks).
    pub async fn switchover(
        &self,
        leader: &str,
        ip: &str,
        candidate: Option<&str>,
    ) -> Result<(), PatroniError> {
        let mut body = serde_json::json!({"leader": leader});
        if let Some(candidate) = candidate {
            body["candidate"] = candidate.into();
        }
        self.act("switchover", leader, ip, body).await
    }

    /// POST /restart on a member, only if a restart is pending there.
    pub async fn restart(&self, member: &str, ip: &str) -> Result<(), PatroniError> {
        let body = serde_json::json!({"restart_pending": true});
        self.act("restart", member, ip, body).await
    }

    /// POST /reload: the member reads its configuration files again (new credentials).
    pub async fn reload(&self, member: &str, ip: &str) -> Result<(), PatroniError> {
        self.act("reload", member, ip, serde_json::json!({})).await
    }

    /// POST /reinitialize on a replica: wipe its data directory and clone it again from
    /// the primary.
    pub async fn reinitialize(&self, member: &str, ip: &str) -> Result<(), PatroniError> {
        self.act(
            "reinitialize",
            member,
            ip,
            serde_json::json!({"force": true}),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_like_postgres_prints_them() {
        assert_eq!(version_string(170012), "17.12");
        assert_eq!(version_string(150020), "15.20");
        assert_eq!(version_string(90624), "9.6.24");
    }

    #[test]
    fn leaders_are_primaries_whatever_the_patroni_version() {
        for r in ["leader", "master", "primary", "standby_leader"] {
            assert_eq!(normalize_role(r), "primary");
        }
        assert_eq!(normalize_role("sync_standby"), "sync_standby");
        assert_eq!(normalize_role("replica"), "replica");
    }

    #[test]
    fn answers_of_patroni_4_parse() {
        let member: MemberStatus = serde_json::from_str(
            r#"{"state": "running", "postmaster_start_time": "2026-11-22 01:00:00+00:00",
                "role": "replica", "server_version": 170012, "xlog": {"received_location": 50331968},
                "timeline": 2, "replication_state": "streaming",
                "patroni": {"version": "4.0.7", "scope": "db", "name": "db-1"}}"#,
        )
        .unwrap();
        assert_eq!(member.timeline, Some(2));
        assert_eq!(member.replication_state.as_deref(), Some("streaming"));
        assert_eq!(member.server_version, Some(170012));
        assert!(!member.pending_restart);
        let cluster: ClusterView = serde_json::from_str(
            r#"{"members": [
                {"name": "db-0", "role": "leader", "state": "running", "timeline": 2},
                {"name": "db-1", "role": "sync_standby", "state": "streaming", "timeline": 2, "lag": 0},
                {"name": "db-2", "role": "replica", "state": "starting", "lag": "unknown"}],
                "scope": "db"}"#,
        )
        .unwrap();
        assert_eq!(cluster.members[1].lag_bytes(), Some(0));
        assert_eq!(cluster.members[2].lag_bytes(), None);
        assert!(!cluster.pause);
    }

    fn secret(
        password: Option<&str>,
        extra: &[(&str, &str)],
    ) -> k8s_openapi::api::core::v1::Secret {
        let mut data: BTreeMap<String, k8s_openapi::ByteString> = extra
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    k8s_openapi::ByteString(v.as_bytes().to_vec()),
                )
            })
            .collect();
        if let Some(p) = password {
            data.insert(
                "password".into(),
                k8s_openapi::ByteString(p.as_bytes().to_vec()),
            );
        }
        k8s_openapi::api::core::v1::Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn the_auth_token_follows_what_members_load_and_nothing_else() {
        let (su, repl, api) = (
            secret(Some("su-pw"), &[("uri", "postgres://a")]),
            secret(Some("repl-pw"), &[]),
            secret(Some("api-pw"), &[]),
        );
        let tls = secret(None, &[("tls.crt", "CERT-1"), ("tls.key", "KEY-1")]);
        let token = |su: &_, repl: &_, tls: &_, api: &_| {
            auth_token([Some(su), Some(repl), Some(tls), Some(api)])
        };
        let base = token(&su, &repl, &tls, &api);
        assert_eq!(base.len(), 16);
        assert!(!base.contains("pw"));

        // Another resource version, annotations, derived keys, a kept previous password: the same.
        let mut touched = secret(
            Some("su-pw"),
            &[("uri", "postgres://b"), ("previous-password", "old")],
        );
        touched.metadata.resource_version = Some("99".into());
        touched.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        assert_eq!(token(&touched, &repl, &tls, &api), base);

        // Any password or the certificate changed: another token.
        let other = secret(Some("other"), &[]);
        let renewed = secret(None, &[("tls.crt", "CERT-2"), ("tls.key", "KEY-1")]);
        for changed in [
            token(&other, &repl, &tls, &api),
            token(&su, &other, &tls, &api),
            token(&su, &repl, &renewed, &api),
            token(&su, &repl, &tls, &other),
            token(&repl, &su, &tls, &api),
            auth_token([Some(&su), Some(&repl), None, Some(&api)]),
        ] {
            assert_ne!(changed, base);
        }
    }
}
