//! Typed, secure cookie sessions for Axum and Hyper, as one Tower layer.
//!
//! Your application defines its own session struct and implements [`Session`] for it in one
//! line. [`SessionLayer`] hands every request a [`LazySession`]; when the handler asks for its
//! typed [`SessionHandle`] (the Axum extractor does), the layer reads the session cookie, loads
//! the session from a [`Store`], slides its expiry and rotates flash messages, and on the
//! response it saves only what changed, sets the cookie, regenerates IDs and deletes on logout,
//! reporting every lifecycle event to [`SessionEvents`] listeners for audit logs. A route that
//! never asks for the session costs no store call.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use serde::{Deserialize, Serialize};
//! use tower_typed_sessions::{MemoryStore, Session, SessionHandle, SessionLayer};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Visits {
//!     count: u32,
//! }
//! impl Session for Visits {}
//!
//! async fn handler(session: SessionHandle<Visits>) -> String {
//!     let count = session.update(|v| {
//!         v.count += 1;
//!         v.count
//!     });
//!     format!("you have been here {count} times")
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(handler))
//!     .layer(SessionLayer::new(MemoryStore::<Visits>::new()));
//! ```
//!
//! # Security defaults
//! - IDs are 256 bits from the operating system's CSPRNG; an ID the store did not issue is never
//!   adopted, and a malformed cookie is dropped without a store lookup.
//! - The cookie is `HttpOnly`, `SameSite=Lax`, `Path=/` and `Secure` unless configured otherwise;
//!   `__Host-` and `__Secure-` names are checked when the layer is built.
//! - [`SessionHandle::regenerate`] keeps the data and kills the old ID; [`SessionHandle::delete`]
//!   deletes server-side and sends a removal cookie with the same Path and Domain.
//! - Session IDs print as fingerprints in `Debug`, `Display` and `tracing` output.
//! - A store failure answers with the configured error response and no Set-Cookie.
//! - Responses that set a session cookie get `Cache-Control: no-store` and `Vary: Cookie`.
//!
//! Concurrent requests of one session follow one write discipline (see [`store`]): every write
//! states the revision it read, and a regenerated session leaves a forwarding pointer under its
//! old ID, so a logout or revoke ends the session wherever it moved and a flash reaches exactly
//! one request. The `testing` feature's conformance suite checks it for any [`Store`].
//!
//! Opt-in hardening: signed cookies with key rotation ([`SessionLayer::with_signing_keys`]),
//! optimistic concurrency ([`Concurrency`]), a regenerate grace window and a record size limit.
//! Session IDs are hashed at rest ([`IdsAtRest`]) by default on every store whose contents leave
//! the process. Several sessions per user are listed and revoked through [`SessionManager`].
//! [`SessionLayer::require_login`] guards routes ([`RequireLogin`], with [`local_redirect`] for
//! the way back), [`SessionHandle::log_in`] and [`SessionHandle::log_out`] do the safe login
//! and logout sequences, and [`SessionLayer::csrf`] refuses forged requests ([`CsrfLayer`]).
//! A handler can give one session a lifetime of its own, with a persistent cookie
//! ([`SessionHandle::remember`], "remember me"), and [`Preset`]s set OWASP's timeouts for common
//! kinds of application. SECURITY.md maps each guarantee to the test that proves it.
//!
//! # Deployment caveat
//! `Secure` cookies are only sent over HTTPS (and to `http://localhost`). Behind a TLS-terminating
//! proxy keep `Secure` on: the browser sees HTTPS.
//!
//! # Features
//! | Name | Description | Default? |
//! |---|---|---|
//! | `axum` | [`SessionHandle`] as an Axum extractor (`FromRequestParts`, `OptionalFromRequestParts`) | yes |
//! | `redis` | [`RedisStore`] on one Redis server | no |
//! | `cluster` | [`RedisStore`] on Redis Cluster | no |
//! | `sentinel` | [`RedisStore`] behind Redis Sentinel, following failovers; a master with a password, a database or TLS ([`store::redis::SentinelMaster`]) | no |
//! | `redis-tls` | `rediss://` (TLS) for [`RedisStore`], with the system's roots or your own CA ([`store::redis::RedisTls`]) | no |
//! | `postgres` | [`PostgresStore`] on PostgreSQL through sqlx 0.8 | no |
//! | `sqlite` | [`SqliteStore`] on SQLite through sqlx 0.8 | no |
//! | `metrics` | lifecycle events and store operations through the `metrics` facade (see [Metrics](#metrics)) | no |
//! | `testing` | [`testing`]: the conformance suite (store contract and race guarantees) for any store | no |
//! | `full` | all of the above | no |
//!
//! # Metrics
//! With the `metrics` feature the layer reports to whatever recorder the application installs
//! for the [`metrics`](https://docs.rs/metrics) facade (the `metrics` example serves them in
//! Prometheus text). Labels never carry a session ID or key.
//!
//! | name | type | labels | counts |
//! |---|---|---|---|
//! | `typed_sessions_events_total` | counter | `event`: `started`, `loaded`, `cookie_sent`, `deleted`, `expired`, `regenerated`, `rejected`, `conflict`, `error`, `csrf_rejected`; with `rejected`, `reason`: `malformed`, `unknown`, `regenerated`, `undecodable`, `bad_signature` | lifecycle events, as [`SessionEvents`] sees them |
//! | `typed_sessions_store_operations_total` | counter | `operation`: `load`, `create`, `save`, `regenerate`, `delete`, `index`; `outcome`: `active`, `expired`, `moved`, `missing`, `done`, `collision`, `conflict`, or an error: `backend`, `timeout`, `decode`, `encode`, `capacity`, `unsupported`, `too_many_forwards` | every store call the layer makes |
//! | `typed_sessions_store_operation_seconds` | histogram | `operation` | each store call's latency, in seconds |
#![deny(missing_docs)]
#![deny(unsafe_code, unreachable_pub)]
#![warn(rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod cookie_only;
mod cookies;
mod csrf;
mod engine;
mod error;
mod events;
#[cfg(feature = "axum")]
mod extract;
mod flash;
mod guard;
mod handle;
mod id;
mod keys;
mod layer;
mod lazy;
mod lifetime;
mod manager;
mod record;
mod service;
mod session;
pub mod store;
mod telemetry;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

