//! MemoryStore under a flood of creates refused at its cap: other users' read latency, idle and
//! during the flood, side by side in one run.
//!
//! `cargo bench --bench memory_flood` (release build). Fills a store to its cap, then measures
//! sliding loads of random stored sessions from one thread for a few seconds, first alone, then
//! while another thread creates sessions as fast as it can (every one refused: the store is
//! full). Prints p50 / p99 / max of the reads in each phase and the p99 ratio.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use tower_typed_sessions::{LoadOptions, Loaded, MemoryStore, Record, Session, SessionKey, Store};

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Data {
    count: u32,
}
impl Session for Data {}

const CAP: usize = 400_000;
const PHASE: Duration = Duration::from_secs(3);
const IDLE: Duration = Duration::from_secs(3600);

fn record(key: SessionKey) -> Record<Data> {
    let json = serde_json::json!({
        "v": 2, "key": key.as_str(), "data": { "count": 1 }, "has_data": true,
        "created_at": 0, "revision": 0, "last_seen": 0,
        "expires_at": 4_000_000_000_000_i64, "deadline": 4_000_000_000_000_i64,
    });
    serde_json::from_value(json).expect("a record")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Reads random stored sessions for `PHASE`; returns the sorted latencies in nanoseconds.
fn read_phase(store: &MemoryStore<Data>, keys: &[SessionKey]) -> Vec<u64> {
    runtime().block_on(async {
        let mut latencies = Vec::with_capacity(4_000_000);
        let mut i = 0usize;
        let end = Instant::now() + PHASE;
        while Instant::now() < end {
            i = (i + 7919) % keys.len();
            let options = LoadOptions::at(OffsetDateTime::now_utc()).sliding(Some(IDLE));
            let start = Instant::now();
            let loaded = store.load(&keys[i], options).await;
            latencies.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
            assert!(matches!(loaded, Ok(Loaded::Active(_))));
        }
        latencies.sort_unstable();
        latencies
    })
}

fn summary(name: &str, latencies: &[u64]) -> u64 {
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let p99 = at(0.99);
    println!(
        "{name:<28} reads {:>9}  p50 {:>7.2} us  p99 {:>7.2} us  max {:>9.2} us",
        latencies.len(),
        at(0.5) as f64 / 1e3,
        p99 as f64 / 1e3,
        latencies[latencies.len() - 1] as f64 / 1e3
    );
    p99
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let store: MemoryStore<Data> = MemoryStore::builder().with_max_sessions(CAP).build();
    let keys: Vec<SessionKey> = (0..CAP)
        .map(|_| SessionKey::generate().expect("random"))
        .collect();
    runtime().block_on(async {
        for key in &keys {
            store.create(&record(*key)).await.expect("fill");
        }
    });
    println!("MemoryStore full at its cap of {CAP} sessions");

    let idle = read_phase(&store, &keys);
    let idle_p99 = summary("idle", &idle);

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let flood = {
        let (store, stop, refused) = (store.clone(), Arc::clone(&stop), Arc::clone(&refused));
        std::thread::spawn(move || {
            runtime().block_on(async {
                while !stop.load(Ordering::Relaxed) {
                    let key = SessionKey::generate().expect("random");
                    if store.create(&record(key)).await.is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let refused_before = refused.load(Ordering::Relaxed);
    let flooded = read_phase(&store, &keys);
    let refused_during = refused.load(Ordering::Relaxed) - refused_before;
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    let flood_p99 = summary("during a create flood", &flooded);
    println!(
        "refused creates during the phase: {refused_during} ({:.0}/s)",
        refused_during as f64 / PHASE.as_secs_f64()
    );
    println!(
        "p99 during the flood / p99 idle: {:.2}",
        flood_p99 as f64 / idle_p99.max(1) as f64
    );
}
