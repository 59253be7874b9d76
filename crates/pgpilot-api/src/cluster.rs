//! `PostgresCluster`: a highly available PostgreSQL cluster run by Patroni.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::{
    CustomResource, KubeSchema,
    core::{Message, Rule},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, S3Repository, SecretKeyReference, Time, default_true};

/// PostgreSQL parameters that pgpilot and Patroni set themselves. Setting them would break
/// replication, failover, archiving or the pod contract, so the API refuses them. Also the
/// recovery parameters Patroni takes only from its own recovery configuration (it drops them
/// from `parameters`).
pub const OPERATOR_OWNED_PARAMETERS: &[&str] = &[
    "archive_cleanup_command",
    "archive_command",
    "archive_library",
    "archive_mode",
    "cluster_name",
    "config_file",
    "data_directory",
    "hba_file",
    "hot_standby",
    "ident_file",
    "listen_addresses",
    "max_replication_slots",
    "max_wal_senders",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "restore_command",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_crl_file",
    "ssl_key_file",
    "ssl_passphrase_command",
    "synchronous_commit",
    "synchronous_standby_names",
    "unix_socket_directories",
    "wal_level",
    "wal_log_hints",
];

/// An image reference as container runtimes parse it (`[registry[:port]/]path[:tag][@digest]`,
/// the grammar of distribution's `reference` package): a kubelet would otherwise report
/// `InvalidImageName` only once a pod exists.
fn image_reference_rule() -> Rule {
    let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!("{domain_component}(?:[.]{domain_component})*(?::[0-9]+)?");
    let path_component = "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    Rule::new(format!(
        "self.matches('^(?:{domain}/)?{path_component}(?:/{path_component})*(?::{tag})?(?:@{digest})?$')"
    ))
    .message("spec.postgresql.image must be an image reference: [registry[:port]/]name[:tag][@digest], the name in lower case (e.g. registry.example.com/postgres:17.2)")
}

/// The CEL rule refusing [`OPERATOR_OWNED_PARAMETERS`] (and every `recovery_target*`).
fn operator_owned_parameters_rule() -> Rule {
    let quoted: Vec<String> = OPERATOR_OWNED_PARAMETERS
        .iter()
        .map(|p| format!("'{p}'"))
        .collect();
    let owned = quoted.join(", ");
    Rule::new(format!(
        "!has(self.parameters) || !self.parameters.exists(k, k.lowerAscii() in [{owned}] || k.lowerAscii().startsWith('recovery_target'))"
    ))
    // A messageExpression naming the offending key would be clearer, but the API server
    // rejects its estimated cost (filter + join over an unbounded map), so the message lists
    // every owned name instead.
    .message(Message::Message(format!(
        "spec.postgresql.parameters sets a parameter that pgpilot manages; remove it. Managed: {}, recovery_target*",
        OPERATOR_OWNED_PARAMETERS.join(", ")
    )))
}

