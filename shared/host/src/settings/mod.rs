//! Settings in layers: built-in defaults, then an optional TOML file named by `CHOREO_CONFIG_FILE`,
//! then environment variables `CHOREO_<KEY>` (for example `CHOREO_PREFETCH`).
//!
//! Settings come in sections ([`sections`]: broker, consumer, outbox, HTTP, database, retention,
//! telemetry, runtime; and each service's own). A section declares each of its keys once, as a
//! [`Key`]: its name, default, range or choices, and meaning. Everything else is derived from
//! that declaration:
//! - the variable (`prefetch` of `[consumer]` is `CHOREO_PREFETCH`: key names are unique across
//!   sections, so a variable needs no section in its name);
//! - the defaults layer, and the environment layer ([`Variables`], which reads each variable as
//!   its key's kind says);
//! - the checks, run on the layered values before anything is deserialized, so that every value
//!   out of its range, of the wrong kind or not among its choices is refused in one form
//!   (`CHOREO_PREFETCH ([consumer] prefetch) is 70000: it must be a whole number from 1 to
//!   65535`), whatever type its field has;
//! - the refusal of unknown variables and file keys, with a "did you mean";
//! - `<service> settings` ([`Loaded::listing`]), which prints every effective value and where it
//!   came from;
//! - the tables of docs/configuration.md ([`markdown`], written by `make api-docs` and kept in
//!   sync by a test).
//!
//! The `config` crate does the layering and the typed deserialization; each section's struct
//! denies unknown fields. What it cannot do on its own is in docs/configuration.md, "How settings
//! are read".

pub mod sections;
#[cfg(test)]
mod tests;

pub use sections::CommonSettings;

use config::{Config, ConfigError, File, Map, Source, Value, ValueKind};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// A setting's kind, with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Text, kept exactly as written (`CHOREO_PREFIX=007` stays `007`).
    Text(&'static str),
    /// A whole number; anything else stops the service.
    Number(i64),
    /// Whole numbers, comma-separated in a variable (`CHOREO_RETRY_DELAYS_MS=100,300`); empty:
    /// none.
    Numbers(&'static [i64]),
    /// Words, comma-separated in a variable (`CHOREO_COUNTRIES=DE,FR`); empty: none.
    Words(&'static [&'static str]),
}

impl Setting {
    fn value(self) -> Value {
        let kind = match self {
            Setting::Text(text) => ValueKind::from(text),
            Setting::Number(number) => ValueKind::from(number),
            Setting::Numbers(numbers) => ValueKind::from(numbers.to_vec()),
            Setting::Words(words) => ValueKind::from(words.to_vec()),
        };
        Value::new(None, kind)
    }

    /// The default as the docs and `settings` show it.
    fn shown(self) -> String {
        match self {
            Setting::Text("") => "empty".to_owned(),
            Setting::Text(text) => format!("`{text}`"),
            Setting::Number(number) => format!("`{number}`"),
            Setting::Numbers([]) | Setting::Words([]) => "empty".to_owned(),
            Setting::Numbers(numbers) => format!(
                "`{}`",
                numbers
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Setting::Words(words) => format!("`{}`", words.join(",")),
        }
    }
}

/// What a value must be beyond its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    None,
    /// A number, or each number of a list, from the first to the second (inclusive).
    Range(i64, i64),
    /// Text that is one of these words (any case; blanks around it are ignored).
    Choice(&'static [&'static str]),
}

/// How a value is shown by `settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Plainly,
    /// URLs, with their passwords replaced by `***`.
    Redacted,
    /// Not at all: only whether it is set.
    Hidden,
}

/// One setting, declared once: everything about it is derived from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The key in its section of the file; `CHOREO_` and it in capitals is its variable.
    pub name: &'static str,
    pub default: Setting,
    pub bound: Bound,
    pub shown: Shown,
    /// What it does, in Markdown (docs/configuration.md).
    pub meaning: &'static str,
}

