//! `LocalLauncher` against real subprocesses.

use futures::StreamExt;
use spheron::{
    AccountId, Error, GpuModel, LaunchSpec, LeaseId, LocalLauncher, LogSource, Secret, Timestamp,
    Workload, WorkloadLauncher, WorkloadStatus,
};

fn spec(lease: u64) -> LaunchSpec {
    LaunchSpec {
        lease: LeaseId(lease),
        provider: AccountId::from_label("p"),
        model: GpuModel::H100Sxm,
        gpus: 2,
        node: Some("node-0".into()),
        ends_at: Timestamp(u64::MAX),
    }
}

async fn stdout(l: &LocalLauncher, id: &spheron::WorkloadId) -> Vec<String> {
    l.logs(id)
        .expect("logs")
        .filter(|x| futures::future::ready(x.source == LogSource::Stdout))
        .map(|x| x.line)
        .collect()
        .await
}

#[tokio::test]
async fn env_secrets_and_lease_variables_reach_the_workload() {
    let l = LocalLauncher::new();
    let mut w = Workload::command([
        "sh",
        "-c",
        "echo $MODE $SPHERON_LEASE_ID $SPHERON_GPU_MODEL $SPHERON_GPUS; echo ${TOKEN:+has-token}; pwd",
    ])
    .env("MODE", "train");
    w.secrets.insert("TOKEN".into(), Secret::new("s3cr3t"));
    let id = l.launch(&spec(7), &w).await.expect("launch");
    assert_eq!(l.wait(&id).await.expect("wait"), WorkloadStatus::Succeeded);
    let out = stdout(&l, &id).await;
    assert_eq!(out[0], "train 7 h100-sxm 2");
    assert_eq!(out[1], "has-token");
    // Runs in its own temporary directory, removed afterwards.
    assert!(out[2].contains("spheron-lease-7-"), "{}", out[2]);
    assert!(!std::path::Path::new(&out[2]).exists());
    // The secret's value never appears in a debug print of the workload.
    assert!(!format!("{w:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn exit_codes_map_to_statuses() {
    let l = LocalLauncher::new();
    let id = l
        .launch(&spec(1), &Workload::command(["sh", "-c", "exit 42"]))
        .await
        .expect("launch");
    assert_eq!(
        l.wait(&id).await.expect("wait"),
        WorkloadStatus::Failed {
            exit_code: Some(42)
        }
    );
    assert_eq!(
        l.status(&id).await.expect("status"),
        WorkloadStatus::Failed {
            exit_code: Some(42)
        }
    );
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let l = LocalLauncher::new();
    // A shell with a background child: killing only the shell would leave `sleep` holding the pipe.
    let id = l
        .launch(
            &spec(2),
            &Workload::command(["sh", "-c", "sleep 300 & echo started; wait"]),
        )
        .await
        .expect("launch");
    let mut logs = l.logs(&id).expect("logs");
    while let Some(line) = logs.next().await {
        if line.line == "started" {
            break;
        }
    }
    assert_eq!(
        l.status(&id).await.expect("status"),
        WorkloadStatus::Running
    );
    tokio::time::timeout(std::time::Duration::from_secs(10), l.stop(&id))
        .await
        .expect("stop returns promptly")
        .expect("stop");
    assert_eq!(
        l.status(&id).await.expect("status"),
        WorkloadStatus::Stopped
    );
    // The log stream ends once the group is gone.
    tokio::time::timeout(std::time::Duration::from_secs(10), logs.count())
        .await
        .expect("log stream ends");
    // Stopping again is harmless.
    l.stop(&id).await.expect("second stop");
}

#[tokio::test]
async fn bad_workloads_are_typed_errors() {
    let l = LocalLauncher::new();
    assert!(matches!(
        l.launch(&spec(3), &Workload::command(["/no/such/program"])).await,
        Err(Error::Launch(m)) if m.contains("/no/such/program")
    ));
    assert!(matches!(
        l.launch(&spec(3), &Workload::default()).await,
        Err(Error::InvalidField {
            field: "command",
            ..
        })
    ));
    assert!(matches!(
        l.launch(&spec(3), &Workload::command(["true"]).env("BAD-NAME", "x"))
            .await,
        Err(Error::InvalidField { field: "env", .. })
    ));
    assert!(l.status(&spheron::WorkloadId("nope".into())).await.is_err());
}