/// CEL over the parameter tables of [`crate::parameters`], for the majors that have one:
/// names PostgreSQL and Patroni know (any case; a dotted name only under an extension prefix
/// of the image), booleans and enums with a value both accept. Numbers (units, ranges) are
/// checked by the cluster controller, which says so in a condition.
fn parameter_table_rules() -> [Rule; 4] {
    let tables = crate::parameters::tables();
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let majors = tables
        .iter()
        .map(|t| t.major.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // `(self.version == 15 ? A : B)`, over every table.
    let by_version = |f: &dyn Fn(&crate::parameters::Table) -> String| {
        let mut expr = String::new();
        for (i, t) in tables.iter().enumerate() {
            if i + 1 < tables.len() {
                expr.push_str(&format!("self.version == {} ? {} : ", t.major, f(t)));
            } else {
                expr.push_str(&f(t));
            }
        }
        format!("({expr})")
    };
    let set = |names: Vec<&str>| {
        let entries: Vec<String> = names
            .iter()
            .map(|n| format!("{}: true", quote(n)))
            .collect();
        format!("{{{}}}", entries.join(", "))
    };
    let known = by_version(&|t| set(t.names().collect()));
    let prefixes = by_version(&|t| {
        let p: Vec<String> = t.prefixes().iter().map(|p| quote(p)).collect();
        format!("[{}]", p.join(", "))
    });
    let bools = by_version(&|t| {
        set(t
            .parameters()
            .filter(|p| p.kind == crate::parameters::Kind::Bool)
            .map(|p| p.name)
            .collect())
    });
    let bool_values: Vec<String> = crate::parameters::BOOL_VALUES
        .iter()
        .map(|v| quote(v))
        .collect();
    let enums = by_version(&|t| {
        let entries: Vec<String> = t
            .parameters()
            .filter(|p| p.kind == crate::parameters::Kind::Enum)
            .map(|p| {
                // A set rather than a list: cheaper to look up, for the API server's estimate.
                let v: Vec<String> = p
                    .values()
                    .iter()
                    .map(|v| format!("{}: true", quote(v)))
                    .collect();
                format!(
                    "{}: {{{}}}",
                    quote(&p.name.to_ascii_lowercase()),
                    v.join(", ")
                )
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    });
    let tabled = format!("!has(self.parameters) || !(self.version in [{majors}])");
    [
        // Fixed messages: the API server estimates a map key's length from the request size,
        // and any messageExpression naming the key (a filter over the map) takes these rules
        // past the CRD's total cost budget. The admission webhook will name it.
        Rule::new(format!(
            "{tabled} || self.parameters.all(k, k.contains('.') || k.lowerAscii() in {known})"
        ))
        .message("spec.postgresql.parameters: a name is not a parameter of this PostgreSQL major version (compared case-insensitively): a typo, or one this major removed?"),
        Rule::new(format!(
            "{tabled} || self.parameters.all(k, !k.contains('.') || k.lowerAscii() in {known} || !{prefixes}.exists(p, k.lowerAscii().startsWith(p)))"
        ))
        .message("spec.postgresql.parameters: a name under the prefix of an extension of the image (auto_explain., pg_stat_statements., …) that the extension does not define (other dotted names are free-form)"),
        Rule::new(format!(
            "{tabled} || self.parameters.all(k, !(k.lowerAscii() in {bools}) || self.parameters[k].lowerAscii() in [{}])",
            bool_values.join(", ")
        ))
        .message("spec.postgresql.parameters: a boolean parameter has a value other than on or off (or true/false, yes/no, 1/0)"),
        Rule::new(format!(
            "{tabled} || self.parameters.all(k, !(k.lowerAscii() in {enums}) || self.parameters[k].lowerAscii() in {enums}[k.lowerAscii()])"
        ))
        .message("spec.postgresql.parameters: an enumerated parameter has a value PostgreSQL (or Patroni, which writes postgresql.conf) does not take; values compare case-insensitively with pg_settings.enumvals"),
    ]
}

/// pg_hba.conf records as PostgreSQL reads them (a token may be double-quoted, a list of
/// tokens comma-separated; fields separated by spaces or tabs, never a line break), so a line
/// PostgreSQL would refuse — which fails a reload silently, or a start — is refused here.
/// What only some majors take (`oauth` from 18, `include` lines from 16) is refused for the
/// others by [`pg_hba_version_rules`].
fn pg_hba_rule() -> Rule {
    const ONE: &str = r##"("[^"]*"|[^ \t"#,]+)"##;
    let list = format!("{ONE}(,{ONE})*");
    let record = format!(
        r"^[ \t]*(local[ \t]+{list}[ \t]+{list}|host(ssl|nossl|gssenc|nogssenc)?[ \t]+{list}[ \t]+{list}[ \t]+{ONE}([ \t]+[0-9a-fA-F.:]+)?)[ \t]+({HBA_METHODS})([ \t]+[a-zA-Z_]+={ONE})*[ \t]*(#.*)?$"
    );
    let include = format!(r"^[ \t]*include(_if_exists|_dir)?[ \t]+{ONE}[ \t]*(#.*)?$");
    let blank = r"^[ \t]*(#.*)?$";
    let matches = |re: &str| format!("l.matches('{}')", re.replace('\\', "\\\\"));
    let valid = format!(
        "{} || {} || {}",
        matches(&record),
        matches(blank),
        matches(&include)
    );
    Rule::new(format!("self.all(l, {valid})")).message(Message::Expression(format!(
        "'spec.postgresql.pgHba: not a pg_hba.conf record: ' + self.filter(l, !({valid}))[0].replace('\\n', ' ').replace('\\r', ' ') + ' (TYPE DATABASE USER [ADDRESS [MASK]] METHOD [OPTION=VALUE ...]; TYPE local, host, hostssl, hostnossl, hostgssenc or hostnogssenc; METHOD {})'",
        HBA_METHODS.replace('|', ", ")
    )))
}

/// The authentication methods of pg_hba.conf (`oauth` from PostgreSQL 18).
const HBA_METHODS: &str =
    "trust|reject|scram-sha-256|md5|password|gss|sspi|ident|peer|pam|ldap|radius|cert|oauth";

/// pg_hba.conf lines only some majors read. (A message naming the line would exceed the
/// CRD's cost budget at this level, where the version is.)
fn pg_hba_version_rules() -> [Rule; 2] {
    [
        Rule::new(r"self.version >= 18 || !has(self.pgHba) || !self.pgHba.exists(l, l.matches('[ \\t]oauth([ \\t#]|$)'))")
            .message("spec.postgresql.pgHba: the oauth method needs PostgreSQL 18"),
        Rule::new(r"self.version >= 16 || !has(self.pgHba) || !self.pgHba.exists(l, l.matches('^[ \\t]*include'))")
            .message("spec.postgresql.pgHba: include lines need PostgreSQL 16"),
    ]
}

/// Quantities that parse, none negative, no limit below its request: what the API server
/// would refuse on the pod, said at `path` on the cluster.
fn resources_rules(path: &str) -> [Rule; 4] {
    [
        Rule::new("!has(self.requests) || self.requests.all(k, isQuantity(string(self.requests[k])))")
            .message(Message::Message(format!("{path}.requests: every value must be a quantity such as 500m, 2 or 4Gi"))),
        Rule::new("!has(self.limits) || self.limits.all(k, isQuantity(string(self.limits[k])))")
            .message(Message::Message(format!("{path}.limits: every value must be a quantity such as 500m, 2 or 4Gi"))),
        Rule::new("!has(self.requests) || self.requests.all(k, !isQuantity(string(self.requests[k])) || !quantity(string(self.requests[k])).isLessThan(quantity('0')))")
            .message(Message::Message(format!("{path}.requests: a quantity cannot be negative"))),
        Rule::new("!has(self.limits) || !has(self.requests) || self.limits.all(k, !(k in self.requests) || !isQuantity(string(self.limits[k])) || !isQuantity(string(self.requests[k])) || quantity(string(self.limits[k])).compareTo(quantity(string(self.requests[k]))) >= 0)")
            .message(Message::Message(format!("{path}: a limit is below its request; a limit must be at least the request"))),
    ]
}

/// `ResourceRequirements` with bounds the API server's CEL cost estimate needs: at most 16
/// resources each, values at most 64 characters.
fn bounded_resources(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Option<ResourceRequirements>>();
    if let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        for map in ["requests", "limits"] {
            if let Some(m) = properties
                .get_mut(map)
                .and_then(serde_json::Value::as_object_mut)
            {
                m.insert("maxProperties".into(), 16.into());
                if let Some(v) = m
                    .get_mut("additionalProperties")
                    .and_then(serde_json::Value::as_object_mut)
                {
                    v.insert("maxLength".into(), 64.into());
                }
            }
        }
    }
    schema
}

/// A Kubernetes label key, as a CEL string: `[prefix/]name`, the prefix a DNS subdomain of at
/// most 253 characters, the name at most 63.
const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// A highly available PostgreSQL cluster: one primary and zero or more streaming replicas,
/// run by Patroni with Kubernetes as its consensus store.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "pgpilot.io",
    version = "v1alpha1",
    kind = "PostgresCluster",
    doc = "A highly available PostgreSQL cluster run by Patroni: one primary, streaming replicas, Services for read-write and read-only traffic, generated credentials, optional backups.",
    namespaced,
    status = "PostgresClusterStatus",
    shortname = "pgc",
    shortname = "pgcluster",
    category = "pgpilot",
    derive = "PartialEq",
    cel,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (it names the cluster's Services and pods)"),
    validation = Rule::new("size(self.metadata.name) <= 49").message("metadata.name must be at most 49 characters: the longest names pgpilot derives from it (<name>-restore-check) must fit in 63"),
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".spec.instances",
        description = "Desired number of instances"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyInstances",
        description = "Instances ready to serve"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".spec.postgresql.version",
        description = "Desired PostgreSQL major version"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary",
        description = "Pod running the primary"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Summary of the cluster's state"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.postgresql.version >= oldSelf.postgresql.version").message("spec.postgresql.version cannot go down: major downgrades are not possible; restore a backup into a new cluster instead"),
    validation = Rule::new("!has(self.replication) || !has(self.replication.synchronous) || self.replication.synchronous.mode != 'Required' || self.replication.synchronous.numberOfStandbys < self.instances").message("spec.replication.synchronous: mode Required needs more instances than numberOfStandbys, or writes would block"),
    validation = Rule::new("!has(self.replication) || !has(self.replication.synchronous) || self.replication.synchronous.mode == 'Required' || self.instances == 1 || self.replication.synchronous.numberOfStandbys < self.instances").message("spec.replication.synchronous.numberOfStandbys must be less than spec.instances: there are only instances - 1 standbys to confirm a commit"),
    // The message maps with a filter: filter-then-map costs more than the API server allows.
    validation = Rule::new("!has(self.databases) || self.databases.all(d, !has(d.owner) || d.owner == 'postgres' || (has(self.roles) && self.roles.exists(r, r.name == d.owner)))").message(Message::Expression("'spec.databases: database ' + self.databases.map(d, has(d.owner) && d.owner != 'postgres' && !(has(self.roles) && self.roles.exists(r, r.name == d.owner)), d.name + ' has owner ' + d.owner)[0] + ', which is neither postgres nor a role declared in spec.roles'".into())),
    validation = Rule::new("!has(self.backup) || !has(oldSelf.backup) || (self.backup.repository.s3.bucket == oldSelf.backup.repository.s3.bucket && self.backup.repository.s3.path == oldSelf.backup.repository.s3.path)").message("spec.backup.repository.s3 bucket and path are immutable: existing backups and the WAL archive live there; restore into a new cluster to move"),
    validation = Rule::new("!has(self.backup) || !has(oldSelf.backup) || has(self.backup.repository.encryption) == has(oldSelf.backup.repository.encryption) && (!has(self.backup.repository.encryption) || self.backup.repository.encryption == oldSelf.backup.repository.encryption)").message("spec.backup.repository.encryption cannot be added, changed or removed: the repository's backups and WAL are encrypted with it; use a new repository path in a new cluster"),
    validation = Rule::new("has(self.bootstrap) == has(oldSelf.bootstrap)").message("spec.bootstrap cannot be added or removed after creation")
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterSpec {
    /// Number of PostgreSQL instances: one primary plus `instances - 1` replicas.
    #[serde(default = "default_instances")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.instances must be at least 1"))]
    #[x_kube(validation = Rule::new("self <= 32").message("spec.instances must be at most 32"))]
    pub instances: i32,

    /// PostgreSQL version, image and parameters.
    pub postgresql: PostgresSettings,

    /// Persistent volume for each instance's data directory.
    pub storage: StorageSpec,

    /// CPU and memory for the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bounded_resources")]
    #[x_kube(
        validation = resources_rules("spec.resources")[0].clone(),
        validation = resources_rules("spec.resources")[1].clone(),
        validation = resources_rules("spec.resources")[2].clone(),
        validation = resources_rules("spec.resources")[3].clone()
    )]
    pub resources: Option<ResourceRequirements>,

    /// Roles (users) pgpilot creates and keeps as declared. Each gets a Secret
    /// `<cluster>-<role>-credentials` with username, password, host, port, dbname, uri,
    /// jdbc-uri and pgpass. A role removed from this list is left in place; set
    /// `ensure: Absent` to drop it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub roles: Vec<RoleSpec>,

    /// Databases pgpilot creates and keeps as declared. Never dropped unless `ensure: Absent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub databases: Vec<DatabaseSpec>,

    /// Streaming replication settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationSpec>,

    /// Patroni timing: how fast a failed primary is detected and replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniSpec>,

    /// Where instance pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,

    /// PodDisruptionBudget for the instances (on by default): voluntary evictions keep a
    /// majority of instances, and never the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// TLS for SQL connections. Always on: every instance presents a certificate from the
    /// cluster's own CA (published in ConfigMap `<cluster>-ca-cert` and as `ca.crt` in every
    /// credential Secret); this says whether clients without TLS are still let in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// NetworkPolicy for the instances (on by default): PostgreSQL's port open to the pods
    /// `postgresFrom` names (default: the cluster's namespace); Patroni's API and pgBackRest's
    /// TLS server only to the cluster's own pods and to pgpilot. NetworkPolicies add up, so
    /// another policy of yours can open more (e.g. Patroni's `/metrics` to Prometheus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Database metrics: the PostgreSQL exporter beside each instance (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,

    /// pgBackRest repository for backups and the WAL archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// How the upgrade controller carries out a change of `postgresql.version` or
    /// `postgresql.image`: approval, maintenance window, pre-upgrade backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradePolicy>,

    /// How the cluster's first data comes to be: an empty `initdb`, or a restore from a
    /// backup (optionally to a point in time). Immutable after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,

    /// What happens to the instances' PersistentVolumeClaims when the cluster is deleted or
    /// scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy: Option<PvcRetentionPolicy>,

    /// Stop reconciling this cluster. Pods keep running as they are; pgpilot changes nothing
    /// until this is false again.
    #[serde(default)]
    pub paused: bool,

    /// Put Patroni in maintenance mode: no automatic failover while the flag is on (for
    /// manual work on the instances).
    #[serde(default)]
    pub maintenance: bool,
}

fn default_instances() -> i32 {
    1
}

/// PostgreSQL version, image and configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = operator_owned_parameters_rule(),
    validation = parameter_table_rules()[0].clone(),
    validation = parameter_table_rules()[1].clone(),
    validation = parameter_table_rules()[2].clone(),
    validation = parameter_table_rules()[3].clone(),
    validation = pg_hba_version_rules()[0].clone(),
    validation = pg_hba_version_rules()[1].clone()
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSettings {
    /// PostgreSQL major version. Raising it starts a major upgrade; lowering it is refused.
    #[x_kube(validation = Rule::new("self >= 15 && self <= 18").message("spec.postgresql.version must be a supported major version: 15, 16, 17 or 18"))]
    pub version: i32,

    /// Container image with PostgreSQL of `version`, Patroni and pgBackRest (see
    /// docs/images.md for the contract). Empty: the manager's default image for `version`.
    /// Changing it to a newer minor release rolls the instances, replicas first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = image_reference_rule())]
    pub image: Option<String>,

    /// postgresql.conf parameters. Values are strings, as in postgresql.conf.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub parameters: BTreeMap<String, String>,

    /// Extra pg_hba.conf lines, placed after pgpilot's own (which allow replication and
    /// password logins over TLS inside the cluster network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    #[x_kube(validation = pg_hba_rule())]
    pub pg_hba: Vec<String>,
}

/// Persistent storage of one instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!isQuantity(self.size) || !isQuantity(oldSelf.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0").message("spec.storage.size cannot shrink: volumes can only grow"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("spec.storage.storageClassName is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each instance's volume, e.g. `10Gi`. Can grow (when the StorageClass allows
    /// expansion), never shrink.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.storage.size must be a positive quantity such as 10Gi"))]
    #[x_kube(validation = Rule::new("!isQuantity(self) || quantity(self).compareTo(quantity('256Mi')) >= 0 && quantity(self).compareTo(quantity('1Pi')) <= 0").message("spec.storage.size must be between 256Mi (a data directory and its WAL need that much) and 1Pi"))]
    pub size: String,
    /// StorageClass of the volumes. Empty: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::common::DNS_SUBDOMAIN).message("spec.storage.storageClassName must be a StorageClass name: lower-case letters, digits, '-' and '.'"))]
    pub storage_class_name: Option<String>,
}

