//! Tests of the `Store` contract, written against `S: Store` and run on
//! `SledStore` (temporary, or in a tempdir when reopening matters) and on
//! `PgStore` (a fresh schema per test in the PostgreSQL of `pg_test`).

use super::*;
use crate::secrets::SecretBox;

const T0: u64 = 1_700_000_000;

fn temp() -> SledStore {
    SledStore::open_temporary().expect("temporary sled")
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        password_hash: "$argon2id$fake".into(),
        is_active: true,
        is_superuser: false,
    }
}

fn new_var(user_id: &str, name: &str, value: String) -> NewVariable {
    NewVariable {
        user_id: user_id.into(),
        name: name.into(),
        kind: VariableKind::Credential,
        value_encrypted: value,
    }
}

async fn usernames_unique_ignoring_case<S: Store>(s: &S) {
    let alice = s.create_user(new_user("Alice"), T0).await.unwrap();
    assert!(is_valid_id(&alice.id));
    assert!(matches!(
        s.create_user(new_user("aLiCe"), T0).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_user_by_username("ALICE").await.unwrap(), alice);
    let bob = s.create_user(new_user("bob"), T0).await.unwrap();
    let taken = UserUpdate {
        username: Some("BOB".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.update_user(&alice.id, taken, T0 + 1).await,
        Err(StoreError::Conflict(_))
    ));
    // A change of case only keeps the same index entry.
    let recased = UserUpdate {
        username: Some("ALICE".into()),
        ..Default::default()
    };
    assert_eq!(
        s.update_user(&alice.id, recased, T0 + 2)
            .await
            .unwrap()
            .username,
        "ALICE"
    );
    let renamed = UserUpdate {
        username: Some("Carol".into()),
        is_superuser: Some(true),
        ..Default::default()
    };
    let carol = s.update_user(&alice.id, renamed, T0 + 3).await.unwrap();
    assert_eq!(
        (carol.is_superuser, carol.updated_at, carol.created_at),
        (true, T0 + 3, T0)
    );
    assert_eq!(s.get_user_by_username("carol").await.unwrap().id, alice.id);
    assert_eq!(
        s.get_user_by_username("alice").await,
        Err(StoreError::NotFound)
    );
    // The old name is free again.
    s.create_user(new_user("alice"), T0).await.unwrap();
    assert_eq!(s.get_user(&bob.id).await.unwrap(), bob);
    let page = s.list_users(0, 100).await.unwrap();
    let names: Vec<_> = page.items.iter().map(|u| u.username.as_str()).collect();
    assert_eq!((names, page.total), (vec!["alice", "bob", "Carol"], 3));
}

async fn uniqueness_ignores_case<S: Store>(s: S) {
    usernames_unique_ignoring_case(&s).await;
}

async fn pagination_and_hostile_ids<S: Store>(s: S) {
    for i in 0..5 {
        s.create_user(new_user(&format!("user{i}")), T0)
            .await
            .unwrap();
    }
    let page = s.list_users(1, 2).await.unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(
        page.items
            .iter()
            .map(|u| u.username.clone())
            .collect::<Vec<_>>(),
        ["user1", "user2"]
    );
    assert_eq!(s.list_users(4, u64::MAX).await.unwrap().items.len(), 1);
    assert!(
        s.list_users(u64::MAX, u64::MAX)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    for bad in [
        "",
        "../x",
        "ABCDEF0123456789ABCDEF0123456789",
        &"a".repeat(10_000),
        "\0",
    ] {
        assert_eq!(s.get_user(bad).await, Err(StoreError::NotFound));
        assert_eq!(s.delete_user(bad).await, Err(StoreError::NotFound));
        assert_eq!(s.list_api_keys(bad).await, Err(StoreError::NotFound));
        assert_eq!(
            s.get_variable_by_name(bad, "x").await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            s.rotate_family(bad, "a", "b").await,
            Err(StoreError::NotFound)
        );
    }
    assert_eq!(s.get_user(&new_id()).await, Err(StoreError::NotFound));
}

#[tokio::test]
async fn reopen_after_drop_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let (user, key, fam, var) = {
        let s = SledStore::open(dir.path()).unwrap();
        let user = s.create_user(new_user("Persisted"), T0).await.unwrap();
        let (nk, _) = NewApiKey::generate(&user.id, "ci");
        let key = s.create_api_key(nk, T0).await.unwrap();
        let fam = s.create_family(&user.id, "jti-1", T0).await.unwrap();
        let var = s
            .create_variable(new_var(&user.id, "TOKEN", "enc".into()), T0)
            .await
            .unwrap();
        let keys = AttemptKeys::new("persisted", "10.0.0.1");
        s.begin_login_attempt(&keys, T0, LoginPolicy::default())
            .await
            .unwrap();
        s.flush().await.unwrap();
        (user, key, fam, var)
    };
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.get_user_by_username("PERSISTED").await.unwrap(), user);
    assert_eq!(s.get_api_key_by_hash(&key.hash).await.unwrap(), key);
    assert_eq!(s.get_family(&fam.id).await.unwrap(), fam);
    assert_eq!(
        s.get_variable_by_name(&user.id, "TOKEN").await.unwrap(),
        var
    );
    let keys = AttemptKeys::new("Persisted", "10.0.0.1");
    assert_eq!(s.failure_state(&keys.account).await.unwrap().count, 1);
    assert_eq!(s.failure_state(&keys.pair).await.unwrap().count, 1);
    drop(s);
    // A database from a newer schema is refused, not misread.
    let db = sled::open(dir.path()).unwrap();
    db.open_tree("meta")
        .unwrap()
        .insert("schema_version", "2")
        .unwrap();
    db.flush().unwrap();
    drop(db);
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(StoreError::Corrupt(_))
    ));
}

