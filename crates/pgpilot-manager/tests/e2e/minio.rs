//! A real MinIO in the test's namespace (`localhost/pgpilot/s3`), serving S3 over TLS with a
//! certificate from a CA the test makes, for pgBackRest repositories.

use std::time::Duration;

use anyhow::{Context, Result};
use rand::RngExt;
use serde_json::json;

use crate::harness::{Env, eventually};

const IMAGE: &str = "localhost/pgpilot/s3:minio-2026-02-12";
const PORT: u16 = 9000;

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
    /// Starts MinIO (Service `minio`) and waits until it is ready. Also creates Secret
    /// `minio-ca` (key `ca.crt`) for the clusters' `caBundle`.
    pub async fn start(env: &Env) -> Result<Minio> {
        let host = format!("minio.{}.svc", env.ns);
        let (ca, cert, key) = certificates(&host)?;
        let suffix: u64 = rand::rng().random();
        let user = format!("e2e-{suffix:016x}");
        let password = format!("{:032x}", rand::rng().random::<u128>());
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio-root"},
             "stringData": {"MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password}},
            // MinIO's certs dir, read-only: `CAs/` exists already, so MinIO creates nothing.
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio-tls"},
             "stringData": {"public.crt": cert, "private.key": key, "ca.crt": ca}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio-ca"},
             "stringData": {"ca.crt": ca}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "minio", "labels": {"app": "minio"}},
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
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "minio"},
             "spec": {"selector": {"app": "minio"}, "ports": [{"name": "s3", "port": PORT}]}},
        ]});
        env.apply(&list.to_string())?;
        env.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "pod/minio",
            "--timeout=120s",
        ])
        .context("MinIO did not become ready")?;
        Ok(Minio {
            ca,
            endpoint: format!("{host}:{PORT}"),
            host,
            user,
            password,
        })
    }

    /// A Secret `name` with an access key pgBackRest may use (MinIO's root user), or with a
    /// wrong secret key when `wrong`.
    pub fn credentials_secret(&self, env: &Env, name: &str, wrong: bool) -> Result<()> {
        let secret = if wrong {
            "not-the-secret-key-of-this-user".to_owned()
        } else {
            self.password.clone()
        };
        env.apply(
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "stringData": {"AWS_ACCESS_KEY_ID": self.user, "AWS_SECRET_ACCESS_KEY": secret}})
            .to_string(),
        )
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, env: &Env, bucket: &str) -> Result<()> {
        self.s3(env, "PUT", &format!("/{bucket}")).await.map(drop)
    }

    /// Whether object `key` exists (one HEAD request).
    pub async fn exists(&self, env: &Env, bucket: &str, key: &str) -> Result<bool> {
        let ip = env.service_ip("minio").await?;
        let ca_file = std::env::temp_dir().join(format!("{}-minio-ca-head.pem", env.ns));
        std::fs::write(&ca_file, &self.ca)?;
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--head",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                "--cacert",
                &ca_file.to_string_lossy(),
                "--resolve",
                &format!("{}:{PORT}:{ip}", self.host),
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &format!("{}:{}", self.user, self.password),
                &format!("https://{}/{bucket}/{key}", self.endpoint),
            ])
            .output()
            .await?;
        let _ = std::fs::remove_file(&ca_file);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "200" => Ok(true),
            "404" => Ok(false),
            other => anyhow::bail!(
                "HEAD {key}: HTTP {other}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Deletes one object.
    pub async fn delete(&self, env: &Env, bucket: &str, key: &str) -> Result<()> {
        self.s3(env, "DELETE", &format!("/{bucket}/{key}"))
            .await
            .map(drop)
    }

    /// One S3 request with the host's curl (SigV4 as the root user, TLS checked against the
    /// test's CA), retried for 30 s; the response body.
    async fn s3(&self, env: &Env, method: &str, path: &str) -> Result<String> {
        let ip = env.service_ip("minio").await?;
        let ca_file = std::env::temp_dir().join(format!("{}-minio-ca.pem", env.ns));
        std::fs::write(&ca_file, &self.ca)?;
        let url = format!("https://{}{path}", self.endpoint);
        let resolve = format!("{}:{PORT}:{ip}", self.host);
        let auth = format!("{}:{}", self.user, self.password);
        let ca = ca_file.to_string_lossy().into_owned();
        let result = eventually(&format!("{method} {path}"), Duration::from_secs(30), || {
            let args = [
                "-sS",
                "-f",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &auth,
                "-X",
                method,
                &url,
            ]
            .map(str::to_owned);
            async move {
                let out = tokio::process::Command::new("curl")
                    .args(&args)
                    .output()
                    .await
                    .map_err(|e| format!("running curl: {e}"))?;
                if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            }
        })
        .await;
        let _ = std::fs::remove_file(&ca_file);
        result
    }

    /// The `s3:` block of a repository in this MinIO, its credentials from Secret `secret`.
    pub fn repository(&self, bucket: &str, secret: &str) -> String {
        format!(
            "{{endpoint: '{}', bucket: {bucket}, credentials: {{secretName: {secret}}}, caBundle: {{name: minio-ca, key: ca.crt}}}}",
            self.endpoint
        )
    }
}

/// A CA, and a certificate for `host` it signed, with its key: PEM.
fn certificates(host: &str) -> Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "pgpilot e2e MinIO CA");
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
