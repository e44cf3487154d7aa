use super::*;

/// A process with one own section, as a service declares it.
const OWN: Section = Section {
    name: "orders",
    about: "a service's own",
    keys: &[Key::number(
        "max_unfinished_orders",
        1500,
        0,
        1_000_000,
        "a bound",
    )],
};

const PROCESS: Process = Process {
    name: "orders",
    own: Some(&OWN),
    defaults: &[("http_addr", Setting::Text("0.0.0.0:8080"))],
};

fn defaults_of() -> CommonSettings {
    defaults(&PROCESS)
        .and_then(|loaded| loaded.common())
        .expect("the defaults load")
}

fn variables(given: &[(&str, &str)]) -> HashMap<String, String> {
    given
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// What a service would start with given these variables and no others: the settings, or the
/// message it would stop with.
fn load(given: &[(&str, &str)]) -> Result<CommonSettings, String> {
    load_map(&variables(given))
}

fn load_map(variables: &HashMap<String, String>) -> Result<CommonSettings, String> {
    load_from(&PROCESS, variables)
        .and_then(|loaded| loaded.common())
        .map_err(|e| e.to_string())
}

/// A settings file holding `text`, kept while the value lives.
fn file(text: &str) -> (tempfile::NamedTempFile, String) {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("written");
    let path = file.path().display().to_string();
    (file, path)
}

#[test]
fn the_defaults_are_valid_and_each_process_has_its_own() {
    let common = defaults_of();

    assert!(common.validate().is_ok());
    assert_eq!(common.http.http_addr, "0.0.0.0:8080");
    assert_eq!(common.consumer.prefetch, 64);
    assert_eq!(common.messaging().expect("valid").retry_delays.len(), 3);
    assert_eq!(
        common.database.url_for("orders"),
        "sqlite://./data/orders.db"
    );
    assert!(!format!("{common:?}").contains("guest:guest"));
}

#[test]
fn every_declared_range_fits_its_fields_type_at_both_ends() {
    // A range wider than its field would let a value pass the check and fail deserialization
    // in config's own words: load each number at its minimum and its maximum.
    for section in sections::COMMON {
        for key in section.keys {
            let (Setting::Number(_) | Setting::Numbers(_), Bound::Range(min, max)) =
                (key.default, key.bound)
            else {
                continue;
            };
            for end in [min, max] {
                let mut given = vec![(key.variable(), end.to_string())];
                if key.name == "reconnect_max_ms" {
                    given.push(("CHOREO_RECONNECT_MIN_MS".to_owned(), "1".to_owned()));
                }
                if key.name == "reconnect_min_ms" {
                    given.push(("CHOREO_RECONNECT_MAX_MS".to_owned(), "3600000".to_owned()));
                }
                let loaded = load_map(&given.into_iter().collect());
                assert!(loaded.is_ok(), "{} at {end}: {loaded:?}", key.name);
            }
        }
    }
}

#[test]
fn every_value_out_of_its_range_is_refused_in_one_form_whatever_its_type() {
    let cases = [
        (
            "CHOREO_PREFETCH",
            "70000",
            "70000",
            "a whole number from 1 to 65535",
        ),
        (
            "CHOREO_PREFETCH",
            "0",
            "0",
            "a whole number from 1 to 65535",
        ),
        (
            "CHOREO_PREFETCH",
            "1.5",
            "\"1.5\"",
            "a whole number from 1 to 65535",
        ),
        (
            "CHOREO_OUTBOX_BATCH",
            "-3",
            "-3",
            "a whole number from 1 to 10000",
        ),
        (
            "CHOREO_HEARTBEAT_SECS",
            "-5",
            "-5",
            "a whole number from 1 to 600",
        ),
        (
            "CHOREO_WORKER_THREADS",
            "99999999999999999999",
            "\"99999999999999999999\"",
            "a whole number from 0 to 256",
        ),
        (
            "CHOREO_DB_MAX_CONNECTIONS",
            "5000000000",
            "5000000000",
            "a whole number from 1 to 1000",
        ),
    ];
    for (name, given, shown, must) in cases {
        let message = load(&[(name, given)]).expect_err(given);

        let section = sections::COMMON
            .iter()
            .find(|s| s.keys.iter().any(|k| k.variable() == name))
            .expect("declared");
        let key = name.trim_start_matches("CHOREO_").to_ascii_lowercase();
        assert_eq!(
            message,
            format!(
                "{name} ([{}] {key}) is {shown}: it must be {must}",
                section.name
            ),
        );
    }
    let max = load(&[("CHOREO_RECONNECT_MAX_MS", "100")]).expect_err("below min");
    assert_eq!(
        max,
        "CHOREO_RECONNECT_MAX_MS ([broker] reconnect_max_ms) is 100: it must be at least \
         CHOREO_RECONNECT_MIN_MS (200)"
    );
}

#[test]
fn a_value_from_the_file_is_refused_in_the_same_form_naming_the_file() {
    let (_file, path) = file("[consumer]\nprefetch = 70000\n");

    let message = load(&[("CHOREO_CONFIG_FILE", &path)]).expect_err("out of range");

    assert_eq!(
        message,
        format!(
            "CHOREO_PREFETCH ([consumer] prefetch) is 70000: it must be a whole number from 1 \
             to 65535 (in {path})"
        )
    );
}

#[test]
fn choices_are_refused_in_the_same_form_and_read_in_any_case() {
    let message = load(&[("CHOREO_LOG_FORMAT", "jsno")]).expect_err("a typo");
    assert_eq!(
        message,
        "CHOREO_LOG_FORMAT ([telemetry] log_format) is \"jsno\": it must be `pretty` or `json`"
    );
    let message = load(&[("CHOREO_DECLARE_TOPOLOGY", "mine")]).expect_err("a typo");
    assert!(message.contains("`suite` or `own`"), "{message}");
    assert!(load(&[("CHOREO_LOG_FORMAT", "JSON")]).is_ok());
    assert!(load(&[("CHOREO_DECLARE_TOPOLOGY", " Own ")]).is_ok());
}

#[test]
fn what_no_single_value_says_is_checked_too() {
    let failpoints = load(&[("CHOREO_FAILPOINTS", "x=explode")]).expect_err("bad");
    let tls = load(&[
        ("CHOREO_AMQP_URL", "amqps://u:p@h/%2f"),
        ("CHOREO_AMQP_TLS_CA_FILE", "/nonexistent/ca.pem"),
    ])
    .expect_err("no file");
    let token = load(&[("CHOREO_API_TOKENS", "short")]).expect_err("short");
    let fine = load(&[("CHOREO_API_TOKENS", "0123456789abcdef-secret")]).expect("long enough");

    assert!(failpoints.contains("CHOREO_FAILPOINTS"), "{failpoints}");
    assert!(
        tls.contains("CHOREO_AMQP_TLS_CA_FILE: cannot read /nonexistent/ca.pem"),
        "{tls}"
    );
    assert!(token.contains("CHOREO_API_TOKENS"), "{token}");
    let debug = format!("{fine:?} {:?}", fine.http.api_tokens);
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
}

#[test]
fn an_unknown_variable_stops_the_service_naming_it_and_the_setting_it_was_near() {
    let message = load(&[("CHOREO_PREFECTH", "5")]).expect_err("a typo");
    assert!(
        message.contains("unknown setting: CHOREO_PREFECTH (did you mean CHOREO_PREFETCH?)"),
        "{message}"
    );
    let message =
        load(&[("CHOREO_LOG_FROMAT", "json"), ("CHOREO_SPEED", "11")]).expect_err("two unknowns");
    assert!(
        message.contains(
            "unknown settings: CHOREO_LOG_FROMAT (did you mean CHOREO_LOG_FORMAT?), CHOREO_SPEED;"
        ),
        "{message}"
    );
    // Another service's setting, the settings file's name and a script's variable are fine.
    let fine = load(&[
        ("CHOREO_MAX_CHARGE_CENTS", "5"),
        ("CHOREO_COUNTRIES", "DE"),
        ("CHOREO_IMAGE_TAG", "local"),
    ]);
    assert!(fine.is_ok(), "{fine:?}");
}

#[test]
fn an_unknown_key_of_the_settings_file_stops_the_service_naming_it_and_where_it_belongs() {
    let (_file, path) = file(
        "prefetch = 8\n[consumer]\nretry_delay_ms = [10]\nheartbeat_secs = 3\n[consumr]\n\
         prefetch = 1\n[billing]\nmax_charge_cents = 5\n",
    );

    let message = load(&[("CHOREO_CONFIG_FILE", &path)]).expect_err("typos in the file");

    assert_eq!(
        message,
        format!(
            "unknown settings in the settings file {path} (CHOREO_CONFIG_FILE): \
             [consumer] heartbeat_secs (it belongs in [broker]), \
             [consumer] retry_delay_ms (did you mean retry_delays_ms?), \
             [consumr] (did you mean [consumer]?), \
             `prefetch` (it belongs in [consumer]); every setting is in docs/configuration.md"
        )
    );
}

#[test]
fn a_settings_file_sets_each_section_and_a_variable_overrides_it() {
    let (_file, path) = file(
        "[consumer]\nprefetch = 8\nretry_delays_ms = [100, 300]\n[broker]\nprefix = \"t-\"\n\
         [orders]\nmax_unfinished_orders = 7\n",
    );

    let loaded = load_from(
        &PROCESS,
        &variables(&[("CHOREO_CONFIG_FILE", &path), ("CHOREO_PREFETCH", "9")]),
    )
    .expect("loads");
    let common = loaded.common().expect("common");

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        max_unfinished_orders: u64,
    }
    assert_eq!(loaded.own::<Own>().expect("own").max_unfinished_orders, 7);
    assert_eq!(common.consumer.prefetch, 9);
    assert_eq!(common.consumer.retry_delays_ms, vec![100, 300]);
    assert_eq!(common.broker.prefix, "t-");
}

