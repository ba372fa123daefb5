//! Bytes of process memory per session held by the cached Redis store's local cache.
//!
//! `cargo bench --bench cache_memory --features redis` (release build; starts its own
//! `redis-server` on a free loopback port). A counting allocator tracks the bytes the process
//! holds; the store creates sessions (each create fills the cache once Redis acknowledged it)
//! and the growth is divided by the number of cached sessions. Two session types: a counter,
//! and a logged-in user (id, name, e-mail, roles: about 150 bytes of JSON).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use time::OffsetDateTime;
use tower_typed_sessions::{
    store::redis::LocalCache, LoadOptions, Record, RedisStore, Session, SessionKey, Store,
    WriteOutcome,
};

/// The system allocator, counting the bytes held.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Counter {
    count: u32,
}
impl Session for Counter {}

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    roles: Vec<String>,
}
impl Session for User {}

const SESSIONS: usize = 50_000;

fn record<T: Session>(data: T) -> Record<T> {
    let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let key = SessionKey::generate().expect("a key");
    let json = serde_json::json!({
        "v": 2, "key": key.as_str(), "data": serde_json::to_value(data).expect("json"),
        "has_data": true, "created_at": now, "revision": 0, "last_seen": now,
        "expires_at": now + 3_600_000, "deadline": now + 86_400_000,
    });
    serde_json::from_value(json).expect("a record")
}

/// Bytes held per cached session after `SESSIONS` sessions of `make()`'s data were created and
/// read once (a create's own entry does not last: see `cache.rs` on scripted writes).
async fn per_session<T: Session>(url: &str, prefix: &str, make: impl Fn(usize) -> T) -> f64 {
    let store = RedisStore::<T>::connect_cached(url, LocalCache::new().with_capacity(SESSIONS))
        .await
        .expect("connect")
        .with_key_prefix(prefix);
    // Tracking on (the first command opens the connection) before counting.
    store.count().await.expect("a count");
    let records: Vec<Record<T>> = (0..SESSIONS).map(|i| record(make(i))).collect();
    let before = HELD.load(Ordering::Relaxed);
    let records_bytes = {
        // The records passed in are the caller's; only what the cache keeps is counted.
        let mut created = 0;
        for record in &records {
            if store.create(record).await.expect("create") == WriteOutcome::Done {
                created += 1;
            }
        }
        assert_eq!(created, SESSIONS);
        let options = LoadOptions::at(OffsetDateTime::now_utc());
        for record in &records {
            store.load(&record.key, options).await.expect("a load");
        }
        HELD.load(Ordering::Relaxed) - before
    };
    let cached = store.cached_sessions();
    assert!(cached >= SESSIONS * 99 / 100, "{cached} cached");
    records_bytes as f64 / cached as f64
}

fn main() {
    let server = redis_server::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let url = server.url();
        let counter = per_session(&url, "counter:", |i| Counter { count: i as u32 }).await;
        let user = per_session(&url, "user:", |i| User {
            id: i as u64,
            name: format!("User Number {i:08}"),
            email: format!("user.number.{i:08}@example.com"),
            roles: vec!["member".to_owned(), "editor".to_owned()],
        })
        .await;
        println!(
            "local cache, {SESSIONS} sessions: {counter:.0} bytes per counter session, \
             {user:.0} bytes per logged-in user session ({} bytes of JSON data)",
            serde_json::to_string(&User {
                id: 1,
                name: format!("User Number {:08}", 1),
                email: format!("user.number.{:08}@example.com", 1),
                roles: vec!["member".to_owned(), "editor".to_owned()],
            })
            .expect("json")
            .len()
        );
    });
}
