//! The command line of every service binary: no argument serves; `dlq ...` manages the service's
//! dead letters with the same settings (broker URL, prefix) the service uses.
//!
//! ```text
//! orders                          serve
//! orders dlq list                 one line per dead letter: message id, type, reason
//! orders dlq show <message-id>    headers and body of one dead letter
//! orders dlq redrive <message-id> send one back to the service's queue (same id: the inbox dedupes)
//! orders dlq redrive --all        send all back
//! orders dlq purge --yes          delete all, for good (without --yes it refuses)
//! ```

use crate::CommonSettings;
use choreo_events::topology::ServiceTopology;
use choreo_messaging::Names;
use choreo_messaging::dead_letter::{DeadLetterQueue, Selection};
use std::time::Duration;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    /// `--help`: print the usage.
    Help,
    Dlq(DlqCommand),
}

/// A dead-letter command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqCommand {
    List,
    Show(String),
    Redrive(Selection),
    Purge,
}

/// The usage line.
pub const USAGE: &str = "usage: <service> [dlq list | dlq show <message-id> | dlq redrive <message-id>|--all | dlq purge --yes]";

impl Command {
    /// Parses the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, crate::Error> {
        let args: Vec<String> = args.into_iter().collect();
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = match words.as_slice() {
            [] => Command::Serve,
            ["--help"] | ["-h"] | ["help"] => Command::Help,
            ["dlq", "list"] => Command::Dlq(DlqCommand::List),
            ["dlq", "show", id] => Command::Dlq(DlqCommand::Show((*id).to_owned())),
            ["dlq", "redrive", "--all"] => Command::Dlq(DlqCommand::Redrive(Selection::All)),
            ["dlq", "redrive", id] => {
                Command::Dlq(DlqCommand::Redrive(Selection::MessageId((*id).to_owned())))
            }
            ["dlq", "purge", "--yes"] => Command::Dlq(DlqCommand::Purge),
            ["dlq", "purge"] => {
                return Err(crate::Error::Usage(
                    "dlq purge deletes every dead letter for good: look at them first (dlq list, \
                     dlq show), then run dlq purge --yes"
                        .to_owned(),
                ));
            }
            _ => return Err(crate::Error::Usage(USAGE.to_owned())),
        };
        Ok(command)
    }

    /// Parses the process's own arguments.
    pub fn from_env() -> Result<Self, crate::Error> {
        Self::parse(std::env::args().skip(1))
    }
}

impl DlqCommand {
    /// Runs the command against `service`'s dead-letter queue, printing to stdout.
    pub async fn run(
        &self,
        common: &CommonSettings,
        service: ServiceTopology,
    ) -> Result<(), crate::Error> {
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
        match self {
            DlqCommand::List => {
                let letters = queue.list().await?;
                println!("{} dead letters in {name}", letters.len());
                for letter in letters {
                    println!(
                        "{}  {}  {}  {}",
                        letter.message_id.as_deref().unwrap_or("-"),
                        letter
                            .routing_key
                            .or(letter.event_type)
                            .as_deref()
                            .unwrap_or("-"),
                        letter.dead_lettered_at.as_deref().unwrap_or("-"),
                        letter.error.as_deref().unwrap_or("-"),
                    );
                }
            }
            DlqCommand::Show(id) => {
                let letters = queue.list().await?;
                let Some(letter) = letters
                    .into_iter()
                    .find(|l| l.message_id.as_deref() == Some(id.as_str()))
                else {
                    return Err(crate::Error::Usage(format!(
                        "no dead letter with message id {id} in {name}"
                    )));
                };
                println!("message id: {id}");
                println!("properties: {:?}", letter.properties);
                match serde_json::from_slice::<serde_json::Value>(&letter.body) {
                    Ok(json) => println!(
                        "{}",
                        serde_json::to_string_pretty(&json).unwrap_or_default()
                    ),
                    Err(_) => println!("{}", String::from_utf8_lossy(&letter.body)),
                }
            }
            DlqCommand::Redrive(selection) => {
                let redriven = queue.redrive(selection).await?;
                println!(
                    "redrove {redriven} dead letters from {name} to {}{}",
                    common.prefix, service.name
                );
                if redriven == 0 && *selection != Selection::All {
                    return Err(crate::Error::Usage("no dead letter matched".to_owned()));
                }
            }
            DlqCommand::Purge => {
                println!("purged {} dead letters from {name}", queue.purge().await?)
            }
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, crate::Error> {
        Command::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn the_command_line_is_parsed() {
        assert_eq!(parse("").expect("serve"), Command::Serve);
        assert_eq!(
            parse("dlq list").expect("list"),
            Command::Dlq(DlqCommand::List)
        );
        assert_eq!(
            parse("dlq redrive --all").expect("all"),
            Command::Dlq(DlqCommand::Redrive(Selection::All))
        );
        assert_eq!(
            parse("dlq redrive abc").expect("one"),
            Command::Dlq(DlqCommand::Redrive(Selection::MessageId("abc".into())))
        );
        assert_eq!(
            parse("dlq purge --yes").expect("purge"),
            Command::Dlq(DlqCommand::Purge)
        );
        let unconfirmed = parse("dlq purge").expect_err("needs --yes").to_string();
        assert!(unconfirmed.contains("--yes"), "{unconfirmed}");
        assert!(parse("dlq explode").is_err());
        assert!(parse("serve now").is_err());
    }
}
