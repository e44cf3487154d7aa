//! Telemetry in one place: a tracing subscriber that writes human-readable lines by default or
//! JSON lines with `CHOREO_LOG_FORMAT=json`. `RUST_LOG` wins over the built-in filter.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The filter used when `RUST_LOG` is not set: our crates at info, chatty dependencies at warn.
/// lapin is off: every error it logs (three lines per refused connection) also ends the broker
/// session, which the supervisor reports once with what to do (`RUST_LOG=lapin=warn` shows them).
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=off,amq_protocol=warn,hyper=warn";

/// Installs the global subscriber, writing to standard error, in colour only when it is a
/// terminal (and `NO_COLOR` is not set): a log file or a pipe gets plain text.
pub fn init_stderr(format: &str) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    init(format, std::io::stderr, ansi);
}

/// Installs the global subscriber, writing to `sink`, with ANSI colours in the human-readable
/// format if `ansi`. Safe to call twice (the second is ignored), which tests rely on.
pub fn init<W>(format: &str, sink: W, ansi: bool)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(sink);
    let _already_set = if format.eq_ignore_ascii_case("json") {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The same lines as [`init`] writes, with `filter` (in `RUST_LOG`'s syntax) whatever
/// `RUST_LOG` says, not installed: a test sets it as the default of its thread
/// (`tracing::subscriber::set_default`) to read everything a service logs.
pub fn subscriber<W>(filter: &str, sink: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(sink)
        .finish()
}

/// For tests: logs to stdout when `TEST_LOG` is set, nowhere otherwise.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("pretty", std::io::stdout, false);
    } else {
        init("pretty", std::io::sink, false);
    }
}
