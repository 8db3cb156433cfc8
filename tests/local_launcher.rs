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
    // Runs in its own temporary directory, kept for downloads (see
    // a_workdir_is_copied_in_and_outputs_are_kept_for_the_grace_period).
    assert!(out[2].contains("spheron-lease-7-"), "{}", out[2]);
    assert_eq!(
        l.workdir(&id).as_deref(),
        Some(std::path::Path::new(&out[2]))
    );
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

/// The grandchild is orphaned (its parent exits at once) but stays in the workload's process
/// group. The leader survives SIGTERM (it traps it) and, in its handler, looks whether the
/// grandchild is still alive: it is gone only if `stop` signalled the whole group. Had `stop`
/// signalled the leader alone, the grandchild would still run when the leader looks (the
/// launcher's own clean-up kill comes only after the leader has exited).
#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gpid = dir.path().join("grandchild.pid");
    let script = r#"
        sh -c 'sh -c "echo \$\$ > \"$GPID\"; while :; do sleep 0.1; done" & exit 0'
        while [ ! -s "$GPID" ]; do sleep 0.05; done
        G=$(cat "$GPID")
        alive() { [ -e /proc/$G ] && ! grep -q zombie /proc/$G/status; }
        trap 'sleep 0.5; if alive; then echo grandchild-alive; else echo grandchild-gone; fi' TERM
        alive && echo started
        while :; do sleep 0.1; done
    "#;
    let l = LocalLauncher::new();
    let id = l
        .launch(
            &spec(2),
            &Workload::command(["sh", "-c", script]).env("GPID", gpid.display().to_string()),
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
    tokio::time::timeout(std::time::Duration::from_secs(20), l.stop(&id))
        .await
        .expect("stop returns")
        .expect("stop");
    assert_eq!(
        l.status(&id).await.expect("status"),
        WorkloadStatus::Stopped
    );
    let rest: Vec<String> = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        logs.filter(|x| futures::future::ready(x.source == LogSource::Stdout))
            .map(|x| x.line)
            .collect(),
    )
    .await
    .expect("log stream ends");
    assert_eq!(
        rest,
        ["grandchild-gone"],
        "the grandchild outlived stop's signal"
    );
    // Stopping again is harmless.
    l.stop(&id).await.expect("second stop");
}

