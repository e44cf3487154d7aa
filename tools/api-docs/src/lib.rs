//! The API documents of the suite, generated from the code and written to `docs/api/`:
//!
//! - `asyncapi.json`: AsyncAPI 3.0 of the whole choreography ([`asyncapi`]);
//! - `schemas/<type>.json`: a JSON Schema (2020-12) per event type, the CloudEvents envelope with
//!   its payload (`choreo_events::schema`);
//! - `examples/<type>.json`: an example event per type, valid against its schema ([`examples`]);
//! - `openapi/<service>.json`: each service's OpenAPI 3.1 document, the one it serves at
//!   `GET /openapi.json` (`<service>::http::openapi`), the observer's included. The AsyncAPI
//!   document leaves the observer out on purpose: it sends nothing, and its queue is its own,
//!   not part of the suite topology every service declares.
//!
//! - and, beside them, `docs/configuration.md`: its prose from `templates/configuration.md`, its
//!   tables from the settings' declarations ([`configuration`]).
//!
//! [`check`] regenerates them in memory and lists what differs from the files, so that CI (and
//! `cargo test`) fail when the code changed and `docs/api/` was not regenerated.

pub mod asyncapi;
pub mod examples;

use choreo_events::EventType;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the documents live, from the workspace root.
pub const DOCS_API: &str = "docs/api";

/// The directories whose every `.json` file is generated: a file there that the code no longer
/// generates (an event type removed) is reported as stale.
const GENERATED_DIRS: [&str; 3] = ["schemas", "examples", "openapi"];

/// The `docs/api` directory of this workspace.
pub fn default_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // tools/api-docs -> the workspace root.
    let root = manifest.ancestors().nth(2).unwrap_or(manifest);
    root.join(DOCS_API)
}

/// Every generated file: its path under `docs/api` and its content.
pub fn generate() -> Vec<(PathBuf, String)> {
    let mut files = vec![(
        PathBuf::from("asyncapi.json"),
        pretty(&asyncapi::document()),
    )];
    for event_type in EventType::ALL {
        let name = format!("{}.json", event_type.routing_key());
        files.push((
            Path::new("schemas").join(&name),
            pretty(&choreo_events::schema::event_document(event_type)),
        ));
        files.push((
            Path::new("examples").join(&name),
            pretty(&examples::example(event_type)),
        ));
    }
    for (service, document) in openapi_documents() {
        files.push((
            Path::new("openapi").join(format!("{service}.json")),
            pretty(&document),
        ));
    }
    files.push((PathBuf::from("../configuration.md"), configuration()));
    files
}

/// What each process of the suite reads.
pub const PROCESSES: [choreo_host::settings::Process; 4] = [
    orders::SETTINGS,
    billing::SETTINGS,
    shipping::SETTINGS,
    observer::SETTINGS,
];

/// `docs/configuration.md`: the template's prose around the tables of every section.
pub fn configuration() -> String {
    include_str!("../templates/configuration.md")
        .replace("{{tables}}", &choreo_host::settings::markdown(&PROCESSES))
}