/// Whether a declared role or database should exist.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Ensure {
    #[default]
    Present,
    /// Drop it. The only way pgpilot ever drops a role or database.
    Absent,
}

/// A PostgreSQL role managed by pgpilot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Role name: lower-case letters, digits and underscores, starting with a letter.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9_]*$')").message("role name must be lower-case letters, digits and underscores, starting with a letter"))]
    #[x_kube(validation = Rule::new("!(self in ['postgres', 'replicator', 'pgpilot', 'public']) && !self.startsWith('pg_') && !self.startsWith('pgpilot_')").message("role name is reserved (postgres, replicator, pgpilot, public, pg_* and pgpilot_*)"))]
    pub name: String,
    /// Present (default) or Absent.
    #[serde(default)]
    pub ensure: Ensure,
    /// The role can log in (and gets a credentials Secret).
    #[serde(default = "default_true")]
    pub login: bool,
    /// CREATEDB.
    #[serde(default)]
    pub create_db: bool,
    /// CREATEROLE.
    #[serde(default)]
    pub create_role: bool,
    /// SUPERUSER. Prefer narrower grants.
    #[serde(default)]
    pub superuser: bool,
    /// Connection limit; -1 for none.
    #[serde(default = "default_connection_limit")]
    #[x_kube(validation = Rule::new("self >= -1").message("connectionLimit must be -1 (no limit) or more"))]
    pub connection_limit: i32,
    /// Roles this role is a member of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub in_roles: Vec<String>,
}

