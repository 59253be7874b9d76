//! Kubernetes Events for significant actions, attributed to the controller that acted.
//! Notes are for people and must never carry a secret.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

/// Publishes Events on behalf of one controller.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// `controller` is e.g. `pgpilot-cluster`; `instance` tells replicas apart (the pod name).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// A Normal event: something the operator did on purpose.
    pub async fn normal<K>(&self, obj: &K, reason: &str, action: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(obj, None, EventType::Normal, reason, action, note.into())
            .await;
    }

    /// A Warning event: something failed or needs attention.
    pub async fn warning<K>(&self, obj: &K, reason: &str, action: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(obj, None, EventType::Warning, reason, action, note.into())
            .await;
    }

    /// An Event about `obj` that concerns one of its pods (replaced, restarted, …). The
    /// recorder folds repeats of an Event into a series by type, reason, action and the
    /// objects involved (not the note): naming the pod keeps one Event per pod.
    pub async fn about_pod<K>(
        &self,
        obj: &K,
        pod: &str,
        warning: bool,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let related = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.to_owned()),
            namespace: obj.meta().namespace.clone(),
            ..Default::default()
        };
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.publish(obj, Some(related), type_, reason, action, note.into())
            .await;
    }

    async fn publish<K>(
        &self,
        obj: &K,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(fit_note(note)),
            action: action.to_owned(),
            secondary: related,
        };
        // An Event that cannot be written must not fail the reconcile that produced it.
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// The API server refuses an Event whose note is over 1 KiB: a longer one is cut, on a
/// character boundary, and says so.
fn fit_note(mut note: String) -> String {
    const MAX: usize = 1024;
    const CUT: &str = " …(cut)";
    if note.len() > MAX {
        let mut end = MAX - CUT.len();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str(CUT);
    }
    note
}

#[cfg(test)]
mod note_tests {
    #[test]
    fn a_long_note_is_cut_to_what_the_api_server_takes() {
        assert_eq!(super::fit_note("short".into()), "short");
        let cut = super::fit_note("é".repeat(600));
        assert!(
            cut.len() <= 1024 && cut.ends_with(" …(cut)"),
            "{}",
            cut.len()
        );
    }
}
