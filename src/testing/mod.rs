//! The conformance suite: the behavioural contract of [`Store`] and the concurrency guarantees of
//! the layer, runnable against any store (feature `testing`).
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use tower_typed_sessions::{testing::Conformance, MemoryStore};
//!
//! let report = Conformance::new(MemoryStore::new).repetitions(2).run().await;
//! assert!(report.total_races() > 0);
//! println!("{report}");
//! # }
//! ```
//!
//! [`Conformance::run`] panics, naming the check and what the store did, at the first failure.
//! The store factory is called once per check with a store of its own; checks assume no other
//! writer touches the keys they create, and tolerate sessions left over by others.
//!
//! # What it checks
//! - [`contract`]: every operation of [`Store`] alone (create never overwrites, save never
//!   creates, revisions, forwarding pointers, expiry, flash taken once, the optional owner index
//!   and count when the store offers them), and a few concurrent ones.
//! - [`races`]: the layer's guarantees on top of the store, each raced between two requests
//!   through every order in which their store calls can arrive ([`Conformance::calls_per_actor`]
//!   calls each: all interleavings), once one call at a time and once with calls overlapping,
//!   [`Conformance::repetitions`] times: a logout ends the session whatever ran concurrently; in
//!   optimistic mode no write answered with success is lost; a revoke ends every session of the
//!   owner; last write wins never resurrects a session; a grace window never hands a session to
//!   a request with the old cookie; a flash reaches exactly one request.

pub mod contract;
pub mod races;

mod probe;

use std::{fmt, future::Future, pin::Pin, sync::Arc};

pub use probe::Probe;

use crate::store::Store;

/// Makes one store per check.
pub(crate) type Factory<St> =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = St> + Send>> + Send + Sync>;

/// Runs the suite against stores made by a factory.
pub struct Conformance<St> {
    make: Factory<St>,
    repetitions: usize,
    calls_per_actor: usize,
}

impl<St> fmt::Debug for Conformance<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conformance")
            .field("repetitions", &self.repetitions)
            .field("calls_per_actor", &self.calls_per_actor)
            .finish_non_exhaustive()
    }
}

/// What a run did: the checks passed and the races run per guarantee.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// Contract checks passed.
    pub checks: usize,
    /// Races run per guarantee, in the order the suite runs them.
    pub races: Vec<(&'static str, usize)>,
}

impl Report {
    /// All races run.
    pub fn total_races(&self) -> usize {
        self.races.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} contract checks passed; {} races:",
            self.checks,
            self.total_races()
        )?;
        for (guarantee, races) in &self.races {
            writeln!(f, "  {races:>6}  {guarantee}")?;
        }
        Ok(())
    }
}

impl<St: Store<Probe> + Clone> Conformance<St> {
    /// A suite over the stores `make` returns, one per check.
    pub fn new(make: impl Fn() -> St + Send + Sync + 'static) -> Self {
        Self::with_async(move || std::future::ready(make()))
    }

    /// A suite over stores made asynchronously (connecting to a server, say), one per check.
    pub fn with_async<Fut>(make: impl Fn() -> Fut + Send + Sync + 'static) -> Self
    where
        Fut: Future<Output = St> + Send + 'static,
    {
        Self {
            make: Arc::new(move || Box::pin(make())),
            repetitions: 3,
            calls_per_actor: 4,
        }
    }

    /// How many times each race runs every order (default 3).
    #[must_use]
    pub fn repetitions(mut self, repetitions: usize) -> Self {
        self.repetitions = repetitions.max(1);
        self
    }

    /// How many store calls of each of the two racing requests are ordered (default 4: every
    /// interleaving of the first four calls of each, 70 orders); later calls run unordered.
    #[must_use]
    pub fn calls_per_actor(mut self, calls: usize) -> Self {
        self.calls_per_actor = calls.clamp(1, 8);
        self
    }

    /// Runs every check and every race, panicking at the first failure.
    pub async fn run(self) -> Report {
        let checks = contract::run_all(&self.make).await;
        let plan = races::Plan {
            repetitions: self.repetitions,
            calls_per_actor: self.calls_per_actor,
        };
        let races = races::run_all(&self.make, &plan).await;
        Report { checks, races }
    }
}