fn default_connection_limit() -> i32 {
    -1
}

/// A database managed by pgpilot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Database name.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9_]*$')").message("database name must be lower-case letters, digits and underscores, starting with a letter"))]
    #[x_kube(validation = Rule::new("!(self in ['postgres', 'template0', 'template1'])").message("database name is reserved (postgres, template0, template1)"))]
    pub name: String,
    /// Owner: `postgres` (default) or a role from spec.roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub owner: Option<String>,
    /// Present (default) or Absent.
    #[serde(default)]
    pub ensure: Ensure,
    /// Extensions to create in the database (must be available in the image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extensions: Vec<String>,
}

/// Streaming replication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Synchronous replication: a commit returns only once standbys have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous: Option<SynchronousReplication>,
}

/// Synchronous replication settings (Patroni `synchronous_mode`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SynchronousReplication {
    /// `Preferred`: synchronous while a standby is healthy, asynchronous otherwise (writes never
    /// block). `Required`: a commit always waits for a standby (no acknowledged write is ever
    /// lost, but writes stop when no standby is available).
    #[serde(default)]
    pub mode: SynchronousMode,
    /// `Quorum`: a commit waits for any `numberOfStandbys` replicas (PostgreSQL's `ANY n`), and
    /// Patroni promotes only a replica it has checked holds every acknowledged commit. `Priority`:
    /// Patroni names `numberOfStandbys` synchronous standbys (`FIRST n`), each commit waits for
    /// them, and only they may take over.
    #[serde(default)]
    pub method: SynchronousMethod,
    /// How many standbys confirm each commit.
    #[serde(default = "default_sync_standbys")]
    #[x_kube(validation = Rule::new("self >= 1").message("numberOfStandbys must be at least 1"))]
    pub number_of_standbys: i32,
}