#[test]
fn the_listing_shows_every_value_where_it_came_from_and_no_secret() {
    let (_file, path) = file("[outbox]\noutbox_batch = 100\n");
    let loaded = load_from(
        &PROCESS,
        &variables(&[
            ("CHOREO_CONFIG_FILE", &path),
            (
                "CHOREO_AMQP_URL",
                "amqp://orders:hunter2-pass@broker:5672/choreo",
            ),
            ("CHOREO_API_TOKENS", "0123456789abcdef-secret"),
            ("CHOREO_RETRY_DELAYS_MS", "10, 20"),
        ]),
    )
    .expect("loads");

    let listing = loaded.listing();
    let line = |key: &str| {
        listing
            .lines()
            .find(|line| line.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in {listing}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };

    assert_eq!(line("prefetch"), "prefetch = 64 # default");
    assert_eq!(
        line("outbox_batch"),
        format!("outbox_batch = 100 # settings file {path}")
    );
    assert_eq!(
        line("retry_delays_ms"),
        "retry_delays_ms = [10, 20] # CHOREO_RETRY_DELAYS_MS"
    );
    assert_eq!(
        line("amqp_url"),
        "amqp_url = \"amqp://orders:***@broker:5672/choreo\" # CHOREO_AMQP_URL"
    );
    assert_eq!(
        line("api_tokens"),
        "api_tokens = \"(set, hidden)\" # CHOREO_API_TOKENS"
    );
    assert_eq!(line("http_addr"), "http_addr = \"0.0.0.0:8080\" # default");
    assert_eq!(
        line("max_unfinished_orders"),
        "max_unfinished_orders = 1500 # default"
    );
    assert!(
        !listing.contains("hunter2") && !listing.contains("abcdef"),
        "{listing}"
    );
    // Every section, every key.
    for section in PROCESS.sections() {
        assert!(
            listing.contains(&format!("[{}]", section.name)),
            "{listing}"
        );
        for key in section.keys {
            line(key.name);
        }
    }
}

#[test]
fn near_misses_are_named_and_far_ones_are_not() {
    let known = ["prefetch", "prefix", "carrier", "log_format"];
    assert_eq!(closest("prefecth", &known), Some("prefetch"));
    assert_eq!(closest("prefx", &known), Some("prefix"));
    assert_eq!(closest("carier", &known), Some("carrier"));
    assert_eq!(closest("speed", &known), None);
    assert_eq!(closest("x", &known), None);
}

#[test]
fn lists_parse_with_spaces_and_empties() {
    assert_eq!(
        parse_list::<u64>("100, 200,,300").expect("parses"),
        vec![100, 200, 300]
    );
    assert!(parse_list::<u64>("").expect("parses").is_empty());
    assert!(parse_list::<u64>("1,x").is_err());
}

#[test]
fn a_service_consumes_its_own_queue_unless_told_a_partition_of_it() {
    assert_eq!(
        defaults_of().messaging().expect("valid").consume_queue,
        None
    );
    let partition = load(&[("CHOREO_CONSUME_QUEUE", " orders.p2 ")]).expect("valid");
    assert_eq!(
        partition
            .messaging()
            .expect("valid")
            .consume_queue
            .as_deref(),
        Some("orders.p2")
    );
}

#[test]
fn a_variable_that_is_no_whole_number_stops_the_service_naming_it_and_its_value() {
    for bad in ["abc", "", "1.5", "yes", "true", "1e3", "12 apples"] {
        let message = load(&[("CHOREO_PREFETCH", bad)]).expect_err(bad);

        assert!(message.contains("CHOREO_PREFETCH"), "{message}");
        assert!(message.contains(&format!("{bad:?}")), "{message}");
        assert!(message.contains("a whole number"), "{message}");
    }
    assert_eq!(
        load(&[("CHOREO_PREFETCH", "16")]).map(|s| s.consumer.prefetch),
        Ok(16)
    );
}

#[test]
fn a_list_is_read_with_spaces_one_element_or_none() {
    let delays =
        |text: &str| load(&[("CHOREO_RETRY_DELAYS_MS", text)]).map(|s| s.consumer.retry_delays_ms);

    assert_eq!(delays("100, 300,,"), Ok(vec![100, 300]));
    assert_eq!(delays("1000"), Ok(vec![1000]));
    assert_eq!(delays(""), Ok(vec![]));
    assert_eq!(delays(" "), Ok(vec![]));
}

#[test]
fn a_bad_list_stops_the_service_naming_it_and_its_value() {
    let word = load(&[("CHOREO_RETRY_DELAYS_MS", "100,soon")]).expect_err("soon");
    let zero = load(&[("CHOREO_RETRY_DELAYS_MS", "100,0")]).expect_err("zero");
    let fraction = load(&[("CHOREO_RETRY_DELAYS_MS", "2.5")]).expect_err("2.5");
    let many = load(&[("CHOREO_RETRY_DELAYS_MS", &vec!["5"; 101].join(","))]).expect_err("101");

    assert_eq!(
        word,
        "CHOREO_RETRY_DELAYS_MS ([consumer] retry_delays_ms) is \"100,soon\": it must be whole \
         numbers from 1 to 86400000, comma-separated, at most 100 of them"
    );
    assert!(zero.contains("is \"100,0\""), "{zero}");
    assert!(fraction.contains("is \"2.5\""), "{fraction}");
    assert!(many.contains("at most 100"), "{many}");
}

#[test]
fn text_settings_keep_their_text_when_it_looks_like_a_number_or_a_boolean() {
    let settings = load(&[
        ("CHOREO_PREFIX", "007"),
        ("CHOREO_DATA_DIR", "1e3"),
        ("CHOREO_CONSUME_QUEUE", "TRUE"),
        ("CHOREO_OTLP_ENDPOINT", "1.50"),
    ])
    .expect("loads");

    assert_eq!(settings.broker.prefix, "007");
    assert_eq!(settings.database.data_dir, "1e3");
    assert_eq!(settings.consumer.consume_queue, "TRUE");
    assert_eq!(settings.telemetry.otlp_endpoint, "1.50");
}

#[test]
fn the_docs_tables_name_every_key_with_its_default_and_range() {
    let tables = markdown(&[PROCESS]);

    assert!(
        tables.contains("| `CHOREO_PREFETCH` | `64` | 1 to 65,535 |"),
        "{tables}"
    );
    assert!(
        tables.contains("| `CHOREO_HTTP_ADDR` | `127.0.0.1:0`; orders: `0.0.0.0:8080` | text |"),
        "{tables}"
    );
    assert!(tables.contains("### `[orders]`"), "{tables}");
    for section in PROCESS.sections() {
        for key in section.keys {
            assert!(
                tables.contains(&format!("`{}`", key.variable())),
                "{}",
                key.name
            );
        }
    }
}

/// The parent of [`in_a_child_with_failpoints_set`]: the variable must really be in the
/// process's environment, and setting it here would take `unsafe` (`std::env::set_var`).
#[test]
fn a_developers_failpoints_in_the_environment_reach_load_but_never_defaults() {
    let child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "settings::tests::in_a_child_with_failpoints_set"])
        .args(["--ignored", "--test-threads=1"])
        .env("CHOREO_FAILPOINTS", "consumer.after_commit")
        .output()
        .expect("runs");

    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
