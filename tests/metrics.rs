//! Feature `metrics`: the layer's lifecycle events and store operations, read back in
//! Prometheus text through `metrics-exporter-prometheus`, the exporter the `metrics` example
//! uses. One test: the recorder is global to the process.
#![cfg(all(feature = "metrics", feature = "axum"))]

mod support;

use metrics_exporter_prometheus::PrometheusBuilder;
use support::{get_with_cookie, send, Client, TestStore};
use tower_typed_sessions::{SessionId, SessionLayer};

/// The value of the sample `name{labels}` with exactly those labels, or 0 if there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let found: Vec<&str> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .collect();
            let same = metric == name
                && found.len() == wanted.len()
                && wanted.iter().all(|w| found.contains(&w.as_str()));
            same.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_store_operations_are_counted_and_timed() {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("install the recorder");
    let store = TestStore::new();
    let app = support::app(SessionLayer::new(store.clone()));
    let mut client = Client::new(app.clone());

    client.get("/incr").await; // started, cookie sent; create
    client.get("/read").await; // loaded; load
    client.get("/login").await; // loaded, regenerated, cookie sent; load, regenerate
    client.get("/logout").await; // loaded, deleted; load, delete
    send(&app, get_with_cookie("/read", "id=not-an-id")).await; // rejected (malformed)
    let unknown = SessionId::generate().unwrap();
    send(&app, support::get_with_id("/read", &unknown)).await; // rejected (unknown); load
    let mut failing = Client::new(app.clone());
    failing.get("/incr").await; // started, cookie sent; create
    store.set_failing(true);
    failing.get("/read").await; // error; load (backend)
    store.set_failing(false);

    let text = prometheus.render();
    println!("{text}");
    let events = |event: &str| sample(&text, "typed_sessions_events_total", &[("event", event)]);
    assert_eq!(events("started"), 2.0);
    assert_eq!(events("cookie_sent"), 3.0);
    assert_eq!(events("loaded"), 3.0);
    assert_eq!(events("regenerated"), 1.0);
    assert_eq!(events("deleted"), 1.0);
    assert_eq!(events("error"), 1.0);
    let rejected = |reason: &str| {
        sample(
            &text,
            "typed_sessions_events_total",
            &[("event", "rejected"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("malformed"), 1.0);
    assert_eq!(rejected("unknown"), 1.0);

    let operations = |operation: &str, outcome: &str| {
        sample(
            &text,
            "typed_sessions_store_operations_total",
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    assert_eq!(operations("create", "done"), 2.0);
    assert_eq!(operations("load", "active"), 3.0);
    assert_eq!(operations("load", "missing"), 1.0);
    assert_eq!(operations("load", "backend"), 1.0);
    assert_eq!(operations("regenerate", "done"), 1.0);
    assert_eq!(operations("delete", "done"), 1.0);

    // The latency histogram has one observation per call.
    let observed = |operation: &str| {
        sample(
            &text,
            "typed_sessions_store_operation_seconds_count",
            &[("operation", operation)],
        )
    };
    assert_eq!(observed("load"), 5.0);
    assert_eq!(observed("create"), 2.0);
    assert!(
        sample(
            &text,
            "typed_sessions_store_operation_seconds_sum",
            &[("operation", "load")]
        ) > 0.0
    );
    // No label carries a session's ID or key.
    let id = failing.id().expect("the failing client's cookie");
    for secret in [
        id.expose_secret(),
        support::key(&id).as_str(),
        unknown.expose_secret(),
    ] {
        assert!(!text.contains(secret), "a session ID or key in the metrics");
    }
}
