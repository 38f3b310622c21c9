//! Several `agentflow` processes on one PostgreSQL database: logins,
//! refresh rotation, revocations, lockouts and plugin storage are shared;
//! the database going away and coming back mid-run.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;
use support_postgres::*;

#[path = "support_postgres.rs"]
mod support_postgres;

const ADMIN_PW: &str = "admin-password-1";

fn instance(up: &Upstream, database: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
        ("AGENTFLOW_NEW_USER_IS_ACTIVE", "True"),
        ("AGENTFLOW_DATABASE_URL", database),
    ];
    env.extend_from_slice(extra);
    Server::start(json!({"agent": up.base, "auth": ["jwt", "api_key"]}), &env)
}

fn login(server: &Server, username: &str, password: &str) -> Reply {
    post(
        &server.url("/v1/login"),
        &[],
        json!({"username": username, "password": password}),
    )
}

fn refresh(server: &Server, token: &str) -> Reply {
    post(
        &server.url("/v1/refresh"),
        &[],
        json!({"refresh_token": token}),
    )
}

fn token(reply: &Reply, which: &str) -> String {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body[which].as_str().unwrap().to_owned()
}

fn whoami(server: &Server, header: (&str, &str)) -> u16 {
    get(&server.url("/v1/whoami"), &[header]).status
}

/// How long another instance may keep accepting a revoked credential: the
/// invalidation arrives by NOTIFY within milliseconds; one second is slack.
const BOUND: Duration = Duration::from_secs(1);

#[test]
fn logins_refreshes_and_revocations_are_shared_between_instances() {
    let up = Upstream::start();
    let db = fresh_database();
    let a = instance(&up, &db, &[]);
    let b = instance(&up, &db, &[]);

    // Log in on A, refresh on B, use the result on A.
    let first = login(&a, "admin", ADMIN_PW);
    let on_b = refresh(&b, &token(&first, "refresh_token"));
    let access_b = bearer(&token(&on_b, "access_token"));
    assert_eq!(whoami(&a, ("authorization", &access_b)), 200);
    assert_eq!(
        refresh(&a, &token(&first, "refresh_token")).status,
        401,
        "the first refresh token was used on B"
    );
    assert_eq!(
        whoami(&a, ("authorization", &access_b)),
        401,
        "and its replay on A ended that login on both"
    );
    let admin = bearer(&token(&login(&b, "admin", ADMIN_PW), "access_token"));

    // The same refresh token on A and B at once: one wins, the other is a
    // reuse and ends the login everywhere.
    for round in 0..3 {
        let r = token(&login(&a, "admin", ADMIN_PW), "refresh_token");
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| refresh(&a, &r));
            let tb = s.spawn(|| refresh(&b, &r));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 401],
            "round {round}: {:?} {:?}",
            ra.body,
            rb.body
        );
        let winner = if ra.status == 200 { &ra } else { &rb };
        for server in [&a, &b] {
            assert_eq!(
                refresh(server, &token(winner, "refresh_token")).status,
                401,
                "the reuse revoked the winner's login too"
            );
        }
    }

    // Logout on A: B refuses the login's access token (which it has cached).
    let login_a = login(&a, "admin", ADMIN_PW);
    let access = bearer(&token(&login_a, "access_token"));
    assert_eq!(whoami(&b, ("authorization", &access)), 200);
    let out = post(
        &a.url("/v1/logout"),
        &[],
        json!({"refresh_token": token(&login_a, "refresh_token")}),
    );
    assert_eq!(out.status, 200, "{:?}", out.body);
    let refused = wait_for(BOUND, || whoami(&b, ("authorization", &access)) == 401);
    assert!(refused.is_some(), "B still accepts a login ended on A");

    // An API key revoked on A is refused on B.
    let created = post(
        &a.url("/v1/api-keys"),
        &[("authorization", &admin)],
        json!({"name": "shared"}),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key = created.body["key"].as_str().unwrap().to_owned();
    let key_id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&b, ("x-api-key", &key)), 200);
    assert_eq!(
        whoami(&b, ("x-api-key", &key)),
        200,
        "served from B's cache"
    );
    // Uses on both instances, in more than one second, are one first use
    // (the cached key record never learns its last use; the store decides).
    assert_eq!(whoami(&a, ("x-api-key", &key)), 200);
    std::thread::sleep(Duration::from_millis(1100));
    for server in [&a, &b, &a, &b] {
        assert_eq!(whoami(server, ("x-api-key", &key)), 200);
    }
    let first_uses = get(
        &a.url("/v1/audit?type=api_key.first_used&limit=500"),
        &[("authorization", &admin)],
    );
    assert_eq!(first_uses.status, 200, "{:?}", first_uses.body);
    assert_eq!(
        first_uses.body["items"].as_array().unwrap().len(),
        1,
        "one first use: {:?}",
        first_uses.body
    );
    let deleted = send(
        "DELETE",
        &a.url(&format!("/v1/api-keys/{key_id}")),
        &[("authorization", &admin)],
        None,
    );
    assert_eq!(deleted.status, 204);
    let refused = wait_for(BOUND, || whoami(&b, ("x-api-key", &key)) == 401);
    assert!(refused.is_some(), "B still accepts a key revoked on A");

    // A user deactivated on A is refused on B.
    let carol = post(
        &a.url("/v1/users"),
        &[("authorization", &admin)],
        json!({"username": "carol", "password": "carol-password"}),
    );
    assert_eq!(carol.status, 201, "{:?}", carol.body);
    let carol_access = bearer(&token(
        &login(&b, "carol", "carol-password"),
        "access_token",
    ));
    assert_eq!(whoami(&b, ("authorization", &carol_access)), 200);
    let patched = send(
        "PATCH",
        &a.url(&format!("/v1/users/{}", carol.body["id"].as_str().unwrap())),
        &[("authorization", &admin)],
        Some(json!({"is_active": false})),
    );
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    let refused = wait_for(BOUND, || {
        whoami(&b, ("authorization", &carol_access)) == 401
    });
    assert!(refused.is_some(), "B still accepts a user deactivated on A");
}