async fn api_keys<S: Store>(s: S) {
    let user = s.create_user(new_user("k"), T0).await.unwrap();
    let (nk, full) = NewApiKey::generate(&user.id, "laptop");
    assert!(full.starts_with(API_KEY_PREFIX) && full.len() == 67);
    assert!(full.starts_with(&nk.prefix) && full.ends_with(&nk.last4));
    assert_eq!(nk.hash, hash_api_key(&full));
    let key = s.create_api_key(nk.clone(), T0).await.unwrap();
    assert!(matches!(
        s.create_api_key(nk.clone(), T0).await,
        Err(StoreError::Conflict(_))
    ));
    let orphan = NewApiKey {
        user_id: new_id(),
        ..NewApiKey::generate("", "x").0
    };
    assert_eq!(
        s.create_api_key(orphan, T0).await,
        Err(StoreError::NotFound)
    );
    let (nk2, _) = NewApiKey::generate(&user.id, "server");
    let key2 = s.create_api_key(nk2, T0 + 1).await.unwrap();
    assert_eq!(
        s.get_api_key_by_hash(&hash_api_key(&full)).await.unwrap(),
        key
    );
    assert_eq!(
        s.get_api_key_by_hash("nope").await,
        Err(StoreError::NotFound)
    );
    assert!(
        s.touch_api_key(&key.id, T0 + 50).await.unwrap(),
        "first use"
    );
    assert!(
        !s.touch_api_key(&key.id, T0 + 51).await.unwrap(),
        "second use"
    );
    assert_eq!(
        s.get_api_key(&key.id).await.unwrap().last_used_at,
        Some(T0 + 51)
    );
    let ids: Vec<_> = s
        .list_api_keys(&user.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec![key.id.clone(), key2.id.clone()]);
    s.delete_api_key(&key.id).await.unwrap();
    assert_eq!(s.delete_api_key(&key.id).await, Err(StoreError::NotFound));
    assert_eq!(
        s.get_api_key_by_hash(&key.hash).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.touch_api_key(&key.id, T0).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.list_api_keys(&user.id).await.unwrap(),
        vec![s.get_api_key(&key2.id).await.unwrap()]
    );
}

async fn family_rotation_and_reuse_detection<S: Store>(s: S) {
    let user = s.create_user(new_user("f"), T0).await.unwrap();
    let fam = s.create_family(&user.id, "jti-1", T0).await.unwrap();
    assert_eq!(
        s.create_family(&new_id(), "x", T0).await,
        Err(StoreError::NotFound)
    );
    match s.rotate_family(&fam.id, "jti-1", "jti-2").await.unwrap() {
        RotateOutcome::Rotated(f) => {
            assert_eq!((f.current_jti.as_str(), f.revoked), ("jti-2", false))
        }
        other => panic!("{other:?}"),
    }
    // Replaying the old token revokes the whole family…
    match s.rotate_family(&fam.id, "jti-1", "jti-3").await.unwrap() {
        RotateOutcome::ReuseDetected(f) => assert!(f.revoked && f.current_jti == "jti-2"),
        other => panic!("{other:?}"),
    }
    // …so even the legitimate current token is now refused.
    assert!(matches!(
        s.rotate_family(&fam.id, "jti-2", "jti-4").await.unwrap(),
        RotateOutcome::Revoked(_)
    ));

    let a = s.create_family(&user.id, "a", T0).await.unwrap();
    let b = s.create_family(&user.id, "b", T0).await.unwrap();
    s.revoke_family(&a.id).await.unwrap();
    assert!(s.get_family(&a.id).await.unwrap().revoked);
    assert_eq!(s.revoke_user_families(&user.id).await.unwrap(), 1); // only b was live
    assert!(s.get_family(&b.id).await.unwrap().revoked);
}

