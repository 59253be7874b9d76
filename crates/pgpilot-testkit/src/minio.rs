//! A real MinIO (`localhost/pgpilot/s3`) serving S3 over TLS with a certificate from a CA made
//! here, for pgBackRest repositories in the e2e tests and the benchmarks. This module builds
//! the objects and talks S3 with the host's curl (SigV4, TLS checked against that CA); the
//! caller applies the objects and finds the Service's ClusterIP its own way.

use std::path::Path;

use rand::RngExt;
use serde_json::{Value, json};

use crate::Result;

pub const IMAGE: &str = "localhost/pgpilot/s3:minio-2026-02-12";
pub const PORT: u16 = 9000;
/// The Pod and the Service.
pub const NAME: &str = "minio";
/// The Secret with the CA (key `ca.crt`) for a repository's `caBundle`.
pub const CA_SECRET: &str = "minio-ca";

pub struct Minio {
    /// PEM of the CA that signed MinIO's certificate.
    pub ca: String,
    /// `host:port` inside the cluster.
    pub endpoint: String,
    host: String,
    user: String,
    password: String,
}

impl Minio {
    /// A MinIO for `namespace` with fresh root credentials and certificates, and the objects
    /// that run it: Secrets `minio-root`, `minio-tls` and [`CA_SECRET`], Pod and Service
    /// [`NAME`] (a `v1` List, for `kubectl apply -n namespace`).
    pub fn new(namespace: &str) -> Result<(Minio, Value)> {
        let host = format!("{NAME}.{namespace}.svc");
        let (ca, cert, key) = certificates(&host)?;
        let suffix: u64 = rand::rng().random();
        let user = format!("pgpilot-{suffix:016x}");
        let password = format!("{:032x}", rand::rng().random::<u128>());
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio-root"},
             "stringData": {"MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password}},
            // MinIO's certs dir, read-only: `CAs/` exists already, so MinIO creates nothing.
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio-tls"},
             "stringData": {"public.crt": cert, "private.key": key, "ca.crt": ca}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": CA_SECRET},
             "stringData": {"ca.crt": ca}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": NAME, "labels": {"app": NAME}},
             "spec": {
                "terminationGracePeriodSeconds": 1,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                    "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "minio", "image": IMAGE, "imagePullPolicy": "Never",
                    "args": ["server", "/data", "--address", format!(":{PORT}"), "--certs-dir", "/certs"],
                    "envFrom": [{"secretRef": {"name": "minio-root"}}],
                    "ports": [{"containerPort": PORT}],
                    "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": PORT, "scheme": "HTTPS"}, "periodSeconds": 1},
                    "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "certs", "mountPath": "/certs", "readOnly": true}],
                }],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                    {"name": "certs", "secret": {"secretName": "minio-tls", "defaultMode": 0o440, "items": [
                        {"key": "public.crt", "path": "public.crt"},
                        {"key": "private.key", "path": "private.key"},
                        {"key": "ca.crt", "path": "CAs/ca.crt"}]}}],
             }},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME},
             "spec": {"selector": {"app": NAME}, "ports": [{"name": "s3", "port": PORT}]}},
        ]});
        let minio = Minio {
            ca,
            endpoint: format!("{host}:{PORT}"),
            host,
            user,
            password,
        };
        Ok((minio, objects))
    }

    /// A Secret `name` with an access key pgBackRest may use (MinIO's root user), or with a
    /// wrong secret key when `wrong`.
    pub fn credentials_secret(&self, name: &str, wrong: bool) -> Value {
        let secret = if wrong {
            "not-the-secret-key-of-this-user".to_owned()
        } else {
            self.password.clone()
        };
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"AWS_ACCESS_KEY_ID": self.user, "AWS_SECRET_ACCESS_KEY": secret}})
    }

    /// The `s3:` block of a repository in this MinIO (YAML flow style), its credentials from
    /// Secret `secret`.
    pub fn repository(&self, bucket: &str, secret: &str) -> String {
        format!(
            "{{endpoint: '{}', bucket: {bucket}, credentials: {{secretName: {secret}}}, caBundle: {{name: {CA_SECRET}, key: ca.crt}}}}",
            self.endpoint
        )
    }

    /// One S3 request to MinIO at `ip` (its Service's ClusterIP, reachable from the node):
    /// the HTTP status and the response body. `upload` is a file sent as the body (`curl -T`).
    pub async fn request(
        &self,
        ip: &str,
        method: &str,
        path: &str,
        upload: Option<&Path>,
    ) -> Result<(u16, String)> {
        // curl takes the CA from a file; one per call, so concurrent callers never race.
        let ca_file = std::env::temp_dir().join(format!(
            "pgpilot-minio-ca-{:016x}.pem",
            rand::rng().random::<u64>()
        ));
        std::fs::write(&ca_file, &self.ca)?;
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code}", "--max-time"])
            .arg(if upload.is_some() { "3600" } else { "10" })
            .arg("--cacert")
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("{}:{PORT}:{ip}", self.host))
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", self.user, self.password));
        if method == "HEAD" {
            cmd.arg("--head");
        } else {
            cmd.args(["-X", method]);
        }
        if let Some(file) = upload {
            // The body is streamed: S3 accepts it unsigned over TLS.
            cmd.arg("-T")
                .arg(file)
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        }
        cmd.arg(format!("https://{}{path}", self.endpoint));
        let out = cmd.output().await;
        let _ = std::fs::remove_file(&ca_file);
        let out = out?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        match code.trim().parse::<u16>() {
            Ok(code) if out.status.success() && code != 0 => Ok((code, body.to_owned())),
            _ => Err(format!(
                "{method} {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into()),
        }
    }
}

/// A CA, and a certificate for `host` it signed, with its key: PEM.
fn certificates(host: &str) -> Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "pgpilot test MinIO CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut server =
        CertificateParams::new(vec![host.to_owned(), format!("{host}.cluster.local")])?;
    server.distinguished_name.push(DnType::CommonName, host);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}
