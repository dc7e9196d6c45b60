//! Per-message bookkeeping for a batch: a message may hold many events, and it is acked
//! only when every one of them is accounted for (committed, found to be a duplicate, or
//! dead-lettered). One event that cannot be handled now (database or DLQ unavailable)
//! naks the whole message; on redelivery its stored events are duplicates and its dead
//! letters are deduplicated by the DLQ stream.

/// What became of one event of a message this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Committed now or before (a duplicate).
    Stored,
    /// Its dead letter is in the DLQ.
    DeadLettered,
    /// Not handled this time; it must be redelivered.
    Retry,
}

/// What to answer the broker for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Every event stored (some may be dead-lettered): done.
    Ack,
    /// Every event dead-lettered: terminated, as a poison message always was.
    Term,
    /// Some event must be tried again: the whole message is redelivered after a delay.
    Nak,
}

#[derive(Debug, Clone, Default)]
struct Tally {
    events: usize,
    stored: usize,
    dead: usize,
    retry: bool,
}

/// The fates of the events of a batch's messages.
#[derive(Debug, Clone)]
pub struct Ledger {
    messages: Vec<Tally>,
}

impl Ledger {
    /// A ledger for messages holding these numbers of events, in batch order.
    pub fn new(events: impl IntoIterator<Item = usize>) -> Self {
        Ledger {
            messages: events
                .into_iter()
                .map(|events| Tally {
                    events,
                    ..Tally::default()
                })
                .collect(),
        }
    }

    /// Records the fate of one event of message `message`.
    pub fn record(&mut self, message: usize, fate: Fate) {
        let Some(tally) = self.messages.get_mut(message) else {
            return;
        };
        match fate {
            Fate::Stored => tally.stored += 1,
            Fate::DeadLettered => tally.dead += 1,
            Fate::Retry => tally.retry = true,
        }
    }

    /// Whether message `message` will be redelivered whatever its other events do: its
    /// remaining dead letters can wait for the redelivery (dead-lettering them now could
    /// duplicate them once the DLQ's duplicate window has passed).
    pub fn doomed(&self, message: usize) -> bool {
        self.messages.get(message).is_some_and(|t| t.retry)
    }

    /// The answer for each message, in batch order.
    pub fn dispositions(&self) -> impl Iterator<Item = Disposition> + '_ {
        self.messages.iter().map(|t| {
            if t.retry || t.stored + t.dead < t.events {
                // An event not accounted for is never acked away.
                Disposition::Nak
            } else if t.stored == 0 && t.dead > 0 {
                Disposition::Term
            } else {
                Disposition::Ack
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Disposition::{Ack, Nak, Term};
    use super::Fate::{DeadLettered, Retry, Stored};
    use super::*;

    fn answers(events: &[usize], fates: &[(usize, Fate)]) -> Vec<Disposition> {
        let mut ledger = Ledger::new(events.iter().copied());
        for &(message, fate) in fates {
            ledger.record(message, fate);
        }
        ledger.dispositions().collect()
    }

    #[test]
    fn a_message_is_acked_once_every_event_is_stored_or_dead_lettered() {
        assert_eq!(
            answers(
                &[1, 3, 3],
                &[
                    (0, Stored),
                    (1, Stored),
                    (1, Stored),
                    (1, Stored),
                    (2, Stored),
                    (2, DeadLettered),
                    (2, Stored),
                ]
            ),
            [Ack, Ack, Ack]
        );
    }

    #[test]
    fn a_message_of_dead_letters_only_is_terminated() {
        assert_eq!(
            answers(
                &[1, 2],
                &[(0, DeadLettered), (1, DeadLettered), (1, DeadLettered)]
            ),
            [Term, Term]
        );
    }

    #[test]
    fn one_event_to_retry_naks_its_whole_message_and_only_it() {
        assert_eq!(
            answers(
                &[3, 2, 1],
                &[
                    (0, Stored),
                    (0, Retry),
                    (0, Stored),
                    (1, Stored),
                    (1, Stored),
                    (2, DeadLettered),
                ]
            ),
            [Nak, Ack, Term]
        );
        let mut ledger = Ledger::new([2, 2]);
        ledger.record(1, DeadLettered);
        ledger.record(1, Retry);
        assert!(ledger.doomed(1));
        assert!(!ledger.doomed(0));
    }

    #[test]
    fn an_event_not_accounted_for_naks_its_message() {
        assert_eq!(
            answers(&[3, 2], &[(0, Stored), (0, Stored), (1, DeadLettered)]),
            [Nak, Nak]
        );
    }

    #[test]
    fn an_empty_message_is_acked_and_a_stray_record_is_ignored() {
        let mut ledger = Ledger::new([0]);
        ledger.record(5, Retry);
        assert_eq!(ledger.dispositions().collect::<Vec<_>>(), [Ack]);
    }
}
