//! The harness itself: a test that a signal ends leaves nothing on the broker.

use choreo_e2e::{Options, Suite, Which, amqp_url};
use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Run only by the test below, in a process of its own: holds a suite until a signal ends it.
#[tokio::test]
#[ignore = "a helper process of a_test_ended_by_sigterm_removes_its_suites_queues"]
async fn a_suite_held_until_a_signal_ends_the_test() {
    if std::env::var_os("E2E_HOLD_SUITE").is_none() {
        return;
    }
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    println!("suite prefix: {}", suite.prefix);
    std::future::pending::<()>().await;
}

/// nextest ends a test that runs past its time with SIGTERM (`make mutants` does so to a mutant
/// that spins), and Ctrl-C sends SIGINT; neither drops the suite. Its quorum queues would stay on
/// the broker for good.
#[tokio::test]
async fn a_test_ended_by_sigterm_removes_its_suites_queues() {
    let mut held = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "harness::a_suite_held_until_a_signal_ends_the_test",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("E2E_HOLD_SUITE", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the test binary starts");
    let mut lines = BufReader::new(held.stdout.take().expect("stdout")).lines();
    let prefix = tokio::time::timeout(choreo_e2e::deadline(), async {
        while let Some(line) = lines.next_line().await.expect("a line") {
            if let Some(prefix) = line.strip_prefix("suite prefix: ") {
                return prefix.to_owned();
            }
        }
        panic!("the held suite ended before it started");
    })
    .await
    .expect("the held suite starts");
    let queue = format!("{prefix}billing");
    assert!(
        queue_exists(&queue).await,
        "{queue} is declared while the test runs"
    );

    let pid = held.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(choreo_e2e::deadline(), held.wait())
        .await
        .expect("the held test ends after SIGTERM")
        .expect("its exit status");
    assert_eq!(status.code(), Some(143), "ended as SIGTERM ends a process");
    for name in [queue, format!("{prefix}billing.dlq")] {
        assert!(!queue_exists(&name).await, "{name} is gone");
    }
}

async fn queue_exists(name: &str) -> bool {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("broker");
    choreo_e2e::queue_exists(&connection, name).await
}
