//! One events trait: every lifecycle event and every state change reaches a `SessionEvents`
//! listener, beside the `on_*` closures, through real requests.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, routing::get, Router};
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_typed_sessions::{
    MemoryStore, RejectReason, Session, SessionError, SessionEvents, SessionHandle, SessionId,
    SessionKey, SessionLayer, SessionState, StateChange,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    user: Option<String>,
    visits: u32,
}

impl Session for Account {
    fn owner(&self) -> Option<String> {
        self.user.clone()
    }
}

/// What a listener saw, as text: `name key…` for events, `from->to` for state changes.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// A listener that implements every method.
struct Everything(Log);

impl SessionEvents<Account> for Everything {
    fn started(&self, _: &SessionKey, _: &Account) {
        self.0.push("started".into());
    }
    fn loaded(&self, _: &SessionKey, _: &Account) {
        self.0.push("loaded".into());
    }
    fn cookie_sent(&self, _: &SessionKey, _: &Account) {
        self.0.push("cookie_sent".into());
    }
    fn deleted(&self, _: &SessionKey, data: &Account) {
        self.0.push(format!("deleted {:?}", data.user));
    }
    fn expired(&self, _: &SessionKey, _: &Account) {
        self.0.push("expired".into());
    }
    fn regenerated(&self, old: &SessionKey, new: &SessionKey, _: &Account) {
        assert_ne!(old, new);
        self.0.push("regenerated".into());
    }
    fn rejected(&self, reason: RejectReason, _: Option<&SessionKey>) {
        self.0.push(format!("rejected {reason}"));
    }
    fn conflict(&self, _: &SessionKey) {
        self.0.push("conflict".into());
    }
    fn error(&self, _: &SessionError) {
        self.0.push("error".into());
    }
    fn state_changed(&self, change: &StateChange<'_, Account>) {
        let data = change
            .data
            .map(|d| d.visits.to_string())
            .unwrap_or("-".into());
        let extra = match (change.new_key, change.reason) {
            (Some(_), _) => " (moved)".to_owned(),
            (_, Some(reason)) => format!(" ({reason})"),
            _ => String::new(),
        };
        let key = if change.key.is_some() {
            "key"
        } else {
            "no key"
        };
        self.0.push(format!(
            "{}->{} {key} data={data}{extra}",
            change.from, change.to
        ));
    }
}

/// A listener that only wants state changes: every other method keeps its default.
struct OnlyChanges(Log);

impl SessionEvents<Account> for OnlyChanges {
    fn state_changed(&self, change: &StateChange<'_, Account>) {
        self.0.push(format!("{}", change.to));
    }
}

fn routes() -> Router {
    Router::new()
        .route(
            "/visit",
            get(|s: SessionHandle<Account>| async move {
                s.update(|a| a.visits += 1);
                "ok"
            }),
        )
        .route(
            "/read",
            get(|s: SessionHandle<Account>| async move { s.read(|a| a.visits).to_string() }),
        )
        .route(
            "/login",
            get(|s: SessionHandle<Account>| async move {
                s.update(|a| a.user = Some("alice".into()));
                s.regenerate();
                "in"
            }),
        )
        .route(
            "/logout",
            get(|s: SessionHandle<Account>| async move {
                s.delete();
                "out"
            }),
        )
}

async fn get_with(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, Option<String>) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("id={cookie}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap()["id=".len()..].to_owned());
    let _ = response.into_body().collect().await.unwrap();
    (status, set)
}