impl Key {
    pub const fn text(name: &'static str, default: &'static str, meaning: &'static str) -> Key {
        Key {
            name,
            default: Setting::Text(default),
            bound: Bound::None,
            shown: Shown::Plainly,
            meaning,
        }
    }

    pub const fn choice(
        name: &'static str,
        default: &'static str,
        choices: &'static [&'static str],
        meaning: &'static str,
    ) -> Key {
        Key {
            bound: Bound::Choice(choices),
            ..Key::text(name, default, meaning)
        }
    }

    pub const fn number(
        name: &'static str,
        default: i64,
        min: i64,
        max: i64,
        meaning: &'static str,
    ) -> Key {
        Key {
            name,
            default: Setting::Number(default),
            bound: Bound::Range(min, max),
            shown: Shown::Plainly,
            meaning,
        }
    }

    /// A list of numbers, each from `min` to `max`, at most [`MAX_NUMBERS`] of them.
    pub const fn numbers(
        name: &'static str,
        default: &'static [i64],
        min: i64,
        max: i64,
        meaning: &'static str,
    ) -> Key {
        Key {
            default: Setting::Numbers(default),
            ..Key::number(name, 0, min, max, meaning)
        }
    }

    pub const fn words(
        name: &'static str,
        default: &'static [&'static str],
        meaning: &'static str,
    ) -> Key {
        Key {
            name,
            default: Setting::Words(default),
            bound: Bound::None,
            shown: Shown::Plainly,
            meaning,
        }
    }

    /// The same key, shown as `shown` by `settings`.
    pub const fn shown(self, shown: Shown) -> Key {
        Key { shown, ..self }
    }

    /// Its environment variable: `prefetch` is `CHOREO_PREFETCH`.
    pub fn variable(&self) -> String {
        variable(self.name)
    }
}

/// The most numbers a list setting holds.
pub const MAX_NUMBERS: usize = 100;

/// A section of the settings: a table of the file (`[consumer]`), a struct in the code.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub name: &'static str,
    /// What its keys are about, for the docs.
    pub about: &'static str,
    pub keys: &'static [Key],
}

/// What one process of the suite reads: the common sections, its own section if it has one,
/// and its own defaults of common keys (its HTTP port).
#[derive(Debug, Clone, Copy)]
pub struct Process {
    pub name: &'static str,
    pub own: Option<&'static Section>,
    pub defaults: &'static [(&'static str, Setting)],
}

impl Process {
    /// Its sections, the common ones first.
    pub fn sections(&self) -> impl Iterator<Item = &'static Section> + use<> {
        sections::COMMON.iter().chain(self.own)
    }

    /// Each of its keys with its section and its default for this process.
    fn keys(&self) -> Vec<(&'static Section, &'static Key, Setting)> {
        self.sections()
            .flat_map(|section| section.keys.iter().map(move |key| (section, key)))
            .map(|(section, key)| {
                let default = self
                    .defaults
                    .iter()
                    .find(|(name, _)| *name == key.name)
                    .map_or(key.default, |(_, default)| *default);
                (section, key, default)
            })
            .collect()
    }
}

/// The sections of the suite's processes beyond the common ones, with their keys. A process
/// reads its own and accepts the others' without reading them, because one environment often
/// serves them all (`make up` passes every `CHOREO_*` variable to every process; Compose shares
/// a block); any other key is refused. The end-to-end crate's `settings` tests keep this list
/// equal to the services' own sections.
pub const SERVICE_SECTIONS: &[(&str, &[&str])] = &[
    ("orders", &["max_unfinished_orders"]),
    ("billing", &["max_charge_cents"]),
    ("shipping", &["countries", "carrier"]),
    (
        "observer",
        &["observer_step_deadline_ms", "observer_sweep_ms"],
    ),
];

