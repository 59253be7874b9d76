//! Where the time of a creation goes: a poller that records, relative to a start instant,
//! when the pods of a selector first reached each step (all of them created, scheduled,
//! container running, Ready; the first pod labelled primary).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};
use pgpilot_api::labels;
use tokio::task::JoinHandle;

/// Steps in the order they happen.
pub const STEPS: [&str; 5] = [
    "pods created",
    "pods scheduled (volumes bound)",
    "containers running",
    "first pod labelled primary",
    "pods Ready",
];

pub struct Milestones {
    seen: Arc<Mutex<BTreeMap<&'static str, f64>>>,
    task: JoinHandle<()>,
}

fn condition(p: &Pod, type_: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
}

fn primary(p: &Pod) -> bool {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::ROLE))
        .is_some_and(|r| r == labels::ROLE_PRIMARY)
}

impl Milestones {
    /// Polls the pods of `selector` every 100 ms from now on.
    pub fn start(client: &Client, ns: &str, selector: &str, pods: usize, t0: Instant) -> Self {
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        let lp = ListParams::default().labels(selector);
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(list) = api.list(&lp).await {
                    let items: Vec<&Pod> = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .collect();
                    let all = |f: &dyn Fn(&Pod) -> bool| {
                        items.len() >= pods && items.iter().all(|p| f(p))
                    };
                    let reached = [
                        ("pods created", all(&|_| true)),
                        (
                            "pods scheduled (volumes bound)",
                            all(&|p| condition(p, "PodScheduled")),
                        ),
                        ("containers running", all(&running)),
                        (
                            "first pod labelled primary",
                            items.iter().any(|p| primary(p)),
                        ),
                        ("pods Ready", all(&|p| condition(p, "Ready"))),
                    ];
                    let at = t0.elapsed().as_secs_f64();
                    if let Ok(mut m) = s.lock() {
                        for (step, ok) in reached {
                            if ok {
                                m.entry(step).or_insert(at);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { seen, task }
    }

    /// Stops polling; the steps reached, in seconds after the start.
    pub fn stop(self) -> BTreeMap<String, f64> {
        self.task.abort();
        self.seen
            .lock()
            .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
            .unwrap_or_default()
    }
}