/// Each service's OpenAPI document, by service name.
pub fn openapi_documents() -> [(&'static str, Value); 4] {
    [
        ("orders", orders::http::openapi()),
        ("billing", billing::http::openapi()),
        ("shipping", shipping::http::openapi()),
        ("observer", observer::http::openapi()),
    ]
}

fn pretty(value: &Value) -> String {
    // A `Value` of strings, numbers and maps always serializes.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes every generated file under `dir` and removes stale ones; returns what changed.
pub fn write(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut changed = Vec::new();
    for problem in check(dir)? {
        changed.push(problem.describe());
        match problem {
            Problem::Stale(path) => std::fs::remove_file(dir.join(path))?,
            Problem::Missing(path, content) | Problem::Differs(path, content) => {
                let path = dir.join(path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(path, content)?;
            }
        }
    }
    Ok(changed)
}

/// Why a file under `docs/api` is not what the code generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Generated, but not on disk.
    Missing(PathBuf, String),
    /// On disk with other content.
    Differs(PathBuf, String),
    /// On disk in a generated directory, but no longer generated.
    Stale(PathBuf),
}

impl Problem {
    pub fn describe(&self) -> String {
        match self {
            Problem::Missing(path, _) => format!("missing: {}", path.display()),
            Problem::Differs(path, _) => format!("differs: {}", path.display()),
            Problem::Stale(path) => format!("stale: {}", path.display()),
        }
    }
}

/// What under `dir` differs from a fresh generation; empty when the documents are up to date.
pub fn check(dir: &Path) -> std::io::Result<Vec<Problem>> {
    let files = generate();
    let mut problems = Vec::new();
    for (path, content) in &files {
        match std::fs::read_to_string(dir.join(path)) {
            Ok(found) if &found == content => {}
            Ok(_) => problems.push(Problem::Differs(path.clone(), content.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(Problem::Missing(path.clone(), content.clone()));
            }
            Err(e) => return Err(e),
        }
    }
    let generated: BTreeSet<&PathBuf> = files.iter().map(|(path, _)| path).collect();
    for sub in GENERATED_DIRS {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = Path::new(sub).join(entry?.file_name());
            if path.extension().is_some_and(|e| e == "json") && !generated.contains(&path) {
                problems.push(Problem::Stale(path));
            }
        }
    }
    problems.sort_by_key(Problem::describe);
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_api_documents_are_what_the_code_generates() {
        let problems = check(&default_dir()).expect("docs/api is readable");
        let described: Vec<String> = problems.iter().map(Problem::describe).collect();
        assert!(
            described.is_empty(),
            "docs/api is out of date ({}); regenerate it with `make api-docs`",
            described.join(", ")
        );
    }

    #[test]
    fn every_example_is_valid_against_its_schema_and_a_broken_one_is_not() {
        for event_type in EventType::ALL {
            let schema = choreo_events::schema::event_document(event_type);
            let validator = jsonschema::validator_for(&schema).expect("a valid schema");
            let example = examples::example(event_type);
            let errors: Vec<String> = validator
                .iter_errors(&example)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{event_type}: {errors:?}");
            // The example must also be what the consumers accept.
            let envelope =
                choreo_events::Envelope::decode(example.to_string().as_bytes()).expect("decodes");
            envelope.event().expect("a valid event");

            let mut broken = example.clone();
            broken["data"]["order_id"] = Value::from(7);
            assert!(
                !validator.is_valid(&broken),
                "{event_type} accepts a numeric order_id"
            );
        }
    }

    #[test]
    fn every_route_of_every_service_is_documented_and_nothing_else() {
        let routed = [
            ("orders", orders::http::routing().paths().to_vec()),
            ("billing", billing::http::routing().paths().to_vec()),
            ("shipping", shipping::http::routing().paths().to_vec()),
            (
                "observer",
                observer::http::routing()
                    .paths()
                    .iter()
                    .chain(observer::http::live_routing().paths())
                    .copied()
                    .collect(),
            ),
        ];
        for ((service, document), (_, paths)) in openapi_documents().into_iter().zip(routed) {
            let documented: BTreeSet<&str> = document["paths"]
                .as_object()
                .expect("paths")
                .keys()
                .map(String::as_str)
                .collect();
            let served: BTreeSet<&str> = paths
                .iter()
                .copied()
                .chain(choreo_host::http::CONVENTION_PATHS)
                .collect();
            assert_eq!(documented, served, "{service}");
        }
    }

    #[test]
    fn the_asyncapi_document_shows_every_binding_the_runtime_declares() {
        let document = asyncapi::document();
        let billing = &document["channels"]["queue-billing"]["bindings"]["amqp"];
        assert_eq!(billing["x-arguments"]["x-queue-type"], "quorum");
        assert_eq!(billing["x-arguments"]["x-delivery-limit"], 20);
        let keys: Vec<&str> = billing["x-bindings"]
            .as_array()
            .expect("bindings")
            .iter()
            .filter_map(|b| b["routingKey"].as_str())
            .collect();
        // Its redelivery exchange's binding (retries, redriven dead letters), then the contract's.
        assert_eq!(keys, ["billing", "order.placed", "shipment.failed"]);
        let unrouted = document["channels"]["queue-orders-events-unrouted"]["messages"]
            .as_object()
            .expect("messages");
        let parked: Vec<&String> = unrouted.keys().collect();
        assert_eq!(parked, ["order-cancelled", "order-completed"]);
        assert_eq!(
            document["operations"]["shipping-sends-shipment-failed"]["action"],
            "send"
        );
    }
}