async fn concurrent_rotation_has_one_winner<S: Store>(s: S) {
    let s = std::sync::Arc::new(s);
    let user = s.create_user(new_user("race"), T0).await.unwrap();
    let fam = s.create_family(&user.id, "start", T0).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, id) = (s.clone(), fam.id.clone());
            tokio::spawn(async move {
                s.rotate_family(&id, "start", &format!("next-{i}"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut rotated = 0;
    for t in tasks {
        match t.await.unwrap() {
            RotateOutcome::Rotated(_) => rotated += 1,
            RotateOutcome::ReuseDetected(_) | RotateOutcome::Revoked(_) => {}
        }
    }
    assert_eq!(rotated, 1);
    assert!(s.get_family(&fam.id).await.unwrap().revoked);
}

async fn concurrent_first_uses_of_a_key_have_one_winner<S: Store>(s: S) {
    let s = std::sync::Arc::new(s);
    let user = s.create_user(new_user("keyrace"), T0).await.unwrap();
    let (nk, _) = NewApiKey::generate(&user.id, "raced");
    let key = s.create_api_key(nk, T0).await.unwrap();
    // Distinct seconds, so no per-second shortcut hides the race.
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let (s, id) = (s.clone(), key.id.clone());
            tokio::spawn(async move { s.touch_api_key(&id, T0 + 1 + i).await.unwrap() })
        })
        .collect();
    let mut first = 0;
    for t in tasks {
        first += usize::from(t.await.unwrap());
    }
    assert_eq!(first, 1, "exactly one touch is the first use");
}

async fn variables_unique_per_user<S: Store>(s: S) {
    let u1 = s.create_user(new_user("v1"), T0).await.unwrap();
    let u2 = s.create_user(new_user("v2"), T0).await.unwrap();
    let b = s
        .create_variable(new_var(&u1.id, "B", "b".into()), T0)
        .await
        .unwrap();
    s.create_variable(new_var(&u1.id, "A", "a".into()), T0)
        .await
        .unwrap();
    assert!(matches!(
        s.create_variable(new_var(&u1.id, "B", "x".into()), T0)
            .await,
        Err(StoreError::Conflict(_))
    ));
    s.create_variable(new_var(&u2.id, "B", "other".into()), T0)
        .await
        .unwrap();
    assert_eq!(
        s.create_variable(new_var(&new_id(), "B", "x".into()), T0)
            .await,
        Err(StoreError::NotFound)
    );
    let names: Vec<_> = s
        .list_variables(&u1.id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["A", "B"]);
    let upd = s
        .update_variable(&b.id, VariableKind::Generic, "s3cr3t-b2".into(), T0 + 9)
        .await
        .unwrap();
    assert_eq!(
        (
            upd.kind,
            upd.value_encrypted.as_str(),
            upd.updated_at,
            upd.created_at
        ),
        (VariableKind::Generic, "s3cr3t-b2", T0 + 9, T0)
    );
    assert_eq!(s.get_variable_by_name(&u1.id, "B").await.unwrap(), upd);
    assert!(!format!("{upd:?}").contains("s3cr3t-b2"));
    s.delete_variable(&b.id).await.unwrap();
    assert_eq!(s.get_variable(&b.id).await, Err(StoreError::NotFound));
    s.create_variable(new_var(&u1.id, "B", "again".into()), T0)
        .await
        .unwrap();
    let json = serde_json::to_value(&upd).unwrap();
    assert_eq!(json["kind"], "generic");
}

async fn delete_user_cascades<S: Store>(s: S) {
    let doomed = s.create_user(new_user("Doomed"), T0).await.unwrap();
    let keeper = s.create_user(new_user("keeper"), T0).await.unwrap();
    let mut hashes = vec![];
    let mut ids = vec![];
    for user in [&doomed, &keeper] {
        let (nk, _) = NewApiKey::generate(&user.id, "k");
        let key = s.create_api_key(nk, T0).await.unwrap();
        let fam = s.create_family(&user.id, "j", T0).await.unwrap();
        let var = s
            .create_variable(new_var(&user.id, "V", "v".into()), T0)
            .await
            .unwrap();
        hashes.push(key.hash.clone());
        ids.push((key.id, fam.id, var.id));
    }
    s.begin_login_attempt(
        &AttemptKeys::new("DOOMED", "10.0.0.1"),
        T0,
        LoginPolicy::default(),
    )
    .await
    .unwrap();
    s.delete_user(&doomed.id).await.unwrap();
    assert_eq!(s.delete_user(&doomed.id).await, Err(StoreError::NotFound));
    assert_eq!(s.get_user(&doomed.id).await, Err(StoreError::NotFound));
    assert_eq!(
        s.get_user_by_username("doomed").await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.get_api_key_by_hash(&hashes[0]).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(s.get_api_key(&ids[0].0).await, Err(StoreError::NotFound));
    assert_eq!(s.get_family(&ids[0].1).await, Err(StoreError::NotFound));
    assert_eq!(s.get_variable(&ids[0].2).await, Err(StoreError::NotFound));
    assert_eq!(
        s.get_variable_by_name(&doomed.id, "V").await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        s.failure_state("doomed").await.unwrap(),
        FailureState::default()
    );
    // The other user is untouched, and the name can be reused.
    assert!(s.get_api_key_by_hash(&hashes[1]).await.is_ok());
    assert!(s.get_family(&ids[1].1).await.is_ok());
    assert_eq!(s.list_variables(&keeper.id).await.unwrap().len(), 1);
    let again = s.create_user(new_user("doomed"), T0).await.unwrap();
    assert!(s.list_api_keys(&again.id).await.unwrap().is_empty());
    assert_eq!(s.list_users(0, 10).await.unwrap().total, 2);
}

async fn key_rotation_reencrypts_all_variables<S: Store>(s: S) {
    let old = SecretBox::new(&SecretBox::generate_key()).unwrap();
    let u1 = s.create_user(new_user("r1"), T0).await.unwrap();
    let u2 = s.create_user(new_user("r2"), T0).await.unwrap();
    for (u, name) in [(&u1, "A"), (&u1, "B"), (&u2, "A")] {
        let value = old.encrypt(format!("{name}-secret-{}", u.username).as_bytes());
        s.create_variable(new_var(&u.id, name, value), T0)
            .await
            .unwrap();
    }
    let new_key = SecretBox::generate_key();
    let rotated = old.with_new_key(&new_key).unwrap();
    assert_eq!(
        s.reencrypt_variables(|v| rotated.reencrypt(v))
            .await
            .unwrap(),
        3
    );
    let only_new = SecretBox::new(&new_key).unwrap();
    for u in [&u1, &u2] {
        for var in s.list_variables(&u.id).await.unwrap() {
            let plain = only_new.decrypt(&var.value_encrypted).unwrap();
            assert_eq!(
                plain,
                format!("{}-secret-{}", var.name, u.username).as_bytes()
            );
            assert_eq!(var.updated_at, T0);
        }
    }
    // One value no key can decrypt: the rotation fails and writes nothing.
    let stranger = SecretBox::new(&SecretBox::generate_key()).unwrap();
    s.create_variable(new_var(&u2.id, "Z", stranger.encrypt(b"z")), T0)
        .await
        .unwrap();
    let before: Vec<_> = s.list_variables(&u1.id).await.unwrap();
    let newest = only_new.with_new_key(&SecretBox::generate_key()).unwrap();
    let err = s
        .reencrypt_variables(|v| newest.reencrypt(v))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Reencrypt { .. }), "{err}");
    assert_eq!(s.list_variables(&u1.id).await.unwrap(), before);
}

