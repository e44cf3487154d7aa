//! The command line of every service binary, parsed by clap: no command serves; `dlq ...` manages
//! the service's dead letters with the same settings (broker URL, prefix) the service uses.
//!
//! ```text
//! orders                              serve
//! orders --help | --version
//! orders settings                     the effective settings, where each came from, secrets redacted
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
//! The commands run in [`crate::dlq`]; everything they print from a dead letter goes through
//! [`crate::dlq::inert`], so a forged message cannot drive the operator's terminal.

use choreo_messaging::dead_letter::Selection;
use clap::{CommandFactory as _, FromArgMatches as _};
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    /// Prints the effective settings ([`crate::settings::Loaded::listing`]) and exits.
    Settings,
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
    /// Prints the effective settings, each with where it came from (default, settings file,
    /// variable), secrets redacted, and exits.
    Settings,
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
             SIGINT or SIGTERM; its settings are CHOREO_* environment variables or a file named \
             by CHOREO_CONFIG_FILE (docs/configuration.md; `settings` prints them)."
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
        let dlq = match cli.command {
            None => return Ok(Command::Serve),
            Some(Sub::Settings) => return Ok(Command::Settings),
            Some(Sub::Dlq { command: dlq }) => dlq,
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
        assert_eq!(parse("settings").expect("settings"), Command::Settings);
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
            "settings extra",
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
}
