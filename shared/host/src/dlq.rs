//! The operator's dead-letter tool, `<service> dlq ...` ([`crate::cli`] parses the command
//! line): lists, shows, redrives and purges a service's dead letters through the runtime's
//! [`DeadLetterQueue`], with the same settings the service uses. Everything printed from a dead
//! letter goes through [`inert`]: a forged message cannot drive the operator's terminal.

use crate::CommonSettings;
use crate::cli::DlqCommand;
use choreo_events::topology::ServiceTopology;
use choreo_messaging::Names;
use choreo_messaging::dead_letter::{DeadLetter, DeadLetterQueue, Selection};
use std::io::Write as _;
use std::time::Duration;

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
            .broker
            .nodes()?
            .connect_first(
                0,
                Duration::from_secs(common.broker.heartbeat_secs),
                Duration::from_millis(common.broker.amqp_connect_timeout_ms),
                &format!("{}{}-dlq", common.broker.prefix, service.name),
            )
            .await?;
        let queue = DeadLetterQueue::open(
            &connection,
            &Names::new(common.broker.prefix.clone()),
            &service,
        )
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