const TIGHT: LoginPolicy = LoginPolicy {
    per_address: LockoutPolicy {
        max_failures: 3,
        lockout_secs: 100,
        max_lockout_secs: 100,
        window_secs: 60,
    },
    per_account: LockoutPolicy {
        max_failures: 5,
        lockout_secs: 30,
        max_lockout_secs: 120,
        window_secs: 60,
    },
};

/// High enough that a burst of attempts is never locked out.
const LENIENT: LoginPolicy = LoginPolicy {
    per_address: LockoutPolicy {
        max_failures: 1000,
        lockout_secs: 1,
        max_lockout_secs: 1,
        window_secs: 60,
    },
    per_account: LockoutPolicy {
        max_failures: 1000,
        lockout_secs: 1,
        max_lockout_secs: 1,
        window_secs: 60,
    },
};

async fn attempts<S: Store>(s: &S, keys: &AttemptKeys, n: usize, now: u64) -> Vec<AttemptVerdict> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(s.begin_login_attempt(keys, now, TIGHT).await.unwrap());
    }
    out
}

fn admitted(v: &[AttemptVerdict]) -> usize {
    v.iter().filter(|v| **v == AttemptVerdict::Admitted).count()
}

async fn login_attempts_are_counted_before_checking_and_lock_per_address<S: Store>(s: S) {
    let eve = AttemptKeys::new("Eve", "10.0.0.1");
    assert_eq!(
        s.failure_state(&eve.pair).await.unwrap(),
        FailureState::default()
    );
    let verdicts = attempts(&s, &eve, 10, T0).await;
    assert_eq!(admitted(&verdicts), 3, "{verdicts:?}");
    assert_eq!(
        verdicts[3],
        AttemptVerdict::Locked {
            retry_after: 100,
            scope: LockScope::Address
        }
    );
    // Same account, other address: still admitted (the account limit is looser).
    let other = AttemptKeys::new("EVE", "10.0.0.2");
    assert_eq!(admitted(&attempts(&s, &other, 2, T0 + 1).await), 2);
    // The account counter saw every admitted attempt; the fifth locks it everywhere.
    assert_eq!(s.failure_state(&eve.account).await.unwrap().count, 5);
    let third = AttemptKeys::new("eve", "10.0.0.3");
    assert!(matches!(
        s.begin_login_attempt(&third, T0 + 2, TIGHT).await.unwrap(),
        AttemptVerdict::Locked {
            scope: LockScope::Account,
            ..
        }
    ));
    // After the address lock, that address counts again from one.
    assert_eq!(admitted(&attempts(&s, &eve, 1, T0 + 100).await), 1);
    assert_eq!(s.failure_state(&eve.pair).await.unwrap().count, 1);
}