/// Compiles the README's Rust blocks as doctests, so the quickstart cannot rot. They use every
/// feature (Redis, the conformance suite), so they run with `--all-features`.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[allow(deprecated)]
pub use config::SessionConfig;
pub use config::{Concurrency, Preset, SameSite};
pub use cookie_only::{CookieOnly, Revoked, MAX_COOKIE_BYTES};
pub use csrf::{CsrfFuture, CsrfLayer, CsrfRejection, CsrfService, CsrfToken};
pub use error::{BoxError, ConfigError, SessionError, StoreError, StoreOperation};
pub use events::{RejectReason, SessionEvents, SessionState, StateChange};
#[cfg(feature = "axum")]
pub use extract::SessionRejection;
pub use flash::{Flash, FlashMessage};
pub use guard::{local_redirect, RequireLogin, RequireLoginService, Unauthenticated};
pub use handle::SessionHandle;
pub use id::{SessionId, SessionKey, SessionTag};
pub use keys::{IdsAtRest, Key};
pub use layer::SessionLayer;
pub use lazy::{LazySession, SessionUnavailable};
pub use lifetime::Lifetime;
pub use manager::{SessionInfo, SessionManager};
pub use record::{Record, RECORD_FORMAT};
pub use service::{ResponseFuture, SessionService};
pub use session::Session;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::redis::RedisStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::sql::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::sql::SqliteStore;
pub use store::{
    memory::MemoryStore, memory::MemoryStoreBuilder, Expect, Forward, LoadOptions, Loaded, Store,
    WriteOutcome,
};
