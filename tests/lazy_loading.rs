//! Lazy loading: a request whose handler never asks for its session costs no store call, works
//! while the store is down and changes nothing; a handler that asks loads it once.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, routing::get, Router};
use http::{header, Request, StatusCode};
use support::{send, Client, Counter, TestStore};
use tokio::sync::oneshot;
use tower_typed_sessions::{
    LazySession, RejectReason, SessionError, SessionEvents, SessionHandle, SessionKey, SessionLayer,
};

/// Where `/spawned` leaves the signal that lets its task load.
type Late = Arc<Mutex<Option<oneshot::Sender<()>>>>;

/// Every event a layer fires, by name.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }
}

impl SessionEvents<Counter> for Seen {
    fn loaded(&self, _: &SessionKey, _: &Counter) {
        self.push("loaded".into());
    }
    fn expired(&self, _: &SessionKey, _: &Counter) {
        self.push("expired".into());
    }
    fn rejected(&self, reason: RejectReason, _: Option<&SessionKey>) {
        self.push(format!("rejected {reason}"));
    }
    fn error(&self, _: &SessionError) {
        self.push("error".into());
    }
}

/// The shared routes, plus: `/twice` (extracts the handle twice and loads through the lazy
/// session a third time), `/maybe?load=1` (loads only when asked), and `/spawned` (hands the
/// lazy session to a task that loads and writes after the response left).
fn app(store: TestStore, seen: &Seen, late: Late) -> Router {
    let layer = SessionLayer::new(store)
        .with_idle_timeout(Duration::from_millis(600))
        .with_error_response(StatusCode::SERVICE_UNAVAILABLE, "try later")
        .with_events(seen.clone());
    support::routes()
        .route(
            "/twice",
            get(
                |a: SessionHandle<Counter>,
                 b: SessionHandle<Counter>,
                 lazy: LazySession<Counter>| async move {
                    let c = lazy.load().await.unwrap();
                    a.update(|c| c.count += 1);
                    b.update(|c| c.count += 1);
                    c.update(|c| c.count += 1);
                    c.read(|c| c.count).to_string()
                },
            ),
        )
        .route(
            "/concurrent",
            get(|lazy: LazySession<Counter>| async move {
                // Four loads at once, each still waiting on the store when the others start.
                let (a, b, c, d) = tokio::join!(lazy.load(), lazy.load(), lazy.load(), lazy.load());
                let seen: Vec<String> = [a, b, c, d]
                    .into_iter()
                    .map(|handle| {
                        let handle = handle.expect("loaded");
                        handle.update(|c| c.count += 1);
                        handle.flash_message("notice").unwrap_or_default()
                    })
                    .collect();
                seen.join(",")
            }),
        )
        .route(
            "/maybe",
            get(
                |lazy: LazySession<Counter>, query: axum::extract::RawQuery| async move {
                    if query.0.as_deref() == Some("load=1") {
                        // On a store failure the layer answers with its error response.
                        return match lazy.load().await {
                            Ok(session) => session.read(|c| c.count).to_string(),
                            Err(unavailable) => unavailable.to_string(),
                        };
                    }
                    format!("loaded={}", lazy.is_loaded())
                },
            ),
        )
        .route(
            "/spawned",
            get(move |lazy: LazySession<Counter>| {
                let late = Arc::clone(&late);
                async move {
                    let (go, wait) = oneshot::channel::<()>();
                    *late.lock().unwrap() = Some(go);
                    tokio::spawn(async move {
                        let _ = wait.await;
                        if let Ok(session) = lazy.load().await {
                            session.update(|c| c.count = 999);
                        }
                    });
                    "spawned"
                }
            }),
        )
        .layer(layer)
}

fn rig() -> (TestStore, Seen, Client, Late) {
    let store = TestStore::new();
    let seen = Seen::default();
    let late = Arc::new(Mutex::new(None));
    let client = Client::new(app(store.clone(), &seen, Arc::clone(&late)));
    (store, seen, client, late)
}

#[tokio::test]
async fn a_route_that_never_asks_costs_no_store_call_and_sets_nothing() {
    let (store, seen, mut client, _) = rig();
    assert_eq!(client.get("/incr").await.body, "1");
    store.take_calls();
    seen.take();

    let reply = client.get("/nothing").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(store.take_calls().is_empty(), "no store call");
    assert!(reply.set_cookies().is_empty());
    assert!(reply.headers.get(header::VARY).is_none());
    assert!(reply.headers.get(header::CACHE_CONTROL).is_none());
    assert!(seen.take().is_empty(), "no event");

    // The same with a cookie that would be refused if it were read.
    let reply = send(
        &client.app,
        support::get_with_cookie("/nothing", "id=not-an-id"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.set_cookies().is_empty(),
        "the bad cookie is not cleared unread"
    );
    assert!(seen.take().is_empty(), "not even a rejection");
    assert!(store.take_calls().is_empty());

    // A route that asks loads once.
    assert_eq!(client.get("/read").await.body, "1 new=false");
    assert_eq!(store.take_calls(), ["load"]);
    assert_eq!(seen.take(), ["loaded"]);
}

#[tokio::test]
async fn a_store_outage_fails_only_the_routes_that_load() {
    let (store, seen, mut client, _) = rig();
    client.get("/incr").await;
    seen.take();
    store.set_failing(true);

    let reply = client.get("/nothing").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "served while the store is down"
    );
    assert_eq!(reply.body, "no session used");
    assert!(seen.take().is_empty());

    for path in ["/read", "/incr", "/maybe?load=1", "/twice"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.body, "try later", "{path}: the configured response");
        assert!(reply.set_cookies().is_empty(), "{path}: no Set-Cookie");
        assert_eq!(seen.take(), ["error"], "{path}: one error event");
    }
    let reply = client.get("/maybe").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "loaded=false")
    );

    store.set_failing(false);
    assert_eq!(
        client.get("/read").await.body,
        "1 new=false",
        "the session survived"
    );
}

