//! Where the time of a creation goes: a poller that records, relative to a start instant,
//! when the pods of a selector first reached each step (all of them created, scheduled,
//! container running, Ready; the first pod labelled primary), and when Patroni named a
//! synchronous standby.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use pgpilot_api::labels;
use tokio::task::JoinHandle;

/// Steps in the order they happen.
pub const STEPS: [&str; 6] = [
    "pods created",
    "pods scheduled (volumes bound)",
    "containers running",
    "first pod labelled primary",
    "pods Ready",
    SYNC_NAMED,
];

/// Patroni wrote a synchronous standby into its `<scope>-sync` ConfigMap.
const SYNC_NAMED: &str = "synchronous standby named";

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
    /// Polls the pods of `selector` (and Patroni's `sync_configmap`, if any) every 100 ms from
    /// now on.
    pub fn start(
        client: &Client,
        ns: &str,
        selector: &str,
        pods: usize,
        sync_configmap: Option<String>,
        t0: Instant,
    ) -> Self {
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
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
                if let Some(name) = &sync_configmap
                    && let Ok(Some(cm)) = config_maps.get_opt(name).await
                    && cm
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("sync_standby"))
                        .is_some_and(|s| !s.is_empty())
                {
                    let at = t0.elapsed().as_secs_f64();
                    if let Ok(mut m) = s.lock() {
                        m.entry(SYNC_NAMED).or_insert(at);
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

/// Steps of a failover or switchover, in the order they usually happen.
pub const EVENT_STEPS: [&str; 4] = [
    "old primary unlabelled or terminating",
    "-rw has no endpoint",
    "new primary labelled",
    "-rw endpoint is the new primary",
];

/// Polls the cluster's pods and the `-rw` Service's EndpointSlices every 50 ms and records
/// when, after the start, the role label and the Service's endpoint moved away from
/// `old_ip`.
pub fn start_event(
    client: &Client,
    ns: &str,
    cluster: &str,
    old_ip: &str,
    t0: Instant,
) -> Milestones {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    let pod_lp = ListParams::default().labels(&format!("{}={cluster}", labels::CLUSTER));
    let slice_lp =
        ListParams::default().labels(&format!("kubernetes.io/service-name={cluster}-rw"));
    let old_ip = old_ip.to_owned();
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let mut reached: Vec<(&'static str, bool)> = vec![];
            if let Ok(list) = pods.list(&pod_lp).await {
                let ip = |p: &Pod| p.status.as_ref().and_then(|s| s.pod_ip.clone());
                let primaries: Vec<&Pod> = list
                    .items
                    .iter()
                    .filter(|p| primary(p) && p.metadata.deletion_timestamp.is_none())
                    .collect();
                reached.push((
                    EVENT_STEPS[0],
                    !primaries
                        .iter()
                        .any(|p| ip(p).as_deref() == Some(old_ip.as_str())),
                ));
                reached.push((
                    EVENT_STEPS[2],
                    primaries.iter().any(|p| ip(p).is_some_and(|i| i != old_ip)),
                ));
            }
            if let Ok(list) = slices.list(&slice_lp).await {
                let ready: Vec<String> = list
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                    .flat_map(|e| e.addresses.iter().cloned())
                    .collect();
                reached.push((EVENT_STEPS[1], ready.is_empty()));
                reached.push((
                    EVENT_STEPS[3],
                    !ready.is_empty() && ready.iter().all(|a| *a != old_ip),
                ));
            }
            let at = t0.elapsed().as_secs_f64();
            if let Ok(mut m) = s.lock() {
                for (step, ok) in reached {
                    if ok {
                        m.entry(step).or_insert(at);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Milestones { seen, task }
}
