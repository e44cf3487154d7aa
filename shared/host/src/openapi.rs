//! The OpenAPI 3.1 document of a service's HTTP API, assembled in code from the types its routes
//! take and answer. Their schemas come from `schemars` (JSON Schema 2020-12, which OpenAPI 3.1
//! uses as is), so a field added to a response is documented the moment it is answered.
//!
//! A service describes its own operations ([`OpenApi::operation`]); [`OpenApi::finish`] adds
//! what [`crate::http::with_conventions`] serves on every service (`/healthz`, `/readyz`,
//! `/openapi.json`, `/metrics`), the `503` every bounded route may answer, and the bearer
//! security scheme with the `401` of every route but the probes (see [`crate::auth`]). The
//! document is served at `GET /openapi.json` and written to `docs/api/` by the `api-docs` tool.

use crate::http::{ErrorBody, Health, ReadinessReport};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

/// The OpenAPI version written.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Where schemas live in an OpenAPI document.
const SCHEMAS_PATH: &str = "/components/schemas";

/// An OpenAPI document being assembled.
#[derive(Debug)]
pub struct OpenApi {
    service: &'static str,
    description: String,
    default_port: u16,
    /// Request bodies and parameters: what the service accepts (serde's deserialize contract).
    requests: SchemaGenerator,
    /// Response bodies: what the service answers (serde's serialize contract).
    responses: SchemaGenerator,
    paths: Map<String, Value>,
}

fn generator(serialize: bool) -> SchemaGenerator {
    let settings =
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = SCHEMAS_PATH.into());
    if serialize {
        settings.for_serialize().into_generator()
    } else {
        settings.for_deserialize().into_generator()
    }
}

impl OpenApi {
    /// A document for `service`, listening on `default_port` unless configured otherwise.
    pub fn new(service: &'static str, default_port: u16, description: impl Into<String>) -> Self {
        OpenApi {
            service,
            description: description.into(),
            default_port,
            requests: generator(false),
            responses: generator(true),
            paths: Map::new(),
        }
    }

    /// The schema of a request body of type `T` (a `$ref` for a named type).
    pub fn request_schema<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    /// The schema of a response body of type `T` (a `$ref` for a named type).
    pub fn response_schema<T: JsonSchema>(&mut self) -> Value {
        self.responses.subschema_for::<T>().to_value()
    }

