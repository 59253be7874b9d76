//! Types shared by several resources.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// CEL: the string names a Secret, StorageClass or other object (a DNS subdomain).
pub(crate) const DNS_SUBDOMAIN: &str =
    r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
/// CEL: the string is a key of a Secret's data.
pub(crate) const SECRET_KEY: &str = r"self.matches('^[-._a-zA-Z0-9]+$')";

/// Names a PostgresCluster in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct ClusterReference {
    /// Name of the PostgresCluster, in this object's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// A key in a Secret of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct SecretKeyReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(DNS_SUBDOMAIN).message("must be a Secret name: lower-case letters, digits, '-' and '.'"))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY).message("must be a Secret key: letters, digits, '-', '_' and '.'"))]
    pub key: String,
}

/// An S3-compatible object store holding a pgBackRest repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Repository {
    /// Endpoint host (and optional port) of the object store, e.g. `s3.eu-west-1.amazonaws.com`
    /// or `minio.storage.svc:9000`. No scheme: pgBackRest always speaks HTTPS.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("!self.contains('://')").message("endpoint is a host[:port] without a scheme, e.g. minio.storage.svc:9000"))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Region, required by the S3 signature even for stores that ignore it.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// Path prefix inside the bucket; pgpilot appends `/<namespace>/<cluster>`.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must start with '/'"))]
    pub path: String,
    /// `host` (virtual-hosted, bucket in the host name) or `path` (bucket in the URL path;
    /// what MinIO and most self-hosted stores expect).
    #[serde(default)]
    pub uri_style: UriStyle,
    /// Verify the store's TLS certificate. Turn off only for test stores.
    #[serde(default = "default_true")]
    pub verify_tls: bool,
    /// A key of a Secret holding the PEM certificate(s) of the CA that signed the store's
    /// certificate, for stores with a private CA. Default: the public CAs of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<SecretKeyReference>,
    /// Secret with the access key id and secret access key.
    pub credentials: S3Credentials,
}

impl S3Repository {
    /// Which repository this is, as one string: `s3://<bucket>/<path>` (the path without its
    /// slashes at either end). The endpoint is left out: it may change (a new DNS name for the
    /// same store), as the API allows.
    pub fn location(&self) -> String {
        let path = self.path.trim_matches('/');
        if path.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{path}", self.bucket)
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_path() -> String {
    "/pgbackrest".into()
}
pub(crate) fn default_true() -> bool {
    true
}

/// S3 addressing style.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UriStyle {
    Host,
    #[default]
    Path,
}

/// Where the object store credentials are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// Name of a Secret in this namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(DNS_SUBDOMAIN).message("credentials.secretName must be a Secret name: lower-case letters, digits, '-' and '.'"))]
    pub secret_name: String,
    /// Key of the access key id in that Secret.
    #[serde(default = "default_access_key_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY).message("credentials.accessKeyIdKey must be a Secret key: letters, digits, '-', '_' and '.'"))]
    pub access_key_id_key: String,
    /// Key of the secret access key in that Secret.
    #[serde(default = "default_secret_key_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY).message("credentials.secretAccessKeyKey must be a Secret key: letters, digits, '-', '_' and '.'"))]
    pub secret_access_key_key: String,
}

fn default_access_key_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// Kind of a pgBackRest backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupType {
    /// Copies every file.
    #[default]
    Full,
    /// Copies what changed since the last full backup.
    Differential,
    /// Copies what changed since the last backup of any type.
    Incremental,
}

impl BackupType {
    /// The name pgBackRest's `--type` option takes.
    pub fn pgbackrest_name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Differential => "diff",
            BackupType::Incremental => "incr",
        }
    }
}

/// Restore a completed backup into a throwaway one-instance cluster, check the data, and
/// delete the cluster and its volume again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSpec {
    /// A query of your own, run in `database` after every table has been read: the
    /// verification passes when it returns at least one row and the first column of every
    /// row is true (e.g. `SELECT count(*) > 0 FROM orders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,
    /// The database the query runs in.
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// Give up (and fail) after this many seconds, the restore included.
    #[serde(default = "default_verification_timeout")]
    #[x_kube(validation = Rule::new("self >= 60").message("verification.timeoutSeconds must be at least 60"))]
    pub timeout_seconds: i64,
}

fn default_database() -> String {
    "postgres".into()
}
fn default_verification_timeout() -> i64 {
    3600
}

/// The outcome of a verification.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// The PostgresBackup verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    pub result: VerificationResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// From the start of the restore to the end of the checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// The point the restored data reached: the end of the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_to: Option<Time>,
    /// Tables read (all of them, in every database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<i64>,
    /// Rows counted in them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// What was checked, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// See [`VerificationStatus::result`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VerificationResult {
    #[default]
    Running,
    Passed,
    Failed,
}
