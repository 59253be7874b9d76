//! `logs`: every instance's log, merged as lines arrive, each prefixed with its pod.

use anyhow::{Result, bail};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::LogParams;
use pgpilot_postgres::version::CONTAINER;

use crate::client::Target;

#[derive(clap::Args)]
pub struct Args {
    cluster: String,
    /// Keep streaming new lines.
    #[arg(short, long)]
    follow: bool,
    /// Lines to show from the end of each log.
    #[arg(long, default_value_t = 100)]
    tail: i64,
    /// Only lines newer than this many seconds.
    #[arg(long)]
    since: Option<i64>,
    /// Container (postgres, or exporter).
    #[arg(short, long, default_value = CONTAINER)]
    container: String,
}

pub async fn run(target: &Target, args: Args) -> Result<()> {
    target.cluster(&args.cluster).await?;
    let pods = target.instances(&args.cluster).await?;
    if pods.is_empty() {
        bail!("cluster {} has no instance pods", args.cluster);
    }
    let api = target.api::<Pod>();
    let params = LogParams {
        container: Some(args.container.clone()),
        follow: args.follow,
        tail_lines: Some(args.tail),
        since_seconds: args.since,
        ..Default::default()
    };
    let width = pods.iter().map(|p| p.name_any().len()).max().unwrap_or(0);
    let mut streams = Vec::new();
    for pod in &pods {
        let name = pod.name_any();
        let lines = api.log_stream(&name, &params).await?.lines();
        streams.push(
            lines
                .map_ok(move |l| format!("{name:<width$} | {l}"))
                .boxed(),
        );
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some(line) = merged.next().await {
        println!("{}", line?);
    }
    Ok(())
}
