//! The visit counter with its session metrics served in Prometheus text format at `/metrics`
//! (feature `metrics`; the exporter is `metrics-exporter-prometheus`).
//!
//! ```text
//! cargo run --example metrics --features metrics
//! curl -c jar -b jar http://localhost:3000/          # a session starts
//! curl -c jar -b jar http://localhost:3000/          # and is loaded
//! curl http://localhost:3000/metrics                 # typed_sessions_events_total{event="started"} 1 ...
//! ```

use axum::{extract::State, response::Html, routing::get, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{MemoryStore, Session, SessionHandle, SessionLayer};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Visits {
    count: u32,
}

impl Session for Visits {}

async fn index(session: SessionHandle<Visits>) -> Html<String> {
    let count = session.update(|visits| {
        visits.count = visits.count.saturating_add(1);
        visits.count
    });
    Html(format!(
        "<p>You have visited {count} times.</p><p><a href=\"/metrics\">Metrics</a></p>"
    ))
}

/// The metrics recorded so far, in Prometheus text format.
async fn metrics(State(prometheus): State<PrometheusHandle>) -> String {
    prometheus.render()
}

#[tokio::main]
async fn main() {
    // The recorder every `metrics::counter!` in the process reports to, this crate's included.
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("install the Prometheus recorder");
    // The sessions live under `/`; `/metrics` is outside the session layer: scraping it never
    // touches a session.
    let sessions = Router::new()
        .route("/", get(index))
        .layer(SessionLayer::new(MemoryStore::<Visits>::new()));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(prometheus)
        .merge(sessions);

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("failed to bind 127.0.0.1 (is PORT free?)");
    let port = listener.local_addr().map_or(port, |addr| addr.port());
    println!("listening on http://localhost:{port} (metrics at /metrics)");
    axum::serve(listener, app).await.expect("server error");
}
