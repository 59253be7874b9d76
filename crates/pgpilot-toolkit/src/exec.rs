//! Commands run in a pod's container through the API server (exec over WebSocket), for the
//! controllers that drive a tool inside the database pods (pgBackRest, pg_upgrade). The
//! span names the pod, container and program, never the arguments (they may hold secrets).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use crate::error::Error;

/// What a finished command printed, and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Runs `command` in `container` of `pod` and waits for it to finish.
pub async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    command: &[&str],
) -> Result<Output, Error> {
    let program = command.first().copied().unwrap_or_default();
    let failed = |reason: String| Error::Exec {
        pod: pod.to_owned(),
        container: container.to_owned(),
        program: program.to_owned(),
        reason,
    };
    let params = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    async {
        let mut process = pods
            .exec(pod, command.to_vec(), &params)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = process.take_status();
        let (mut out, mut err) = (process.stdout(), process.stderr());
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let read_out = async {
            match out.as_mut() {
                Some(o) => o.read_to_string(&mut stdout).await.map(drop),
                None => Ok(()),
            }
        };
        let read_err = async {
            match err.as_mut() {
                Some(e) => e.read_to_string(&mut stderr).await.map(drop),
                None => Ok(()),
            }
        };
        let (o, e) = tokio::join!(read_out, read_err);
        o.and(e)
            .map_err(|e| failed(format!("reading its output: {e}")))?;
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        process.join().await.map_err(|e| failed(e.to_string()))?;
        let exit_code = exit_code(status.as_ref())
            .ok_or_else(|| failed("the API server reported no exit status".into()))?;
        tracing::Span::current().record("exit_code", exit_code);
        Ok(Output {
            exit_code,
            stdout,
            stderr,
        })
    }
    .instrument(tracing::debug_span!(
        "kube.exec",
        pod,
        container,
        program,
        exit_code = tracing::field::Empty
    ))
    .await
}

/// The exit code in the status the API server sends when the command ends: `Success`, or
/// `Failure` with reason `NonZeroExitCode` and the code as the `ExitCode` cause.
fn exit_code(status: Option<&Status>) -> Option<i32> {
    let status = status?;
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))?
        .message
        .as_deref()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_the_final_status() {
        let ok: Status = serde_json::from_value(serde_json::json!({"status": "Success"})).unwrap();
        assert_eq!(exit_code(Some(&ok)), Some(0));
        let failed: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }))
        .unwrap();
        assert_eq!(exit_code(Some(&failed)), Some(3));
        assert_eq!(exit_code(None), None);
    }
}
