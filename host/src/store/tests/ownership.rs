//! The ownership registry's contract, written against `S: Store` so every
//! backend can run it.

use super::*;

/// Claim-if-absent, lookup, release and listing, including hostile bytes.
pub(super) async fn claim_lookup_release_list<S: Store>(s: &S) {
    use ResourceKind::{Memory, Thread};
    assert_eq!(s.resource_owner(Thread, "t1").await.unwrap(), None);
    let first = s.claim_resource(Thread, "t1", "alice", T0).await.unwrap();
    assert!(first.claimed);
    assert_eq!(first.ownership.owner, "alice");
    // A second claim (even by the same owner) records nothing new.
    let again = s.claim_resource(Thread, "t1", "bob", T0 + 5).await.unwrap();
    assert!(!again.claimed);
    assert_eq!(again.ownership, first.ownership);
    let same = s
        .claim_resource(Thread, "t1", "alice", T0 + 6)
        .await
        .unwrap();
    assert!(!same.claimed);
    assert_eq!(same.ownership.claimed_at, T0);
    // Kinds have separate id spaces.
    assert_eq!(s.resource_owner(Memory, "t1").await.unwrap(), None);
    s.claim_resource(Memory, "t1", "bob", T0).await.unwrap();
    assert_eq!(
        s.resource_owner(Memory, "t1").await.unwrap().unwrap().owner,
        "bob"
    );
    // Owners and ids with NUL, separators and non-ASCII do not collide.
    s.claim_resource(Thread, "a\0b", "x\0thread", T0)
        .await
        .unwrap();
    s.claim_resource(Thread, "t2", "alice", T0).await.unwrap();
    s.claim_resource(Thread, "é/%2F", "alice", T0)
        .await
        .unwrap();
    s.claim_resource(Thread, "t3", "alicex", T0).await.unwrap();
    assert_eq!(
        s.owned_resources(Thread, "alice").await.unwrap(),
        vec!["t1", "t2", "é/%2F"]
    );
    assert_eq!(
        s.owned_resources(Thread, "x\0thread").await.unwrap(),
        vec!["a\0b"]
    );
    assert_eq!(
        s.owned_resources(Thread, "x").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        s.owned_resources(Memory, "alice").await.unwrap(),
        Vec::<String>::new()
    );
    // Release forgets the owner and the listing entry; the id is free again.
    assert!(s.release_resource(Thread, "t1").await.unwrap());
    assert!(!s.release_resource(Thread, "t1").await.unwrap());
    assert_eq!(s.resource_owner(Thread, "t1").await.unwrap(), None);
    assert_eq!(
        s.owned_resources(Thread, "alice").await.unwrap(),
        vec!["t2", "é/%2F"]
    );
    let reclaimed = s.claim_resource(Thread, "t1", "bob", T0 + 9).await.unwrap();
    assert!(reclaimed.claimed);
    assert_eq!(s.owned_resources(Thread, "bob").await.unwrap(), vec!["t1"]);
    // An empty or huge id is just bytes.
    s.claim_resource(Thread, "", "carol", T0).await.unwrap();
    let long = "z".repeat(4096);
    s.claim_resource(Thread, &long, "carol", T0).await.unwrap();
    assert_eq!(
        s.owned_resources(Thread, "carol").await.unwrap(),
        vec![String::new(), long]
    );
}
