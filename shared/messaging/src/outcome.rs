//! What became of one unit of work: a consumed message, or a request that writes to the outbox.
//! One answer, which the consumer acts on (ack, retry copy, dead-letter copy), the metrics count
//! (the `outcome` label of `choreo_messages_consumed_total`) and the traces record (the span's
//! `choreo.outcome` attribute and status).

use choreo_events::Event;

/// What became of one unit of work.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Committed, with the events it wrote to the outbox (none when the handler decided to
    /// ignore the message).
    Handled(Vec<Event>),
    /// A delivery already in the inbox: acked without effect.
    Duplicate,
    /// Sent to a delay queue to be tried again, with why.
    Retried(String),
    /// Sent to the dead-letter queue, with why.
    DeadLettered(String),
    /// Nothing committed, and no fault of ours: a replayed or refused request.
    Unchanged,
}

impl Outcome {
    /// The outcomes a consumed message can have, by label: the metrics register one counter
    /// each.
    pub(crate) const CONSUMED: [&'static str; 4] =
        ["handled", "duplicate", "retried", "dead_lettered"];

    /// Its label, in metrics and traces alike.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Handled(_) => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::Retried(_) => "retried",
            Outcome::DeadLettered(_) => "dead_lettered",
            Outcome::Unchanged => "unchanged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_of_a_consumed_message_has_its_own_counter_and_unchanged_none() {
        let consumed = [
            Outcome::Handled(Vec::new()),
            Outcome::Duplicate,
            Outcome::Retried("busy".into()),
            Outcome::DeadLettered("bad".into()),
        ];
        assert_eq!(consumed.map(|o| o.label()), Outcome::CONSUMED);
        assert!(!Outcome::CONSUMED.contains(&Outcome::Unchanged.label()));
    }
}
