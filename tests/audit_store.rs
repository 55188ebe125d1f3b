//! The audit log in both stores, opened directly: an entry written again
//! with its id replaces the first, in the redb file and in PostgreSQL alike.
//!
//! A cancel that loses the race to the claim starting its operation records
//! its entry as refused, then cancels the run and records the same entry as
//! done. PostgreSQL refused that second write with a duplicate key, and the
//! whole batch with it: a run that ended within the same millisecond lost
//! its terminal transition and stayed `running` (the notify suite on
//! PostgreSQL, once a cancel woke a sleeping plugin at once).

use std::sync::Arc;

use opal_host::model::{AuditEntry, AuditFilter};
use opal_host::store::{Change, Location, Publish, Store};
use opal_tests::cluster::TestDatabase;

struct Nowhere;

impl Publish for Nowhere {
    fn publish(&self, _events: Vec<opal_host::model::Event>) {}
}

async fn rewritten_entry_is_replaced(location: Location) {
    let (store, tasks) = Store::open(&location, "node-a", Arc::new(Nowhere)).await.expect("the store opens");
    let mut entry = AuditEntry::new("user:ada", None, "operation.cancel", "01M93SEYYZ0PF0K3ACK9WHD36D");
    entry.result = "refused: it was claimed meanwhile".to_owned();
    store.commit(Change::Audit(Box::new(entry.clone()))).await.expect("the first write");
    entry.result = "ok".to_owned();
    store.commit(Change::Audit(Box::new(entry.clone()))).await.expect("the same entry again is no error");
    let other = AuditEntry::new("user:ada", None, "operation.start", "01M93SEYYZ0PF0K3ACK9WHD36E");
    store.commit(Change::Audit(Box::new(other.clone()))).await.expect("the store still writes");

    let listed = store.audit(&AuditFilter::default(), 10, None).await.expect("the log reads");
    assert_eq!(listed.len(), 2, "{location:?}: one entry per id: {listed:?}");
    let rewritten = listed.iter().find(|e| e.id == entry.id).expect("the rewritten entry is listed");
    assert_eq!(rewritten.result, "ok", "{location:?}: the entry ends with its last result");
    assert!(listed.iter().any(|e| e.id == other.id), "{location:?}: {listed:?}");
    drop(store);
    tasks.join().await;
}

#[tokio::test]
async fn an_audit_entry_written_again_is_replaced_in_the_redb_file() {
    let dir = tempfile::tempdir().unwrap();
    rewritten_entry_is_replaced(Location::Redb(dir.path().to_owned())).await;
}

#[tokio::test]
async fn an_audit_entry_written_again_is_replaced_in_postgresql() {
    let Some(db) = TestDatabase::create().await else { return };
    rewritten_entry_is_replaced(Location::Postgres(db.url().to_owned())).await;
}
