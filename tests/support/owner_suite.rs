//! "Log out my other devices", written once over HTTP and generic over the store, so that memory,
//! one Redis and a Redis Cluster run the same checks.
#![allow(dead_code, unreachable_pub)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Query,
    http::{header, Request},
    routing::get,
    Extension, Router,
};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_typed_sessions::{
    Session, SessionHandle, SessionId, SessionKey, SessionLayer, SessionManager, SessionTag, Store,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub user: Option<String>,
    pub agent: Option<String>,
}

impl Session for Account {
    fn owner(&self) -> Option<String> {
        self.user.clone()
    }
}

#[derive(Deserialize)]
struct Params {
    user: Option<String>,
    agent: Option<String>,
    tag: Option<String>,
}

/// The app: login (regenerates), switch user (owner change without regenerate), list devices,
/// revoke one, revoke the others, revoke all, logout.
pub fn app<St: Store<Account> + Clone>(layer: SessionLayer<Account, St>) -> Router {
    let manager = layer.manager();
    Router::new()
        .route(
            "/login",
            get(
                |s: SessionHandle<Account>, Query(p): Query<Params>| async move {
                    s.regenerate();
                    s.set(Account {
                        user: p.user,
                        agent: p.agent,
                    });
                    "ok"
                },
            ),
        )
        .route(
            "/switch",
            get(
                |s: SessionHandle<Account>, Query(p): Query<Params>| async move {
                    s.update(|a| a.user = p.user);
                    "ok"
                },
            ),
        )
        .route(
            "/tag",
            get(|s: SessionHandle<Account>| async move {
                s.tag().map(|t| t.to_string()).unwrap_or_default()
            }),
        )
        .route(
            "/whoami",
            get(|s: SessionHandle<Account>| async move {
                s.read(|a| a.user.clone())
                    .unwrap_or_else(|| "anonymous".into())
            }),
        )
        .route(
            "/devices",
            get(
                |s: SessionHandle<Account>,
                 Extension(m): Extension<SessionManager<Account, St>>| async move {
                    let Some(user) = s.read(|a| a.user.clone()) else {
                        return "anonymous".to_string();
                    };
                    let current = s.tag();
                    m.list(&user)
                        .await
                        .expect("list")
                        .iter()
                        .map(|info| {
                            let mark = if Some(info.tag) == current { "*" } else { " " };
                            format!(
                                "{mark}{} {}",
                                info.tag,
                                info.data.agent.clone().unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            ),
        )
        .route(
            "/revoke-others",
            get(
                |s: SessionHandle<Account>,
                 Extension(m): Extension<SessionManager<Account, St>>| async move {
                    let (Some(user), Some(key)) = (s.read(|a| a.user.clone()), s.id()) else {
                        return "no".to_string();
                    };
                    m.revoke_others(&user, &key)
                        .await
                        .expect("revoke others")
                        .to_string()
                },
            ),
        )
        .route(
            "/revoke",
            get(
                |s: SessionHandle<Account>,
                 Extension(m): Extension<SessionManager<Account, St>>,
                 Query(p): Query<Params>| async move {
                    let Some(user) = s.read(|a| a.user.clone()) else {
                        return "no".to_string();
                    };
                    let tag = p.tag.as_deref().and_then(SessionTag::parse).expect("a tag");
                    m.revoke(&user, &tag).await.expect("revoke").to_string()
                },
            ),
        )
        .route(
            "/logout",
            get(|s: SessionHandle<Account>| async move {
                s.delete();
                "bye"
            }),
        )
        .layer(layer)
        .layer(Extension(manager))
}

/// A browser: one cookie jar.
pub struct Device {
    app: Router,
    pub cookie: Option<String>,
}

impl Device {
    pub fn new(app: &Router) -> Self {
        Self {
            app: app.clone(),
            cookie: None,
        }
    }

    pub fn id(&self) -> Option<SessionId> {
        self.cookie.as_deref().and_then(SessionId::parse)
    }

    /// This device's session tag, as the server sees it (the tag of the key the store keeps,
    /// which is a digest of the cookie's ID when IDs are hashed at rest).
    pub async fn tag(&mut self) -> SessionTag {
        SessionTag::parse(&self.get("/tag").await).expect("a session tag")
    }

    pub async fn get(&mut self, path: &str) -> String {
        let mut request = Request::get(path);
        if let Some(value) = &self.cookie {
            request = request.header(header::COOKIE, format!("id={value}"));
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        for cookie in response.headers().get_all(header::SET_COOKIE) {
            let cookie = cookie.to_str().unwrap();
            let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
            self.cookie = if cookie.contains("Max-Age=0") {
                None
            } else {
                Some(value.to_owned())
            };
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The device list lines (`*` marks this device).
    pub async fn devices(&mut self) -> Vec<String> {
        let body = self.get("/devices").await;
        if body.is_empty() {
            return Vec::new();
        }
        body.lines().map(str::to_owned).collect()
    }
}

/// Runs the whole flow against a layer built on `store`; `deleted` receives the keys the layer's
/// `deleted` callback saw.
pub async fn owner_index_flow<St: Store<Account> + Clone>(store: St) {
    let deleted: Arc<Mutex<Vec<SessionKey>>> = Arc::default();
    let sink = deleted.clone();
    let app = app(SessionLayer::new(store.clone())
        .with_idle_timeout(Duration::from_millis(1500))
        .on_deleted(move |id, _| sink.lock().unwrap().push(*id)));
    let mut phone = Device::new(&app);
    let mut laptop = Device::new(&app);

    // Two sessions for one user: both listed, this device marked.
    phone.get("/login?user=alice&agent=phone").await;
    laptop.get("/login?user=alice&agent=laptop").await;
    let list = laptop.devices().await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .any(|l| l.starts_with('*') && l.ends_with("laptop")),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|l| l.starts_with(' ') && l.ends_with("phone")),
        "{list:?}"
    );
    let phone_tag = phone.tag().await;
    assert!(list.iter().any(|l| l.contains(phone_tag.as_str())));
    assert!(
        !list.concat().contains(phone.id().unwrap().expose_secret()),
        "tags, not ids"
    );

    // Regenerate keeps two entries, with the phone's new tag.
    phone.get("/login?user=alice&agent=phone").await;
    let new_phone_tag = phone.tag().await;
    assert_ne!(new_phone_tag, phone_tag);
    let list = laptop.devices().await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter().any(|l| l.contains(new_phone_tag.as_str())),
        "{list:?}"
    );
    assert!(
        !list.iter().any(|l| l.contains(phone_tag.as_str())),
        "{list:?}"
    );

    // Revoke the others from the laptop: the laptop keeps working, the phone is anonymous.
    let revoked_tag = phone.tag().await;
    assert_eq!(laptop.get("/revoke-others").await, "1");
    assert_eq!(laptop.get("/whoami").await, "alice");
    assert_eq!(phone.get("/whoami").await, "anonymous");
    assert!(
        phone.cookie.is_none(),
        "the revoked session's cookie is cleared"
    );
    assert!(
        deleted
            .lock()
            .unwrap()
            .iter()
            .any(|key| key.tag() == revoked_tag),
        "deleted fired for the revoked session"
    );
    assert_eq!(laptop.devices().await.len(), 1);

    // Revoke one by its tag.
    let mut tablet = Device::new(&app);
    tablet.get("/login?user=alice&agent=tablet").await;
    let tablet_tag = tablet.tag().await;
    assert_eq!(laptop.devices().await.len(), 2);
    assert_eq!(
        laptop.get(&format!("/revoke?tag={tablet_tag}")).await,
        "true"
    );
    assert_eq!(
        laptop.get(&format!("/revoke?tag={tablet_tag}")).await,
        "false",
        "already gone"
    );
    assert_eq!(tablet.get("/whoami").await, "anonymous");

    // Expiry: an idle session drops out of the list while the laptop stays active.
    phone.get("/login?user=alice&agent=phone").await;
    assert_eq!(laptop.devices().await.len(), 2);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        laptop.get("/whoami").await;
    }
    let list = laptop.devices().await;
    assert_eq!(list.len(), 1, "the idle phone expired: {list:?}");
    assert!(list[0].ends_with("laptop"));

    // Owner change: the laptop becomes bob's; alice's list no longer shows it.
    phone.get("/login?user=alice&agent=phone").await;
    laptop.get("/switch?user=bob").await;
    let alice = phone.devices().await;
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert!(alice[0].ends_with("phone"));
    assert_eq!(laptop.devices().await.len(), 1, "bob's list has the laptop");

    // Logout leaves the index; revoke_all empties it.
    phone.get("/logout").await;
    assert_eq!(laptop.get("/whoami").await, "bob");
    let mut other = Device::new(&app);
    other.get("/login?user=bob&agent=other").await;
    assert_eq!(laptop.devices().await.len(), 2);
    let manager_app = SessionLayer::new(store.clone()).manager();
    assert_eq!(manager_app.list("alice").await.unwrap().len(), 0);
    assert_eq!(manager_app.revoke_all("bob").await.unwrap(), 2);
    assert_eq!(laptop.get("/whoami").await, "anonymous");
    assert_eq!(other.get("/whoami").await, "anonymous");
    assert!(
        store.owner_keys("bob").await.unwrap().is_empty(),
        "index emptied"
    );
}
