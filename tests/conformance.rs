//! The conformance suite (feature `testing`) against the memory store: the store contract and
//! the layer's race guarantees. The Redis and Cluster test binaries run the same suite.

use tower_typed_sessions::{testing::Conformance, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    let report = Conformance::new(MemoryStore::new)
        .repetitions(2)
        .run()
        .await;
    println!("memory store: {report}");
    assert_eq!(report.races.len(), 6);
    assert!(
        report.races.iter().all(|(_, races)| *races >= 280),
        "{report}"
    );
}
