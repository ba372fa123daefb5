//! Configuration checks, the axum extractor's rejections, and redaction of IDs in output.

mod support;

use std::time::Duration;

use axum::{body::Body, http::Request, http::StatusCode, routing::get, Router};
use support::{send, Client, Counter, TestStore};
use tower_typed_sessions::{
    ConfigError, MemoryStore, SameSite, Session, SessionConfig, SessionHandle, SessionId,
    SessionLayer,
};

fn build(config: SessionConfig<Counter>) -> Result<(), ConfigError> {
    SessionLayer::from_config(MemoryStore::<Counter>::new(), config).map(|_| ())
}

#[test]
fn cookie_prefix_misuse_is_refused_when_the_layer_is_built() {
    let host = || SessionConfig::<Counter>::new().with_cookie_name("__Host-sid");
    assert_eq!(build(host()), Ok(()));
    assert_eq!(
        build(host().with_domain("example.com")),
        Err(ConfigError::HostPrefixWithDomain)
    );
    assert_eq!(
        build(host().with_path("/app")),
        Err(ConfigError::HostPrefixWithPath)
    );
    assert_eq!(
        build(host().with_secure(false)),
        Err(ConfigError::PrefixWithoutSecure)
    );
    let secure = SessionConfig::<Counter>::new().with_cookie_name("__Secure-sid");
    assert_eq!(build(secure.clone()), Ok(()));
    assert_eq!(
        build(secure.with_secure(false)),
        Err(ConfigError::PrefixWithoutSecure)
    );
}

#[test]
fn impossible_settings_are_refused() {
    let base = SessionConfig::<Counter>::new;
    // Durations that would overflow a timestamp are refused instead of panicking per request.
    assert_eq!(
        build(base().with_idle_timeout(Duration::MAX)),
        Err(ConfigError::DurationTooLong)
    );
    assert_eq!(
        build(base().with_regenerate_grace(Duration::from_secs(u64::MAX / 2))),
        Err(ConfigError::DurationTooLong)
    );
    assert_eq!(
        build(base().with_cookie_name("")),
        Err(ConfigError::InvalidCookieName)
    );
    assert_eq!(
        build(base().with_cookie_name("a b")),
        Err(ConfigError::InvalidCookieName)
    );
    assert_eq!(
        build(base().with_cookie_name("a;b")),
        Err(ConfigError::InvalidCookieName)
    );
    assert_eq!(
        build(base().with_path("app")),
        Err(ConfigError::InvalidPath)
    );
    assert_eq!(
        build(base().with_path("/a;Domain=evil")),
        Err(ConfigError::InvalidPath)
    );
    assert_eq!(
        build(base().with_domain("evil.com; x")),
        Err(ConfigError::InvalidDomain)
    );
    assert_eq!(
        build(base().with_same_site(SameSite::None).with_secure(false)),
        Err(ConfigError::SameSiteNoneWithoutSecure)
    );
    assert_eq!(
        build(base().with_idle_timeout(Duration::ZERO)),
        Err(ConfigError::ZeroTimeout)
    );
    assert_eq!(
        build(base().with_absolute_lifetime(Duration::ZERO)),
        Err(ConfigError::ZeroTimeout)
    );
    assert_eq!(build(base().with_same_site(SameSite::None)), Ok(()));
}

#[test]
fn defaults_build() {
    assert_eq!(build(SessionConfig::new()), Ok(()));
    let _ = SessionLayer::new(MemoryStore::<Counter>::new());
}

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Other;
impl Session for Other {}

#[tokio::test]
async fn handler_asking_for_a_session_without_the_layer_gets_a_500_naming_the_layer() {
    let app = Router::new()
        .route("/", get(|_s: SessionHandle<Other>| async { "unreachable" }))
        .layer(SessionLayer::new(MemoryStore::<Counter>::new()));
    let reply = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("SessionLayer"), "{}", reply.body);
    assert!(reply.body.contains("Other"), "{}", reply.body);
}

#[tokio::test]
async fn optional_extractor_is_none_without_the_layer_and_some_with_it() {
    let handler = |s: Option<SessionHandle<Counter>>| async move {
        if s.is_some() {
            "some"
        } else {
            "none"
        }
    };
    let bare = Router::new().route("/", get(handler));
    let reply = send(&bare, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "none")
    );
    let layered = Router::new()
        .route("/", get(handler))
        .layer(SessionLayer::new(MemoryStore::<Counter>::new()));
    let reply = send(&layered, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.body, "some");
}

#[tokio::test]
async fn raw_ids_never_appear_in_debug_or_display_output() {
    let id = SessionId::generate().unwrap();
    let raw = id.expose_secret();
    for text in [
        format!("{id}"),
        format!("{id:?}"),
        format!("{:?}", Some(id)),
        id.fingerprint(),
    ] {
        assert!(!text.contains(raw), "{text}");
        assert!(text.contains("sid:"), "{text}");
    }
    assert_eq!(
        id.fingerprint(),
        SessionId::parse(raw).unwrap().fingerprint(),
        "stable fingerprint"
    );

    // Nor in the Debug output of the handle, the layer, or a stored record.
    let store = TestStore::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    let app = Router::new()
        .route(
            "/",
            get(move |s: SessionHandle<Counter>| {
                let sink = sink.clone();
                async move {
                    s.update(|c| c.count += 1);
                    *sink.lock().unwrap() = format!("{s:?}");
                    "ok"
                }
            }),
        )
        .layer(SessionLayer::new(store.clone()));
    let mut client = Client::new(app);
    client.get("/").await;
    client.get("/").await;
    let id = client.id().unwrap();
    // The memory store keeps the plain ID at rest: the key's text is the cookie's value, so keys
    // print as fingerprints too.
    let key = client.key().unwrap();
    assert_eq!(key.as_str(), id.expose_secret());
    for text in [format!("{key}"), format!("{key:?}"), key.fingerprint()] {
        assert!(!text.contains(key.as_str()), "{text}");
        assert!(text.contains("sid:"), "{text}");
    }
    let handle_debug = seen.lock().unwrap().clone();
    assert!(handle_debug.contains(&key.fingerprint()), "{handle_debug}");
    assert!(!handle_debug.contains(id.expose_secret()));
    let record_debug = format!("{:?}", store.get(&key).await.unwrap());
    assert!(!record_debug.contains(id.expose_secret()), "{record_debug}");
    let layer_debug = format!("{:?}", SessionLayer::new(store.inner.clone()));
    assert!(!layer_debug.contains(id.expose_secret()));
}

#[tokio::test]
async fn changes_after_the_response_are_not_silently_applied() {
    let store = TestStore::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<SessionHandle<Counter>>();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let app = Router::new()
        .route(
            "/",
            get(move |s: SessionHandle<Counter>| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(s.clone());
                }
                async move {
                    s.update(|c| c.count = 1);
                    "ok"
                }
            }),
        )
        .layer(SessionLayer::new(store.clone()));
    let mut client = Client::new(app);
    client.get("/").await;
    let key = client.key().unwrap();
    let late = rx.await.unwrap();
    late.update(|c| c.count = 99);
    late.flash("notice", "lost");
    let record = store.get(&key).await.unwrap();
    assert_eq!(record.data.count, 1);
    assert!(record.flash.is_empty());
    assert_eq!(
        late.get(),
        Counter::default(),
        "a closed handle holds nothing"
    );
}