fn default_sync_standbys() -> i32 {
    1
}

/// See [`SynchronousReplication::mode`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SynchronousMode {
    #[default]
    Preferred,
    Required,
}

/// See [`SynchronousReplication::method`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SynchronousMethod {
    #[default]
    Quorum,
    Priority,
}

/// Patroni's failure detection timing, in seconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.loopWait + 2 * self.retryTimeout <= self.ttl").message("spec.patroni: loopWait + 2 × retryTimeout must not exceed ttl (Patroni's rule), or the leader lock expires during normal operation")
)]
#[serde(rename_all = "camelCase")]
pub struct PatroniSpec {
    /// Leader lock lifetime: the longest a dead primary keeps the role.
    #[serde(default = "default_ttl")]
    #[x_kube(validation = Rule::new("self >= 20 && self <= 600").message("ttl must be between 20 and 600 seconds (Patroni raises anything lower to 20)"))]
    pub ttl: i32,
    /// Seconds between Patroni's health loops.
    #[serde(default = "default_loop_wait")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 300").message("loopWait must be between 1 and 300 seconds"))]
    pub loop_wait: i32,
    /// How long Patroni retries the Kubernetes API and PostgreSQL before giving up.
    #[serde(default = "default_retry_timeout")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 300").message("retryTimeout must be between 1 and 300 seconds"))]
    pub retry_timeout: i32,
    /// Replicas lagging more than this many bytes are never promoted automatically.
    #[serde(default = "default_max_lag")]
    #[x_kube(validation = Rule::new("self >= 0").message("maximumLagOnFailover must not be negative"))]
    pub maximum_lag_on_failover: i64,
    /// Keep the primary through a Kubernetes API outage (a control-plane restart or upgrade)
    /// as long as it reaches every other member's Patroni (Patroni's `failsafe_mode`).
    /// Off, a primary that cannot renew its leader lock within `retryTimeout` stops taking
    /// writes until the API server is back. Either way no second primary can appear: nobody
    /// takes the lock without the API server.
    #[serde(default = "default_failsafe_mode")]
    pub failsafe_mode: bool,
}

impl Default for PatroniSpec {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            loop_wait: default_loop_wait(),
            retry_timeout: default_retry_timeout(),
            maximum_lag_on_failover: default_max_lag(),
            failsafe_mode: default_failsafe_mode(),
        }
    }
}

fn default_ttl() -> i32 {
    30
}
fn default_loop_wait() -> i32 {
    10
}
fn default_retry_timeout() -> i32 {
    10
}
fn default_max_lag() -> i64 {
    1_048_576
}
fn default_failsafe_mode() -> bool {
    true
}

/// Placement of instance pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Replaces pgpilot's default, which prefers to put instances on different nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of the instance pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new("self.all(t, !has(t.operator) || t.operator in ['Exists', 'Equal'])").message("spec.scheduling.tolerations: operator must be Exists or Equal"),
        validation = Rule::new("self.all(t, !has(t.effect) || t.effect in ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute'])").message("spec.scheduling.tolerations: effect must be NoSchedule, PreferNoSchedule or NoExecute (or empty: all)"),
        validation = Rule::new("self.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || t.value == '')").message("spec.scheduling.tolerations: operator Exists takes no value"),
        validation = Rule::new("self.all(t, has(t.key) && t.key != '' || has(t.operator) && t.operator == 'Exists')").message("spec.scheduling.tolerations: an empty key needs operator Exists (it then tolerates every taint)"),
        validation = Rule::new("self.all(t, !has(t.tolerationSeconds) || has(t.effect) && t.effect == 'NoExecute')").message("spec.scheduling.tolerations: tolerationSeconds applies to effect NoExecute only")
    )]
    pub tolerations: Vec<Toleration>,
    /// Topology spread constraints; pgpilot fills in the label selector when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Node labels the instances require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(
        validation = Rule::new(format!("self.all(k, k.matches('{LABEL_KEY}'))")).message("spec.scheduling.nodeSelector: a key is not a label key: an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
        validation = Rule::new("self.all(k, self[k] == '' || self[k].matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$'))").message("spec.scheduling.nodeSelector: a value is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (or empty)")
    )]
    pub node_selector: BTreeMap<String, String>,
    /// PriorityClass of the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// TLS for SQL connections.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `Preferred`: TLS is offered and used by clients that ask (libpq's default), plain
    /// connections are still accepted. `Required`: connections without TLS are refused
    /// (`hostnossl … reject` before any other pg_hba line), replication included.
    #[serde(default)]
    pub mode: TlsMode,
    /// The instances' certificate from a Secret you manage (e.g. one cert-manager's
    /// Certificate writes) instead of pgpilot's CA: `tls.crt`, `tls.key`, and `ca.crt`, the CA
    /// that signed it, which pgpilot publishes for clients and verifies the servers with. It
    /// must carry every DNS name the instances answer to (docs/security.md lists them); a
    /// renewed certificate reaches PostgreSQL and Patroni within a minute, by a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSecret>,
}

/// A Secret of the cluster's namespace holding a server certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSecret {
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::common::DNS_SUBDOMAIN).message("spec.tls.certificate.secretName must be a Secret name: lower-case letters, digits, '-' and '.'"))]
    pub secret_name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    #[default]
    Preferred,
    Required,
}

/// The cluster's NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy. Off: the instances accept connections from anywhere the
    /// cluster's network lets through.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may connect to PostgreSQL (port 5432) besides the cluster's own pods and pgpilot,
    /// as NetworkPolicy peers (`podSelector`, `namespaceSelector`, `ipBlock`). Absent: every
    /// pod of the cluster's namespace. Empty: no one else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub postgres_from: Option<Vec<NetworkPolicyPeer>>,
    /// Who may scrape the exporter (port 9187) and, with `spec.monitoring.patroni`,
    /// Patroni's metrics (port 8008), as NetworkPolicy peers. Absent: every pod of every
    /// namespace (Prometheus usually runs in its own). Empty: no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub metrics_from: Option<Vec<NetworkPolicyPeer>>,
}

