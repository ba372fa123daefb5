//! Several sessions per user on the memory store: list, revoke one, revoke the others, revoke
//! all, with the index following regenerate, expiry, owner change and logout.

#[path = "support/owner_suite.rs"]
mod owner_suite;

use tower_typed_sessions::MemoryStore;

#[tokio::test]
async fn owner_index_on_the_memory_store() {
    owner_suite::owner_index_flow(MemoryStore::<owner_suite::Account>::new()).await;
}

mod lazy_owner {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{
        body::Body,
        http::{header, Request},
        routing::get,
        Router,
    };
    use serde::{Deserialize, Serialize};
    use tower::ServiceExt;
    use tower_typed_sessions::{MemoryStore, Session, SessionHandle, SessionLayer};

    static OWNER_CALLS: AtomicUsize = AtomicUsize::new(0);

    #[derive(Clone, Default, Serialize, Deserialize)]
    struct Member {
        user: Option<String>,
        visits: u32,
    }

    impl Session for Member {
        fn owner(&self) -> Option<String> {
            OWNER_CALLS.fetch_add(1, Ordering::SeqCst);
            self.user.clone()
        }
    }

    async fn send(app: &Router, path: &str, cookie: &str) -> Option<String> {
        let request = Request::get(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    }

    /// `Session::owner` may be costly (it allocates, it may format): a request that only reads
    /// the session must not call it, and the index must still follow the writes.
    #[tokio::test]
    async fn reads_never_call_owner_and_writes_keep_the_index() {
        let layer = SessionLayer::new(MemoryStore::<Member>::new());
        let manager = layer.manager();
        let app = Router::new()
            .route(
                "/login",
                get(|s: SessionHandle<Member>| async move {
                    s.update(|m| m.user = Some("ann".into()));
                    s.regenerate();
                }),
            )
            .route(
                "/visit",
                get(|s: SessionHandle<Member>| async move { s.update(|m| m.visits += 1) }),
            )
            .route(
                "/read",
                get(|s: SessionHandle<Member>| async move { s.read(|m| m.visits).to_string() }),
            )
            .layer(layer);

        let cookie = send(&app, "/login", "").await.expect("login sets a cookie");
        assert_eq!(manager.list("ann").await.unwrap().len(), 1);

        let before = OWNER_CALLS.load(Ordering::SeqCst);
        for _ in 0..20 {
            assert_eq!(send(&app, "/read", &cookie).await, None);
        }
        assert_eq!(
            OWNER_CALLS.load(Ordering::SeqCst),
            before,
            "a read called owner()"
        );

        send(&app, "/visit", &cookie).await;
        assert!(
            OWNER_CALLS.load(Ordering::SeqCst) > before,
            "a write must compare owners"
        );
        let sessions = manager.list("ann").await.unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].data.visits, 1);
    }
}
