//! Fans events out to every sink and keeps failing sinks from costing anything else.
//!
//! In: events in log order. Out: delivery to each sink, plus the answer the pipeline needs
//! before it may move its checkpoint: has every event been accepted by at least one sink?
//! State: per sink, a bounded backlog of events it has not yet taken, a retry deadline with
//! exponential backoff, and counters.
//!
//! A sink that fails keeps its events in order in its own backlog and is retried later; the
//! others carry on. Only when *no* sink takes an event does the pipeline stop reading — the
//! log on disk is then the buffer, and nothing is lost.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::{Sink, SinkError};
use crate::event::Event;

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Events kept per failing sink; older ones are dropped for that sink beyond this.
    pub backlog: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        Self {
            backlog: 10_000,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// An event some sink still has to take.
#[derive(Debug)]
struct Queued {
    event: Event,
    /// Whether any sink has taken the event.
    accepted: Cell<bool>,
}

/// Counters of one sink, reported at shutdown and on request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub name: String,
    pub delivered: u64,
    pub failures: u64,
    pub retried: u64,
    /// Events this sink will never deliver (its backlog overflowed or the sensor stopped).
    pub lost: u64,
    pub backlog: usize,
}

#[derive(Debug)]
struct Slot {
    sink: Box<dyn Sink>,
    backlog: VecDeque<Rc<Queued>>,
    retry_at: Option<Instant>,
    backoff: Duration,
    stats: SinkStats,
}

impl std::fmt::Debug for dyn Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Slot {
    /// Delivers the backlog in order; returns whether it is now empty.
    fn drain(&mut self, options: &DispatchOptions) -> bool {
        while let Some(queued) = self.backlog.front() {
            match self.sink.send(&queued.event) {
                Ok(()) => {
                    queued.accepted.set(true);
                    self.stats.delivered += 1;
                    self.stats.retried += 1;
                    self.backlog.pop_front();
                }
                Err(err) => {
                    self.fail(&err, options);
                    return false;
                }
            }
        }
        if self.retry_at.take().is_some() {
            info!(sink = self.sink.name(), "sink recovered");
        }
        self.backoff = options.retry_initial;
        true
    }

    fn fail(&mut self, err: &SinkError, options: &DispatchOptions) {
        self.stats.failures += 1;
        if self.retry_at.is_none() {
            warn!(sink = self.sink.name(), error = %error_chain(err), "sink failed; retrying");
            self.backoff = options.retry_initial;
        } else {
            debug!(sink = self.sink.name(), error = %error_chain(err), "sink retry failed");
            self.backoff = (self.backoff * 2).min(options.retry_max);
        }
        self.retry_at = Some(Instant::now() + self.backoff);
    }

    fn enqueue(&mut self, queued: Rc<Queued>, options: &DispatchOptions) {
        if self.backlog.len() >= options.backlog {
            self.backlog.pop_front();
            self.stats.lost += 1;
            error!(
                sink = self.sink.name(),
                lost = self.stats.lost,
                "sink backlog full; dropping its oldest event"
            );
        }
        self.backlog.push_back(queued);
    }
}

/// Sends every event to every sink.
#[derive(Debug)]
pub struct Dispatcher {
    slots: Vec<Slot>,
    options: DispatchOptions,
}

impl Dispatcher {
    /// Creates a dispatcher over `sinks`.
    #[must_use]
    pub fn new(sinks: Vec<Box<dyn Sink>>, options: DispatchOptions) -> Self {
        let slots = sinks
            .into_iter()
            .map(|sink| Slot {
                stats: SinkStats {
                    name: sink.name().to_owned(),
                    ..SinkStats::default()
                },
                sink,
                backlog: VecDeque::new(),
                retry_at: None,
                backoff: options.retry_initial,
            })
            .collect();
        Self { slots, options }
    }

    /// Sends `event` to every sink whose backlog is empty and queues it for the others.
    ///
    /// Returns whether at least one sink took it now.
    pub fn dispatch(&mut self, event: Event) -> bool {
        let queued = Rc::new(Queued {
            event,
            accepted: Cell::new(false),
        });
        let now = Instant::now();

        for slot in &mut self.slots {
            let ready = match slot.retry_at {
                None => true,
                Some(at) if at <= now => slot.drain(&self.options),
                Some(_) => false,
            };
            if !ready {
                slot.enqueue(Rc::clone(&queued), &self.options);
                continue;
            }
            match slot.sink.send(&queued.event) {
                Ok(()) => {
                    queued.accepted.set(true);
                    slot.stats.delivered += 1;
                }
                Err(err) => {
                    slot.fail(&err, &self.options);
                    slot.enqueue(Rc::clone(&queued), &self.options);
                }
            }
        }
        queued.accepted.get()
    }

    /// Retries every sink whose backoff has expired.
    pub fn retry_due(&mut self) {
        let now = Instant::now();
        for slot in &mut self.slots {
            if slot.retry_at.is_some_and(|at| at <= now) {
                slot.drain(&self.options);
            }
        }
    }

    /// Returns whether some event in a backlog has not been taken by any sink yet.
    #[must_use]
    pub fn has_unaccepted(&self) -> bool {
        self.slots
            .iter()
            .flat_map(|s| &s.backlog)
            .any(|q| !q.accepted.get())
    }

