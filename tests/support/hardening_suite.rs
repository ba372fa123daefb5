//! The hardening guarantees, written once over HTTP and generic over the store, so that memory,
//! one Redis and a Redis Cluster run the same checks.
#![allow(dead_code, unreachable_pub)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{routing::get, Router};
use tokio::sync::oneshot;
use tower_typed_sessions::{Concurrency, SessionConfig, SessionHandle, SessionLayer, Store};

use crate::support::{get_with_cookie, send, Client, Counter};

type Gate = Arc<Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>>;

fn racing_app<St: Store<Counter> + Clone>(
    store: St,
    config: SessionConfig<Counter>,
    gate: Gate,
) -> Router {
    crate::support::routes()
        .route(
            // Loads, tells the test it has loaded, waits for the test, then writes.
            "/gated-incr",
            get(move |s: SessionHandle<Counter>| {
                let gate = gate.clone();
                async move {
                    let (loaded, go) = gate.lock().unwrap().take().expect("a gate per race");
                    let _ = loaded.send(());
                    let _ = go.await;
                    s.update(|c| c.count += 1000);
                    "written"
                }
            }),
        )
        .route(
            // A read-modify-write with a window, as a real handler doing I/O would have.
            "/slow-incr",
            get(|s: SessionHandle<Counter>| async move {
                let seen = s.read(|c| c.count);
                tokio::time::sleep(Duration::from_millis(3)).await;
                s.update(|c| c.count = seen + 1);
                (seen + 1).to_string()
            }),
        )
        .layer(SessionLayer::from_config(store, config).unwrap())
}

/// `races` times: a request loads the session, a logout (or a login that regenerates) completes,
/// then the first request saves. The session must stay dead (logout) or the old ID must stay
/// dead (login). Returns how many resurrections were seen (the caller asserts zero).
pub async fn no_resurrection<St: Store<Counter> + Clone>(store: St, races: usize) -> usize {
    let gate: Gate = Arc::default();
    let app = racing_app(store.clone(), SessionConfig::new(), gate.clone());
    let mut resurrections = 0;
    for race in 0..races {
        let mut client = Client::new(app.clone());
        client.get("/incr").await;
        let id = client.id().expect("a session");
        let cookie = format!("id={}", id.expose_secret());
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *gate.lock().unwrap() = Some((loaded_tx, go_rx));
        let slow = tokio::spawn({
            let app = app.clone();
            let cookie = cookie.clone();
            async move { send(&app, get_with_cookie("/gated-incr", &cookie)).await }
        });
        loaded_rx.await.expect("the slow request loaded");
        let path = if race % 2 == 0 { "/logout" } else { "/login" };
        let winner = send(&app, get_with_cookie(path, &cookie)).await;
        assert_eq!(winner.status, 200);
        go_tx.send(()).expect("the slow request waits");
        let slow = slow.await.expect("slow request");
        let old_alive = matches!(
            store.load(&id).await.expect("load"),
            tower_typed_sessions::Loaded::Active(_)
        );
        let replay = send(&app, get_with_cookie("/read", &cookie)).await;
        if old_alive || replay.body != "0 new=true" || !slow.set_cookies().is_empty() {
            resurrections += 1;
        }
    }
    resurrections
}

/// 64 concurrent increments of one counter, each client retrying on 409 until it succeeds.
/// Returns (final value, successful responses, conflicts seen).
pub async fn optimistic_increments<St: Store<Counter> + Clone>(store: St) -> (u32, usize, usize) {
    let conflicts = Arc::new(Mutex::new(0usize));
    let seen = conflicts.clone();
    let config = SessionConfig::new()
        .with_concurrency(Concurrency::optimistic())
        .on_conflict(move |_| *seen.lock().unwrap() += 1);
    let app = racing_app(store, config, Gate::default());
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    client.get("/read").await;
    let cookie = format!("id={}", client.id().unwrap().expose_secret());
    let before: u32 = client
        .get("/read")
        .await
        .body
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            for _attempt in 0..10_000 {
                let reply = send(&app, get_with_cookie("/slow-incr", &cookie)).await;
                match reply.status.as_u16() {
                    200 => {
                        assert!(reply.set_cookies().is_empty());
                        return true;
                    }
                    409 => {
                        assert!(
                            reply.set_cookies().is_empty(),
                            "no Set-Cookie on a conflict"
                        );
                        tokio::task::yield_now().await;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            false
        }));
    }
    let mut successes = 0;
    for task in tasks {
        if task.await.unwrap() {
            successes += 1;
        }
    }
    let after: u32 = client
        .get("/read")
        .await
        .body
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let conflicts = *conflicts.lock().unwrap();
    (after - before, successes, conflicts)
}

/// The same 64 concurrent increments under last-write-wins (no retries needed: every response is
/// 200). Returns (final value, successful responses).
pub async fn last_write_wins_increments<St: Store<Counter> + Clone>(store: St) -> (u32, usize) {
    let app = racing_app(store, SessionConfig::new(), Gate::default());
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let cookie = format!("id={}", client.id().unwrap().expose_secret());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            send(&app, get_with_cookie("/slow-incr", &cookie))
                .await
                .status
                == 200
        }));
    }
    let mut successes = 0;
    for task in tasks {
        if task.await.unwrap() {
            successes += 1;
        }
    }
    let after: u32 = client
        .get("/read")
        .await
        .body
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (after - 1, successes)
}
