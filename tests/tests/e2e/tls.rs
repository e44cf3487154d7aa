//! `amqps://`: the saga over a RabbitMQ node that speaks TLS only and verifies clients, and the
//! refusals when either side's certificate comes from another CA.
//!
//! Needs the node of `scripts/tls-broker.sh up` and its variables (`AMQPS_URL`, `TLS_CERTS_DIR`);
//! `make tls-test` and CI set them. Without them each test says so and passes: the system broker
//! has no TLS listener.

use choreo_e2e::{Options, Suite, Which, order_request};
use choreo_messaging::{Nodes, Secret, Tls, TlsFiles};
use std::path::PathBuf;
use std::time::Duration;

/// The TLS node's URL and certificates directory, or `None` (and a line saying why).
fn tls_broker() -> Option<(String, PathBuf)> {
    match (std::env::var("AMQPS_URL"), std::env::var("TLS_CERTS_DIR")) {
        (Ok(url), Ok(dir)) => Some((url, PathBuf::from(dir))),
        _ => {
            eprintln!(
                "skipped: no TLS broker (run `scripts/tls-broker.sh up` and export what it \
                 prints, or `make tls-test`)"
            );
            None
        }
    }
}

fn files(dir: &std::path::Path, ca: &str, client: &str) -> TlsFiles {
    let path = |name: String| dir.join(name).display().to_string();
    TlsFiles {
        ca_file: path(format!("{ca}.pem")),
        cert_file: path(format!("{client}.pem")),
        key_file: path(format!("{client}.key")),
    }
}

/// The error of one connection attempt with `tls`.
async fn refusal(url: &str, tls: TlsFiles) -> String {
    let nodes = Nodes::parse(&Secret::new(url))
        .expect("parses")
        .with_tls(Tls::load(&tls).expect("the files load"));
    match nodes
        .connect_to(
            0,
            Duration::from_secs(10),
            Duration::from_secs(10),
            "tls-test",
        )
        .await
    {
        Ok(_) => panic!("connected with {tls:?}"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_completes_over_tls_with_a_client_certificate() {
    let Some((url, dir)) = tls_broker() else {
        return;
    };
    let suite = Suite::start_with(
        Options {
            amqp_url: url,
            tls: files(&dir, "ca", "client"),
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;

    let order = suite.place_order(&order_request(1500, 2, "AT")).await;
    let id = order["id"].as_str().expect("id");
    let done = suite.wait_for_status(id, "completed").await;

    assert_eq!(done["total_cents"], 3000);
    assert_eq!(suite.payments(id).await.len(), 1);
    assert_eq!(suite.shipments(id).await[0]["status"], "dispatched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let Some((url, dir)) = tls_broker() else {
        return;
    };

    // The broker verifies clients: a client certificate its CA did not sign is refused.
    let client_refused = refusal(&url, files(&dir, "ca", "other-client")).await;
    // The client verifies the broker: trusting only another CA, the broker's certificate is
    // refused before any credentials are sent.
    let broker_refused = refusal(&url, files(&dir, "other-ca", "client")).await;

    for message in [&client_refused, &broker_refused] {
        assert!(
            message.starts_with("TLS handshake with amqps://guest:***@127.0.0.1:"),
            "{message}"
        );
        assert!(message.contains("CHOREO_AMQP_TLS_CA_FILE"), "{message}");
        assert!(!message.contains("guest:guest"), "{message}");
    }
    eprintln!("client refused: {client_refused}\nbroker refused: {broker_refused}");
    // The broker's refusal arrives as a TLS alert, or (TLS 1.3: it checks the client's
    // certificate after the client considers the handshake done) as the connection closed at once.
    assert!(
        client_refused.contains("UnknownCA")
            || client_refused.contains("the broker closed the connection during the TLS handshake"),
        "{client_refused}"
    );
    assert!(
        broker_refused.contains("invalid peer certificate: UnknownIssuer"),
        "{broker_refused}"
    );
    assert!(broker_refused.contains("other-ca.pem"), "{broker_refused}");
}
