//! Command-line interface.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// The controllers pgpilot has, whether or not this build includes them yet.
pub const KNOWN_CONTROLLERS: &[&str] = &["cluster", "backup", "upgrade", "secret-rotation"];

#[derive(Parser, Debug)]
#[command(
    name = "pgpilot-manager",
    version,
    about = "pgpilot: a Kubernetes operator for highly available PostgreSQL",
    long_about = "Runs any subset of pgpilot's controllers (cluster, backup, upgrade, secret-rotation) \
                  against the Kubernetes API found in KUBECONFIG or the in-cluster service account.\n\n\
                  Tracing: set OTEL_EXPORTER_OTLP_ENDPOINT to export spans over OTLP \
                  (OTEL_EXPORTER_OTLP_PROTOCOL grpc or http/protobuf, OTEL_SERVICE_NAME, \
                  OTEL_TRACES_SAMPLER are honoured). Log filter: RUST_LOG (default info)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers (the default).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per kind.
    Crds {
        /// Write `<dir>/<plural>.yaml` files instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Print the ClusterRole and Role the given controllers need (what the Helm chart grants).
    Rbac {
        /// Controllers to include.
        #[arg(long, value_delimiter = ',', value_parser = parse_controller)]
        controllers: Vec<String>,
        /// Name of the ClusterRole and Role.
        #[arg(long, default_value = "pgpilot-manager")]
        name: String,
        /// Namespace of the Role for the leader-election Lease.
        #[arg(long, default_value = "pgpilot-system")]
        namespace: String,
        /// Also print bindings to `user:<name>` or `serviceaccount:<namespace>/<name>`.
        #[arg(long)]
        bind: Option<crate::rbac::Grantee>,
        /// Print the admission webhooks' ClusterRole and Role (named `<name>-webhook`) instead.
        #[arg(long, conflicts_with = "controllers")]
        webhook: bool,
        /// With --webhook: the ValidatingWebhookConfiguration it keeps the CA bundle of.
        #[arg(long, default_value = "pgpilot")]
        webhook_configuration: String,
        /// With --webhook: the Secret of its serving certificate.
        #[arg(long, default_value = "pgpilot-webhook-tls")]
        webhook_secret: String,
    },
    /// Print the ValidatingWebhookConfiguration of pgpilot's admission webhooks.
    Webhooks {
        /// Its name.
        #[arg(long, default_value = "pgpilot")]
        name: String,
        /// The webhook Service, as NAMESPACE/NAME.
        #[arg(
            long,
            default_value = "pgpilot-system/pgpilot-webhook",
            conflicts_with = "url"
        )]
        service: String,
        /// Or the URL the API server calls instead of a Service, e.g. https://127.0.0.1:9443.
        #[arg(long)]
        url: Option<String>,
        /// Review only objects of this namespace (repeatable). Default: all.
        #[arg(long = "namespace", value_name = "NAMESPACE")]
        namespaces: Vec<String>,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Controllers to run, comma-separated: any of cluster, backup, upgrade, secret-rotation.
    /// Default: every controller this build has.
    #[arg(long, value_delimiter = ',', value_parser = parse_controller, env = "PGPILOT_CONTROLLERS")]
    pub controllers: Vec<String>,

    /// Watch only this namespace (repeatable). Default: all namespaces.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,

    /// Run controllers only while holding the leader Lease, so replicas can stand by.
    #[arg(long, default_value_t = false)]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = "pgpilot-manager")]
    pub leader_election_lease_name: String,

    /// Namespace of the Lease. Default: the pod's namespace, else `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long a lease outlives its holder, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub leader_election_lease_duration: u64,

    /// Identity in the Lease. Default: the pod name (POD_NAME) or the host name, plus a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,

    /// Where `/metrics` is served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: SocketAddr,

    /// Where `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_probe_bind_address: SocketAddr,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Reconciles running at once, per controller.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Requests per second the controllers may send the API server, all together (a token
    /// bucket; 0: no limit). Beyond it requests queue in the manager. The API server's own
    /// fairness (the chart's FlowSchema) applies as well.
    #[arg(long, default_value_t = 200)]
    pub kube_api_qps: u32,

    /// Requests that may go at once after a quiet spell (the bucket's size; at least
    /// --kube-api-qps).
    #[arg(long, default_value_t = 400)]
    pub kube_api_burst: u32,

    /// Image for clusters that name only a PostgreSQL major version, as VERSION=IMAGE
    /// (repeatable), e.g. `17=localhost/pgpilot/postgres:17`.
    #[arg(long = "default-image", value_name = "VERSION=IMAGE", value_parser = parse_default_image)]
    pub default_images: Vec<(i32, String)>,

    /// Image of the PostgreSQL exporter run beside every instance (`spec.monitoring`); built
    /// by images/postgres-exporter/build.sh.
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "localhost/pgpilot/postgres-exporter:0.17.1"
    )]
    pub exporter_image: String,

    /// Labels of the manager's own pods, as KEY=VALUE pairs (comma-separated): with the pod's
    /// namespace (POD_NAMESPACE), every cluster's NetworkPolicy lets these pods reach
    /// PostgreSQL, Patroni's API and pgBackRest. The Helm chart passes its selector labels.
    /// Without them (a manager outside the cluster) no such rule is written.
    #[arg(long, env = "PGPILOT_OPERATOR_POD_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub operator_pod_labels: Vec<(String, String)>,

    /// The manager pod's namespace (from the downward API).
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,

    /// Give up starting when the API server does not answer within this many seconds.
    #[arg(long, default_value_t = 10)]
    pub startup_timeout: u64,

    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// The admission webhooks. Every replica serves them, leader or not.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Serve the admission webhooks (HTTPS) here, e.g. `0.0.0.0:9443`. Default: none served.
    #[arg(long, value_name = "ADDRESS")]
    pub webhook_bind_address: Option<SocketAddr>,

    /// The Service in front of the webhooks, in the pod's namespace: the serving certificate
    /// names it.
    #[arg(long, default_value = "pgpilot-webhook")]
    pub webhook_service: String,

    /// The Secret (in the pod's namespace) the manager keeps the webhooks' CA and serving
    /// certificate in, creating and renewing them.
    #[arg(long, default_value = "pgpilot-webhook-tls")]
    pub webhook_secret: String,

    /// Another name (DNS or IP address) the serving certificate must carry (repeatable), e.g.
    /// `127.0.0.1` for a manager outside the cluster.
    #[arg(long = "webhook-extra-name", value_name = "NAME")]
    pub webhook_extra_names: Vec<String>,

    /// The ValidatingWebhookConfiguration whose CA bundle the manager keeps. Without it the
    /// bundle is left to another tool.
    #[arg(long, value_name = "NAME")]
    pub webhook_configuration: Option<String>,

    /// Read `tls.crt`, `tls.key` and `ca.crt` from this directory (e.g. a cert-manager
    /// Certificate's Secret, mounted) instead of bootstrapping them.
    #[arg(long, value_name = "DIR", conflicts_with = "webhook_configuration")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!(
            "'{s}': expected KEY=VALUE, e.g. app.kubernetes.io/name=pgpilot"
        )),
    }
}

