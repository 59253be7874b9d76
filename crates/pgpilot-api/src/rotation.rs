//! `SecretRotation`: credentials rotated without downtime, consumers rolled.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Time};
use crate::schedule::CRON_RULE;

/// A Go-style duration such as `720h` or `1h30m`.
const DURATION_RULE: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')";

/// Rotates one credential on a schedule and rolls the workloads that use it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "pgpilot.io",
    version = "v1alpha1",
    kind = "SecretRotation",
    doc = "Rotates one credential on a schedule without downtime and rolls the workloads that use it.",
    namespaced,
    status = "SecretRotationStatus",
    shortname = "pgrot",
    category = "pgpilot",
    derive = "PartialEq",
    cel,
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy.type"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastRotationTime"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextRotationTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.target.postgresRole) == has(oldSelf.target.postgresRole) && (!has(self.target.postgresRole) || self.target.postgresRole == oldSelf.target.postgresRole) && (!has(self.target.secret) || self.target.secret.name == oldSelf.target.secret.name)").message("spec.target is immutable: create a new SecretRotation for another credential"),
    validation = Rule::new("!has(self.target.secret) || self.strategy.type != 'AlternatingUsers'").message("spec.strategy AlternatingUsers needs a postgresRole target: a plain Secret has no second user to alternate with"),
    validation = Rule::new("!has(self.target.postgresRole) || self.strategy.type != 'AlternatingUsers' || size(self.target.postgresRole.role) <= 61").message("spec.strategy AlternatingUsers adds _a and _b to the role name, which must then stay within 63 characters: use a role name of at most 61"),
    validation = Rule::new("!has(self.target.postgresRole) || self.strategy.type != 'AlternatingUsers' || !(self.target.postgresRole.role in ['postgres', 'replicator'])").message("the superuser and replication roles are rotated InPlace: Patroni knows one user for each")
)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotationSpec {
    /// What to rotate: exactly one of `postgresRole` and `secret`.
    pub target: RotationTarget,
    /// When to rotate: exactly one of `interval` and `schedule`.
    pub rotate_every: RotationTiming,
    /// How to rotate without downtime.
    #[serde(default)]
    pub strategy: RotationStrategy,
    /// Workloads to roll after the Secret changes, so they read the new credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub consumers: Vec<Consumer>,
    /// No rotation while true.
    #[serde(default)]
    pub suspend: bool,
}

/// What to rotate. Exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.postgresRole) != has(self.secret)").message("spec.target must name exactly one of postgresRole and secret")
)]
#[serde(rename_all = "camelCase")]
pub struct RotationTarget {
    /// A role declared in a PostgresCluster; its credentials Secret is rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_role: Option<PostgresRoleTarget>,
    /// Keys of any Secret in this namespace, each with a generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretTarget>,
}

/// A role of a PostgresCluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRoleTarget {
    /// PostgresCluster name.
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,
    /// Role name, as in the cluster's spec.roles.
    #[schemars(length(min = 1, max = 63))]
    pub role: String,
}

/// Keys of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTarget {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Keys to regenerate, each with its generator.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub keys: Vec<GeneratedKey>,
}

/// One key of a Secret and how its value is made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("(self.generator == 'Characters') == has(self.characters)").message("characters is set exactly when the generator is Characters"),
    validation = Rule::new("(self.generator == 'KeyPair') == has(self.keyPair)").message("keyPair is set exactly when the generator is KeyPair"),
    validation = Rule::new("(self.generator == 'Certificate') == has(self.certificate)").message("certificate is set exactly when the generator is Certificate")
)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedKey {
    /// Key in the Secret. For a key pair, the private key's; for a certificate, the
    /// certificate's.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    pub key: String,
    /// Generator of the value.
    #[serde(default)]
    pub generator: Generator,
    /// Length of the value in characters (`Alphanumeric`, `Characters`), or in random bytes
    /// before encoding (`Hex`, `Base64`). Not used by the other generators.
    #[serde(default = "default_length")]
    #[x_kube(validation = Rule::new("self >= 16 && self <= 1024").message("length must be between 16 and 1024"))]
    pub length: i32,
    /// `Characters`: the characters drawn from (each equally likely; duplicates count once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256))]
    pub characters: Option<String>,
    /// `KeyPair`: the algorithm, and where the public key goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<KeyPairOptions>,
    /// `Certificate`: a TLS certificate and its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateOptions>,
}

/// A Secret key as the API server accepts it.
const SECRET_KEY_RULE: &str = "self.matches('^[-._a-zA-Z0-9]+$')";
const SECRET_KEY_MESSAGE: &str = "a Secret key consists of letters, digits, '-', '_' and '.'";

fn default_length() -> i32 {
    32
}

/// How a secret value is generated (always from the operating system's CSPRNG).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Generator {
    /// Letters and digits.
    #[default]
    Alphanumeric,
    /// Characters from `characters`.
    Characters,
    /// Random bytes, hex encoded.
    Hex,
    /// Random bytes, base64 encoded (standard alphabet, padded).
    Base64,
    /// A random (version 4) UUID.
    Uuid,
    /// A private key (PKCS#8 PEM) and its public key (SubjectPublicKeyInfo PEM).
    KeyPair,
    /// A TLS certificate (PEM) and its private key (PKCS#8 PEM).
    Certificate,
}

/// Asymmetric key algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyAlgorithm {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    /// ECDSA on P-256 (certificates signed with SHA-256).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 (certificates signed with SHA-384).
    EcdsaP384,
    Ed25519,
}

/// Options of the `KeyPair` generator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairOptions {
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
    /// Key of the public key in the Secret. Default: the private key's with `.pub` added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    pub public_key: Option<String>,
}