#[ignore = "run in a child process, with CHOREO_FAILPOINTS set, by the test above"]
fn in_a_child_with_failpoints_set() {
    let Ok(set) = std::env::var("CHOREO_FAILPOINTS") else {
        return;
    };

    let loaded = super::load(&PROCESS)
        .and_then(|loaded| loaded.common())
        .expect("loads");

    assert_eq!(
        loaded.runtime.failpoints, set,
        "the variable is visible to load"
    );
    assert_eq!(
        defaults_of().runtime.failpoints,
        "",
        "and never to defaults"
    );
}

/// Text a person might put in a variable: anything, numbers of any sign and size, lists, and
/// the words config would read as something else.
fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<String>(),
        "-?[0-9]{1,21}",
        "[0-9, ]{0,24}",
        "(true|TRUE|yes|off|1\\.5|1e3|NaN|inf|-0|\\+7| 8 )",
        "(amqp|amqps|http)://[a-z:@/%.0-9]{0,20}",
    ]
}

fn every_key() -> Vec<&'static Key> {
    PROCESS
        .sections()
        .flat_map(|section| section.keys.iter())
        .collect()
}

proptest::proptest! {
    #[test]
    fn any_text_in_any_setting_loads_in_range_or_stops_naming_a_variable_it_was_given(
        given in proptest::collection::vec((0..every_key().len(), any_text()), 0..6)
    ) {
        let keys = every_key();
        let variables: HashMap<String, String> = given
            .iter()
            .map(|(index, text)| (keys[*index].variable(), text.clone()))
            .collect();

        match load_map(&variables) {
            Ok(settings) => {
                for (name, text) in &variables {
                    let kept = match name.as_str() {
                        "CHOREO_PREFIX" => &settings.broker.prefix,
                        "CHOREO_DATA_DIR" => &settings.database.data_dir,
                        "CHOREO_LOG_FORMAT" => &settings.telemetry.log_format,
                        "CHOREO_FAILPOINTS" => &settings.runtime.failpoints,
                        _ => continue,
                    };
                    proptest::prop_assert_eq!(kept, text);
                }
            }
            Err(message) => {
                // CHOREO_RECONNECT_MAX_MS is bounded below by CHOREO_RECONNECT_MIN_MS.
                let named = variables.keys().any(|name| message.contains(name.as_str()))
                    || (variables.contains_key("CHOREO_RECONNECT_MIN_MS")
                        && message.contains("CHOREO_RECONNECT_MAX_MS"));
                proptest::prop_assert!(named, "{message} (given {variables:?})");
            }
        }
    }
}
