//! What only the PostgreSQL store has: a schema shared by instances, the
//! cross-instance cache invalidation and the behaviour when the database is
//! away. The `Store` contract itself runs in `store::tests`.

use std::time::{Duration, Instant};

use super::*;
use crate::store::pg_test;

const T0: u64 = 1_700_000_000;

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        password_hash: "$argon2id$fake".into(),
        is_active: true,
        is_superuser: false,
    }
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_share_one_schema() {
    let url = pg_test::fresh_url().await;
    let settings = DatabaseSettings::for_url(&url);
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let settings = settings.clone();
            tokio::spawn(async move { PgStore::connect(&settings).await })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("every instance starts"));
    }
    let user = stores[0].create_user(new_user("Shared"), T0).await.unwrap();
    assert_eq!(
        stores[3].get_user_by_username("shared").await.unwrap(),
        user
    );
    // A schema newer than this build is refused, not misread.
    let client = stores[0].inner.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO agentflow_migrations (version) VALUES (9999)",
            &[],
        )
        .await
        .unwrap();
    let err = PgStore::connect(&settings).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_sees_a_revocation_on_its_next_read() {
    let url = pg_test::fresh_url().await;
    let settings = DatabaseSettings {
        // Long enough that only the notification can explain a fresh read.
        cache_ttl: Duration::from_secs(600),
        ..DatabaseSettings::for_url(&url)
    };
    let a = PgStore::connect(&settings).await.unwrap();
    let b = PgStore::connect(&settings).await.unwrap();
    until("b to listen", async || b.is_listening()).await;
    let user = a.create_user(new_user("carol"), T0).await.unwrap();
    let fam = a.create_family(&user.id, "j1", T0).await.unwrap();
    let (nk, _) = NewApiKey::generate(&user.id, "k");
    let key = a.create_api_key(nk, T0).await.unwrap();
    // b caches all three.
    assert!(!b.get_family(&fam.id).await.unwrap().revoked);
    assert!(b.get_user(&user.id).await.unwrap().is_active);
    b.get_api_key_by_hash(&key.hash).await.unwrap();
    a.revoke_family(&fam.id).await.unwrap();
    let off = UserUpdate {
        is_active: Some(false),
        ..Default::default()
    };
    a.update_user(&user.id, off, T0).await.unwrap();
    a.delete_api_key(&key.id).await.unwrap();
    until("the revocation to reach b", async || {
        b.get_family(&fam.id).await.unwrap().revoked
    })
    .await;
    until("the deactivation to reach b", async || {
        !b.get_user(&user.id).await.unwrap().is_active
    })
    .await;
    until("the key deletion to reach b", async || {
        b.get_api_key_by_hash(&key.hash).await == Err(StoreError::NotFound)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_on_two_instances_have_one_winner() {
    let url = pg_test::fresh_url().await;
    let a = PgStore::connect(&DatabaseSettings::for_url(&url))
        .await
        .unwrap();
    let b = PgStore::connect(&DatabaseSettings::for_url(&url))
        .await
        .unwrap();
    let user = a.create_user(new_user("race"), T0).await.unwrap();
    for round in 0..10 {
        let fam = a.create_family(&user.id, "start", T0).await.unwrap();
        let (next_a, next_b) = (format!("a{round}"), format!("b{round}"));
        let (ra, rb) = tokio::join!(
            a.rotate_family(&fam.id, "start", &next_a),
            b.rotate_family(&fam.id, "start", &next_b),
        );
        let rotated = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|o| matches!(o, RotateOutcome::Rotated(_)))
            .count();
        assert_eq!(rotated, 1, "round {round}");
        assert!(b.get_family(&fam.id).await.unwrap().revoked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_quickly() {
    // Nothing listens on port 1.
    let settings = DatabaseSettings {
        connect_timeout: Duration::from_millis(500),
        ..DatabaseSettings::for_url("postgres://u:hunter2@127.0.0.1:1/db")
    };
    let started = Instant::now();
    let err = PgStore::connect(&settings).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
