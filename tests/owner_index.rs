//! Several sessions per user on the memory store: list, revoke one, revoke the others, revoke
//! all, with the index following regenerate, expiry, owner change and logout.

#[path = "support/owner_suite.rs"]
mod owner_suite;

use tower_typed_sessions::MemoryStore;

#[tokio::test]
async fn owner_index_on_the_memory_store() {
    owner_suite::owner_index_flow(MemoryStore::<owner_suite::Account>::new()).await;
}
