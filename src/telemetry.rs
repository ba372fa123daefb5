//! Metrics through the `metrics` facade (feature `metrics`): lifecycle events, and each store
//! operation's outcome and latency. The application installs a recorder (a Prometheus exporter,
//! say); without one, or without the feature, nothing is recorded and nothing is measured.
//!
//! The names and labels are listed in the crate docs (`lib.rs`, "Metrics").
//!
//! Labels never carry a session ID or key.

use std::future::Future;

use time::OffsetDateTime;

use crate::{
    error::StoreError,
    events::RejectReason,
    id::SessionKey,
    record::Record,
    session::Session,
    store::{Expect, Forward, LoadOptions, Loaded, Store, WriteOutcome},
};

#[cfg(feature = "metrics")]
const EVENTS: &str = "typed_sessions_events_total";
#[cfg(feature = "metrics")]
const OPERATIONS: &str = "typed_sessions_store_operations_total";
#[cfg(feature = "metrics")]
const SECONDS: &str = "typed_sessions_store_operation_seconds";

/// Counts one lifecycle event.
#[inline]
pub(crate) fn event(name: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(EVENTS, "event" => name).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = name;
}

/// Counts one rejected cookie, by reason.
#[inline]
pub(crate) fn rejected(reason: RejectReason) {
    #[cfg(feature = "metrics")]
    {
        let reason = match reason {
            RejectReason::Malformed => "malformed",
            RejectReason::Unknown => "unknown",
            RejectReason::Regenerated => "regenerated",
            RejectReason::Undecodable => "undecodable",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::Unsealable => "unsealable",
            RejectReason::Revoked => "revoked",
        };
        metrics::counter!(EVENTS, "event" => "rejected", "reason" => reason).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// What a store call answered, as a label.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
trait Outcome {
    fn label(&self) -> &'static str;
}

impl<T> Outcome for Loaded<T> {
    fn label(&self) -> &'static str {
        match self {
            Loaded::Active(_) => "active",
            Loaded::Expired(_) => "expired",
            Loaded::Moved(_) => "moved",
            Loaded::Missing => "missing",
        }
    }
}

impl Outcome for WriteOutcome {
    fn label(&self) -> &'static str {
        match self {
            WriteOutcome::Done => "done",
            WriteOutcome::Missing => "missing",
            WriteOutcome::Collision => "collision",
            WriteOutcome::Conflict => "conflict",
            WriteOutcome::Moved(_) => "moved",
        }
    }
}

impl Outcome for () {
    fn label(&self) -> &'static str {
        "done"
    }
}

impl Outcome for Vec<SessionKey> {
    fn label(&self) -> &'static str {
        "done"
    }
}

impl<V: Outcome> Outcome for Result<V, StoreError> {
    fn label(&self) -> &'static str {
        match self {
            Ok(value) => value.label(),
            Err(StoreError::Backend(_)) => "backend",
            Err(StoreError::Timeout) => "timeout",
            Err(StoreError::Decode(_)) => "decode",
            Err(StoreError::Encode(_)) => "encode",
            Err(StoreError::CapacityExceeded { .. }) => "capacity",
            Err(StoreError::Unsupported(_)) => "unsupported",
            Err(StoreError::TooManyForwards) => "too_many_forwards",
        }
    }
}

/// Runs one store call, recording its outcome and latency when the feature is on.
#[inline]
async fn measured<V: Outcome>(operation: &'static str, call: impl Future<Output = V>) -> V {
    #[cfg(feature = "metrics")]
    {
        let started = std::time::Instant::now();
        let result = call.await;
        metrics::histogram!(SECONDS, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(OPERATIONS, "operation" => operation, "outcome" => result.label())
            .increment(1);
        result
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = operation;
        call.await
    }
}

/// The layer's store, each call measured: the engine's only way to the store.
pub(crate) struct Measured<St> {
    store: St,
}

impl<St> Measured<St> {
    pub(crate) fn new(store: St) -> Self {
        Self { store }
    }

    pub(crate) fn inner(&self) -> &St {
        &self.store
    }

    pub(crate) async fn load<T: Session>(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<T>, StoreError>
    where
        St: Store<T>,
    {
        measured("load", self.store.load(key, options)).await
    }

    pub(crate) async fn create<T: Session>(
        &self,
        record: &Record<T>,
    ) -> Result<WriteOutcome, StoreError>
    where
        St: Store<T>,
    {
        measured("create", self.store.create(record)).await
    }

    pub(crate) async fn save<T: Session>(
        &self,
        record: &Record<T>,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError>
    where
        St: Store<T>,
    {
        measured("save", self.store.save(record, expect)).await
    }

    pub(crate) async fn regenerate<T: Session>(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError>
    where
        St: Store<T>,
    {
        measured(
            "regenerate",
            self.store.regenerate(old, record, expect, forward),
        )
        .await
    }

    pub(crate) async fn delete<T: Session>(
        &self,
        key: &SessionKey,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError>
    where
        St: Store<T>,
    {
        measured("delete", Store::<T>::delete(&self.store, key, expect)).await
    }

    pub(crate) fn supports_owner_index<T: Session>(&self) -> bool
    where
        St: Store<T>,
    {
        Store::<T>::supports_owner_index(&self.store)
    }

    pub(crate) async fn index_owner<T: Session>(
        &self,
        owner: &str,
        key: &SessionKey,
        until: OffsetDateTime,
    ) -> Result<(), StoreError>
    where
        St: Store<T>,
    {
        measured(
            "index",
            Store::<T>::index_owner(&self.store, owner, key, until),
        )
        .await
    }

    pub(crate) async fn unindex_owner<T: Session>(
        &self,
        owner: &str,
        key: &SessionKey,
    ) -> Result<(), StoreError>
    where
        St: Store<T>,
    {
        measured("index", Store::<T>::unindex_owner(&self.store, owner, key)).await
    }

    pub(crate) async fn owner_keys<T: Session>(
        &self,
        owner: &str,
    ) -> Result<Vec<SessionKey>, StoreError>
    where
        St: Store<T>,
    {
        measured("index", Store::<T>::owner_keys(&self.store, owner)).await
    }
}
