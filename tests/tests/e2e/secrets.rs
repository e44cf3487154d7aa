//! Secrets never printed: a service started with a broker or database URL that is malformed,
//! unsupported, unreachable or refused logs nothing and returns no error that holds the URL's
//! password, whichever parser or connect refused it.

use choreo_e2e::{Options, Suite, Which, poll};
use choreo_messaging::Secret;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The password every URL below carries, in one place or another.
const PASSWORD: &str = "pw-4711";

/// Broker URLs the parsers reject, and ones they accept that the broker refuses or that lead
/// nowhere (the service then logs its reconnects).
const AMQP_URLS: &[&str] = &[
    "amqp://u:pw-4711@[bad",
    "amqp://u:pw-4711@127.0.0.1:notaport/%2f",
    "amqp://u:pw-4711@127.0.0.1:5672/%2f?heartbeat=soon",
    "amqp//u:pw-4711@127.0.0.1",
    "amqp://u:pw-4711@127.0.0.1:5672/%2f,amqp://v:pw-4711@[::1",
    "amqps://u:pw-4711@127.0.0.1:5671/%2f",
    // Parses; the broker refuses the login.
    "amqp://u:pw-4711@127.0.0.1:5672/%2f",
    // Parses; nothing listens.
    "amqp://u:pw-4711@127.0.0.1:1/%2f",
];

/// Database URLs that do not parse, are not supported, or name a server that refuses them.
const DATABASE_URLS: &[&str] = &[
    "postgres://u:pw-4711@[bad",
    "postgres://u:pw-4711@127.0.0.1:notaport/db",
    "postgres://u@127.0.0.1/db?password=pw-4711&sslmode=bogus",
    "postgresql://u:pw-4711@127.0.0.1:5432/db?options=%zz",
    "mysql://u:pw-4711@h/db",
    "pw-4711@h/db",
    "u%3Apw-4711@h/db",
    // Parse; the server has no such database (trust auth takes any password), or nothing
    // listens: the service waits for it, logging each attempt.
    "postgres://postgres:pw-4711@127.0.0.1:5432/choreo_no_such_database",
    "postgres://u:pw-4711@127.0.0.1:1/db",
];

/// Everything the services log while the test's subscriber is this thread's default.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Waits until `log` has more lines containing `what` than it had when called.
async fn logged_again(log: &Captured, what: &'static str) {
    let before = log.text().matches(what).count();
    poll(what, || {
        let log = log.clone();
        Box::pin(async move { (log.text().matches(what).count() > before).then_some(()) })
    })
    .await;
}

/// Builds orders with `common` (given up once it logged waiting for its database) and, if it
/// builds, runs it until it logged a failed broker session; returns the error's `Display` and
/// `Debug`, or nothing when it ran.
async fn start(common: choreo_host::CommonSettings, log: &Captured) -> String {
    let built = tokio::select! {
        built = orders::build(orders::Settings::with_defaults(common)) => built,
        () = logged_again(log, "database unreachable") => return String::new(),
    };
    let service = match built {
        Ok(service) => service,
        Err(error) => return format!("{error}\n{error:?}"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    logged_again(log, "reconnecting").await;
    let _ = stop.send(());
    let _ = running.await;
    String::new()
}

#[tokio::test]
async fn no_password_of_a_rejected_or_refused_url_reaches_a_log_line_or_an_error() {
    let log = Captured::default();
    let _default =
        tracing::subscriber::set_default(choreo_host::telemetry::subscriber("trace", log.clone()));
    let suite = Suite::start_with(
        Options {
            wait_ready: false,
            ..Options::default()
        },
        &[],
    )
    .await;
    let mut errors = Vec::new();

    for url in AMQP_URLS {
        let mut common = suite.settings_for(Which::Orders);
        common.broker.amqp_url = Secret::new(*url);
        errors.push(format!("{url}: {}", start(common, &log).await));
    }
    for url in DATABASE_URLS {
        let mut common = suite.settings_for(Which::Orders);
        common.database.database_url = Secret::new(*url);
        errors.push(format!("{url}: {}", start(common, &log).await));
    }

    let log = log.text();
    assert!(
        log.contains("reconnecting"),
        "the services ran and logged:\n{log}"
    );
    assert!(
        log.contains("database unreachable"),
        "and waited for a database:\n{log}"
    );
    for (url, error) in AMQP_URLS.iter().chain(DATABASE_URLS).zip(&errors) {
        let error = error.strip_prefix(&format!("{url}: ")).unwrap_or(error);
        assert!(!error.contains(PASSWORD), "{url} gave the error: {error}");
    }
    let leaked: Vec<&str> = log.lines().filter(|l| l.contains(PASSWORD)).collect();
    assert!(leaked.is_empty(), "logged with the password: {leaked:#?}");
}