fn parse_default_image(s: &str) -> Result<(i32, String), String> {
    let (version, image) = s.split_once('=').ok_or_else(|| {
        format!("'{s}': expected VERSION=IMAGE, e.g. 17=localhost/pgpilot/postgres:17")
    })?;
    let version: i32 = version
        .trim()
        .parse()
        .map_err(|_| format!("'{s}': the version must be a major version number such as 17"))?;
    if image.trim().is_empty() {
        return Err(format!("'{s}': the image is empty"));
    }
    Ok((version, image.trim().to_owned()))
}

fn parse_controller(s: &str) -> Result<String, String> {
    let name = s.trim();
    if KNOWN_CONTROLLERS.contains(&name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "unknown controller '{name}'; choose from {}",
            KNOWN_CONTROLLERS.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("pgpilot-manager").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn controllers_take_a_comma_separated_subset() {
        let cli = parse(&["--controllers=cluster,backup"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.run.controllers, vec!["cluster", "backup"]);
    }

    #[test]
    fn an_unknown_controller_is_refused_with_the_choices() {
        let err = parse(&["--controllers=cluster,backups"])
            .err()
            .unwrap_or_default();
        assert!(err.contains("unknown controller 'backups'"), "{err}");
        assert!(
            err.contains("cluster, backup, upgrade, secret-rotation"),
            "{err}"
        );
    }

    #[test]
    fn operator_pod_labels_are_key_value_pairs() {
        let cli = parse(&[
            "--operator-pod-labels",
            "app.kubernetes.io/name=pgpilot,app.kubernetes.io/instance=ops",
        ])
        .unwrap();
        assert_eq!(
            cli.run.operator_pod_labels,
            [
                ("app.kubernetes.io/name".to_owned(), "pgpilot".to_owned()),
                ("app.kubernetes.io/instance".to_owned(), "ops".to_owned())
            ]
        );
        let err = parse(&["--operator-pod-labels=pgpilot"])
            .err()
            .unwrap_or_default();
        assert!(err.contains("expected KEY=VALUE"), "{err}");
    }

    #[test]
    fn default_images_are_version_image_pairs() {
        let cli = parse(&[
            "--default-image",
            "17=localhost/pgpilot/postgres:17",
            "--default-image=15=pg:15.20",
        ])
        .unwrap();
        assert_eq!(
            cli.run.default_images,
            vec![
                (17, "localhost/pgpilot/postgres:17".to_owned()),
                (15, "pg:15.20".to_owned())
            ]
        );
        let err = parse(&["--default-image", "latest"])
            .err()
            .unwrap_or_default();
        assert!(err.contains("expected VERSION=IMAGE"), "{err}");
    }

    #[test]
    fn namespaces_repeat() {
        let cli =
            parse(&["--namespace", "a", "--namespace", "b"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.run.namespaces, vec!["a", "b"]);
    }

    #[test]
    fn bad_addresses_and_formats_are_refused() {
        assert!(parse(&["--metrics-bind-address", "nowhere"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--leader-election-lease-duration", "1"]).is_err());
    }

    #[test]
    fn subcommands_parse() {
        assert!(matches!(
            parse(&["crds"]).map(|c| c.command),
            Ok(Some(Command::Crds { .. }))
        ));
        assert!(matches!(
            parse(&["rbac", "--controllers", "cluster"]).map(|c| c.command),
            Ok(Some(Command::Rbac { .. }))
        ));
        assert!(matches!(
            parse(&["rbac", "--webhook"]).map(|c| c.command),
            Ok(Some(Command::Rbac { webhook: true, .. }))
        ));
        // The webhooks' RBAC is not a controller's.
        assert!(parse(&["rbac", "--webhook", "--controllers", "cluster"]).is_err());
        assert!(matches!(
            parse(&["webhooks", "--url", "https://127.0.0.1:9443"]).map(|c| c.command),
            Ok(Some(Command::Webhooks { url: Some(_), .. }))
        ));
    }

    #[test]
    fn webhooks_read_their_certificate_from_files_or_keep_it_themselves() {
        let cli = parse(&[
            "--webhook-bind-address=0.0.0.0:9443",
            "--webhook-cert-dir=/tls",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.run.webhook.webhook_secret, "pgpilot-webhook-tls");
        assert!(cli.run.webhook.webhook_cert_dir.is_some());
        // cert-manager keeps the bundle then, not the manager.
        let err = parse(&["--webhook-cert-dir=/tls", "--webhook-configuration=pgpilot"])
            .err()
            .unwrap_or_default();
        assert!(err.contains("cannot be used with"), "{err}");
    }
}
