//! The cluster the plugin talks to: the kubeconfig's (KUBECONFIG, `--context`), and the
//! namespace to work in.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use pgpilot_api::{
    BackupSchedule, PostgresBackup, PostgresCluster, PostgresUpgrade, SecretRotation, labels,
};

/// The resources of the namespace that name a cluster: its backups and upgrades (oldest
/// first), schedules and the rotations of its roles.
pub struct Related {
    pub backups: Vec<PostgresBackup>,
    pub schedules: Vec<BackupSchedule>,
    pub upgrades: Vec<PostgresUpgrade>,
    pub rotations: Vec<SecretRotation>,
}

pub struct Target {
    pub client: Client,
    pub namespace: String,
    /// `--context`, for the kubectl this plugin runs (psql).
    pub context: Option<String>,
}

impl Target {
    pub async fn connect(namespace: Option<String>, context: Option<String>) -> Result<Target> {
        let options = KubeConfigOptions {
            context: context.clone(),
            ..Default::default()
        };
        let config = match Kubeconfig::read() {
            Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options).await?,
            // In a pod: its service account.
            Err(_) => Config::infer()
                .await
                .context("no kubeconfig and not in a pod")?,
        };
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        Ok(Target {
            client: Client::try_from(config)?,
            namespace,
            context,
        })
    }

    /// kubectl (or `$KUBECTL`) on the same context.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd =
            std::process::Command::new(std::env::var("KUBECTL").unwrap_or("kubectl".into()));
        if let Some(context) = &self.context {
            cmd.arg("--context").arg(context);
        }
        cmd
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn cluster(&self, name: &str) -> Result<PostgresCluster> {
        match self.api::<PostgresCluster>().get_opt(name).await? {
            Some(c) => Ok(c),
            None => bail!(
                "PostgresCluster {name} not found in namespace {} (use -n)",
                self.namespace
            ),
        }
    }

    /// The cluster's instance pods, by name.
    pub async fn instances(&self, cluster: &str) -> Result<Vec<Pod>> {
        let selector = format!(
            "{}={cluster},{}=instance",
            labels::CLUSTER,
            labels::COMPONENT
        );
        let mut pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        pods.sort_by_key(|p| p.name_any());
        Ok(pods)
    }

    pub async fn related(&self, cluster: &str) -> Result<Related> {
        let all = ListParams::default();
        let mut backups = self.api::<PostgresBackup>().list(&all).await?.items;
        backups.retain(|b| b.spec.cluster.name == cluster);
        backups.sort_by_key(|b| b.metadata.creation_timestamp.clone());
        let mut schedules = self.api::<BackupSchedule>().list(&all).await?.items;
        schedules.retain(|s| s.spec.cluster.name == cluster);
        let mut upgrades = self.api::<PostgresUpgrade>().list(&all).await?.items;
        upgrades.retain(|u| u.spec.cluster.name == cluster);
        upgrades.sort_by_key(|u| u.metadata.creation_timestamp.clone());
        let mut rotations = self.api::<SecretRotation>().list(&all).await?.items;
        rotations.retain(|r| {
            r.spec
                .target
                .postgres_role
                .as_ref()
                .is_some_and(|t| t.cluster == cluster)
        });
        Ok(Related {
            backups,
            schedules,
            upgrades,
            rotations,
        })
    }

    /// Events about the cluster and its children (objects named `<cluster>` or
    /// `<cluster>-…`), in the API server's order.
    pub async fn events_of(&self, cluster: &str) -> Result<Vec<Event>> {
        let prefix = format!("{cluster}-");
        Ok(self
            .api::<Event>()
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object
                    .name
                    .as_deref()
                    .is_some_and(|n| n == cluster || n.starts_with(&prefix))
            })
            .collect())
    }

    /// The pod serving as primary (its role label, which Patroni keeps current).
    pub async fn primary(&self, cluster: &str) -> Result<Pod> {
        self.instances(cluster)
            .await?
            .into_iter()
            .find(|p| role(p) == Some(labels::ROLE_PRIMARY))
            .with_context(|| format!("cluster {cluster} has no primary now"))
    }
}

/// An instance pod's role label.
pub fn role(pod: &Pod) -> Option<&str> {
    pod.labels().get(labels::ROLE).map(String::as_str)
}
