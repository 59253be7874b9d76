//! `version`: the API versions the cluster serves for pgpilot.io and the operator's image.

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::client::Target;

pub async fn run(target: &Target) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(target.client.clone());
    match crds.list(&ListParams::default()).await {
        Ok(list) => {
            let mut ours: Vec<_> = list
                .items
                .into_iter()
                .filter(|c| c.spec.group == "pgpilot.io")
                .collect();
            ours.sort_by_key(|c| c.spec.names.kind.clone());
            if ours.is_empty() {
                println!("pgpilot.io: no CRDs installed");
            }
            for crd in ours {
                let versions: Vec<String> = crd
                    .spec
                    .versions
                    .iter()
                    .filter(|v| v.served)
                    .map(|v| {
                        if v.storage {
                            format!("{} (storage)", v.name)
                        } else {
                            v.name.clone()
                        }
                    })
                    .collect();
                println!("{}: {}", crd.spec.names.kind, versions.join(", "));
            }
        }
        Err(e) => println!("pgpilot.io CRDs: unknown ({e})"),
    }
    // The chart's Deployment, wherever it was installed.
    let deployments: Api<Deployment> = Api::all(target.client.clone());
    let selector = "app.kubernetes.io/name=pgpilot,app.kubernetes.io/component=manager";
    match deployments
        .list(&ListParams::default().labels(selector))
        .await
    {
        Ok(list) if list.items.is_empty() => {
            println!("operator: no Deployment labelled {selector}")
        }
        Ok(list) => {
            for d in list.items {
                let image = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                println!(
                    "operator: {}/{} {image}",
                    d.namespace().unwrap_or_default(),
                    d.name_any()
                );
            }
        }
        Err(e) => println!("operator: unknown ({e})"),
    }
    Ok(())
}
