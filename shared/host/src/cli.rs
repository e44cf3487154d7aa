//! The command line of every service binary, parsed by clap: no command serves; `dlq ...` manages
//! the service's dead letters with the same settings (broker URL, prefix) the service uses.
//!
//! ```text
//! orders                              serve
//! orders --help | --version
//! orders dlq list                     one line per dead letter: position, id, routing key, when, why
//! orders dlq show <ID>                properties, headers and body of one dead letter
//! orders dlq show --position <N>      the same, by its position in `dlq list`
//! orders dlq redrive <ID>             back to the service's queue (same id: the inbox dedupes)
//! orders dlq redrive --position <N>
//! orders dlq redrive --all
//! orders dlq purge --yes [--export <FILE>]   delete all, for good (without --yes it refuses);
//!                                     with --export, only what was written to FILE first
//! ```
//!
//! An id is the letter's message id or, for one without (undecodable garbage often has none), a
//! generated `sha256:<12 hex digits>`, the same on every read. A position is the letter's place
//! in one listing (1 for the oldest), so it can change when letters come and go: prefer the id.
//! Everything printed from a dead letter goes through [`inert`]: a forged message cannot drive
//! the operator's terminal.

use crate::CommonSettings;
use choreo_events::topology::ServiceTopology;
use choreo_messaging::Names;
use choreo_messaging::dead_letter::{DeadLetter, DeadLetterQueue, Selection};
use clap::{CommandFactory as _, FromArgMatches as _};
use std::ffi::OsString;
use std::io::Write as _;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Dlq(DlqCommand),
}

/// A dead-letter command, checked (a purge here was confirmed with `--yes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqCommand {
    List,
    Show(Selection),
    Redrive(Selection),
    /// Deletes every dead letter; with `export`, only those first written to that file.
    Purge {
        export: Option<PathBuf>,
    },
}