/// Logins of one account at once on two instances: the lockout
/// bookkeeping they share locks the same rows, and none of them may fail
/// on that (a deadlock between two was a 500). Attempts are counted while
/// in flight (so parallel guessing is capped), so some of a burst may get
/// 429; none gets anything else, and the successes leave no lock behind.
#[test]
fn concurrent_logins_of_one_account_on_two_instances_never_fail() {
    let up = Upstream::start();
    let db = fresh_database();
    let a = instance(&up, &db, &[]);
    let b = instance(&up, &db, &[]);
    for burst in 0..3 {
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let logins: Vec<_> = (0..16)
                .map(|i| {
                    let server = if i % 2 == 0 { &a } else { &b };
                    scope.spawn(move || {
                        let r = login(server, "admin", ADMIN_PW);
                        (r.status, r.body)
                    })
                })
                .collect();
            logins.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for (status, body) in &answers {
            assert!(
                *status == 200 || *status == 429,
                "burst {burst}: {status} {body:?}"
            );
        }
        assert!(
            answers.iter().any(|(status, _)| *status == 200),
            "burst {burst}: {answers:?}"
        );
        // Settled: one login at a time goes through on both.
        for server in [&a, &b] {
            let r = login(server, "admin", ADMIN_PW);
            assert_eq!(r.status, 200, "burst {burst}: {:?}", r.body);
        }
    }
}

#[test]
fn failed_logins_spread_over_instances_lock_the_account() {
    let up = Upstream::start();
    let db = fresh_database();
    let a = instance(&up, &db, &[]);
    let b = instance(&up, &db, &[]);
    // Five failures from one address lock it (per-address policy), wherever
    // they land.
    for (i, server) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let r = login(server, "admin", "wrong-password");
        assert_eq!(r.status, 401, "attempt {i}: {:?}", r.body);
    }
    for server in [&b, &a] {
        let r = login(server, "admin", ADMIN_PW);
        assert_eq!(
            r.status, 429,
            "locked on both, even with the right password"
        );
        assert!(r.header("retry-after").is_some());
    }
}

#[test]
fn plugin_storage_written_on_one_instance_is_read_on_another() {
    let db = fresh_database();
    let config = json!({
        "auth": [{"method": "custom", "name": "probe", "path": plugins().probe, "config": {"mode": "kv"}}],
    });
    let env = [("AGENTFLOW_DATABASE_URL", db.as_str())];
    let a = Server::start(config.clone(), &env);
    let b = Server::start(config, &env);
    let count = |s: &Server| {
        let r = get(&s.url("/v1/whoami"), &[]);
        assert_eq!(r.status, 200, "{:?}\n{}", r.body, s.logs());
        assert_eq!(r.body["claims"]["kv_error"], Value::Null, "{:?}", r.body);
        r.body["claims"]["count"].as_u64().unwrap()
    };
    assert_eq!(count(&a), 1);
    assert_eq!(count(&a), 2);
    assert_eq!(count(&b), 3, "B reads what A wrote");
    assert_eq!(count(&a), 4, "and A what B wrote");
}