#[tokio::test]
async fn a_listener_sees_every_event_and_every_state_change() {
    let everything = Log::default();
    let changes = Log::default();
    let closures = Log::default();
    let (c1, c2) = (closures.clone(), closures.clone());
    let layer = SessionLayer::new(MemoryStore::<Account>::new())
        .with_idle_timeout(Duration::from_millis(300))
        .with_events(Everything(everything.clone()))
        .with_events(OnlyChanges(changes.clone()))
        .on_started(move |_, _| c1.push("closure started".into()))
        .on_cookie_sent(move |_, _| c2.push("closure cookie_sent".into()));
    let manager = layer.manager();
    let app = routes().layer(layer);

    // New -> Active.
    let (_, cookie) = get_with(&app, "/visit", None).await;
    let cookie = cookie.unwrap();
    assert_eq!(
        everything.take(),
        ["started", "new->active key data=1", "cookie_sent"]
    );
    assert_eq!(closures.take(), ["closure started", "closure cookie_sent"]);
    assert_eq!(changes.take(), ["active"]);

    // A read: loaded, no state change.
    get_with(&app, "/read", Some(&cookie)).await;
    assert_eq!(everything.take(), ["loaded"]);
    assert!(changes.take().is_empty());

    // Active -> Regenerated (a login), then the old cookie: Regenerated -> Rejected.
    let (_, new_cookie) = get_with(&app, "/login", Some(&cookie)).await;
    let new_cookie = new_cookie.unwrap();
    assert_eq!(
        everything.take(),
        [
            "loaded",
            "regenerated",
            "active->regenerated key data=1 (moved)",
            "cookie_sent"
        ]
    );
    get_with(&app, "/read", Some(&cookie)).await;
    assert_eq!(
        everything.take(),
        [
            "rejected regenerated",
            "regenerated->rejected key data=- (regenerated)"
        ]
    );

    // Active -> Revoked, through the manager.
    assert_eq!(manager.revoke_all("alice").await.unwrap(), 1);
    assert_eq!(
        everything.take(),
        ["deleted Some(\"alice\")", "active->revoked key data=1"]
    );
    assert_eq!(changes.take(), ["regenerated", "rejected", "revoked"]);

    // Active -> Deleted, by a logout.
    let (_, cookie) = get_with(&app, "/login", None).await;
    let cookie = cookie.unwrap();
    everything.take();
    get_with(&app, "/logout", Some(&cookie)).await;
    assert_eq!(
        everything.take(),
        [
            "loaded",
            "deleted Some(\"alice\")",
            "active->deleted key data=0"
        ]
    );

    // Active -> Expired.
    let (_, cookie) = get_with(&app, "/visit", None).await;
    let cookie = cookie.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    everything.take();
    get_with(&app, "/read", Some(&cookie)).await;
    assert_eq!(everything.take(), ["expired", "active->expired key data=1"]);

    // New -> Rejected: an ID nobody issued, and a malformed cookie (no key).
    let forged = SessionId::generate().unwrap();
    get_with(&app, "/read", Some(forged.expose_secret())).await;
    assert_eq!(
        everything.take(),
        ["rejected unknown", "new->rejected key data=- (unknown)"]
    );
    get_with(&app, "/read", Some("garbage")).await;
    assert_eq!(
        everything.take(),
        [
            "rejected malformed",
            "new->rejected no key data=- (malformed)"
        ]
    );
    let _ = new_cookie;
}

#[tokio::test]
async fn store_errors_and_conflicts_reach_the_listener() {
    let log = Log::default();
    let layer = SessionLayer::new(MemoryStore::<Account>::new())
        .with_regenerate_grace(Duration::from_secs(5))
        .with_events(Everything(log.clone()));
    let app = routes().layer(layer);
    let (_, cookie) = get_with(&app, "/visit", None).await;
    let cookie = cookie.unwrap();
    get_with(&app, "/login", Some(&cookie)).await;
    log.take();
    // Within the grace window the old cookie reads, and a write from it is a conflict.
    let (status, _) = get_with(&app, "/visit", Some(&cookie)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(log.take(), ["loaded", "conflict"]);
}

#[tokio::test]
async fn a_full_store_reports_an_error_to_the_listener() {
    let log = Log::default();
    let store = MemoryStore::<Account>::builder()
        .with_max_sessions(1)
        .build();
    let app = routes().layer(SessionLayer::new(store).with_events(Everything(log.clone())));
    get_with(&app, "/visit", None).await;
    log.take();
    let (status, cookie) = get_with(&app, "/visit", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(cookie.is_none());
    assert_eq!(log.take(), ["error"]);
}

#[test]
fn states_print_as_lowercase_words() {
    let all = [
        SessionState::New,
        SessionState::Active,
        SessionState::Regenerated,
        SessionState::Expired,
        SessionState::Deleted,
        SessionState::Revoked,
        SessionState::Rejected,
    ];
    let words: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(
        words,
        [
            "new",
            "active",
            "regenerated",
            "expired",
            "deleted",
            "revoked",
            "rejected"
        ]
    );
}