    /// Makes what every healthy sink took durable; a sink that cannot is reported and retried
    /// like a failed delivery at its next event.
    pub fn sync(&mut self) {
        for slot in &mut self.slots {
            if slot.retry_at.is_some() {
                continue;
            }
            if let Err(err) = slot.sink.sync() {
                error!(sink = slot.sink.name(), error = %error_chain(&err), "failed to make delivered events durable");
                slot.stats.failures += 1;
            }
        }
    }

    /// Returns the earliest moment a failing sink should be retried.
    #[must_use]
    pub fn next_retry(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.retry_at).min()
    }

    /// Makes a last delivery attempt for every backlog and returns the final counters; what is
    /// still queued counts as lost.
    #[must_use]
    pub fn close(mut self) -> Vec<SinkStats> {
        for slot in &mut self.slots {
            if !slot.backlog.is_empty() {
                slot.drain(&self.options);
            }
            slot.stats.lost += slot.backlog.len() as u64;
            slot.stats.backlog = 0;
        }
        self.slots.into_iter().map(|s| s.stats).collect()
    }

    /// Returns the counters of every sink.
    #[must_use]
    pub fn stats(&self) -> Vec<SinkStats> {
        self.slots
            .iter()
            .map(|s| SinkStats {
                backlog: s.backlog.len(),
                ..s.stats.clone()
            })
            .collect()
    }
}

/// Renders an error with its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io;

    use chrono::NaiveDate;

    use super::*;
    use crate::event::Category;
    use crate::parse::PackageChange;

    /// A sink whose medium can be switched off, recording what it delivered.
    struct Switchable {
        up: Rc<Cell<bool>>,
        delivered: Rc<RefCell<Vec<String>>>,
    }

    impl Sink for Switchable {
        fn name(&self) -> &'static str {
            "switchable"
        }

        fn send(&mut self, event: &Event) -> Result<(), SinkError> {
            if !self.up.get() {
                return Err(SinkError::Write {
                    target: "switchable".into(),
                    source: io::Error::from(io::ErrorKind::StorageFull),
                });
            }
            self.delivered
                .borrow_mut()
                .push(event.parsed_data.package.clone());
            Ok(())
        }
    }

    fn event(package: &str) -> Event {
        let change = PackageChange {
            category: Category::PackageInstall,
            package: package.into(),
            arch: None,
            old_version: None,
            new_version: Some("1".into()),
            timestamp: NaiveDate::from_ymd_opt(2026, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("valid time"),
            raw_line: String::new(),
            last_state: None,
        };
        Event::from_change(&change, "h", "dpkg")
    }

    type Delivered = Rc<RefCell<Vec<String>>>;

    fn switchable() -> (Box<dyn Sink>, Rc<Cell<bool>>, Delivered) {
        let up = Rc::new(Cell::new(true));
        let delivered = Rc::new(RefCell::new(Vec::new()));
        let sink = Switchable {
            up: Rc::clone(&up),
            delivered: Rc::clone(&delivered),
        };
        (Box::new(sink), up, delivered)
    }

    fn fast() -> DispatchOptions {
        DispatchOptions {
            backlog: 3,
            retry_initial: Duration::ZERO,
            retry_max: Duration::ZERO,
        }
    }

    #[test]
    fn failing_sink_does_not_stop_the_others_and_catches_up_in_order() {
        let (a, a_up, a_got) = switchable();
        let (b, _, b_got) = switchable();
        let mut dispatcher = Dispatcher::new(vec![a, b], fast());

        a_up.set(false);
        assert!(dispatcher.dispatch(event("one")));
        assert!(dispatcher.dispatch(event("two")));
        assert!(!dispatcher.has_unaccepted());
        assert_eq!(*b_got.borrow(), ["one", "two"]);
        assert!(a_got.borrow().is_empty());

        a_up.set(true);
        dispatcher.retry_due();
        assert_eq!(*a_got.borrow(), ["one", "two"]);
        assert!(dispatcher.dispatch(event("three")));
        assert_eq!(*a_got.borrow(), ["one", "two", "three"]);
        assert_eq!(dispatcher.stats()[0].failures, 2);
    }

    #[test]
    fn event_no_sink_took_is_reported_until_one_does() {
        let (a, a_up, a_got) = switchable();
        let mut dispatcher = Dispatcher::new(vec![a], fast());
        a_up.set(false);
        assert!(!dispatcher.dispatch(event("one")));
        assert!(dispatcher.has_unaccepted());
        dispatcher.retry_due();
        assert!(dispatcher.has_unaccepted());

        a_up.set(true);
        dispatcher.retry_due();
        assert!(!dispatcher.has_unaccepted());
        assert_eq!(*a_got.borrow(), ["one"]);
    }

    #[test]
    fn overflowing_backlog_counts_losses() {
        let (a, a_up, _) = switchable();
        let (b, _, _) = switchable();
        let mut dispatcher = Dispatcher::new(vec![a, b], fast());
        a_up.set(false);
        for name in ["1", "2", "3", "4", "5"] {
            dispatcher.dispatch(event(name));
        }
        let stats = dispatcher.close();
        assert_eq!(stats[0].lost, 5);
        assert_eq!(stats[1].delivered, 5);
    }
}
