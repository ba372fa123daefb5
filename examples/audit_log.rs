//! An audit log of the session lifecycle: one `SessionEvents` listener writes one JSON line to
//! stdout per event.
//!
//! The app is the counter with a login: `GET /` counts visits, `GET /login?name=alice` moves the
//! session to a new ID and records the user, `GET /logout` deletes the session. The layer has a
//! 15-minute idle timeout, an 8-hour absolute lifetime, a custom error response and one listener,
//! `AuditLog`, which implements every event it logs:
//!
//! | event | when |
//! |---|---|
//! | `started` | a new session was first stored |
//! | `loaded` | a request's cookie loaded a live session |
//! | `cookie_sent` | a response set the session cookie |
//! | `regenerated` | the session moved to a new ID (`old`, `new`) |
//! | `deleted` | a logout ended a live session |
//! | `expired` | a request presented a session past its idle timeout or lifetime |
//! | `rejected` | a cookie was not used (`malformed`, `unknown` ID, `regenerated` away, `undecodable` record) |
//! | `conflict` | a write from a stale copy was refused (a 409) |
//! | `error` | the store failed; the client got the error response |
//! | `state` | every change of state, `from` and `to` (`new`, `active`, `regenerated`, `expired`, `deleted`, `revoked`, `rejected`) |
//!
//! Sessions are logged by the fingerprint of their store key (`sid:` and 8 hex digits, the
//! `Display` of [`SessionKey`]), never by the cookie value: a log line must not be enough to
//! hijack a session.
//!
//! Run it (set `PORT` to use another port than 3000):
//!
//! ```text
//! cargo run --example audit_log
//! ```
//!
//! Then, in another terminal:
//!
//! ```text
//! curl -c jar -b jar http://localhost:3000/               # started, state, cookie_sent
//! curl -c jar -b jar http://localhost:3000/               # loaded
//! cp jar old-jar
//! curl -c jar -b jar 'http://localhost:3000/login?name=alice'   # loaded, regenerated, state, cookie_sent
//! curl -b old-jar http://localhost:3000/                  # rejected (regenerated), state, conflict: a 409
//! curl -b 'id=forged' http://localhost:3000/              # rejected (malformed), state, started, state, cookie_sent
//! curl -c jar -b jar http://localhost:3000/logout         # loaded, deleted, state
//! ```
//!
//! To watch `expired` and `error` without waiting, shorten the idle timeout and cap the store:
//! `IDLE_TIMEOUT_SECS=2 MAX_SESSIONS=3 cargo run --example audit_log`, then reuse a cookie after
//! 3 seconds (`expired`) and start a fourth session (`error`, answered with a 503).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{extract::Query, http::StatusCode, routing::get, Router};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{
    MemoryStore, RejectReason, Session, SessionError, SessionEvents, SessionHandle, SessionKey,
    SessionLayer, StateChange,
};

/// What this app keeps per session.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Visit {
    count: u32,
    user: Option<String>,
}

impl Session for Visit {}

/// One line of the audit log: a timestamp, then the event with its fields.
#[derive(Serialize)]
struct Line {
    /// Unix time in milliseconds.
    ts: String,
    #[serde(flatten)]
    event: Event,
}

/// The events, written as `"event":"<name>"` plus the variant's fields.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Started(Subject),
    Loaded(Subject),
    CookieSent(Subject),
    Deleted(Subject),
    Expired(Subject),
    Regenerated {
        old: String,
        new: String,
        user: Option<String>,
    },
    Rejected {
        reason: String,
        id: Option<String>,
    },
    Conflict {
        id: String,
    },
    Error {
        operation: Option<String>,
        error: String,
    },
    State {
        id: Option<String>,
        from: String,
        to: String,
    },
}

/// The session an event is about: its key's fingerprint and who it belongs to.
#[derive(Serialize)]
struct Subject {
    id: String,
    user: Option<String>,
    count: u32,
}

impl Subject {
    fn new(key: &SessionKey, data: &Visit) -> Self {
        Self {
            // `Display` prints the fingerprint, never the key itself.
            id: key.to_string(),
            user: data.user.clone(),
            count: data.count,
        }
    }
}

