//! What a service logs when it cannot do its job: a refused broker login is said once, with the
//! user and what to check, and the retries that follow, which back off, are not logged again.

use choreo_e2e::{Options, Suite, Which, poll};
use choreo_messaging::metrics::RECONNECTS;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_broker_login_is_logged_once_with_the_user_and_a_hint_then_retried_quietly() {
    let suite = Suite::start_with(
        Options {
            wait_ready: false,
            ..Options::default()
        },
        &[],
    )
    .await;
    let port = choreo_e2e::processes::free_port().expect("a port");
    let extra = [
        (
            "CHOREO_AMQP_URL",
            "amqp://guest:not-the-password@127.0.0.1:5672/%2f".to_owned(),
        ),
        ("CHOREO_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("CHOREO_RECONNECT_MIN_MS", "20".to_owned()),
        ("CHOREO_RECONNECT_MAX_MS", "100".to_owned()),
        // The filter a service runs with when RUST_LOG is not set.
        (
            "RUST_LOG",
            choreo_host::telemetry::DEFAULT_FILTER.to_owned(),
        ),
    ];
    let mut orders = suite.spawn_process_with(
        env!("CARGO_BIN_EXE_e2e-service"),
        Which::Orders,
        "",
        &extra,
        std::process::Stdio::piped(),
    );
    // Several refusals, counted by the service itself.
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    poll("five refused logins", || {
        let scraped = suite.http.get(&metrics).send();
        Box::pin(async move {
            let text = scraped.await.ok()?.text().await.ok()?;
            let reconnects = choreo_e2e::Scrape::parse(&text).value(RECONNECTS, &[]);
            (reconnects >= 5.0).then_some(())
        })
    })
    .await;
    orders.start_kill().expect("kill");
    let mut log = String::new();
    orders
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut log)
        .await
        .expect("the log");

    let refused: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("ACCESS_REFUSED"))
        .collect();
    assert_eq!(refused.len(), 1, "said once, not per retry:\n{log}");
    for needed in [
        r#"refused the login of user \"guest\""#,
        "check the user name and password",
        "amqp://guest:***@127.0.0.1:5672",
    ] {
        assert!(refused[0].contains(needed), "{needed} in {}", refused[0]);
    }
    assert!(!log.contains("not-the-password"), "{log}");
    assert!(
        !log.contains("broker session failed"),
        "no other line per retry:\n{log}"
    );
}