#[tokio::test]
async fn every_extraction_of_one_request_shares_one_load() {
    let (store, _, mut client, _) = rig();
    client.get("/incr").await;
    store.take_calls();
    assert_eq!(client.get("/twice").await.body, "4");
    assert_eq!(store.take_calls(), ["load", "save"]);
    assert_eq!(client.get("/read").await.body, "4 new=false");
}

#[tokio::test]
async fn an_unloaded_request_neither_slides_the_expiry_nor_takes_the_flash() {
    let (_, seen, mut client, _) = rig();
    client.get("/flash?msg=hello").await;
    client.get("/incr").await;
    // Requests that never load keep nothing alive: past the 600 ms idle timeout the session is
    // gone however many of them came...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.get("/nothing").await;
    }
    seen.take();
    let reply = client.get("/read").await;
    assert_eq!(reply.body, "0 new=true");
    assert_eq!(seen.take(), ["expired"]);

    // ...while loading requests slide it,
    client.get("/incr").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.get("/nothing").await;
        assert_eq!(
            client.get("/read").await.body,
            "1 new=false",
            "alive while in use"
        );
    }
    // and a flash waits for the first request that loads.
    client.get("/flash?msg=kept").await;
    for _ in 0..3 {
        client.get("/nothing").await;
    }
    assert_eq!(client.get("/show").await.body, "kept");
    assert_eq!(client.get("/show").await.body, "-");
}

#[tokio::test]
async fn concurrent_loads_of_one_request_share_one_store_call_and_one_flash() {
    let (store, _, mut client, _) = rig();
    client.get("/incr").await;
    client.get("/flash?msg=hello").await;
    store.take_calls();
    store.set_load_delay(Duration::from_millis(50));
    let reply = client.get("/concurrent").await;
    assert_eq!(
        reply.body, "hello,hello,hello,hello",
        "one handle, one flash"
    );
    assert_eq!(
        store.take_calls(),
        ["load", "save"],
        "one load for four callers"
    );
    store.set_load_delay(Duration::ZERO);
    assert_eq!(
        client.get("/read").await.body,
        "5 new=false",
        "the four changes, once saved"
    );
    assert_eq!(
        client.get("/show").await.body,
        "-",
        "the flash was delivered once"
    );
}

#[tokio::test]
async fn a_lazy_session_loads_only_when_the_handler_decides() {
    let (store, _, mut client, _) = rig();
    client.get("/incr").await;
    store.take_calls();
    assert_eq!(client.get("/maybe").await.body, "loaded=false");
    assert!(store.take_calls().is_empty());
    assert_eq!(client.get("/maybe?load=1").await.body, "1");
    assert_eq!(store.take_calls(), ["load"]);
}

#[tokio::test]
async fn a_load_that_finishes_after_the_response_changes_nothing() {
    let (store, _, mut client, late) = rig();
    client.get("/incr").await;
    let reply = client.get("/spawned").await;
    assert_eq!(reply.body, "spawned");
    assert!(reply.set_cookies().is_empty());
    store.take_calls();
    let go = late.lock().unwrap().take().unwrap();
    go.send(()).unwrap();
    // The task loads (one store call) and writes to a closed handle: nothing is saved.
    for _ in 0..100 {
        if !store.calls().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.take_calls(), ["load"]);
    assert_eq!(client.get("/read").await.body, "1 new=false");
}

#[tokio::test]
async fn without_the_layer_the_extractors_say_what_is_missing() {
    let app: Router = Router::new()
        .route(
            "/handle",
            get(|_: SessionHandle<Counter>| async { "unreachable" }),
        )
        .route(
            "/lazy",
            get(|_: LazySession<Counter>| async { "unreachable" }),
        )
        .route(
            "/optional",
            get(|s: Option<SessionHandle<Counter>>| async move { format!("{}", s.is_some()) }),
        );
    for path in ["/handle", "/lazy"] {
        let reply = send(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(reply.body.contains("LazySession<"), "{}", reply.body);
    }
    let reply = send(&app, Request::get("/optional").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.body, "false");
}