/// `CHOREO_*` variables that are not settings: the settings file's name, the service an image
/// runs (deploy/Dockerfile), and the variables of the project's scripts (`make cluster`,
/// `make tls-test`, the images), which a shell that ran them may still export.
pub const NOT_SETTINGS: &[&str] = &[
    "CHOREO_CONFIG_FILE",
    "CHOREO_SERVICE",
    "CHOREO_CLUSTER_DIR",
    "CHOREO_IMAGE_PREFIX",
    "CHOREO_IMAGE_TAG",
    "CHOREO_TLS_DIR",
    "CHOREO_TLS_DIST_PORT",
    "CHOREO_TLS_PORT",
    "CHOREO_TOOLS_DIR",
];

/// The `CHOREO_*` variables a process was started with. A value that is not Unicode stops the
/// service, naming its variable.
pub fn environment() -> crate::Result<HashMap<String, String>> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with("CHOREO_").then_some((name, value))
        })
        .map(|(name, value)| match value.into_string() {
            Ok(value) => Ok((name, value)),
            Err(_) => Err(crate::Error::Usage(format!(
                "{name} is not valid UTF-8 text"
            ))),
        })
        .collect()
}

/// The settings of `process` as layered from the process's environment and the file it names.
pub fn load(process: &Process) -> crate::Result<Loaded> {
    load_from(process, &environment()?)
}

/// The same from `variables` instead of the process's environment (`CHOREO_CONFIG_FILE` among
/// them names the settings file): what tests feed a fake environment through.
pub fn load_from(process: &Process, variables: &HashMap<String, String>) -> crate::Result<Loaded> {
    refuse_unknown_variables(process, variables)?;
    let mut builder = with_defaults(process)?;
    let mut file_name = None;
    if let Some(path) = variables.get("CHOREO_CONFIG_FILE") {
        // Read once: its keys are checked, then it is a layer.
        let file = Config::builder()
            .add_source(File::with_name(path).required(true))
            .build()?;
        refuse_unknown_file_keys(process, path, &file)?;
        builder = builder.add_source(file);
        file_name = Some(path.clone());
    }
    let config = builder
        .add_source(Variables::read(process, variables))
        .build()?;
    let loaded = Loaded {
        process: *process,
        config,
        file: file_name,
    };
    loaded.check()?;
    Ok(loaded)
}

/// The built-in defaults of `process` alone: what tests start from, so that a developer's own
/// `CHOREO_*` variables or settings file never leak into them.
pub fn defaults(process: &Process) -> crate::Result<Loaded> {
    Ok(Loaded {
        process: *process,
        config: with_defaults(process)?.build()?,
        file: None,
    })
}

fn with_defaults(
    process: &Process,
) -> crate::Result<config::ConfigBuilder<config::builder::DefaultState>> {
    let mut builder = Config::builder();
    for (section, key, default) in process.keys() {
        builder = builder.set_default(path(section, key), default.value())?;
    }
    Ok(builder)
}

/// A key's place in the layered configuration: `consumer.prefetch`.
fn path(section: &Section, key: &Key) -> String {
    format!("{}.{}", section.name, key.name)
}

/// The variable of a settings key: `prefetch` is `CHOREO_PREFETCH`.
fn variable(key: &str) -> String {
    format!("CHOREO_{}", key.to_ascii_uppercase())
}

/// A process's layered settings, checked: its sections are deserialized from it.
#[derive(Debug, Clone)]
pub struct Loaded {
    process: Process,
    config: Config,
    /// The settings file, when one was read.
    file: Option<String>,
}

impl Loaded {
    /// The common sections.
    pub fn common(&self) -> crate::Result<CommonSettings> {
        let common: CommonSettings = named(self.config.clone().try_deserialize())?;
        common.validate()?;
        Ok(common)
    }

    /// The process's own section.
    pub fn own<T: DeserializeOwned>(&self) -> crate::Result<T> {
        let name = self.process.own.map_or("", |own| own.name);
        named(self.config.get::<Value>(name)?.try_deserialize())
    }

    /// Every value against its key's kind and bound, in one form of message.
    fn check(&self) -> crate::Result<()> {
        for (section, key, _) in self.process.keys() {
            let value = self
                .value(section, key)
                .ok_or_else(|| ConfigError::NotFound(path(section, key)))?;
            check(section, key, &value, self.file.as_deref())?;
        }
        Ok(())
    }