    /// The query parameters of an axum `Query<T>`: one per property of `T`, with its schema and
    /// description, required when `T` requires it.
    pub fn query_parameters<T: JsonSchema>(&mut self) -> Vec<Value> {
        let schema = T::json_schema(&mut self.requests).to_value();
        let required: Vec<&Value> = schema["required"]
            .as_array()
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        let Some(properties) = schema["properties"].as_object() else {
            return Vec::new();
        };
        properties
            .iter()
            .map(|(name, property)| {
                let mut property = property.clone();
                // An absent parameter is how a query says "none": `Option` means not required,
                // never a null value.
                if let Some(types) = property["type"].as_array() {
                    let types: Vec<Value> =
                        types.iter().filter(|t| *t != "null").cloned().collect();
                    property["type"] = match types.as_slice() {
                        [one] => one.clone(),
                        _ => Value::Array(types),
                    };
                }
                let description = property
                    .as_object_mut()
                    .and_then(|p| p.remove("description"))
                    .unwrap_or(Value::Null);
                let mut parameter = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&&json!(name)),
                    "schema": property,
                });
                if !description.is_null() {
                    parameter["description"] = description;
                }
                parameter
            })
            .collect()
    }

    /// A JSON response with a body of type `T`.
    pub fn json_response<T: JsonSchema>(&mut self, description: &str) -> Value {
        json!({
            "description": description,
            "content": {"application/json": {"schema": self.response_schema::<T>()}},
        })
    }

    /// An error response in the contract's shape.
    pub fn error_response(&mut self, description: &str) -> Value {
        self.json_response::<ErrorBody>(description)
    }

    /// Adds `operation` (an OpenAPI Operation Object) as `method` (lower case) on `path`. Every
    /// route of a service is bounded, so each gets the `503` of an overloaded, timed-out or
    /// database-less service unless it says otherwise; and each needs the bearer token when
    /// tokens are configured, so it gets the `401` too, unless it declares its own `security`
    /// (`[]`: open, as the observer's page is).
    pub fn operation(&mut self, method: &str, path: &str, mut operation: Value) {
        if operation.get("security").is_none()
            && let Some(responses) = operation["responses"].as_object_mut()
            && !responses.contains_key("401")
        {
            responses.insert("401".into(), self.unauthorized());
        }
        if let Some(responses) = operation["responses"].as_object_mut()
            && !responses.contains_key("503")
        {
            let unavailable = json!({
                "description": "Overloaded, timed out or without its database: retry later \
                                (with the same `Idempotency-Key` for `POST /orders`).",
                "headers": {"Retry-After": {
                    "description": "Seconds to wait; sent when the request was shed or timed out.",
                    "schema": {"type": "integer"},
                }},
                "content": {"application/json": {"schema": self.response_schema::<ErrorBody>()}},
            });
            responses.insert("503".into(), unavailable);
        }
        let item = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| json!({}));
        item[method] = operation;
    }

    /// The `401` of a request without a right bearer token.
    fn unauthorized(&mut self) -> Value {
        json!({
            "description": "Without `Authorization: Bearer <token>` naming one of the service's \
                            API tokens (only when `CHOREO_API_TOKENS` is set).",
            "headers": {"WWW-Authenticate": {
                "description": "`Bearer`, with `error=\"invalid_token\"` for a wrong token.",
                "schema": {"type": "string"},
            }},
            "content": {"application/json": {"schema": self.response_schema::<ErrorBody>()}},
        })
    }

    /// The paths documented so far.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.keys().map(String::as_str)
    }

    /// The document, with the conventions of every service added.
    pub fn finish(mut self) -> Value {
        self.add_conventions();
        let mut schemas = self.requests.take_definitions(true);
        for (name, schema) in self.responses.take_definitions(true) {
            // A type both accepted and answered must have one shape: it has one name.
            if let Some(accepted) = schemas.get(&name) {
                assert_eq!(
                    accepted, &schema,
                    "{name} is accepted and answered in different shapes; give them two types"
                );
            }
            schemas.insert(name, schema);
        }
        schemas.sort_keys();
        let title = format!("Choreo {} API", self.service);
        json!({
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": title,
                "version": env!("CARGO_PKG_VERSION"),
                "description": self.description,
                "license": {"name": "MIT", "identifier": "MIT"},
            },
            "servers": [{
                "url": format!("http://localhost:{}", self.default_port),
                "description": "the default listen address (`CHOREO_HTTP_ADDR`)",
            }],
            "paths": self.paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the tokens in `CHOREO_API_TOKENS`. Required only when \
                                    that setting is not empty (it is empty by default: the API \
                                    is then meant for a private network, and needs nothing).",
                }},
            },
            // Every operation needs the token when tokens are configured, except those that
            // say `security: []` (the probes).
            "security": [{"bearer": []}],
        })
    }

    fn add_conventions(&mut self) {
        let unauthorized = self.unauthorized();
        let health = self.json_response::<Health>("The process runs.");
        self.paths.insert(
            "/healthz".into(),
            json!({"get": {
                "operationId": "getHealth",
                "summary": "Liveness",
                "description": "200 while the process runs. Not bounded by the concurrency limit.",
                "tags": ["health"],
                "security": [],
                "responses": {"200": health},
            }}),
        );
        let ready = self.json_response::<ReadinessReport>("Broker, consumer and database work.");
        let not_ready = self.json_response::<ReadinessReport>("At least one check is failing.");
        self.paths.insert(
            "/readyz".into(),
            json!({"get": {
                "operationId": "getReadiness",
                "summary": "Readiness",
                "description": "200 when the broker connection, the consumer and the database all \
                                work; 503 saying which does not. Not bounded by the concurrency limit.",
                "tags": ["health"],
                "security": [],
                "responses": {"200": ready, "503": not_ready},
            }}),
        );
        self.paths.insert(
            "/openapi.json".into(),
            json!({"get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "description": "The OpenAPI 3.1 document of this service's HTTP API.",
                "tags": ["meta"],
                "responses": {"200": {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }, "401": unauthorized.clone()},
            }}),
        );
        self.paths.insert(
            "/metrics".into(),
            json!({"get": {
                "operationId": "getMetrics",
                "summary": "Metrics",
                "description": "This service's metrics in the Prometheus text format (version \
                                0.0.4): messages consumed by type and outcome, handler and \
                                transaction durations, events published and confirmed, the \
                                outbox backlog and the age of its oldest row, the inbox's size, \
                                the broker connection, HTTP requests by route and status; in \
                                orders, saga outcomes. docs/observability.md lists every series. Not \
                                bounded by the concurrency limit.",
                "tags": ["meta"],
                "responses": {"200": {
                    "description": "Every series, each labelled with `service`.",
                    "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
                }, "401": unauthorized},
            }}),
        );
    }
}