async fn settled_attempts_refund_or_clear_counters<S: Store>(s: S) {
    let bob = AttemptKeys::new("bob", "10.0.0.1");
    attempts(&s, &bob, 2, T0).await;
    // A success clears the address counter and hands its own attempt back
    // to the account counter, but not the earlier failures.
    s.finish_login_attempt(&bob, AttemptOutcome::Succeeded, TIGHT)
        .await
        .unwrap();
    assert_eq!(
        s.failure_state(&bob.pair).await.unwrap(),
        FailureState::default()
    );
    assert_eq!(s.failure_state(&bob.account).await.unwrap().count, 1);
    // An unchecked attempt is handed back to both; a failure keeps both.
    attempts(&s, &bob, 1, T0).await;
    s.finish_login_attempt(&bob, AttemptOutcome::NotChecked, TIGHT)
        .await
        .unwrap();
    assert_eq!(
        s.failure_state(&bob.pair).await.unwrap(),
        FailureState::default()
    );
    assert_eq!(s.failure_state(&bob.account).await.unwrap().count, 1);
    attempts(&s, &bob, 1, T0).await;
    s.finish_login_attempt(&bob, AttemptOutcome::Failed, TIGHT)
        .await
        .unwrap();
    assert_eq!(s.failure_state(&bob.pair).await.unwrap().count, 1);
    assert_eq!(s.failure_state(&bob.account).await.unwrap().count, 2);
}

async fn parallel_attempts_admit_at_most_the_limit<S: Store>(s: S) {
    let s = std::sync::Arc::new(s);
    let keys = AttemptKeys::new("burst", "10.0.0.9");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (s, keys) = (s.clone(), keys.clone());
            tokio::spawn(async move { s.begin_login_attempt(&keys, T0, TIGHT).await.unwrap() })
        })
        .collect();
    let mut verdicts = Vec::new();
    for t in tasks {
        verdicts.push(t.await.unwrap());
    }
    assert_eq!(admitted(&verdicts), 3);
}

