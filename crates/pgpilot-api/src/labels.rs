//! Names of labels, annotations, finalizers and field managers, kept in one place so no
//! controller spells them differently.

/// Label on every child object: the PostgresCluster it belongs to.
pub const CLUSTER: &str = "pgpilot.io/cluster";
/// Label on instance pods: `primary` or `replica`, kept current for the rw/ro Services.
pub const ROLE: &str = "pgpilot.io/role";
/// Label on instance pods and PVCs: the instance (StatefulSet ordinal) name.
pub const INSTANCE: &str = "pgpilot.io/instance";
/// Label saying which pgpilot component created an object.
pub const COMPONENT: &str = "pgpilot.io/component";
/// On PostgresBackups a BackupSchedule created: its name.
pub const SCHEDULE: &str = "pgpilot.io/schedule";
/// Annotation on an object a reconcile created for another controller (a scheduled
/// PostgresBackup): the creating span as a W3C `traceparent`, which that controller's
/// reconciles link to.
pub const TRACEPARENT: &str = "pgpilot.io/traceparent";
/// Label on instance pods whose Patroni `/metrics` may be scraped
/// (`spec.monitoring.patroni.enabled`): the chart's Patroni PodMonitor selects it.
pub const PATRONI_METRICS: &str = "pgpilot.io/patroni-metrics";
/// Standard `app.kubernetes.io/managed-by` label.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "pgpilot";

/// Annotation on a cluster's StatefulSet: the PostgreSQL major version its pods run. Only an
/// upgrade changes it; the cluster controller never moves instances to another major.
pub const POSTGRES_VERSION: &str = "pgpilot.io/postgres-version";

/// Annotations the upgrade controller puts on a PostgresCluster (its own fields, by
/// server-side apply) for the cluster controller to act on:
/// the active PostgresUpgrade of the cluster;
pub const UPGRADE: &str = "pgpilot.io/upgrade";
/// `<major>@<image>` the instances may move to now (see [`upgrade_target`]). The cluster
/// controller moves them only when the spec asks for the same;
pub const UPGRADE_TARGET: &str = "pgpilot.io/upgrade-target";
/// pod replacements, restarts and re-clones wait; the value says why (a paused upgrade).
pub const ROLL_HOLD: &str = "pgpilot.io/roll-hold";
/// at most this many instances run (a major upgrade stops them: `1` leaves the primary alone
/// on ordinal 0, switching over first if needed, `0` then stops it too).
pub const INSTANCE_LIMIT: &str = "pgpilot.io/instance-limit";

/// Annotation on a PostgresCluster accepting a new backup repository: its value is the new
/// repository's location (`s3://<bucket>/<path>`, see `S3Repository::location`), as
/// the `ContinuousArchiving` condition asks for when `spec.backup` names another repository
/// than the one holding the cluster's backups.
pub const BACKUP_REPOSITORY: &str = "pgpilot.io/backup-repository";

/// Annotation on a SecretRotation asking for a rotation now: any new value (a timestamp, a
/// ticket) is one request.
pub const ROTATE_NOW: &str = "pgpilot.io/rotate-now";
/// Annotations the secret-rotation controller writes on a rotated Secret with each new value,
/// in the same write, so a rotation is recorded exactly when it happened: the SecretRotation;
pub const ROTATED_BY: &str = "pgpilot.io/rotated-by";
/// how many times it was rotated;
pub const ROTATION_COUNT: &str = "pgpilot.io/rotation-count";
/// when (RFC 3339);
pub const ROTATED_AT: &str = "pgpilot.io/rotated-at";
/// the `rotate-now` request it answered;
pub const ROTATION_REQUEST: &str = "pgpilot.io/rotation-request";
/// AlternatingUsers: the login the Secret pointed at before, until it is invalidated.
pub const PREVIOUS_USER: &str = "pgpilot.io/previous-user";
/// Prefix of the pod-template annotation a SecretRotation puts on its consumers:
/// `rotation.pgpilot.io/<SecretRotation>` = a hash of the Secret's content.
pub const CONSUMER_PREFIX: &str = "rotation.pgpilot.io/";

/// The value of [`UPGRADE_TARGET`].
pub fn upgrade_target(version: i32, image: &str) -> String {
    format!("{version}@{image}")
}

/// Role label values.
pub const ROLE_PRIMARY: &str = "primary";
pub const ROLE_REPLICA: &str = "replica";

/// Field-manager name for server-side apply by one controller, e.g. `pgpilot-cluster`.
pub fn field_manager(controller: &str) -> String {
    format!("pgpilot-{controller}")
}

/// Finalizer a controller puts on objects whose deletion needs external cleanup.
pub fn finalizer(controller: &str) -> String {
    format!("{controller}.pgpilot.io/cleanup")
}