/// Options of the `Certificate` generator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!has(self.caKey) || has(self.issuer)").message("caKey copies the issuer's certificate: it needs issuer"),
    validation = Rule::new("!(has(self.isCA) && self.isCA) || !has(self.issuer)").message("a CA certificate is self-signed here: isCA and issuer exclude each other")
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateOptions {
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
    /// Subject common name.
    #[schemars(length(min = 1, max = 64))]
    pub common_name: String,
    /// DNS subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 2, max = 45)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a))").message("ipAddresses must be IP addresses"))]
    pub ip_addresses: Vec<String>,
    /// How long the certificate is valid from its issue, e.g. `2160h` (90 days).
    #[serde(default = "default_validity")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("validity must be a duration such as 2160h"))]
    pub validity: String,
    /// A CA certificate (may sign others); self-signed.
    #[serde(default, rename = "isCA")]
    pub is_ca: bool,
    /// Signed by the CA in this Secret (`tls.crt` and `tls.key`, PEM) rather than by its
    /// own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerRef>,
    /// Key of the private key in the Secret.
    #[serde(default = "default_private_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    pub private_key: String,
    /// Key the issuer's certificate is copied to (clients' trust bundle), e.g. `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(SECRET_KEY_RULE).message(SECRET_KEY_MESSAGE))]
    pub ca_key: Option<String>,
}

fn default_validity() -> String {
    "2160h".into()
}

fn default_private_key() -> String {
    "tls.key".into()
}

/// A Secret in the same namespace holding a CA: `tls.crt` and `tls.key`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// When to rotate. Exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.interval) != has(self.schedule)").message("spec.rotateEvery needs exactly one of interval and schedule"),
    validation = Rule::new("!has(self.timeZone) || has(self.schedule)").message("spec.rotateEvery.timeZone applies to a schedule, not to an interval")
)]
#[serde(rename_all = "camelCase")]
pub struct RotationTiming {
    /// Duration between rotations, e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("interval must be a duration such as 720h or 1h30m"))]
    pub interval: Option<String>,
    /// Cron schedule, e.g. `0 4 1 * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(CRON_RULE).message("schedule must be a cron schedule with 5 fields (e.g. '0 4 1 * *') or a macro such as @monthly"))]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule`, e.g. `Europe/Paris`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Each SecretRotation rotates up to this much later than due, by an offset of its own
    /// (derived from its UID, so it stays the same), so that a fleet does not rotate at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("jitter must be a duration such as 30m"))]
    pub jitter: Option<String>,
}

/// Zero-downtime strategy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStrategy {
    /// `InPlace`: the role gets a new password. PostgreSQL keeps one password per role, so
    /// new connections with the old one fail at once; open connections stay up, and consumers
    /// are rolled right after the change. Fine for consumers that reconnect on failure.
    /// `AlternatingUsers`: two login roles `<role>_a` and `<role>_b`, members of `<role>` that
    /// act as it (objects they create belong to `<role>`), take turns; the Secret points at
    /// the freshly rotated one while the other keeps working for the grace period, so no
    /// consumer ever holds a dead credential (true zero downtime). The previous login is then
    /// invalidated (`NOLOGIN`; the role itself, the first time, loses its password).
    #[serde(default, rename = "type")]
    pub strategy_type: StrategyType,
    /// AlternatingUsers: how long the previous user keeps working after the Secret changes
    /// (consumers must have rolled by then). InPlace: how long pgpilot waits for consumers
    /// to become ready before it reports the rotation as stalled.
    #[serde(default = "default_grace")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("gracePeriod must be a duration such as 10m"))]
    pub grace_period: String,
    /// AlternatingUsers: the previous login is invalidated only once every consumer has
    /// rolled, even after the grace period (never while a consumer may still use it).
    #[serde(default = "default_true")]
    pub wait_for_rollout: bool,
}

impl Default for RotationStrategy {
    fn default() -> Self {
        Self {
            strategy_type: StrategyType::default(),
            grace_period: default_grace(),
            wait_for_rollout: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_grace() -> String {
    "10m".into()
}

/// See [`RotationStrategy::strategy_type`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StrategyType {
    #[default]
    InPlace,
    AlternatingUsers,
}

/// A workload that reads the rotated Secret. Exactly one of `name` and `selector`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.name) != has(self.selector)").message("each consumer needs exactly one of name and selector")
)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: ConsumerKind,
    /// Workload name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Label selector (matchLabels) of the workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    pub selector: Option<BTreeMap<String, String>>,
}

/// Kinds of workload pgpilot can roll.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConsumerKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Observed state of a rotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotationStatus {
    /// metav1.Condition list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret being rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Last completed rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// Next planned rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// Completed rotations.
    #[serde(default)]
    pub rotations: i64,
    /// Role targets: the user the Secret points at now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_user: Option<String>,
    /// AlternatingUsers: the previous login, until it is invalidated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_user: Option<String>,
    /// The consumers of the last rotation and their rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerStatus>,
}

/// One workload that reads the Secret, and how far it has rolled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    pub kind: ConsumerKind,
    pub name: String,
    pub rollout: RolloutState,
    /// For people: replicas updated and ready, or what is missing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Where a consumer's rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutState {
    /// Not yet asked to roll for the current Secret.
    Pending,
    /// Asked to roll; old pods still run.
    Rolling,
    /// Every pod runs with the current Secret.
    Rolled,
    /// Rolling for longer than the grace period.
    Stalled,
    /// A consumer named in the spec does not exist (nothing runs it).
    NotFound,
}
