//! Names of a cluster's children, in one place.

/// Port PostgreSQL listens on.
pub const POSTGRES_PORT: i32 = 5432;
/// Port of Patroni's REST API.
pub const PATRONI_PORT: i32 = 8008;
/// Database superuser created by initdb.
pub const SUPERUSER: &str = "postgres";
/// Role Patroni uses for streaming replication.
pub const REPLICATION_USER: &str = "replicator";
/// Role the metrics exporter logs in as: a member of `pg_monitor` only.
pub const MONITOR_USER: &str = "pgpilot_monitor";
/// Port of the metrics exporter beside each instance.
pub const EXPORTER_PORT: i32 = 9187;
/// Value of `pgpilot.io/component` on instance pods.
pub const COMPONENT_INSTANCE: &str = "instance";
/// Where the data volume is mounted in instance pods, and the data directory inside it (a
/// subdirectory, so initdb never meets the volume's lost+found).
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Patroni's configuration directory in instance pods (`patronictl -c` takes it too).
pub const PATRONI_CONFIG_DIR: &str = "/etc/patroni";
/// PostgreSQL's Unix socket directory in instance pods.
pub const SOCKET_DIR: &str = "/run/postgresql";

/// Names derived from the cluster name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
}

impl Names {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
        }
    }
    /// The StatefulSet of the instances (pods `<cluster>-0`, `<cluster>-1`, …).
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }
    /// Headless Service giving each pod a stable DNS name.
    pub fn pods_service(&self) -> String {
        format!("{}-pods", self.cluster)
    }
    /// Service of the primary (read-write).
    pub fn rw_service(&self) -> String {
        format!("{}-rw", self.cluster)
    }
    /// Service of the replicas (read-only).
    pub fn ro_service(&self) -> String {
        format!("{}-ro", self.cluster)
    }
    /// Service of every instance.
    pub fn r_service(&self) -> String {
        format!("{}-r", self.cluster)
    }
    /// ServiceAccount, Role and RoleBinding of the instance pods (Patroni's DCS rights).
    pub fn instance_identity(&self) -> String {
        format!("{}-instance", self.cluster)
    }
    /// ConfigMap with patroni.yaml.
    pub fn patroni_config(&self) -> String {
        format!("{}-patroni", self.cluster)
    }
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }
    pub fn network_policy(&self) -> String {
        self.cluster.clone()
    }
    /// Patroni's credentials file (`auth.yaml`), mounted beside patroni.yaml.
    pub fn patroni_auth(&self) -> String {
        format!("{}-patroni-auth", self.cluster)
    }
    pub fn superuser_secret(&self) -> String {
        format!("{}-superuser", self.cluster)
    }
    pub fn replication_secret(&self) -> String {
        format!("{}-replication", self.cluster)
    }
    /// Credentials of a declared role. Role names may hold `_`, Secret names may not.
    pub fn role_secret(&self, role: &str) -> String {
        format!("{}-{}-credentials", self.cluster, role.replace('_', "-"))
    }
    /// The Secret holding `role`'s credentials: the superuser's, the replication user's or a
    /// declared role's.
    pub fn credentials_secret(&self, role: &str) -> String {
        match role {
            SUPERUSER => self.superuser_secret(),
            REPLICATION_USER => self.replication_secret(),
            role => self.role_secret(role),
        }
    }
    /// ConfigMap with pgbackrest.conf.
    pub fn pgbackrest_config(&self) -> String {
        format!("{}-pgbackrest", self.cluster)
    }
    /// Secret with the TLS material of the pgBackRest servers and their clients.
    pub fn pgbackrest_tls(&self) -> String {
        format!("{}-pgbackrest-tls", self.cluster)
    }
    /// The cluster's CA: certificate and key (only pgpilot reads it).
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }
    /// The CA certificate alone, for clients to mount.
    pub fn ca_config_map(&self) -> String {
        format!("{}-ca-cert", self.cluster)
    }
    /// The instances' server certificate and key.
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.cluster)
    }
    /// The credentials of Patroni's REST API (its unsafe endpoints).
    pub fn patroni_api_secret(&self) -> String {
        format!("{}-patroni-api", self.cluster)
    }
    /// DNS name of an instance pod (through the headless Service).
    pub fn pod_host(&self, pod: &str, namespace: &str) -> String {
        format!("{pod}.{}.{namespace}.svc", self.pods_service())
    }
    /// Host name of the read-write Service inside the cluster.
    pub fn rw_host(&self, namespace: &str) -> String {
        format!("{}.{namespace}.svc", self.rw_service())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_secrets_have_valid_object_names() {
        let n = Names::new("db");
        assert_eq!(n.role_secret("app_reader"), "db-app-reader-credentials");
        assert_eq!(n.rw_host("prod"), "db-rw.prod.svc");
    }
}
