//! One broker user per service, from `deploy/rabbitmq/definitions.json`: the saga completes with
//! each service on its own user, and a user is refused what belongs to another service.
//!
//! The file holds no password: `scripts/broker-users.py` generates them and the definitions with
//! their hashes, as `make up` does. Those are loaded into the local broker with `rabbitmqctl
//! import_definitions`, in a vhost of the test's own and with user names of its own (users are
//! not per vhost), both deleted afterwards. Needs `rabbitmqctl` allowed to manage the local node
//! (root, as in CI).

use choreo_e2e::{Options, Suite, Which, order_request};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

/// The definitions loaded under a fresh vhost and fresh user names; removed when dropped.
struct LoadedDefinitions {
    vhost: String,
    users: Vec<String>,
    /// Prepended to each user name of the file.
    prefix: String,
    /// Each user's generated password, by its name in the file.
    passwords: std::collections::HashMap<String, String>,
}

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl runs")
}

impl LoadedDefinitions {
    fn load() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let (vhost, prefix) = (format!("choreo-e2e-{id}"), format!("e2e-{id}-"));
        let generated = tempfile::tempdir().expect("temp dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/broker-users.py");
        let made = std::process::Command::new("python3")
            .arg(script)
            .arg("local")
            .arg(generated.path())
            .output()
            .expect("python3 runs");
        assert!(
            made.status.success(),
            "broker-users.py: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let read = |name: &str| {
            std::fs::read_to_string(generated.path().join(name)).expect("a generated file")
        };
        let passwords = read("passwords")
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(user, password)| (user.to_owned(), password.to_owned()))
            .collect();
        let mut definitions: Value =
            serde_json::from_str(&read("definitions.json")).expect("definitions.json");
        let mut users = Vec::new();
        for section in [
            "users",
            "vhosts",
            "permissions",
            "topic_permissions",
            "queues",
            "exchanges",
            "bindings",
        ] {
            for item in definitions[section].as_array_mut().expect("a list") {
                let item = item.as_object_mut().expect("an object");
                if item.contains_key("vhost") {
                    item.insert("vhost".into(), vhost.clone().into());
                }
                if section == "vhosts" {
                    item.insert("name".into(), vhost.clone().into());
                }
                for key in ["user", "name"] {
                    if (section == "users" || key == "user")
                        && let Some(Value::String(user)) = item.get(key).cloned()
                    {
                        item.insert(key.into(), format!("{prefix}{user}").into());
                        if section == "users" {
                            users.push(format!("{prefix}{user}"));
                        }
                    }
                }
            }
        }
        let loaded = LoadedDefinitions {
            vhost,
            users,
            prefix,
            passwords,
        };
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), definitions.to_string()).expect("writes");
        // The broker reads the file itself, as the rabbitmq user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let output = rabbitmqctl(&["import_definitions", &file.path().display().to_string()]);
        assert!(
            output.status.success(),
            "rabbitmqctl import_definitions: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        loaded
    }

    /// The URL of `which`'s user, with the password generated for it.
    fn url(&self, which: Which) -> String {
        let service = which.topology().name;
        format!(
            "amqp://{}{service}:{}@127.0.0.1:5672/{}",
            self.prefix, self.passwords[service], self.vhost
        )
    }
}

impl Drop for LoadedDefinitions {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.vhost]);
        for user in &self.users {
            rabbitmqctl(&["delete_user", user]);
        }
    }
}

/// A confirmed publish of an empty JSON object, as `connection`'s user.
async fn publish(connection: &Connection, exchange: &str, key: &str) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await?
        .await?;
    Ok(())
}

fn assert_refused(what: &str, result: Result<(), lapin::Error>) {
    let error = result.expect_err(what).to_string();
    assert!(error.contains("ACCESS_REFUSED"), "{what}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_user_per_service_the_saga_completes_and_billing_is_refused_the_others_exchange_and_queue()
 {
    let definitions = LoadedDefinitions::load();
    let suite = Suite::start_with(
        Options {
            amqp_url_of: Which::ALL
                .iter()
                .map(|which| (*which, definitions.url(*which)))
                .collect(),
            declare_topology: "own".to_owned(),
            // Billing's first try of each message fails: its retries go through its own
            // redelivery exchange to its delay queues, on its own user's rights.
            failpoints: vec![(
                Which::Billing,
                "consumer.before_handle=transient:2".to_owned(),
            )],
            // The real names, in the test's own vhost (deleted with it).
            fixed_prefix: Some(String::new()),
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;

    let completed = suite.place_order(&order_request(1500, 2, "AT")).await;
    let refunded = suite.place_order(&order_request(1500, 1, "AQ")).await;
    suite
        .wait_for_status(completed["id"].as_str().expect("id"), "completed")
        .await;
    let cancelled = suite
        .wait_for_status(refunded["id"].as_str().expect("id"), "cancelled")
        .await;
    assert_eq!(cancelled["cancellation_reason"], "shipping_failed");

    let billing = Connection::connect(
        &definitions.url(Which::Billing),
        ConnectionProperties::default(),
    )
    .await
    .expect("billing's user logs in");
    let published = publish(&billing, "orders.events", "order.placed").await;
    assert_refused("billing publishes to orders.events", published);

    let channel = billing.create_channel().await.expect("channel");
    let consumed = channel
        .basic_consume(
            "shipping".into(),
            "intruder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ());
    assert_refused("billing consumes the shipping queue", consumed);

    // Its own exchange, its own routing keys only (topic permissions).
    let forged = publish(&billing, "billing.events", "shipment.dispatched").await;
    assert_refused("billing publishes shipment.dispatched", forged);
    // No user may write to the default exchange, which reaches every queue by name.
    let straight = publish(&billing, "", "shipping").await;
    assert_refused("billing publishes into shipping's queue", straight);
    let elsewhere = publish(&billing, "shipping.redeliver", "shipping").await;
    assert_refused(
        "billing publishes to shipping's redelivery exchange",
        elsewhere,
    );
    let _ = billing.close(200, "done".into()).await;
}