    /// A key's layered value, with its origin (config's `get` deserializes a copy without it).
    fn value(&self, section: &Section, key: &Key) -> Option<Value> {
        let mut top = self.config.collect().ok()?;
        let ValueKind::Table(mut table) = top.remove(section.name)?.kind else {
            return None;
        };
        table.remove(key.name)
    }

    /// The effective settings as a settings file would write them, each with where it came from
    /// (the default, the file, or its variable), secrets redacted: `<service> settings`.
    pub fn listing(&self) -> String {
        let mut out = format!(
            "# The settings of {} (defaults, then {}, then CHOREO_* variables); secrets \
             redacted.\n",
            self.process.name,
            self.file.as_deref().unwrap_or("no settings file")
        );
        for section in self.process.sections() {
            out.push_str(&format!("\n[{}]\n", section.name));
            let lines: Vec<(String, String)> = section
                .keys
                .iter()
                .map(|key| {
                    let value = self.value(section, key);
                    let origin = match value.as_ref().and_then(Value::origin) {
                        None => "default".to_owned(),
                        Some(origin) if origin.starts_with("CHOREO_") => {
                            origin.split('=').next().unwrap_or(origin).to_owned()
                        }
                        Some(_) => format!(
                            "settings file {}",
                            self.file.as_deref().unwrap_or("(unnamed)")
                        ),
                    };
                    let shown = value.map_or_else(String::new, |value| shown(key, &value));
                    (format!("{} = {shown}", key.name), origin)
                })
                .collect();
            let width = lines.iter().map(|(line, _)| line.len()).max().unwrap_or(0);
            for (line, origin) in lines {
                out.push_str(&format!("{line:width$}  # {origin}\n"));
            }
        }
        out
    }
}

/// A deserialized section (or all of them), or its error naming the variable of a value config
/// could not convert: config's own error names only the key.
fn named<T>(deserialized: Result<T, ConfigError>) -> crate::Result<T> {
    deserialized.map_err(|error| match error {
        ConfigError::Type {
            key: Some(key),
            unexpected,
            expected,
            ..
        } => {
            let name = key.rsplit('.').next().unwrap_or(&key);
            let name = name.split('[').next().unwrap_or(name);
            crate::Error::Usage(format!(
                "{} (`{key}`) is {unexpected}: it must be {expected}",
                variable(name)
            ))
        }
        other => other.into(),
    })
}

/// `value` of `key` refused: `CHOREO_PREFETCH ([consumer] prefetch) is 70000: it must be a whole
/// number from 1 to 65535`, with the settings file named when the value came from it.
pub fn refused(section: &str, key: &str, value: &str, must: &str) -> crate::Error {
    crate::Error::Usage(refusal(section, key, value, must))
}

fn refusal(section: &str, key: &str, value: &str, must: &str) -> String {
    format!(
        "{} ([{section}] {key}) is {value}: it must be {must}",
        variable(key)
    )
}

