//! The real `orders` binary's command line: `--help` and `--version` answer and exit 0 without
//! reading a setting or touching the broker, and a refused command says why and exits 2.

use std::process::{Command, Output};

fn orders(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(args)
        // A broker that does not exist: none of these may try to connect.
        .env("CHOREO_AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/%2f")
        .output()
        .expect("the orders binary runs")
}

#[test]
fn help_lists_the_dead_letter_commands_and_exits_0() {
    let help = orders(&["--help"]);
    let dlq_help = orders(&["dlq", "--help"]);

    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: orders"), "{text}");
    assert!(text.contains("dlq"), "{text}");
    assert!(dlq_help.status.success(), "{dlq_help:?}");
    let text = String::from_utf8_lossy(&dlq_help.stdout);
    for command in ["list", "show", "redrive", "purge"] {
        assert!(text.contains(command), "{command} in {text}");
    }
}

#[test]
fn version_prints_the_binary_and_its_version_and_exits_0() {
    let version = orders(&["--version"]);

    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("orders {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_purge_without_yes_is_refused_before_anything_connects() {
    let refused = orders(&["dlq", "purge"]);

    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("dlq purge --yes"), "{text}");
}

/// A log written to a file or a pipe is plain text: colour codes only go to a terminal.
#[test]
fn the_log_has_no_colour_codes_when_standard_error_is_not_a_terminal() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().expect("temp dir");
    let mut running = Command::new(env!("CARGO_BIN_EXE_orders"))
        // Nothing listens there: the service starts, then logs its failed broker sessions.
        .env("CHOREO_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("CHOREO_HTTP_ADDR", "127.0.0.1:0")
        .env("CHOREO_DATA_DIR", data.path())
        .env("CHOREO_LOG_FORMAT", "pretty")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the orders binary runs");
    let mut lines = Vec::new();
    for line in BufReader::new(running.stderr.take().expect("piped")).lines() {
        let line = line.expect("a line");
        let failed = line.contains("broker session failed");
        lines.push(line);
        if failed {
            break;
        }
    }
    let _ = running.kill();
    let _ = running.wait();
    let log = lines.join("\n");
    assert!(log.contains("starting orders"), "{log}");
    assert!(log.contains("broker session failed"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe:\n{log}");
}

/// A misspelt setting stops the binary before it does anything, naming the variable and the
/// setting it was near; `orders` accepts another service's setting (one environment serves them
/// all under `make up`).
#[test]
fn a_misspelt_setting_stops_the_binary_naming_it_and_the_setting_it_was_near() {
    let refused = Command::new(env!("CARGO_BIN_EXE_orders"))
        .env("CHOREO_AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/%2f")
        .env("CHOREO_PREFECTH", "5")
        .env("CHOREO_MAX_CHARGE_CENTS", "5")
        .output()
        .expect("the orders binary runs");

    assert!(!refused.status.success(), "{refused:?}");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("unknown setting: CHOREO_PREFECTH (did you mean CHOREO_PREFETCH?)"),
        "{text}"
    );
}

/// A settings file that is not there is said once, naming it.
#[test]
fn a_missing_settings_file_is_named_once() {
    let refused = Command::new(env!("CARGO_BIN_EXE_orders"))
        .env("CHOREO_CONFIG_FILE", "/nonexistent/choreo.toml")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the orders binary runs");

    assert!(!refused.status.success(), "{refused:?}");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        text.matches("/nonexistent/choreo.toml").count(),
        1,
        "{text}"
    );
}

/// `orders settings` prints what the service would run with, where each value came from, with no
/// secret, and exits 0 without touching the broker or the database.
#[test]
fn settings_prints_the_effective_settings_with_their_origin_and_no_secret() {
    let data = tempfile::tempdir().expect("temp dir");
    let file = data.path().join("orders.toml");
    std::fs::write(&file, "[outbox]\noutbox_batch = 100\n").expect("written");

    let listed = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("settings")
        .env(
            "CHOREO_AMQP_URL",
            "amqp://orders:hunter2-pass@127.0.0.1:1/choreo",
        )
        .env("CHOREO_PREFETCH", "16")
        .env("CHOREO_CONFIG_FILE", &file)
        .env("CHOREO_DATA_DIR", data.path().join("never-made"))
        .output()
        .expect("the orders binary runs");

    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8_lossy(&listed.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|line| line.starts_with(&format!("{key} =")))
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    assert_eq!(line("prefetch"), "prefetch = 16 # CHOREO_PREFETCH");
    assert!(line("outbox_batch").starts_with("outbox_batch = 100 # settings file"));
    assert_eq!(line("heartbeat_secs"), "heartbeat_secs = 10 # default");
    assert_eq!(
        line("amqp_url"),
        "amqp_url = \"amqp://orders:***@127.0.0.1:1/choreo\" # CHOREO_AMQP_URL"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        !data.path().join("never-made").exists(),
        "nothing was opened"
    );
}