/// Output that is not UTF-8, `\r` progress bars and a last line without an end all reach
/// the log, in order.
#[tokio::test]
async fn the_log_keeps_bad_bytes_and_carriage_returns() {
    let l = LocalLauncher::new();
    let id = l
        .launch(
            &spec(4),
            &Workload::command([
                "sh",
                "-c",
                r"printf 'a\377b\n'; printf 'step 1\rstep 2\r\n'; printf 'done'",
            ]),
        )
        .await
        .expect("launch");
    assert_eq!(l.wait(&id).await.expect("wait"), WorkloadStatus::Succeeded);
    assert_eq!(
        stdout(&l, &id).await,
        ["a\u{fffd}b", "step 1", "step 2", "done"]
    );
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

#[tokio::test]
async fn each_workload_sees_only_its_lease_gpus() {
    let l = LocalLauncher::new();
    let print = "echo $CUDA_VISIBLE_DEVICES; sleep 30";
    // The tenant's own CUDA_VISIBLE_DEVICES does not widen what the lease sees.
    let first =
        Workload::command(["sh", "-c", print]).env("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7");
    let a = l.launch(&spec(1), &first).await.expect("launch a");
    let b = l
        .launch(&spec(2), &Workload::command(["sh", "-c", print]))
        .await
        .expect("launch b");
    let mut other_node = spec(3);
    other_node.node = Some("node-1".into());
    other_node.gpus = 1;
    let c = l
        .launch(&other_node, &Workload::command(["sh", "-c", print]))
        .await
        .expect("launch c");
    let first_line = |id: spheron::WorkloadId| {
        let l = &l;
        async move {
            l.logs(&id)
                .expect("logs")
                .filter(|x| futures::future::ready(x.source == LogSource::Stdout))
                .map(|x| x.line)
                .next()
                .await
                .expect("a line")
        }
    };
    assert_eq!(first_line(a.clone()).await, "0,1");
    assert_eq!(first_line(b.clone()).await, "2,3");
    assert_eq!(first_line(c.clone()).await, "0");
    // Freed when a workload ends: the next one on node-0 gets 0,1 again.
    l.stop(&a).await.expect("stop a");
    let d = l
        .launch(&spec(4), &Workload::command(["sh", "-c", print]))
        .await
        .expect("launch d");
    assert_eq!(first_line(d.clone()).await, "0,1");
    for id in [b, c, d] {
        l.stop(&id).await.expect("stop");
    }
}

#[tokio::test]
async fn an_image_is_refused_with_a_typed_error() {
    let l = LocalLauncher::new();
    let w = Workload::command(["python3", "train.py"]).image("nvcr.io/nvidia/pytorch:24.05-py3");
    match l.launch(&spec(9), &w).await {
        Err(Error::InvalidField { field, reason }) => {
            assert_eq!(field, "image");
            assert!(
                reason.contains("nvcr.io/nvidia/pytorch:24.05-py3"),
                "{reason}"
            );
        }
        other => panic!("expected InvalidField(image), got {other:?}"),
    }
}

#[tokio::test]
async fn a_workdir_is_copied_in_and_outputs_are_kept_for_the_grace_period() {
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("train.py"), "data\n").expect("write");
    std::fs::create_dir_all(src.path().join(".git")).expect("mkdir");
    std::fs::write(src.path().join(".git/HEAD"), "ref").expect("write");
    let l = LocalLauncher::new().with_retention(std::time::Duration::from_millis(300));
    let w = Workload::command([
        "sh",
        "-c",
        "cat train.py; ls -a; echo ckpt > $SPHERON_OUTPUTS/model.ckpt",
    ])
    .workdir(src.path());
    let id = l.launch(&spec(5), &w).await.expect("launch");
    assert_eq!(l.wait(&id).await.expect("wait"), WorkloadStatus::Succeeded);
    let out = stdout(&l, &id).await;
    assert_eq!(out, ["data", ".", "..", "outputs", "train.py"]);
    let dir = l.workdir_of_lease(LeaseId(5)).expect("kept after the end");
    assert_eq!(
        std::fs::read_to_string(dir.join("outputs/model.ckpt")).expect("output"),
        "ckpt\n"
    );
    // Removed once the grace period is over (a bounded wait, no timing assertion).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dir.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!dir.exists());
    assert_eq!(l.workdir(&id), None);
    // A missing source is a typed error, and nothing is left behind.
    let bad = Workload::command(["true"]).workdir(src.path().join("missing"));
    match l.launch(&spec(6), &bad).await {
        Err(Error::Launch(m)) => assert!(m.contains("missing"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn declared_ports_get_free_loopback_ports_of_their_own() {
    let l = LocalLauncher::new();
    let w = Workload::command([
        "sh",
        "-c",
        "echo $PORT $SPHERON_PORT_8000 $SPHERON_PORT_9000; sleep 30",
    ])
    .port(8000)
    .port(9000);
    // Two workloads declare the same ports: each gets its own.
    let a = l.launch(&spec(31), &w).await.expect("launch");
    let b = l.launch(&spec(32), &w).await.expect("launch");
    let addr = |id, p| l.port_addr(id, p).expect("exposed");
    let (a8, a9, b8) = (addr(&a, 8000), addr(&a, 9000), addr(&b, 8000));
    assert!(a8.ip().is_loopback());
    assert_ne!(a8, a9);
    assert_ne!(a8, b8, "two leases declaring 8000 never share a port");
    assert!(l.port_addr(&a, 7000).is_none(), "undeclared");
    let first_line = |id| {
        let logs = l.logs(id).expect("logs");
        async move {
            logs.filter(|x| futures::future::ready(x.source == LogSource::Stdout))
                .map(|x| x.line)
                .next()
                .await
                .expect("a line")
        }
    };
    assert_eq!(
        first_line(&a).await,
        format!("{} {} {}", a8.port(), a8.port(), a9.port()),
        "PORT is the first declared port's"
    );
    l.stop(&a).await.expect("stop");
    assert!(l.port_addr(&a, 8000).is_none(), "closed once stopped");
    assert_eq!(l.port_addr(&b, 8000), Some(b8));
    l.stop(&b).await.expect("stop");
    // Bad ports are refused before anything runs.
    let e = l
        .launch(&spec(33), &Workload::command(["true"]).port(80).port(80))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidField { field: "ports", .. }),
        "{e}"
    );
}
