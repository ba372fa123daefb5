//! "Your active sessions": one user signed in on several devices lists them and logs the others
//! out, with the owner index of [`SessionManager`](tower_typed_sessions::SessionManager).
//!
//! Run it (set `PORT` to use another port than 3000):
//!
//! ```text
//! cargo run --example devices
//! ```
//!
//! Then play two devices with two cookie jars:
//!
//! ```text
//! curl -c phone  -b phone  'http://localhost:3000/login?user=alice'   # signed in as alice
//! curl -c laptop -b laptop 'http://localhost:3000/login?user=alice'
//! curl -c laptop -b laptop  http://localhost:3000/devices             # two sessions, * = this one
//! curl -c laptop -b laptop -X POST http://localhost:3000/logout-others # 1 other session revoked
//! curl -c phone  -b phone   http://localhost:3000/devices             # not signed in
//! ```
//!
//! Each session records the User-Agent it signed in with, so the list can say which device is
//! which; `POST /revoke/{tag}` revokes one session by the tag the list shows.

use axum::{
    extract::{Path, Query},
    http::{header, HeaderMap},
    routing::{get, post},
    Extension, Router,
};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{
    MemoryStore, Session, SessionHandle, SessionLayer, SessionManager, SessionTag,
};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Account {
    user: Option<String>,
    device: Option<String>,
}

impl Session for Account {
    /// Sessions are indexed under the signed-in user.
    fn owner(&self) -> Option<String> {
        self.user.clone()
    }
}

type Manager = SessionManager<Account, MemoryStore<Account>>;

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(
    session: SessionHandle<Account>,
    headers: HeaderMap,
    Query(login): Query<Login>,
) -> String {
    if login.user.is_empty() {
        return "user must not be empty\n".into();
    }
    let device = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown device")
        .to_owned();
    session.regenerate();
    session.set(Account {
        user: Some(login.user.clone()),
        device: Some(device),
    });
    format!("signed in as {}\n", login.user)
}

async fn devices(
    session: SessionHandle<Account>,
    Extension(manager): Extension<Manager>,
) -> String {
    let Some(user) = session.read(|a| a.user.clone()) else {
        return "not signed in\n".into();
    };
    let current = session.tag();
    match manager.list(&user).await {
        Ok(list) => {
            let mut out = format!("{} active session(s) of {user}:\n", list.len());
            for info in list {
                let mark = if Some(info.tag) == current { "*" } else { " " };
                let device = info.data.device.unwrap_or_default();
                out.push_str(&format!(
                    "{mark} {}  since {}  {device}\n",
                    info.tag, info.created_at
                ));
            }
            out
        }
        Err(err) => format!("could not list sessions: {err}\n"),
    }
}

async fn logout_others(
    session: SessionHandle<Account>,
    Extension(manager): Extension<Manager>,
) -> String {
    // The key the store keeps this session under (a `SessionKey`, never the cookie's secret).
    let (Some(user), Some(key)) = (session.read(|a| a.user.clone()), session.id()) else {
        return "not signed in\n".into();
    };
    match manager.revoke_others(&user, &key).await {
        Ok(n) => format!("{n} other session(s) revoked\n"),
        Err(err) => format!("could not revoke: {err}\n"),
    }
}

async fn revoke(
    session: SessionHandle<Account>,
    Extension(manager): Extension<Manager>,
    Path(tag): Path<String>,
) -> String {
    let (Some(user), Some(tag)) = (session.read(|a| a.user.clone()), SessionTag::parse(&tag))
    else {
        return "not signed in, or not a session tag\n".into();
    };
    match manager.revoke(&user, &tag).await {
        Ok(true) => "revoked\n".into(),
        Ok(false) => "no such session\n".into(),
        Err(err) => format!("could not revoke: {err}\n"),
    }
}

async fn logout(session: SessionHandle<Account>) -> &'static str {
    session.delete();
    "signed out\n"
}

#[tokio::main]
async fn main() {
    let layer = SessionLayer::new(MemoryStore::<Account>::new());
    let manager: Manager = layer.manager();
    let app = Router::new()
        .route("/login", get(login))
        .route("/devices", get(devices))
        .route("/logout-others", post(logout_others))
        .route("/revoke/{tag}", post(revoke))
        .route("/logout", post(logout))
        .layer(layer)
        .layer(Extension(manager));

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("failed to bind 127.0.0.1 (is PORT free?)");
    let port = listener.local_addr().map_or(port, |addr| addr.port());
    println!("listening on http://localhost:{port}");
    axum::serve(listener, app).await.expect("server error");
}