#[test]
fn an_unreachable_database_at_start_is_named_with_its_password_masked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentflow.json");
    std::fs::write(&config, r#"{"auth": ["jwt"]}"#).unwrap();
    let started = Instant::now();
    let (code, _, stderr) = run_agentflow(
        &["run", "--port", "0", "--config", config.to_str().unwrap()],
        &[
            ("JWT_SECRET_KEY", SECRET),
            (
                "AGENTFLOW_DATABASE_URL",
                "postgres://af:hunter2@127.0.0.1:1/af",
            ),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("postgres://af:***@127.0.0.1:1/af"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_database_going_away_mid_run_gives_503_and_recovers_without_a_restart() {
    let cluster = PrivateCluster::start();
    let up = Upstream::start();
    let a = instance(&up, &cluster.url(), &[]);
    let admin = bearer(&token(&login(&a, "admin", ADMIN_PW), "access_token"));
    // Acknowledged writes during a load of logins and user creations.
    let mut created = Vec::new();
    for i in 0..20 {
        let name = format!("user{i}");
        let r = post(
            &a.url("/v1/users"),
            &[("authorization", &admin)],
            json!({"username": name, "password": "user-password"}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        created.push(name);
    }
    // A token the store need not be asked about (signed outside, no login).
    let external = bearer(&hs256(SECRET, json!({"sub": "svc", "exp": now() + 600})));
    assert_eq!(whoami(&a, ("authorization", &external)), 200);

    cluster.pause();
    let started = Instant::now();
    let r = login(&a, "admin", ADMIN_PW);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["code"], "store_unavailable");
    assert!(
        !r.detail().contains("postgres"),
        "no connection details: {}",
        r.detail()
    );
    let r = get(&a.url("/v1/users?limit=100"), &[("authorization", &admin)]);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        whoami(&a, ("authorization", &external)),
        200,
        "requests that do not need the store keep working"
    );

    cluster.resume();
    let back = wait_for(Duration::from_secs(15), || {
        login(&a, "admin", ADMIN_PW).status == 200
    });
    assert!(back.is_some(), "did not recover:\n{}", a.logs());
    let admin = bearer(&token(&login(&a, "admin", ADMIN_PW), "access_token"));
    let users = get(&a.url("/v1/users?limit=100"), &[("authorization", &admin)]);
    assert_eq!(users.status, 200, "{:?}", users.body);
    let listed = users.body.to_string();
    for name in &created {
        assert!(
            listed.contains(&format!("\"{name}\"")),
            "{name} lost: {listed}"
        );
    }
}

#[test]
fn store_migrate_copies_a_sled_data_dir_once_and_verifies_it() {
    let up = Upstream::start();
    let config = json!({"agent": up.base, "auth": ["jwt", "api_key",
        {"method": "custom", "name": "probe", "path": plugins().probe, "config": {"mode": "kv"}}],
        "tenancy": {"owner": "user_id"}});
    let env = [
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
    ];
    let sled = Server::start(config, &env);
    let admin = bearer(&token(&login(&sled, "admin", ADMIN_PW), "access_token"));
    let created = post(
        &sled.url("/v1/api-keys"),
        &[("authorization", &admin)],
        json!({"name": "ci"}),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key = created.body["key"].as_str().unwrap().to_owned();
    let variable = post(
        &sled.url("/v1/variables"),
        &[("authorization", &admin)],
        json!({"name": "TOKEN", "value": "s3cret-value", "type": "generic"}),
    );
    assert_eq!(variable.status, 201, "{:?}", variable.body);
    // The probe plugin counts in its kv (anonymous requests reach it).
    for n in 1..=2 {
        let r = get(&sled.url("/v1/whoami"), &[]);
        assert_eq!(r.body["claims"]["count"], n, "{:?}", r.body);
    }
    // Alice's thread: its owner must move too, or bob could claim it.
    let alice = bearer(&hs256(SECRET, json!({"sub": "alice", "exp": now() + 600})));
    let bob = bearer(&hs256(SECRET, json!({"sub": "bob", "exp": now() + 600})));
    let r = post(
        &sled.url("/v1/graph/invoke"),
        &[("authorization", &alice)],
        json!({"messages": [], "config": {"thread_id": "t-moved"}}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let stopped = sled.stop();

    let db = fresh_database();
    let config_path = stopped.config.to_str().unwrap().to_owned();
    for run in 0..2 {
        let (code, out, err) = run_agentflow(
            &["store", "migrate", "--config", &config_path, "--to", &db],
            &[],
        );
        assert_eq!(code, 0, "run {run}: {out}\n{err}");
        assert!(out.contains("users: 1/1"), "run {run}: {out}");
        assert!(out.contains("api keys: 1/1"), "run {run}: {out}");
        assert!(out.contains("variables: 1/1"), "run {run}: {out}");
        assert!(
            !out.contains("audit events: 0/"),
            "the audit trail moves too: {out}"
        );
        assert!(
            out.contains("plugin storage of \"probe\": 1/1"),
            "run {run}: {out}"
        );
        assert!(
            out.contains("owned threads and memories: 1/1"),
            "run {run}: {out}"
        );
    }

    let pg = stopped.start(&[("AGENTFLOW_DATABASE_URL", &db)]);
    assert_eq!(whoami(&pg, ("x-api-key", &key)), 200, "the key moved over");
    let admin = bearer(&token(&login(&pg, "admin", ADMIN_PW), "access_token"));
    let vars = get(&pg.url("/v1/variables"), &[("authorization", &admin)]);
    assert_eq!(vars.status, 200, "{:?}", vars.body);
    assert!(
        vars.body.to_string().contains("s3cret-value"),
        "moved over and still decrypts: {:?}",
        vars.body
    );
    let state = |who: &str| {
        get(
            &pg.url("/v1/threads/t-moved/state"),
            &[("authorization", who)],
        )
    };
    assert_eq!(state(&bob).status, 404, "alice's thread stays hers");
    assert_eq!(state(&alice).status, 200, "and she still reaches it");
    let r = get(&pg.url("/v1/whoami"), &[]);
    assert_eq!(
        r.body["claims"]["count"], 3,
        "plugin storage moved over: {:?}",
        r.body
    );
}

/// Tenancy on a shared registry: an id released on one instance and claimed
/// by another tenant is the new tenant's on every instance at once (no
/// instance may remember the old owner).
#[test]
fn a_thread_released_and_reclaimed_elsewhere_is_not_its_old_owners() {
    let up = Upstream::start();
    let db = fresh_database();
    let config = json!({"agent": up.base, "auth": "jwt", "tenancy": {"owner": "user_id"}});
    let env = [
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_DATABASE_URL", db.as_str()),
    ];
    let a = Server::start(config.clone(), &env);
    let b = Server::start(config, &env);
    let alice = bearer(&hs256(SECRET, json!({"sub": "alice", "exp": now() + 600})));
    let bob = bearer(&hs256(SECRET, json!({"sub": "bob", "exp": now() + 600})));
    let invoke = |server: &Server, who: &str| {
        post(
            &server.url("/v1/graph/invoke"),
            &[("authorization", who)],
            json!({"messages": [], "config": {"thread_id": "main"}}),
        )
        .status
    };
    let state = |server: &Server, who: &str| {
        get(
            &server.url("/v1/threads/main/state"),
            &[("authorization", who)],
        )
        .status
    };

    assert_eq!(invoke(&a, &alice), 200);
    // B looks the owner up (a caching instance would now remember alice).
    assert_eq!(state(&b, &alice), 200);
    assert_eq!(state(&b, &bob), 404);
    // Alice deletes the thread on A; bob starts his own "main" on A.
    let deleted = send(
        "DELETE",
        &a.url("/v1/threads/main"),
        &[("authorization", &alice)],
        None,
    );
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(invoke(&a, &bob), 200);
    // On B, at once: the thread is bob's, and alice is a stranger to it.
    let forwarded = up.count();
    assert_eq!(state(&b, &alice), 404);
    assert_eq!(invoke(&b, &alice), 404);
    assert_eq!(
        up.count(),
        forwarded,
        "nothing of alice's reached the agent"
    );
    assert_eq!(state(&b, &bob), 200);
}
