//! The shared MinIO ([`pgpilot_testkit::minio`]) in the test's namespace, with the S3 calls
//! the tests make retried for 30 s.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use pgpilot_testkit::minio::{self, NAME};

use crate::harness::{Env, eventually};

pub struct Minio {
    inner: minio::Minio,
}

impl Minio {
    /// Starts MinIO (Service `minio`) and waits until it is ready. Also creates Secret
    /// `minio-ca` (key `ca.crt`) for the clusters' `caBundle`.
    pub async fn start(env: &Env) -> Result<Minio> {
        let (inner, objects) = minio::Minio::new(&env.ns).map_err(|e| anyhow!("{e}"))?;
        env.apply(&objects.to_string())?;
        env.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{NAME}"),
            "--timeout=120s",
        ])
        .context("MinIO did not become ready")?;
        Ok(Minio { inner })
    }

    /// A Secret `name` with an access key pgBackRest may use (MinIO's root user), or with a
    /// wrong secret key when `wrong`.
    pub fn credentials_secret(&self, env: &Env, name: &str, wrong: bool) -> Result<()> {
        env.apply(&self.inner.credentials_secret(name, wrong).to_string())
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, env: &Env, bucket: &str) -> Result<()> {
        self.s3(env, "PUT", &format!("/{bucket}")).await.map(drop)
    }

    /// Whether object `key` exists (one HEAD request).
    pub async fn exists(&self, env: &Env, bucket: &str, key: &str) -> Result<bool> {
        match self.s3(env, "HEAD", &format!("/{bucket}/{key}")).await {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("HTTP 404") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes one object.
    pub async fn delete(&self, env: &Env, bucket: &str, key: &str) -> Result<()> {
        self.s3(env, "DELETE", &format!("/{bucket}/{key}"))
            .await
            .map(drop)
    }

    /// One S3 request, retried for 30 s while it fails or answers 5xx; the response body of
    /// a 2xx answer, an error naming the status of a 4xx one.
    async fn s3(&self, env: &Env, method: &str, path: &str) -> Result<String> {
        let ip = env.service_ip(NAME).await?;
        let answer = eventually(&format!("{method} {path}"), Duration::from_secs(30), || {
            let (ip, method, path) = (ip.clone(), method.to_owned(), path.to_owned());
            async move {
                match self.inner.request(&ip, &method, &path, None).await {
                    Ok((code, body)) if code < 500 => Ok((code, body)),
                    Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;
        match answer {
            (200..=299, body) => Ok(body),
            (code, body) => Err(anyhow!("{method} {path}: HTTP {code}: {body}")),
        }
    }

    /// The `s3:` block of a repository in this MinIO, its credentials from Secret `secret`.
    pub fn repository(&self, bucket: &str, secret: &str) -> String {
        self.inner.repository(bucket, secret)
    }
}