/// Many logins of one account from one address at once, each begun and
/// settled (the success path clears the counters the others are locking):
/// every step answers, none fails on a lock conflict between them.
async fn interleaved_attempts_never_fail<S: Store>(s: S) {
    let s = std::sync::Arc::new(s);
    let keys = AttemptKeys::new("busy", "10.0.0.7");
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (s, keys) = (s.clone(), keys.clone());
            tokio::spawn(async move {
                for round in 0..4 {
                    let verdict = s.begin_login_attempt(&keys, T0 + round, LENIENT).await?;
                    if verdict == AttemptVerdict::Admitted {
                        let outcome = if (i + round) % 3 == 0 {
                            AttemptOutcome::Failed
                        } else {
                            AttemptOutcome::Succeeded
                        };
                        s.finish_login_attempt(&keys, outcome, LENIENT).await?;
                    }
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("a login attempt step failed");
    }
}

async fn old_failure_counters_are_pruned<S: Store>(s: S) {
    let policy = LoginPolicy {
        per_address: LockoutPolicy {
            lockout_secs: 10_000,
            max_lockout_secs: 10_000,
            ..TIGHT.per_address
        },
        ..TIGHT
    };
    s.begin_login_attempt(&AttemptKeys::new("old", "a"), T0, TIGHT)
        .await
        .unwrap();
    s.begin_login_attempt(&AttemptKeys::new("recent", "a"), T0 + 1000, TIGHT)
        .await
        .unwrap();
    let locked = AttemptKeys::new("locked", "a");
    for _ in 0..3 {
        s.begin_login_attempt(&locked, T0, policy).await.unwrap();
    }
    // "old": its pair and account counters; "locked": its account counter.
    assert_eq!(s.prune_failures(T0 + 500).await.unwrap(), 3);
    assert_eq!(
        s.failure_state("old").await.unwrap(),
        FailureState::default()
    );
    assert_eq!(s.failure_state("recent").await.unwrap().count, 1);
    assert_eq!(s.failure_state(&locked.pair).await.unwrap().count, 3);
}

/// Runs each contract test on sled and on PostgreSQL.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::temp()).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::pg_test::fresh().await).await
                }
            )*
        }
    };
}

on_both_stores!(
    uniqueness_ignores_case,
    pagination_and_hostile_ids,
    api_keys,
    family_rotation_and_reuse_detection,
    variables_unique_per_user,
    delete_user_cascades,
    key_rotation_reencrypts_all_variables,
    login_attempts_are_counted_before_checking_and_lock_per_address,
    settled_attempts_refund_or_clear_counters,
    old_failure_counters_are_pruned,
    concurrent_rotation_has_one_winner,
    parallel_attempts_admit_at_most_the_limit,
    interleaved_attempts_never_fail,
    concurrent_first_uses_of_a_key_have_one_winner,
    ownership_registry,
    concurrent_first_claims_have_one_owner,
);

mod ownership;

async fn ownership_registry<S: Store>(s: S) {
    ownership::claim_lookup_release_list(&s).await;
}

async fn concurrent_first_claims_have_one_owner<S: Store>(s: S) {
    let s = std::sync::Arc::new(s);
    for round in 0..20 {
        let id = format!("thread-{round}");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (s, id) = (s.clone(), id.clone());
                tokio::spawn(async move {
                    s.claim_resource(ResourceKind::Thread, &id, &format!("user-{i}"), T0)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut seen = Vec::new();
        for t in tasks {
            let claim = t.await.unwrap();
            if claim.claimed {
                winners.push(claim.ownership.owner.clone());
            }
            seen.push(claim.ownership.owner);
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert!(seen.iter().all(|o| *o == winners[0]), "{seen:?}");
        let owner = s
            .resource_owner(ResourceKind::Thread, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(owner.owner, winners[0]);
        assert!(
            s.owned_resources(ResourceKind::Thread, &winners[0])
                .await
                .unwrap()
                .contains(&id)
        );
    }
}

#[tokio::test]
async fn ownership_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.claim_resource(ResourceKind::Thread, "kept", "alice", T0)
            .await
            .unwrap();
        s.claim_resource(ResourceKind::Memory, "gone", "alice", T0)
            .await
            .unwrap();
        s.release_resource(ResourceKind::Memory, "gone")
            .await
            .unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.resource_owner(ResourceKind::Thread, "kept")
            .await
            .unwrap()
            .unwrap()
            .owner,
        "alice"
    );
    assert_eq!(
        s.resource_owner(ResourceKind::Memory, "gone")
            .await
            .unwrap(),
        None
    );
}
