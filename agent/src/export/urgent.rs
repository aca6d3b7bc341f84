//! Urgent exports: a public state change (a monitor down, up or flapping, an incident
//! opened, updated or resolved, a silence or maintenance window starting or ending) is
//! signalled through [`Changes`]; the main loop's [`Pacer`] turns the signals into
//! flushes, debounced ([`DEBOUNCE`] after the first change, so a burst is one write)
//! and spaced ([`MIN_SPACING`] at least between two flushes, so a flapping storm writes
//! each object at most `86400 / 5` = 17,280 extra times a day, whatever the number of
//! monitors). The periodic flush goes on beside them for the history.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long after the first change of a burst the urgent flush waits for the rest.
pub const DEBOUNCE: Duration = Duration::from_secs(2);

/// The least time between the start of one flush and an urgent flush after it.
pub const MIN_SPACING: Duration = Duration::from_secs(5);

/// The most urgent flushes in a day: one per [`MIN_SPACING`].
pub const URGENT_PER_DAY_CAP: u64 = 86_400 / MIN_SPACING.as_secs();

/// The signal "something public changed", shared by the state machine, the admin API
/// and the main loop. Signalling is one atomic operation (no lock): a signal while the
/// main loop is busy is kept until it looks.
#[derive(Debug, Default)]
pub struct Changes {
    notify: Notify,
}

impl Changes {
    /// A change worth exporting at once happened.
    pub fn signal(&self) {
        self.notify.notify_one();
    }

    /// Wait for a signal (a signal given before the call counts).
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

/// When the next urgent flush is due: [`DEBOUNCE`] after the first change not yet
/// exported, and [`MIN_SPACING`] after the last flush.
#[derive(Debug, Clone)]
pub struct Pacer {
    debounce: Duration,
    spacing: Duration,
    /// The first change since the last flush.
    pending_since: Option<Instant>,
    /// When the last flush (periodic or urgent) started.
    last_flush: Option<Instant>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(DEBOUNCE, MIN_SPACING)
    }
}

impl Pacer {
    /// A pacer waiting `debounce` after a first change and `spacing` between flushes.
    pub fn new(debounce: Duration, spacing: Duration) -> Self {
        Pacer {
            debounce,
            spacing,
            pending_since: None,
            last_flush: None,
        }
    }

    /// A change happened at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.pending_since.get_or_insert(now);
    }

    /// When the urgent flush is due; `None` with no change waiting.
    pub fn due(&self) -> Option<Instant> {
        let first = self.pending_since? + self.debounce;
        Some(match self.last_flush {
            Some(last) => first.max(last + self.spacing),
            None => first,
        })
    }

    /// A flush (of any kind) started at `now`: the changes before it are in it.
    pub fn flushed(&mut self, now: Instant) {
        self.pending_since = None;
        self.last_flush = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_flush_after_the_debounce() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.due(), None, "nothing changed");
        p.changed(t0);
        p.changed(t0 + Duration::from_millis(500));
        p.changed(t0 + Duration::from_millis(1900));
        assert_eq!(
            p.due(),
            Some(t0 + DEBOUNCE),
            "the first change sets the time"
        );
        p.flushed(t0 + DEBOUNCE);
        assert_eq!(p.due(), None);
    }

    #[test]
    fn flushes_are_spaced_under_a_storm() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let mut now = t0;
        let mut flushes = 0u32;
        // A change every 10 ms for 60 s: the flushes follow MIN_SPACING.
        let end = t0 + Duration::from_secs(60);
        while now < end {
            p.changed(now);
            if p.due().is_some_and(|d| d <= now) {
                p.flushed(now);
                flushes += 1;
            }
            now += Duration::from_millis(10);
        }
        assert!(flushes <= 12, "{flushes} flushes in 60 s");
        assert!(flushes >= 11, "{flushes} flushes in 60 s");
    }

    #[test]
    fn a_periodic_flush_counts_for_the_spacing() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        p.flushed(t0);
        p.changed(t0 + Duration::from_secs(1));
        assert_eq!(p.due(), Some(t0 + MIN_SPACING));
        assert_eq!(URGENT_PER_DAY_CAP, 17_280);
    }
}