/// Checks one layered value against its key; one from the settings `file` says so.
fn check(section: &Section, key: &Key, value: &Value, file: Option<&str>) -> crate::Result<()> {
    let from = match (value.origin(), file) {
        (Some(origin), Some(file)) if !origin.starts_with("CHOREO_") => format!(" (in {file})"),
        _ => String::new(),
    };
    let refuse = |shown: String, must: String| {
        crate::Error::Usage(format!(
            "{}{from}",
            refusal(section.name, key.name, &shown, &must)
        ))
    };
    let whole = |value: &Value| match &value.kind {
        ValueKind::I64(n) => Some(*n),
        ValueKind::U64(n) => i64::try_from(*n).ok(),
        ValueKind::I128(n) => i64::try_from(*n).ok(),
        ValueKind::U128(n) => i64::try_from(*n).ok(),
        ValueKind::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    let number_must = |many: bool| match key.bound {
        Bound::Range(min, max) if many => format!(
            "whole numbers from {min} to {max}, comma-separated, at most {MAX_NUMBERS} of them"
        ),
        Bound::Range(min, max) => format!("a whole number from {min} to {max}"),
        _ if many => "whole numbers, comma-separated".to_owned(),
        _ => "a whole number".to_owned(),
    };
    let in_bound = |n: i64| match key.bound {
        Bound::Range(min, max) => (min..=max).contains(&n),
        _ => true,
    };
    match key.default {
        Setting::Text(_) => {
            let text = match &value.kind {
                ValueKind::String(text) => text.clone(),
                ValueKind::I64(_)
                | ValueKind::U64(_)
                | ValueKind::I128(_)
                | ValueKind::U128(_)
                | ValueKind::Float(_)
                | ValueKind::Boolean(_) => value.to_string(),
                _ => return Err(refuse(kind_of(value), "text".to_owned())),
            };
            if let Bound::Choice(choices) = key.bound
                && !choices
                    .iter()
                    .any(|choice| text.trim().eq_ignore_ascii_case(choice))
            {
                let words: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
                return Err(refuse(format!("{text:?}"), one_of(&words)));
            }
        }
        Setting::Number(_) => {
            if !whole(value).is_some_and(in_bound) {
                return Err(refuse(shown_raw(value), number_must(false)));
            }
        }
        Setting::Numbers(_) => {
            let ValueKind::Array(elements) = &value.kind else {
                return Err(refuse(shown_raw(value), number_must(true)));
            };
            if elements.len() > MAX_NUMBERS
                || !elements.iter().all(|e| whole(e).is_some_and(in_bound))
            {
                return Err(refuse(shown_raw(value), number_must(true)));
            }
        }
        Setting::Words(_) => {
            let ValueKind::Array(elements) = &value.kind else {
                return Err(refuse(
                    shown_raw(value),
                    "words, comma-separated".to_owned(),
                ));
            };
            if !elements
                .iter()
                .all(|e| matches!(e.kind, ValueKind::String(_)))
            {
                return Err(refuse(
                    shown_raw(value),
                    "words, comma-separated".to_owned(),
                ));
            }
        }
    }
    Ok(())
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn kind_of(value: &Value) -> String {
    match value.kind {
        ValueKind::Table(_) => "a table".to_owned(),
        ValueKind::Array(_) => "a list".to_owned(),
        ValueKind::Nil => "nothing".to_owned(),
        _ => shown_raw(value),
    }
}

/// A value as it was given: text quoted (as written in the variable), numbers bare, a list as
/// the variable wrote it (`"100,soon"`) or as a TOML array.
fn shown_raw(value: &Value) -> String {
    match &value.kind {
        ValueKind::String(text) => format!("{text:?}"),
        ValueKind::Array(elements) => {
            if let Some(text) = value
                .origin()
                .and_then(|origin| origin.split_once('='))
                .map(|(_, text)| text)
            {
                return format!("{text:?}");
            }
            let shown: Vec<String> = elements.iter().map(shown_raw).collect();
            format!("[{}]", shown.join(", "))
        }
        _ => value.to_string(),
    }
}

/// A value as `settings` prints it, in TOML.
fn shown(key: &Key, value: &Value) -> String {
    let text = |value: &Value| value.clone().into_string().unwrap_or_default();
    match (&value.kind, key.shown) {
        (_, Shown::Hidden) if text(value).trim().is_empty() => "\"\"".to_owned(),
        (_, Shown::Hidden) => "\"(set, hidden)\"".to_owned(),
        (_, Shown::Redacted) if text(value).trim().is_empty() => "\"\"".to_owned(),
        (_, Shown::Redacted) => format!("{:?}", choreo_messaging::redact(&text(value))),
        (ValueKind::Array(elements), _) => {
            let shown: Vec<String> = elements.iter().map(|e| shown(key, e)).collect();
            format!("[{}]", shown.join(", "))
        }
        (ValueKind::String(text), _)
            if matches!(key.default, Setting::Text(_) | Setting::Words(_)) =>
        {
            format!("{text:?}")
        }
        _ => value.to_string(),
    }
}

/// The `CHOREO_*` variables as a configuration source: each read as its key's kind says, never
/// guessed from its text (config's own `Environment` with `try_parsing` would read
/// `CHOREO_PREFIX=007` as the number 7 and `CHOREO_PREFETCH=1.5` as 2, and a one-element list
/// as a number). A number that is not a whole one is kept as its text, for [`check`] to refuse
/// in the same form as a value out of its range. Each value's origin is its variable, which
/// [`Loaded::listing`] prints.
#[derive(Debug, Clone)]
struct Variables(Map<String, Value>);

impl Variables {
    fn read(process: &Process, variables: &HashMap<String, String>) -> Variables {
        let mut values = Map::new();
        for (section, key, _) in process.keys() {
            let name = key.variable();
            let Some(text) = variables.get(&name) else {
                continue;
            };
            let number = |text: &str| match text.trim().parse::<i64>() {
                Ok(n) => ValueKind::I64(n),
                Err(_) => ValueKind::String(text.to_owned()),
            };
            let elements = || text.split(',').map(str::trim).filter(|e| !e.is_empty());
            // A list's origin carries its text, so that a bad one is shown as it was written.
            let origin = match key.default {
                Setting::Numbers(_) | Setting::Words(_) => format!("{name}={text}"),
                _ => name.clone(),
            };
            let element = |kind: ValueKind| Value::new(Some(&origin), kind);
            let kind = match key.default {
                Setting::Text(_) => ValueKind::String(text.clone()),
                Setting::Number(_) => number(text),
                Setting::Numbers(_) => {
                    ValueKind::Array(elements().map(|e| element(number(e))).collect())
                }
                Setting::Words(_) => ValueKind::Array(
                    elements()
                        .map(|e| element(ValueKind::String(e.to_owned())))
                        .collect(),
                ),
            };
            values.insert(path(section, key), Value::new(Some(&origin), kind));
        }
        Variables(values)
    }
}

impl Source for Variables {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        Ok(self.0.clone())
    }
}

/// Every key a process of the suite knows: the common sections', its own, and the other
/// services'.
fn known_keys(process: &Process) -> Vec<&'static str> {
    process
        .sections()
        .flat_map(|section| section.keys.iter().map(|key| key.name))
        .chain(
            SERVICE_SECTIONS
                .iter()
                .flat_map(|(_, keys)| keys.iter().copied()),
        )
        .collect()
}