/// Database metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// The Prometheus community's PostgreSQL exporter as a sidecar of every instance, on
    /// port 9187 (`metrics`): connections, transactions, replication, WAL, archiving,
    /// checkpoints and database sizes, from the instance's own view. It logs in as
    /// `pgpilot_monitor` (a member of `pg_monitor` only) with the password in
    /// `<cluster>-pgpilot-monitor-credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSpec>,
    /// Patroni's own metrics (`/metrics` on port 8008, HTTPS with the cluster's CA): role,
    /// timeline, WAL positions, pending restart, pause, failsafe and DCS contact per member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniMetricsSpec>,
}

/// Scraping Patroni's `/metrics`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatroniMetricsSpec {
    /// Let `spec.networkPolicy.metricsFrom` reach port 8008 and label the instance pods
    /// `pgpilot.io/patroni-metrics: "true"` for the chart's Patroni PodMonitor. That port is
    /// Patroni's REST API: its reads (state, configuration, history) need no password, its
    /// writes still do. Off by default; turning it on or off restarts the instances
    /// (replicas first), as the pod label changes.
    #[serde(default)]
    pub enabled: bool,
}

/// The exporter sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// Run the exporter. Turning it on or off restarts the instances (replicas first).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// CPU and memory for the exporter container (default: requests 10m and 32Mi, a
    /// 128Mi memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bounded_resources")]
    #[x_kube(
        validation = resources_rules("spec.monitoring.exporter.resources")[0].clone(),
        validation = resources_rules("spec.monitoring.exporter.resources")[1].clone(),
        validation = resources_rules("spec.monitoring.exporter.resources")[2].clone(),
        validation = resources_rules("spec.monitoring.exporter.resources")[3].clone()
    )]
    pub resources: Option<ResourceRequirements>,
}

impl PostgresClusterSpec {
    /// Whether the instances run the exporter (the default).
    pub fn exporter_enabled(&self) -> bool {
        self.monitoring
            .as_ref()
            .and_then(|m| m.exporter.as_ref())
            .is_none_or(|e| e.enabled)
    }

    /// Whether Patroni's `/metrics` is opened to scrapers (off by default).
    pub fn patroni_metrics_enabled(&self) -> bool {
        self.monitoring
            .as_ref()
            .and_then(|m| m.patroni.as_ref())
            .is_some_and(|p| p.enabled)
    }
}

/// PodDisruptionBudget settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// How upgrades of a cluster run. The upgrade controller copies it into the PostgresUpgrade
/// it creates when the spec asks for another version or image than the instances run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    /// `Automatic` (default): an upgrade starts once its gates pass. `Manual`: it waits for
    /// `approved: true` on its PostgresUpgrade.
    #[serde(default)]
    pub approval: UpgradeApproval,
    /// Start upgrades only inside this window. A started upgrade runs to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Take a full backup first (when the cluster has a repository). On by default.
    #[serde(default = "default_true")]
    pub backup_before_upgrade: bool,
    /// Pause the upgrade when an upgraded instance is not healthy this long after its pod was
    /// replaced (the remaining instances keep the old version).
    #[serde(default = "default_instance_timeout")]
    #[x_kube(validation = Rule::new("self >= 60 && self <= 86400").message("spec.upgrade.instanceTimeoutSeconds must be between 60 and 86400"))]
    pub instance_timeout_seconds: i32,
}

pub(crate) fn default_instance_timeout() -> i32 {
    600
}

/// See [`UpgradePolicy::approval`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpgradeApproval {
    #[default]
    Automatic,
    Manual,
}

/// When upgrades may start: windows opening on a cron schedule, each lasting `durationMinutes`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// When a window opens (`minute hour day-of-month month day-of-week`, or a macro such as
    /// `@daily`), e.g. `0 2 * * 6` for Saturdays at 02:00.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(crate::schedule::CRON_RULE).message("spec.upgrade.maintenanceWindow.schedule must be a cron schedule with 5 fields (e.g. '0 2 * * 6') or a macro such as @daily"))]
    pub schedule: String,
    /// How long a window stays open.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10080").message("spec.upgrade.maintenanceWindow.durationMinutes must be between 1 and 10080 (a week)"))]
    pub duration_minutes: i32,
    /// IANA time zone of the schedule, e.g. `Europe/Paris`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
}

/// Backups of this cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The pgBackRest repository.
    pub repository: BackupRepository,
    /// How many backups pgBackRest keeps in the repository; older ones expire with their WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RepositoryRetention>,
}

/// A pgBackRest repository. Only S3-compatible object stores today.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepository {
    /// S3-compatible object store.
    pub s3: S3Repository,
    /// Encrypt everything pgBackRest writes to the repository (AES-256-CBC) with a passphrase
    /// from a Secret. Set it before the first backup: it cannot be added, changed or removed
    /// later (the repository would become unreadable). Keep a copy of the passphrase outside
    /// the cluster: without it no backup can be restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<RepositoryEncryption>,
}

/// See [`BackupRepository::encryption`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryEncryption {
    /// The Secret key holding the passphrase (at least 20 characters of random text).
    pub passphrase: SecretKeyReference,
}

/// pgBackRest retention (`repo1-retention-full` / `-full-type` / `-diff`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryRetention {
    /// Full backups to keep: a count, or days with `fullType: Time`.
    #[serde(default = "default_retention_full")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 9999999").message("retention.full must be between 1 and 9999999"))]
    pub full: i32,
    /// `Count` (default): keep the newest `full` full backups. `Time`: keep the full backups
    /// needed to restore to any point of the last `full` days.
    #[serde(default)]
    pub full_type: RetentionType,
    /// Differential backups to keep; empty keeps those of the retained full backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 9999999").message("retention.differential must be between 1 and 9999999"))]
    pub differential: Option<i32>,
}

fn default_retention_full() -> i32 {
    2
}

