//! `RedisStore` on a real three-master Redis Cluster that the test starts itself: a
//! login/regenerate/logout flow through the layer, where the old and new session keys live in
//! different hash slots, the owner index and the hardening suite. The store contract itself is
//! checked by the conformance suite (tests/conformance_redis.rs).
#![cfg(feature = "cluster")]

#[path = "support/hardening_suite.rs"]
mod hardening_suite;
#[path = "support/owner_suite.rs"]
mod owner_suite;
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use redis_server::RedisCluster;
use support::{Client, Counter, Event, Events};
use tower_typed_sessions::{RedisStore, RejectReason, SessionKey, SessionLayer};

async fn store_with_prefix(cluster: &RedisCluster, prefix: &str) -> RedisStore<Counter> {
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    RedisStore::connect_cluster(&nodes)
        .await
        .expect("connect to the test's cluster")
        .with_key_prefix(format!("{prefix}:"))
}

/// Starting a cluster takes seconds, so one cluster serves every check of this binary, each on its
/// own key prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_flow_on_a_three_master_cluster() {
    let cluster = RedisCluster::start();

    // The layer on the cluster: counts are spread over the masters, count() sees them all.
    let events = Events::default();
    let store = store_with_prefix(&cluster, "layer").await;
    let app = support::routes().layer(events.attach(SessionLayer::new(store.clone())));
    let mut clients: Vec<Client> = (0..24).map(|_| Client::new(app.clone())).collect();
    for client in &mut clients {
        assert_eq!(client.get("/incr").await.body, "1");
        assert_eq!(client.get("/incr").await.body, "2");
    }
    use tower_typed_sessions::Store;
    assert_eq!(store.count().await.unwrap(), 24);
    let mut per_node = Vec::new();
    for node in &cluster.nodes {
        per_node.push(node.command::<i64>(&["DBSIZE"]));
    }
    assert!(
        per_node.iter().filter(|keys| **keys > 0).count() >= 2,
        "sessions spread over several masters: {per_node:?}"
    );

    let client = &mut clients[0];
    let old = client.id().unwrap();
    events.take();
    let reply = client.get("/login").await;
    let new = reply.issued_id().expect("regenerated cookie");
    assert_ne!(new, old);
    let (old_key, new_key) = (SessionKey::hashed(&old), SessionKey::hashed(&new));
    let seen = events.take();
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Regenerated(o, n, _) if *o == old_key && *n == new_key)),
        "{seen:?}"
    );
    assert_eq!(
        client.get("/read").await.body,
        "2 new=false",
        "data kept across slots"
    );
    events.take();
    let replay = support::send(&app, support::get_with_id("/read", &old)).await;
    assert_eq!(replay.body, "0 new=true", "old id is dead");
    assert_eq!(
        events.take(),
        [Event::Rejected(RejectReason::Regenerated, Some(old_key))],
        "the old key forwards to the new one, on another slot"
    );
    assert!(replay.set_cookies().is_empty());

    client.get("/logout").await;
    assert!(client.cookie.is_none());
    assert_eq!(
        store.count().await.unwrap(),
        23,
        "the pointer under the old key is not a session"
    );

    // Several sessions per user: the owner set and the session keys live in different slots.
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let accounts = RedisStore::<owner_suite::Account>::connect_cluster(&nodes)
        .await
        .unwrap()
        .with_key_prefix("owners:");
    owner_suite::owner_index_flow(accounts).await;

    // Hardening on the cluster.
    let hardened = store_with_prefix(&cluster, "hardening").await;
    let resurrections = hardening_suite::no_resurrection(hardened.clone(), 1000).await;
    println!("cluster: 1000 races, {resurrections} resurrections");
    assert_eq!(resurrections, 0);
    let (value, successes, conflicts) =
        hardening_suite::optimistic_increments(hardened.clone()).await;
    println!(
        "cluster optimistic: final +{value}, {successes} successes, {conflicts} conflicts refused"
    );
    assert_eq!((value as usize, successes), (64, 64));
    let tried = hardening_suite::signed_cookies_and_rotation(hardened.clone()).await;
    println!("cluster: {tried} forged or unsigned cookies rejected without a store lookup");
    hardening_suite::hashed_ids_at_rest(hardened.clone()).await;
    hardening_suite::regenerate_grace_window(hardened.clone()).await;
    hardening_suite::record_size_limit(hardened).await;
}