/// Refuses a `CHOREO_*` variable that is no setting of the suite (a typo such as
/// `CHOREO_PREFECTH` would otherwise leave the default in force, silently), naming the closest
/// setting when one is near.
fn refuse_unknown_variables(
    process: &Process,
    variables: &HashMap<String, String>,
) -> crate::Result<()> {
    let known = known_keys(process);
    let mut unknown: Vec<String> = variables
        .keys()
        .filter(|name| !NOT_SETTINGS.contains(&name.as_str()))
        .filter_map(|name| name.strip_prefix("CHOREO_"))
        .map(str::to_ascii_lowercase)
        .filter(|key| !known.contains(&key.as_str()))
        .map(|key| match closest(&key, &known) {
            Some(near) => format!("{} (did you mean {}?)", variable(&key), variable(near)),
            None => variable(&key),
        })
        .collect();
    match unknown.len() {
        0 => Ok(()),
        count => {
            unknown.sort();
            Err(crate::Error::Usage(format!(
                "unknown setting{}: {}; every setting is in docs/configuration.md",
                if count == 1 { "" } else { "s" },
                unknown.join(", ")
            )))
        }
    }
}

/// Refuses what in the settings file is no setting of the suite: a table that is no section, a
/// key outside its section's, or one in the wrong section or in none; naming, for each, the
/// place it was near or belongs in.
fn refuse_unknown_file_keys(process: &Process, path: &str, file: &Config) -> crate::Result<()> {
    let sections: Vec<(&str, Vec<&str>)> = process
        .sections()
        .map(|section| {
            (
                section.name,
                section.keys.iter().map(|key| key.name).collect(),
            )
        })
        .chain(
            SERVICE_SECTIONS
                .iter()
                .map(|(name, keys)| (*name, keys.to_vec())),
        )
        .collect();
    let home = |key: &str| {
        sections
            .iter()
            .find(|(_, keys)| keys.contains(&key))
            .map(|(name, _)| *name)
    };
    let names: Vec<&str> = sections.iter().map(|(name, _)| *name).collect();
    let mut unknown = Vec::new();
    for (top, value) in file.collect()? {
        let Some((name, keys)) = sections.iter().find(|(name, _)| *name == top) else {
            unknown.push(match (home(&top), closest(&top, &names)) {
                (Some(home), _) => format!("`{top}` (it belongs in [{home}])"),
                (None, Some(near)) => format!("[{top}] (did you mean [{near}]?)"),
                (None, None) => format!("[{top}]"),
            });
            continue;
        };
        let ValueKind::Table(table) = value.kind else {
            unknown.push(format!("`{top}` (a section: write [{top}] above its keys)"));
            continue;
        };
        for key in table.keys() {
            if keys.contains(&key.as_str()) {
                continue;
            }
            unknown.push(match (home(key), closest(key, keys)) {
                (Some(home), _) => format!("[{name}] {key} (it belongs in [{home}])"),
                (None, Some(near)) => format!("[{name}] {key} (did you mean {near}?)"),
                (None, None) => format!("[{name}] {key}"),
            });
        }
    }
    match unknown.len() {
        0 => Ok(()),
        count => {
            unknown.sort();
            Err(crate::Error::Usage(format!(
                "unknown setting{} in the settings file {path} (CHOREO_CONFIG_FILE): {}; every \
                 setting is in docs/configuration.md",
                if count == 1 { "" } else { "s" },
                unknown.join(", ")
            )))
        }
    }
}