impl Default for RepositoryRetention {
    fn default() -> Self {
        Self {
            full: default_retention_full(),
            full_type: RetentionType::default(),
            differential: None,
        }
    }
}

/// See [`RepositoryRetention::full_type`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionType {
    #[default]
    Count,
    Time,
}

/// How the cluster is first populated. Exactly one of `initdb` and `restore`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec.bootstrap is immutable: it only describes how the cluster was created"),
    validation = Rule::new("has(self.initdb) != has(self.restore)").message("spec.bootstrap needs exactly one of initdb and restore"),
    validation = Rule::new("!has(self.recoveryTarget) || has(self.restore)").message("spec.bootstrap.recoveryTarget needs spec.bootstrap.restore: a point in time is reached by restoring a backup")
)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start from an empty database cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitdbSpec>,
    /// Start from a backup in a pgBackRest repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// Replay WAL up to this point after restoring (point-in-time recovery). Without it, the
    /// restore replays all archived WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_target: Option<RecoveryTarget>,
}

/// initdb options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitdbSpec {
    /// Encoding of the template databases.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Locale (`C.UTF-8` sorts fast and never changes with the OS's libc).
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Page checksums: detect storage corruption. On unless you have a reason.
    #[serde(default = "default_true")]
    pub data_checksums: bool,
}

fn default_encoding() -> String {
    "UTF8".into()
}
fn default_locale() -> String {
    "C.UTF-8".into()
}

/// Where a restore reads its backup: the cluster that wrote it, and the repository it wrote to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The cluster whose backups to restore. It may have been deleted: its backups and WAL
    /// stay in the repository.
    pub source: RestoreSource,
    /// The repository the source cluster backed up to: its `spec.backup.repository`. The
    /// Secrets it names (keys, CA bundle, passphrase) are read from this cluster's namespace.
    pub repository: BackupRepository,
    /// pgBackRest backup label to restore (e.g. `20261121-101500F`). Empty: the newest
    /// backup that can reach the recovery target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub backup_id: Option<String>,
}

/// See [`RestoreSpec::source`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// Name of the source cluster.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Its namespace. Default: this cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Point-in-time recovery target. Exactly one of `time`, `lsn`, `xid`, `name` and
/// `immediate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("[has(self.time), has(self.lsn), has(self.xid), has(self.name), has(self.immediate) && self.immediate].filter(x, x).size() == 1").message("spec.bootstrap.recoveryTarget needs exactly one of time, lsn, xid, name and immediate")
)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTarget {
    /// RFC 3339 timestamp, e.g. `2026-11-21T10:15:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\\\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$')").message("recoveryTarget.time must be an RFC 3339 timestamp such as 2026-11-21T10:15:00Z"))]
    pub time: Option<String>,
    /// WAL location, e.g. `0/3000060`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$')").message("recoveryTarget.lsn must look like 0/3000060"))]
    pub lsn: Option<String>,
    /// Transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+$')").message("recoveryTarget.xid must be a transaction id (digits)"))]
    pub xid: Option<String>,
    /// A restore point created with `pg_create_restore_point`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// Stop as soon as the backup is consistent: the earliest point it can reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate: Option<bool>,
    /// Stop just after (true, default) or just before the target.
    #[serde(default = "default_true")]
    pub inclusive: bool,
    /// Timeline to follow: `latest` (default: the newest timeline in the archive, which is
    /// where a cluster that failed over went on), `current` (the backup's), or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.matches('^(latest|current|[1-9][0-9]{0,8})$')").message("recoveryTarget.timeline must be latest, current or a timeline number"))]
    pub timeline: Option<String>,
}

/// What happens to PersistentVolumeClaims.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// When the PostgresCluster is deleted. `Retain` (default) keeps the data.
    #[serde(default)]
    pub when_deleted: PvcPolicy,
    /// When an instance is removed by scaling down. Default `Delete`: a removed replica holds
    /// no data the primary lacks, and a stale volume would have to be re-cloned anyway.
    #[serde(default = "default_when_scaled")]
    pub when_scaled: PvcPolicy,
}

fn default_when_scaled() -> PvcPolicy {
    PvcPolicy::Delete
}

impl PostgresClusterSpec {
    /// Whether connections without TLS are refused.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.as_ref().map(|t| t.mode).unwrap_or_default()
    }

    /// The claims' retention policy, with its defaults when the spec has none.
    pub fn pvc_retention(&self) -> PvcRetentionPolicy {
        self.persistent_volume_claim_retention_policy
            .clone()
            .unwrap_or_default()
    }
}

impl Default for PvcRetentionPolicy {
    fn default() -> Self {
        Self {
            when_deleted: PvcPolicy::Retain,
            when_scaled: default_when_scaled(),
        }
    }
}

/// Keep or delete a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PvcPolicy {
    #[default]
    Retain,
    Delete,
}

/// Observed state of a PostgresCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    /// Summary of the cluster's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// `Ready`, `Progressing`, `Degraded` (and others), as metav1.Condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pod name of the current primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// Instances that exist (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Instances ready to serve.
    #[serde(default)]
    pub ready_instances: i32,
    /// Label selector of the instance pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// PostgreSQL major version the instances run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// Image the instances run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Per-instance state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub instances: Vec<InstanceStatus>,
    /// Connection endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Most recent completed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// The WAL archive and what can be recovered (written by the backup controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ClusterBackupStatus>,
    /// The backup `spec.bootstrap.restore` restores, once the backup controller has checked
    /// the source and found one that reaches the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// See [`PostgresClusterStatus::restore`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The source's pgBackRest stanza.
    pub stanza: String,
    /// Label of the backup restored.
    pub backup_id: String,
    /// When that backup finished: the earliest point the restore can stop at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_stop_time: Option<Time>,
}

