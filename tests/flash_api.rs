//! The whole flash API through the layer: keep every message for one more request, take back
//! one queued message or all of them, and read what is queued for the next request.

mod support;

use axum::{extract::Query, routing::get, Router};
use serde::Deserialize;
use support::{Client, Counter};
use tower_typed_sessions::{MemoryStore, SessionHandle, SessionLayer};

#[derive(Deserialize)]
struct Keys {
    keys: String,
}

/// `key=message` pairs, in order.
fn list(messages: Vec<tower_typed_sessions::FlashMessage>) -> String {
    messages
        .iter()
        .map(|m| format!("{}={}", m.key, m.message))
        .collect::<Vec<_>>()
        .join(",")
}

fn app() -> Router {
    Router::new()
        // Queues one message per key ("m-<key>"), and answers what is queued.
        .route(
            "/set",
            get(
                |s: SessionHandle<Counter>, Query(q): Query<Keys>| async move {
                    for key in q.keys.split(',') {
                        s.flash(key, format!("m-{key}"));
                    }
                    list(s.queued_flash())
                },
            ),
        )
        .route(
            "/show",
            get(|s: SessionHandle<Counter>| async move { list(s.flash_messages()) }),
        )
        .route(
            "/keep-all",
            get(|s: SessionHandle<Counter>| async move {
                let kept = s.keep_all_flash();
                format!("kept {kept}: {}", list(s.queued_flash()))
            }),
        )
        // Queues a message per key, then takes back the first one.
        .route(
            "/set-then-discard-first",
            get(
                |s: SessionHandle<Counter>, Query(q): Query<Keys>| async move {
                    let keys: Vec<&str> = q.keys.split(',').collect();
                    for key in &keys {
                        s.flash(*key, format!("m-{key}"));
                    }
                    let discarded = s.discard_flash(keys[0]);
                    let again = s.discard_flash(keys[0]);
                    format!("{discarded} {again}: {}", list(s.queued_flash()))
                },
            ),
        )
        .route(
            "/set-then-discard-all",
            get(|s: SessionHandle<Counter>| async move {
                s.flash("a", "m-a");
                s.flash("b", "m-b");
                s.discard_all_flash();
                format!("queued: [{}]", list(s.queued_flash()))
            }),
        )
        .route(
            "/incr",
            get(|s: SessionHandle<Counter>| async move {
                s.update(|c| {
                    c.count += 1;
                    c.count
                })
                .to_string()
            }),
        )
        .layer(SessionLayer::new(MemoryStore::<Counter>::new()))
}

#[tokio::test]
async fn keep_all_carries_every_message_one_more_request() {
    let mut client = Client::new(app());
    assert_eq!(client.get("/set?keys=a,b").await.body, "a=m-a,b=m-b");
    assert_eq!(client.get("/keep-all").await.body, "kept 2: a=m-a,b=m-b");
    assert_eq!(
        client.get("/show").await.body,
        "a=m-a,b=m-b",
        "kept for one more request"
    );
    assert_eq!(client.get("/show").await.body, "", "then gone");
    assert_eq!(
        client.get("/keep-all").await.body,
        "kept 0: ",
        "nothing left to keep"
    );
}

#[tokio::test]
async fn discard_takes_back_one_queued_message() {
    let mut client = Client::new(app());
    client.get("/incr").await;
    assert_eq!(
        client.get("/set-then-discard-first?keys=a,b,c").await.body,
        "true false: b=m-b,c=m-c"
    );
    assert_eq!(client.get("/show").await.body, "b=m-b,c=m-c");
    assert_eq!(client.get("/show").await.body, "");
}

#[tokio::test]
async fn discard_all_leaves_nothing_queued_and_starts_no_session() {
    let mut client = Client::new(app());
    let reply = client.get("/set-then-discard-all").await;
    assert_eq!(reply.body, "queued: []");
    assert!(
        reply.set_cookies().is_empty(),
        "a flash taken back is no reason to start a session"
    );
    client.get("/incr").await;
    assert_eq!(client.get("/set-then-discard-all").await.body, "queued: []");
    assert_eq!(
        client.get("/show").await.body,
        "",
        "nothing reached the next request"
    );
}