/// The command line as clap reads it.
#[derive(Debug, clap::Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// The service's dead letters: list, show, redrive, purge.
    Dlq {
        #[command(subcommand)]
        command: Dlq,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Dlq {
    /// One line per dead letter: position, id, routing key, when, why.
    List,
    /// The properties, headers and body of one dead letter.
    Show(#[command(flatten)] OneLetter),
    /// Sends dead letters back to the service's own queue (with their original message id, so
    /// the service's inbox ignores one that was in fact handled).
    Redrive(#[command(flatten)] SomeLetters),
    /// Deletes every dead letter, for good.
    Purge {
        /// Confirms the deletion (required).
        #[arg(long)]
        yes: bool,
        /// Writes every dead letter to FILE first (JSON lines; FILE must not exist), and deletes
        /// only those written.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct OneLetter {
    /// The letter's id as `dlq list` prints it: its message id, or `sha256:...`.
    id: Option<String>,
    /// The letter's position as `dlq list` prints it (1 for the oldest).
    #[arg(long, value_name = "N")]
    position: Option<NonZeroUsize>,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct SomeLetters {
    /// The letter's id as `dlq list` prints it: its message id, or `sha256:...`.
    id: Option<String>,
    /// The letter's position as `dlq list` prints it (1 for the oldest).
    #[arg(long, value_name = "N")]
    position: Option<NonZeroUsize>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

/// Why `dlq purge` alone is refused.
const UNCONFIRMED_PURGE: &str = "dlq purge deletes every dead letter for good: look at them first \
     (dlq list, dlq show), then run dlq purge --yes, or dlq purge --yes --export <FILE> to keep a \
     copy of each";

/// The clap command of `service`'s binary: named after it, so its usage and `--version` are.
pub fn clap_command(service: &str) -> clap::Command {
    Cli::command()
        .name(service.to_owned())
        .bin_name(service.to_owned())
        .about(format!(
            "The {service} service of the Choreo order saga. With no command it serves until \
             SIGINT or SIGTERM; its settings are CHOREO_* environment variables (docs/configuration.md)."
        ))
        .mut_subcommand("dlq", |dlq| {
            dlq.about(format!(
                "The dead letters of {service} (its queue {service}.dlq, CHOREO_PREFIX in front): list, \
                 show, redrive, purge."
            ))
        })
}

fn selection(id: Option<String>, position: Option<NonZeroUsize>) -> Selection {
    match (id, position) {
        (_, Some(position)) => Selection::Position(position.get()),
        (Some(id), None) => Selection::Id(id),
        (None, None) => Selection::All,
    }
}

impl Command {
    /// Parses `args` (the program name first) for `service`'s binary. `--help` and `--version`
    /// come back as errors too, of the kinds clap prints and exits 0 for.
    pub fn parse_from<I, T>(service: &str, args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = clap_command(service);
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        let Some(Sub::Dlq { command: dlq }) = cli.command else {
            return Ok(Command::Serve);
        };
        Ok(Command::Dlq(match dlq {
            Dlq::List => DlqCommand::List,
            Dlq::Show(OneLetter { id, position }) => DlqCommand::Show(selection(id, position)),
            Dlq::Redrive(SomeLetters { id, position, all }) => DlqCommand::Redrive(if all {
                Selection::All
            } else {
                selection(id, position)
            }),
            Dlq::Purge { yes: false, .. } => {
                // Reported by the purge command itself, so its usage line is the one shown.
                let purge = command
                    .find_subcommand_mut("dlq")
                    .and_then(|dlq| dlq.find_subcommand_mut("purge"))
                    .expect("declared above");
                return Err(purge.error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    UNCONFIRMED_PURGE,
                ));
            }
            Dlq::Purge { yes: true, export } => DlqCommand::Purge { export },
        }))
    }

    /// Parses the process's own arguments; prints the help, the version or the usage error and
    /// exits when that is what they ask for.
    pub fn from_env(service: &str) -> Self {
        Self::parse_from(service, std::env::args_os()).unwrap_or_else(|error| error.exit())
    }
}

/// `text` made safe to print to a terminal: every control character but newline and tab (ESC
/// first of all, which starts the escape sequences that move the cursor, clear the screen, set
/// the window title or write a hyperlink, and the C1 controls, CSI among them) replaced by its
/// `\u{..}` escape, so a forged message prints as inert text.
pub fn inert(text: &str) -> String {
    escape(text, |c| c == '\n' || c == '\t')
}

/// [`inert`] for text on one line: newlines escaped too, so one letter stays one line.
fn inert_line(text: &str) -> String {
    escape(text, |c| c == '\t')
}

fn escape(text: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !allowed(c) {
            safe.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            safe.push(c);
        }
    }
    safe
}

/// A letter's details, as `dlq show` prints them: where it was first published (as the runtime
/// knew it) and, apart, what its sender claimed in headers of its own.
pub fn details(letter: &DeadLetter) -> String {
    let json = letter.to_json();
    let pretty =
        |value: &serde_json::Value| serde_json::to_string_pretty(value).unwrap_or_default();
    let body = match serde_json::from_slice::<serde_json::Value>(&letter.body) {
        Ok(json) => pretty(&json),
        Err(_) => String::from_utf8_lossy(&letter.body).into_owned(),
    };
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let mut claims = String::new();
    for (what, claimed) in [
        ("exchange", &letter.claimed_exchange),
        ("routing key", &letter.claimed_routing_key),
    ] {
        if let Some(claimed) = claimed {
            claims.push_str(&format!(
                "claimed {what}: {claimed} (its sender's header; not believed)\n"
            ));
        }
    }
    inert(&format!(
        "position: {}\nid: {}\nmessage id: {}\nexchange: {}\nrouting key: {}\n{claims}\
         dead-lettered at: {}\nreason: {}\nproperties: {}\nheaders: {}\nbody:\n{body}",
        letter.position,
        letter.id,
        or_dash(&letter.message_id),
        or_dash(&letter.exchange),
        or_dash(&letter.routing_key),
        or_dash(&letter.dead_lettered_at),
        or_dash(&letter.error),
        pretty(&json["properties"]),
        pretty(&json["headers"]),
    ))
}

/// A letter on one line, as `dlq list` prints it.
fn summary(letter: &DeadLetter) -> String {
    let or_dash = |value: &Option<String>| value.as_deref().unwrap_or("-").to_owned();
    let mut key = or_dash(&letter.routing_key.clone().or(letter.event_type.clone()));
    if let Some(claimed) = &letter.claimed_routing_key {
        key.push_str(&format!(" (claims {claimed})"));
    }
    inert_line(&format!(
        "{}  {}  {}  {}  {}",
        letter.position,
        letter.id,
        key,
        or_dash(&letter.dead_lettered_at),
        or_dash(&letter.error),
    ))
}

/// Writes `letters` to `file` as JSON lines, then flushes and syncs it (and its directory, so
/// the new file's name is on disk too) before anything is deleted.
fn export(
    letters: &[DeadLetter],
    file: std::fs::File,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let mut writer = std::io::BufWriter::new(file);
    for letter in letters {
        serde_json::to_writer(&mut writer, &letter.to_json())?;
        writer.write_all(b"\n")?;
    }
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    if let Some(directory) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

impl DlqCommand {
    /// Runs the command against `service`'s dead-letter queue, printing to stdout.
    pub async fn run(
        &self,
        common: &CommonSettings,
        service: ServiceTopology,
    ) -> Result<(), crate::Error> {
        // The export file first: one that cannot be created stops the purge before it starts,
        // and an existing one is never overwritten.
        let export_file = match self {
            DlqCommand::Purge { export: Some(path) } => Some((
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| {
                        crate::Error::Usage(format!("cannot create {}: {e}", path.display()))
                    })?,
                path.clone(),
            )),
            _ => None,
        };
        let (connection, _) = common
            .broker_nodes()?
            .connect_first(
                0,
                Duration::from_secs(common.heartbeat_secs),
                Duration::from_millis(common.amqp_connect_timeout_ms),
                &format!("{}{}-dlq", common.prefix, service.name),
            )
            .await?;
        let queue =
            DeadLetterQueue::open(&connection, &Names::new(common.prefix.clone()), &service)
                .await?;
        let name = queue.queue.clone();
        let home = queue.home.clone();
        match self {
            DlqCommand::List => {
                let letters = queue.list().await?;
                println!("{} dead letters in {name}", letters.len());
                println!("position  id  routing key  dead-lettered at  reason");
                for letter in &letters {
                    println!("{}", summary(letter));
                }
            }
            DlqCommand::Show(selection) => {
                let letters = queue.list().await?;
                let Some(letter) = letters.iter().find(|l| l.is(selection)) else {
                    return Err(crate::Error::Usage(inert(&format!(
                        "no dead letter {} in {name}",
                        described(selection)
                    ))));
                };
                println!("{}", details(letter));
            }
            DlqCommand::Redrive(selection) => {
                let redriven = queue.redrive(selection).await?;
                for letter in &redriven {
                    println!("redrove {}", summary(letter));
                }
                println!(
                    "redrove {} dead letters from {name} to {home}",
                    redriven.len()
                );
                if redriven.is_empty() && *selection != Selection::All {
                    return Err(crate::Error::Usage(inert(&format!(
                        "no dead letter {} in {name}",
                        described(selection)
                    ))));
                }
            }
            DlqCommand::Purge { export: None } => {
                println!("purged {} dead letters from {name}", queue.purge().await?)
            }
            DlqCommand::Purge { export: Some(_) } => {
                let (file, path) = export_file.expect("opened above");
                let purged = queue
                    .purge_exported(|letters| export(letters, file, &path))
                    .await?;
                println!(
                    "exported {} dead letters to {} and deleted them from {name}",
                    purged.len(),
                    inert_line(&path.display().to_string())
                );
            }
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }
}

/// How a selection reads in a message.
fn described(selection: &Selection) -> String {
    match selection {
        Selection::All => "at all".to_owned(),
        Selection::Id(id) => format!("with id {id}"),
        Selection::Position(position) => format!("at position {position}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        Command::parse_from(
            "orders",
            std::iter::once("orders").chain(line.split_whitespace()),
        )
    }

    #[test]
    fn the_clap_command_is_well_formed() {
        clap_command("orders").debug_assert();
    }

    #[test]
    fn the_command_line_is_parsed() {
        assert_eq!(parse("").expect("serve"), Command::Serve);
        assert_eq!(
            parse("dlq list").expect("list"),
            Command::Dlq(DlqCommand::List)
        );
        assert_eq!(
            parse("dlq show abc").expect("show by id"),
            Command::Dlq(DlqCommand::Show(Selection::Id("abc".into())))
        );
        assert_eq!(
            parse("dlq show --position 3").expect("show by position"),
            Command::Dlq(DlqCommand::Show(Selection::Position(3)))
        );
        assert_eq!(
            parse("dlq redrive --all").expect("all"),
            Command::Dlq(DlqCommand::Redrive(Selection::All))
        );
        assert_eq!(
            parse("dlq redrive sha256:0123456789ab").expect("one"),
            Command::Dlq(DlqCommand::Redrive(Selection::Id(
                "sha256:0123456789ab".into()
            )))
        );
        assert_eq!(
            parse("dlq redrive --position 1").expect("by position"),
            Command::Dlq(DlqCommand::Redrive(Selection::Position(1)))
        );
        assert_eq!(
            parse("dlq purge --yes").expect("purge"),
            Command::Dlq(DlqCommand::Purge { export: None })
        );
        assert_eq!(
            parse("dlq purge --yes --export dead.jsonl").expect("purge with export"),
            Command::Dlq(DlqCommand::Purge {
                export: Some("dead.jsonl".into())
            })
        );
    }

    #[test]
    fn a_purge_without_yes_is_refused_with_what_to_do_instead() {
        for line in ["dlq purge", "dlq purge --export dead.jsonl"] {
            let refused = parse(line).expect_err("needs --yes");

            assert_eq!(
                refused.kind(),
                clap::error::ErrorKind::MissingRequiredArgument
            );
            let message = refused.to_string();
            assert!(message.contains("dlq purge --yes"), "{message}");
            assert!(message.contains("dlq list"), "{message}");
            assert!(message.contains("Usage: orders dlq purge"), "{message}");
        }
    }

    #[test]
    fn wrong_command_lines_are_refused() {
        for line in [
            "dlq explode",
            "serve now",
            "dlq show",
            "dlq show abc --position 1",
            "dlq show --position 0",
            "dlq show --position x",
            "dlq redrive",
            "dlq redrive abc --all",
            "dlq list extra",
        ] {
            assert!(parse(line).is_err(), "{line} was accepted");
        }
    }

    #[test]
    fn help_and_version_name_the_service() {
        let help = parse("--help").expect_err("help is printed by clap");
        let version = parse("--version").expect_err("version is printed by clap");

        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("Usage: orders"), "{help}");
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(
            version.to_string().trim(),
            format!("orders {}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn terminal_escapes_in_a_dead_letter_print_as_inert_text() {
        let forged = "title\x1b]0;pwned\x07 clear\x1b[2J csi\u{9b}31m\r\nnext\tline";

        let printed = inert(forged);

        assert!(
            !printed
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        );
        assert_eq!(
            printed,
            "title\\u{1b}]0;pwned\\u{7} clear\\u{1b}[2J csi\\u{9b}31m\\u{d}\nnext\tline"
        );
        assert_eq!(inert_line("a\nb"), "a\\u{a}b");
    }

    #[test]
    fn a_forged_letter_shows_and_lists_without_a_control_character() {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            "x-error".into(),
            lapin::types::AMQPValue::LongString("bad\x1b[2J".into()),
        );
        let letter = DeadLetter {
            position: 1,
            id: "m\x1b]8;;http://evil\x07".into(),
            message_id: Some("m\x1b]8;;http://evil\x07".into()),
            event_type: None,
            exchange: None,
            routing_key: Some("order.placed".into()),
            claimed_exchange: None,
            claimed_routing_key: Some("order\x1b[2J".into()),
            by_the_broker: false,
            error: Some("bad\x1b[2J".into()),
            dead_lettered_at: None,
            properties: lapin::BasicProperties::default().with_headers(headers),
            body: "garbage\x1b[2J\u{9b}".as_bytes().to_vec(),
        };

        for printed in [details(&letter), summary(&letter)] {
            assert!(
                !printed.chars().any(|c| c.is_control() && c != '\n'),
                "{printed:?}"
            );
            assert!(printed.contains("\\u{1b}"), "{printed:?}");
        }
    }
}