/// The WAL archive as the primary reports it, and the recoverability window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBackupStatus {
    /// Where this cluster's backups and WAL archive are (`s3://<bucket>/<path>`),
    /// recorded once its stanza there was created, and kept when `spec.backup` is removed:
    /// another repository in `spec.backup` waits for the annotation
    /// `pgpilot.io/backup-repository` naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The repository left by the last accepted change of repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_repository: Option<String>,
    /// pgBackRest stanza of this cluster in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza: Option<String>,
    /// Last WAL segment archived (`pg_stat_archiver`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_time: Option<Time>,
    /// Last WAL segment whose archiving failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_time: Option<Time>,
    /// Earliest point a restore can reach: the end of the oldest backup in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<Time>,
    /// Latest point a restore can reach: the last archived WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recoverability_point: Option<Time>,
}

/// A change of backup repository not accepted yet: `spec.backup` names `to`, the cluster's
/// backups and WAL archive are in `from` (`status.backup.repository`), and the annotation
/// [`labels::BACKUP_REPOSITORY`](crate::labels::BACKUP_REPOSITORY) does not name `to`.
/// Until it does, neither archiving nor backups move: the old backups would silently stop
/// covering the cluster (whatever the order of the applies that changed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryChange {
    pub from: String,
    pub to: String,
}

impl RepositoryChange {
    pub fn of(cluster: &PostgresCluster) -> Option<RepositoryChange> {
        let to = cluster.spec.backup.as_ref()?.repository.s3.location();
        let from = cluster
            .status
            .as_ref()?
            .backup
            .as_ref()?
            .repository
            .clone()?;
        let accepted = cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::labels::BACKUP_REPOSITORY))
            == Some(&to);
        (from != to && !accepted).then_some(RepositoryChange { from, to })
    }

    /// What to do, for a condition.
    pub fn message(&self, namespace: &str, cluster: &str) -> String {
        format!(
            "spec.backup names repository {to}, but this cluster's backups and WAL archive are in {from} (status.backup.repository); nothing is archived or backed up until you accept that they no longer cover it: kubectl -n {namespace} annotate pgc {cluster} {key}={to} --overwrite",
            to = self.to,
            from = self.from,
            key = crate::labels::BACKUP_REPOSITORY,
        )
    }
}

/// Summary phase of a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Children are being created; no instance is ready yet.
    Creating,
    /// Every instance is ready.
    Ready,
    /// The primary serves, but some instances are not ready.
    Degraded,
    /// No primary is serving.
    Unavailable,
    /// Reconciliation is paused by spec.paused.
    Paused,
    /// The cluster is being deleted.
    Deleting,
}

/// Whether Patroni may promote a replica with this `role` (see [`InstanceStatus::role`]) in
/// synchronous mode: the named synchronous standby (priority) or a quorum voter (quorum).
pub fn is_synchronous_standby(role: &str) -> bool {
    matches!(role, "sync_standby" | "quorum_standby")
}

/// State of one instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Pod name.
    pub name: String,
    /// Patroni role: `primary`, `replica`, `sync_standby`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Patroni state: `running`, `streaming`, `starting`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Pod is Ready.
    #[serde(default)]
    pub ready: bool,
    /// PostgreSQL timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Replication lag behind the primary, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Full PostgreSQL server version, e.g. `17.6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
}

/// Service endpoints of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `host:port` of the primary (read-write).
    pub read_write: String,
    /// `host:port` of the replicas (read-only).
    pub read_only: String,
    /// `host:port` of any instance.
    pub any: String,
}

/// A backup, as referenced from the cluster status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// PostgresBackup name.
    pub name: String,
    /// pgBackRest label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_standby_and_a_quorum_voter_may_be_promoted_a_plain_replica_not() {
        assert!(is_synchronous_standby("sync_standby") && is_synchronous_standby("quorum_standby"));
        assert!(!is_synchronous_standby("replica"));
    }

    #[test]
    fn another_repository_than_the_recorded_one_waits_for_the_annotation_naming_it() {
        let cluster = |bucket: &str, recorded: Option<&str>, accepted: Option<&str>| {
            let mut c: PostgresCluster = serde_json::from_value(serde_json::json!({
                "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
                "metadata": {"name": "db", "annotations": accepted.map(|a| serde_json::json!({"pgpilot.io/backup-repository": a}))},
                "spec": {"postgresql": {"version": 17}, "storage": {"size": "1Gi"},
                    "backup": {"repository": {"s3": {"endpoint": "s3.example.com", "bucket": bucket,
                        "region": "eu", "path": "/pg/", "credentials": {"secretName": "s3"}}}}},
            }))
            .unwrap();
            c.status = Some(PostgresClusterStatus {
                backup: recorded.map(|r| ClusterBackupStatus {
                    repository: Some(r.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            c
        };
        assert_eq!(RepositoryChange::of(&cluster("one", None, None)), None);
        assert_eq!(
            RepositoryChange::of(&cluster("one", Some("s3://one/pg"), None)),
            None
        );
        let change = RepositoryChange::of(&cluster("two", Some("s3://one/pg"), None));
        assert_eq!(
            change,
            Some(RepositoryChange {
                from: "s3://one/pg".into(),
                to: "s3://two/pg".into()
            })
        );
        assert!(change.unwrap().message("prod", "db").ends_with(
            "kubectl -n prod annotate pgc db pgpilot.io/backup-repository=s3://two/pg --overwrite"
        ));
        // An acceptance of another change does not accept this one.
        let stale = cluster("two", Some("s3://one/pg"), Some("s3://three/pg"));
        assert!(RepositoryChange::of(&stale).is_some());
        let accepted = cluster("two", Some("s3://one/pg"), Some("s3://two/pg"));
        assert_eq!(RepositoryChange::of(&accepted), None);
    }
}

/// Condition types one controller writes on a PostgresCluster and another reads.
pub mod condition {
    /// The backup controller's report on WAL archiving (its presence says one runs).
    pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";
    /// The backup controller's check of `spec.bootstrap.restore`: the source's stanza, the
    /// backup to restore, the recovery target within what the repository holds.
    pub const RESTORE_SOURCE_READY: &str = "RestoreSourceReady";
}
