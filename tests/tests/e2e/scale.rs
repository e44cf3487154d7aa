//! Scale-out: two replicas of each service on PostgreSQL, competing for the same queues and
//! sharing each service's database. Every order ends once, with at most one payment, one refund
//! and one shipment.

use choreo_e2e::{Options, Suite, Which, order_request};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_each_service_on_postgresql_share_the_work_and_nothing_happens_twice() {
    let mut suite = Suite::start_with(
        Options {
            postgres: true,
            ..Options::default()
        },
        &[],
    )
    .await;
    suite.start_together(2).await;
    suite.wait_ready().await;

    let cases = [
        (1500, "AT", "completed"),
        (200_000, "DE", "cancelled"),
        (900, "AQ", "cancelled"),
    ];
    let mut placed: Vec<(String, &str)> = Vec::new();
    for round in 0..10 {
        for (price, country, end) in cases {
            let order = suite
                .place_order(&order_request(price + round, 1, country))
                .await;
            placed.push((order["id"].as_str().expect("id").to_owned(), end));
        }
    }

    for (id, end) in &placed {
        let order: Value = suite.wait_for_status(id, end).await;
        let payments = suite.payments(id).await;
        let shipments = suite.shipments(id).await;
        assert_eq!(payments.len(), 1, "one payment for {id}");
        let dispatched = shipments
            .iter()
            .filter(|s| s["status"] == "dispatched")
            .count();
        assert!(shipments.len() <= 1, "at most one shipment for {id}");
        match order["cancellation_reason"].as_str() {
            None => assert_eq!(
                (payments[0]["status"].as_str(), dispatched),
                (Some("captured"), 1)
            ),
            Some("payment_declined") => assert_eq!(
                (payments[0]["status"].as_str(), shipments.len()),
                (Some("declined"), 0)
            ),
            Some(other) => {
                assert_eq!(other, "shipping_failed");
                assert_eq!(
                    (payments[0]["status"].as_str(), dispatched),
                    (Some("refunded"), 0)
                );
            }
        }
    }
    // Every outbox row was confirmed by the broker and marked sent.
    for which in Which::ALL {
        let url = choreo_e2e::postgres_url(&suite.postgres_database(which));
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let unsent: i64 = choreo_e2e::poll("the outbox drained", || {
            let pool = pool.clone();
            Box::pin(async move {
                let unsent = sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL",
                )
                .fetch_one(&pool)
                .await;
                unsent.ok().filter(|n| *n == 0)
            })
        })
        .await;
        pool.close().await;
        assert_eq!(unsent, 0);
    }
}