/// Writes one JSON line. Events run on the request's task, so they must stay this cheap; hand
/// slow sinks (a database, a remote log) to a channel instead.
fn audit(event: Event) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string();
    match serde_json::to_string(&Line { ts, event }) {
        Ok(line) => println!("{line}"),
        Err(err) => eprintln!("audit log: cannot encode event: {err}"),
    }
}

async fn index(session: SessionHandle<Visit>) -> String {
    let (count, user) = session.update(|v| {
        v.count = v.count.saturating_add(1);
        (v.count, v.user.clone())
    });
    let user = user.as_deref().unwrap_or("anonymous");
    format!("Hello, {user}: visit {count}\n")
}

#[derive(Deserialize)]
struct LoginParams {
    name: Option<String>,
}

async fn login(session: SessionHandle<Visit>, Query(params): Query<LoginParams>) -> String {
    let name = params
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "alice".to_owned());
    // A login changes the privilege level: new ID, same data (fires `regenerated`).
    session.regenerate();
    session.update(|v| v.user = Some(name.clone()));
    format!("Logged in as {name}\n")
}

async fn logout(session: SessionHandle<Visit>) -> &'static str {
    session.delete(); // fires `deleted`
    "Logged out\n"
}

/// A number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The audit log: one listener for every event the layer reports.
struct AuditLog;

impl SessionEvents<Visit> for AuditLog {
    fn started(&self, key: &SessionKey, data: &Visit) {
        audit(Event::Started(Subject::new(key, data)));
    }

    fn loaded(&self, key: &SessionKey, data: &Visit) {
        audit(Event::Loaded(Subject::new(key, data)));
    }

    fn cookie_sent(&self, key: &SessionKey, data: &Visit) {
        audit(Event::CookieSent(Subject::new(key, data)));
    }

    fn deleted(&self, key: &SessionKey, data: &Visit) {
        audit(Event::Deleted(Subject::new(key, data)));
    }

    fn expired(&self, key: &SessionKey, data: &Visit) {
        audit(Event::Expired(Subject::new(key, data)));
    }

    fn regenerated(&self, old: &SessionKey, new: &SessionKey, data: &Visit) {
        audit(Event::Regenerated {
            old: old.to_string(),
            new: new.to_string(),
            user: data.user.clone(),
        });
    }

    fn rejected(&self, reason: RejectReason, key: Option<&SessionKey>) {
        audit(Event::Rejected {
            reason: reason.to_string(),
            id: key.map(SessionKey::fingerprint),
        });
    }

    fn conflict(&self, key: &SessionKey) {
        audit(Event::Conflict {
            id: key.to_string(),
        });
    }

    fn error(&self, error: &SessionError) {
        audit(Event::Error {
            operation: error.operation().map(|op| op.to_string()),
            error: error.to_string(),
        });
    }

    fn state_changed(&self, change: &StateChange<'_, Visit>) {
        audit(Event::State {
            id: change.key.map(SessionKey::fingerprint),
            from: change.from.to_string(),
            to: change.to.to_string(),
        });
    }
}

#[tokio::main]
async fn main() {
    let idle_timeout = Duration::from_secs(env_or("IDLE_TIMEOUT_SECS", 15 * 60).max(1));

    // A cap on live sessions protects memory from clients that never send the cookie back; going
    // over it is a store error (the `error` event).
    let max_sessions = usize::try_from(env_or("MAX_SESSIONS", 100_000)).unwrap_or(usize::MAX);
    let store = MemoryStore::<Visit>::builder()
        .with_max_sessions(max_sessions)
        .build();
    let layer = SessionLayer::new(store)
        // An unused session dies after 15 minutes; any session dies 8 hours after it started,
        // however busy it is.
        .with_idle_timeout(idle_timeout)
        .with_absolute_lifetime(Duration::from_secs(8 * 60 * 60))
        // What a client sees when the store fails (it keeps its cookie: no Set-Cookie is sent).
        .with_error_response(StatusCode::SERVICE_UNAVAILABLE, "sessions unavailable\n")
        .with_events(AuditLog);

    let app = Router::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .layer(layer);

    let port = u16::try_from(env_or("PORT", 3000)).unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("failed to bind 127.0.0.1 (is PORT free?)");
    let port = listener.local_addr().map_or(port, |addr| addr.port());
    // The only line on stdout that is not JSON: skip it with `grep '^{'` before `jq`.
    println!("listening on http://localhost:{port}");
    axum::serve(listener, app).await.expect("server error");
}