/// The known name nearest to `name`, if it is near enough to be a typo of it: at most two
/// single-character edits (a swap of two neighbours counts as one), and fewer than a third of
/// its length.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (edits(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2 && *distance * 3 < name.len().max(1))
        .min()
        .map(|(_, candidate)| candidate)
}

/// Edits between `a` and `b`: insertions, deletions, substitutions and swaps of two neighbouring
/// characters (optimal string alignment distance).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The tables of docs/configuration.md: one per section of `processes`, each row a key with its
/// variable, default (and a process's own default), bound and meaning. `make api-docs` writes
/// them; the end-to-end `settings` test keeps them equal.
pub fn markdown(processes: &[Process]) -> String {
    let mut sections: Vec<&Section> = sections::COMMON.iter().collect();
    sections.extend(processes.iter().filter_map(|process| process.own));
    let mut out = String::new();
    for section in sections {
        out.push_str(&format!(
            "\n### `[{}]`: {}\n\n| variable | default | allowed | meaning |\n|---|---|---|---|\n",
            section.name, section.about
        ));
        for key in section.keys {
            let mut default = key.default.shown();
            for process in processes {
                if let Some((_, own)) = process.defaults.iter().find(|(n, _)| *n == key.name) {
                    default.push_str(&format!("; {}: {}", process.name, own.shown()));
                }
            }
            let allowed = match (key.default, key.bound) {
                (Setting::Numbers(_), Bound::Range(min, max)) => format!(
                    "each {} to {}, at most {MAX_NUMBERS}",
                    thousands(min),
                    thousands(max)
                ),
                (_, Bound::Range(min, max)) => format!("{} to {}", thousands(min), thousands(max)),
                (_, Bound::Choice(choices)) => {
                    let words: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
                    one_of(&words)
                }
                (Setting::Words(_), Bound::None) => "words".to_owned(),
                (_, Bound::None) => "text".to_owned(),
            };
            out.push_str(&format!(
                "| `{}` | {default} | {allowed} | {} |\n",
                key.variable(),
                key.meaning
            ));
        }
    }
    out
}

/// `1,000,000`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Parses a comma-separated list; empty text is an empty list.
pub fn parse_list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>, T::Err> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}
