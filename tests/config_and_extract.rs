//! Configuration checks, the axum extractor's rejections, and redaction of IDs in output.

mod support;

use std::time::Duration;

use axum::{body::Body, http::Request, http::StatusCode, routing::get, Router};
use support::{send, Client, Counter, TestStore};
#[allow(deprecated)]
use tower_typed_sessions::SessionConfig;
use tower_typed_sessions::{
    ConfigError, MemoryStore, Preset, SameSite, Session, SessionHandle, SessionId, SessionLayer,
};

type Layer = SessionLayer<Counter, MemoryStore<Counter>>;

fn layer() -> Layer {
    SessionLayer::new(MemoryStore::new())
}

fn refused(result: Result<Layer, ConfigError>) -> ConfigError {
    match result {
        Ok(_) => panic!("the setting was accepted"),
        Err(err) => err,
    }
}

#[test]
fn the_builder_refuses_each_impossible_setting_where_it_is_set() {
    let host = || layer().try_with_cookie_name("__Host-sid").unwrap();
    assert_eq!(
        refused(host().try_with_domain("example.com")),
        ConfigError::HostPrefixWithDomain
    );
    assert_eq!(
        refused(host().try_with_path("/app")),
        ConfigError::HostPrefixWithPath
    );
    assert_eq!(
        refused(host().try_with_secure(false)),
        ConfigError::PrefixWithoutSecure
    );
    let secure = layer().try_with_cookie_name("__Secure-sid").unwrap();
    assert_eq!(
        refused(secure.try_with_secure(false)),
        ConfigError::PrefixWithoutSecure
    );
    // The order does not matter: a Domain first, then the prefix.
    let with_domain = layer().try_with_domain("example.com").unwrap();
    assert_eq!(
        refused(with_domain.try_with_cookie_name("__Host-sid")),
        ConfigError::HostPrefixWithDomain
    );
    for bad in ["", "a b", "a;b", "a=b"] {
        assert_eq!(
            refused(layer().try_with_cookie_name(bad)),
            ConfigError::InvalidCookieName,
            "{bad:?}"
        );
    }
    assert_eq!(
        refused(layer().try_with_path("app")),
        ConfigError::InvalidPath
    );
    assert_eq!(
        refused(layer().try_with_path("/a;Domain=evil")),
        ConfigError::InvalidPath
    );
    assert_eq!(
        refused(layer().try_with_domain("evil.com; x")),
        ConfigError::InvalidDomain
    );
    let insecure = layer().try_with_secure(false).unwrap();
    assert_eq!(
        refused(insecure.try_with_same_site(SameSite::None)),
        ConfigError::SameSiteNoneWithoutSecure
    );
    let none = layer().try_with_same_site(SameSite::None).unwrap();
    assert_eq!(
        refused(none.try_with_secure(false)),
        ConfigError::SameSiteNoneWithoutSecure
    );
}

/// Reads the session's remaining lifetime and sends the cookie, for the timeout checks below.
fn timing_app(layer: Layer) -> Router {
    Router::new()
        .route(
            "/",
            get(|s: SessionHandle<Counter>| async move {
                s.update(|c| c.count += 1);
                "ok"
            }),
        )
        .route(
            "/left",
            get(|s: SessionHandle<Counter>| async move {
                s.expires_in().map_or(0, |d| d.as_secs()).to_string()
            }),
        )
        .layer(layer)
}

/// The Set-Cookie of a new session, and its seconds left as the next request sees them.
async fn first_cookie_and_lifetime(layer: Layer) -> (String, u64) {
    let app = timing_app(layer);
    let reply = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    let cookie = reply.set_cookie().expect("a cookie");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let left = send(&app, support::get_with_cookie("/left", &pair)).await;
    (cookie, left.body.parse().unwrap())
}

#[tokio::test]
async fn durations_are_infallible_and_kept_in_range() {
    // Longer than a timestamp can hold: kept at 100 years instead of panicking per request.
    let (_, left) = first_cookie_and_lifetime(
        layer()
            .with_idle_timeout(Duration::MAX)
            .with_absolute_lifetime(Duration::MAX)
            .with_regenerate_grace(Duration::MAX),
    )
    .await;
    let century = 100 * 365 * 24 * 60 * 60;
    assert!((century - 5..=century).contains(&left), "{left}");
    // Zero: a millisecond, so the session is dead by the next request, never a panic.
    let mut client = Client::new(timing_app(layer().with_idle_timeout(Duration::ZERO)));
    client.get("/").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(client.get("/left").await.body, "0");
}

#[tokio::test]
async fn presets_follow_owasp_timeouts_with_a_host_only_strict_cookie() {
    let (cookie, left) = first_cookie_and_lifetime(SessionLayer::from_preset(
        MemoryStore::new(),
        Preset::OfficeApplication,
    ))
    .await;
    assert!(cookie.starts_with("__Host-id="), "{cookie}");
    assert!(
        cookie.contains("SameSite=Strict") && cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(
        cookie.contains("Path=/") && !cookie.contains("Domain"),
        "{cookie}"
    );
    assert!(
        (30 * 60 - 5..=30 * 60).contains(&left),
        "idle 30 minutes: {left}"
    );

    let (cookie, left) = first_cookie_and_lifetime(SessionLayer::from_preset(
        MemoryStore::new(),
        Preset::HighValue,
    ))
    .await;
    assert!(cookie.starts_with("__Host-id="), "{cookie}");
    assert!(
        (5 * 60 - 5..=5 * 60).contains(&left),
        "idle 5 minutes: {left}"
    );

    // The absolute lifetime caps the idle one: 8 hours for an office application.
    let (_, left) = first_cookie_and_lifetime(
        SessionLayer::from_preset(MemoryStore::new(), Preset::OfficeApplication)
            .with_idle_timeout(Duration::from_secs(24 * 60 * 60)),
    )
    .await;
    assert!((8 * 3600 - 5..=8 * 3600).contains(&left), "{left}");

    // A preset's settings bind what comes after it.
    let office =
        SessionLayer::<Counter, _>::from_preset(MemoryStore::new(), Preset::OfficeApplication);
    assert_eq!(
        refused(office.try_with_domain("example.com")),
        ConfigError::HostPrefixWithDomain
    );
}

#[test]
#[allow(deprecated)]
fn deprecated_config_still_refuses_prefix_misuse() {
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
#[allow(deprecated)]
fn deprecated_config_still_refuses_impossible_settings() {
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
#[allow(deprecated)]
fn defaults_build() {
    assert_eq!(build(SessionConfig::new()), Ok(()));
    let _ = SessionLayer::new(MemoryStore::<Counter>::new());
}

#[allow(deprecated)]
fn build(config: SessionConfig<Counter>) -> Result<(), ConfigError> {
    SessionLayer::from_config(MemoryStore::<Counter>::new(), config).map(|_| ())
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
