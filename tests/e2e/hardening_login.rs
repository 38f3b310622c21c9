//! Attacks on the login (issue 9, items 10, 11, 16, 17, 18): floods, parallel
//! guessing bursts, lockouts across client addresses, lookalike usernames,
//! an inactive account's password, and who can read the database files.
//!
//! Client addresses: Linux routes all of 127.0.0.0/8 to loopback, so a
//! client bound to 127.0.0.2 is "another address" to the server.

use std::net::IpAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-1";
const ALICE_PW: &str = "alice-password-1";

fn login_server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
    ];
    env.extend_from_slice(extra);
    Server::start(json!({"auth": "jwt"}), &env)
}

/// `POST /v1/login` from the client address `from`.
fn login_from(server: &Server, from: &str, username: &str, password: &str) -> Reply {
    let local: IpAddr = from.parse().unwrap();
    let client = reqwest::blocking::Client::builder()
        .local_address(local)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = client
        .post(server.url("/v1/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .expect("login request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

fn admin_token(server: &Server) -> String {
    let reply = login_from(server, "127.0.0.1", "admin", ADMIN_PW);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    bearer(reply.body["access_token"].as_str().unwrap())
}

fn create_user(server: &Server, admin: &str, name: &str, password: &str, active: bool) -> Reply {
    post(
        &server.url("/v1/users"),
        &[("authorization", admin)],
        json!({"username": name, "password": password, "is_active": active}),
    )
}

/// A refusal for too many attempts: 429, a positive `Retry-After`, the JSON shape.
fn assert_throttled(reply: &Reply) {
    assert_eq!(reply.status, 429, "{:?}", reply.body);
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert_eq!(reply.body["code"], "too_many_requests", "{:?}", reply.body);
    assert!(!reply.detail().is_empty());
}

/// Runs `n` logins at once (released together), each from `from(i)` with
/// `(username, password) = creds(i)`; (reply, seconds taken) per login
/// (status 0: no answer within 30 s).
fn burst(
    server: &Server,
    n: usize,
    from: impl Fn(usize) -> String,
    creds: impl Fn(usize) -> (String, String),
) -> Vec<thread::JoinHandle<(Reply, f64)>> {
    let gate = Arc::new(Barrier::new(n));
    (0..n)
        .map(|i| {
            let (gate, url_base) = (gate.clone(), server.base.clone());
            let (addr, (user, pw)) = (from(i), creds(i));
            thread::spawn(move || {
                let local: IpAddr = addr.parse().unwrap();
                let client = reqwest::blocking::Client::builder()
                    .local_address(local)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                gate.wait();
                let started = Instant::now();
                let reply = match client
                    .post(format!("{url_base}/v1/login"))
                    .json(&json!({"username": user, "password": pw}))
                    .send()
                {
                    Ok(resp) => {
                        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
                        Reply {
                            status,
                            headers,
                            body: resp.json::<Value>().unwrap_or(Value::Null),
                        }
                    }
                    // No answer within 30 s: status 0, and the time shows it.
                    Err(e) => Reply {
                        status: 0,
                        headers: Default::default(),
                        body: json!({"detail": e.to_string()}),
                    },
                };
                (reply, started.elapsed().as_secs_f64())
            })
        })
        .collect()
}

fn whoami_times(server: &Server, token: &str, until: &dyn Fn() -> bool) -> Vec<f64> {
    let mut times = Vec::new();
    while !until() || times.len() < 5 {
        let started = Instant::now();
        let reply = get(&server.url("/v1/whoami"), &[("authorization", token)]);
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        times.push(started.elapsed().as_secs_f64());
        thread::sleep(Duration::from_millis(20));
    }
    times
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

#[test]
fn a_parallel_burst_checks_at_most_five_passwords_and_another_address_still_logs_in() {
    // Generous per-address budgets, so only the lockout decides.
    let server = login_server(&[
        ("AGENTFLOW_LOGIN_ATTEMPTS_PER_MINUTE", "1000"),
        ("AGENTFLOW_LOGIN_IN_FLIGHT_PER_ADDRESS", "100"),
    ]);
    let admin = admin_token(&server);
    assert_eq!(
        create_user(&server, &admin, "alice", ALICE_PW, true).status,
        201
    );

    let replies: Vec<Reply> = burst(
        &server,
        30,
        |_| "127.0.0.1".into(),
        |i| ("alice".into(), format!("wrong-guess-{i}")),
    )
    .into_iter()
    .map(|h| h.join().unwrap().0)
    .collect();
    let checked = replies.iter().filter(|r| r.status == 401).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        checked + refused.len(),
        30,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        (1..=5).contains(&checked),
        "{checked} passwords were checked in a burst of 30 (limit 5)"
    );
    refused.iter().for_each(|r| assert_throttled(r));

    // The attacker's address is locked out, even with the right password...
    assert_throttled(&login_from(&server, "127.0.0.1", "alice", ALICE_PW));
    // ...but alice, from her own address, is not.
    let alice = login_from(&server, "127.0.0.2", "alice", ALICE_PW);
    assert_eq!(
        alice.status, 200,
        "the attacker locked alice out everywhere: {:?}",
        alice.body
    );
}

#[test]
fn a_login_flood_from_one_address_is_shed_fast_and_others_keep_working() {
    let server = login_server(&[]);
    let admin = admin_token(&server);
    assert_eq!(
        create_user(&server, &admin, "alice", ALICE_PW, true).status,
        201
    );

    let flood = burst(
        &server,
        64,
        |_| "127.0.0.1".into(),
        |i| (format!("nobody-{i}"), format!("wrong-guess-{i}")),
    );
    let done = || flood.iter().all(|h| h.is_finished());
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let good = login_from(&server, "127.0.0.2", "alice", ALICE_PW);
    let good_took = started.elapsed();
    let whoami = whoami_times(&server, &admin, &done);
    let flood: Vec<(Reply, f64)> = flood.into_iter().map(|h| h.join().unwrap()).collect();

    assert_eq!(good.status, 200, "{:?}", good.body);
    assert!(
        good_took < Duration::from_secs(5),
        "a good login from another address took {good_took:?}"
    );
    let slowest = flood.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    assert!(
        slowest < 5.0,
        "a flood login waited {slowest:.1} s for an answer"
    );
    for (reply, _) in &flood {
        assert!(
            matches!(reply.status, 401 | 429),
            "{} {:?}",
            reply.status,
            reply.body
        );
    }
    let shed: Vec<&Reply> = flood
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.status == 429)
        .collect();
    assert!(
        !shed.is_empty(),
        "64 concurrent logins from one address were all checked"
    );
    shed.iter().for_each(|r| assert_throttled(r));
    let worst = whoami.iter().copied().fold(0.0, f64::max);
    assert!(
        worst < 2.0 && median(whoami.clone()) < 0.5,
        "token requests slowed down: {whoami:?}"
    );
}

#[test]
fn a_distributed_flood_is_shed_by_the_hashing_pool_and_answered_within_seconds() {
    // One hash at a time: 64 concurrent logins from 16 addresses cannot all
    // be checked within the 2 s queue wait.
    let server = login_server(&[("AGENTFLOW_PASSWORD_HASH_CONCURRENCY", "1")]);
    let admin = admin_token(&server);
    let flood = burst(
        &server,
        64,
        |i| format!("127.0.1.{}", 1 + i % 16),
        |i| (format!("nobody-{i}"), format!("wrong-guess-{i}")),
    );
    let done = || flood.iter().all(|h| h.is_finished());
    let whoami = whoami_times(&server, &admin, &done);
    let flood: Vec<(Reply, f64)> = flood.into_iter().map(|h| h.join().unwrap()).collect();

    let slowest = flood.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    assert!(
        slowest < 6.0,
        "a flood login waited {slowest:.1} s for an answer"
    );
    let busy: Vec<&Reply> = flood
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.status == 429)
        .collect();
    assert!(
        !busy.is_empty(),
        "no login was shed: {:?}",
        flood.iter().map(|(r, _)| r.status).collect::<Vec<_>>()
    );
    busy.iter().for_each(|r| assert_throttled(r));
    assert!(
        busy.iter().any(|r| r.detail().contains("busy")),
        "{:?}",
        busy[0].body
    );
    let worst = whoami.iter().copied().fold(0.0, f64::max);
    assert!(
        worst < 2.0 && median(whoami.clone()) < 0.5,
        "token requests slowed down: {whoami:?}"
    );
    // Once it is over, logins work again.
    assert_eq!(
        login_from(&server, "127.0.0.3", "admin", ADMIN_PW).status,
        200
    );
}

#[test]
fn an_inactive_accounts_right_password_does_not_reset_its_failures() {
    let server = login_server(&[]);
    let admin = admin_token(&server);
    assert_eq!(
        create_user(&server, &admin, "bob", "bob-password-1", false).status,
        201
    );
    for _ in 0..4 {
        assert_eq!(
            login_from(&server, "127.0.0.1", "bob", "wrong-password").status,
            401
        );
    }
    let inactive = login_from(&server, "127.0.0.1", "bob", "bob-password-1");
    assert_eq!(inactive.status, 401);
    assert!(
        inactive.detail().contains("not active"),
        "{:?}",
        inactive.body
    );
    // Five attempts were counted; the right password did not clear them.
    assert_throttled(&login_from(&server, "127.0.0.1", "bob", "wrong-password"));
}

#[test]
fn lookalike_usernames_never_make_a_second_account() {
    let server = login_server(&[]);
    let admin = admin_token(&server);
    let alice = create_user(&server, &admin, "alice", ALICE_PW, true);
    assert_eq!(alice.status, 201);
    let alice_id = alice.body["id"].as_str().unwrap().to_owned();

    // Full-width letters, Cyrillic 'а', a combining accent: refused at create.
    for name in ["ａｌｉｃｅ", "\u{430}lice", "ali\u{301}ce", "alice\u{200b}"] {
        let reply = create_user(&server, &admin, name, "other-password-1", true);
        assert_eq!(reply.status, 400, "{name:?}: {:?}", reply.body);
        assert_eq!(reply.body["code"], "bad_request");
    }
    assert_eq!(
        create_user(&server, &admin, "ALICE", "other-password-1", true).status,
        409
    );
    let users = get(&server.url("/v1/users"), &[("authorization", &admin)]);
    assert_eq!(users.body["total"], 2, "{:?}", users.body);

    // Typed full-width, the name is alice's (same account, same password).
    let fullwidth = login_from(&server, "127.0.0.1", "ａｌｉｃｅ", ALICE_PW);
    assert_eq!(fullwidth.status, 200, "{:?}", fullwidth.body);
    let token = bearer(fullwidth.body["access_token"].as_str().unwrap());
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("authorization", &token)]).body["user_id"],
        alice_id.as_str()
    );

    // And it shares alice's failure counter: no extra guesses by respelling.
    for name in ["ａｌｉｃｅ", "ＡＬＩＣＥ", "alice", "Alice", "ａlice"] {
        assert_eq!(
            login_from(&server, "127.0.0.1", name, "wrong-password").status,
            401
        );
    }
    assert_throttled(&login_from(&server, "127.0.0.1", "alice", "wrong-password"));
}

#[cfg(unix)]
#[test]
fn the_data_dir_and_database_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;

    // A data dir left world-readable by an older version is tightened too.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("agentflow.json");
    std::fs::write(&config, json!({"auth": "jwt"}).to_string()).unwrap();
    let env = [
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
    ];
    let server = Server::start_file(dir, &config, &env);
    assert_eq!(
        login_from(&server, "127.0.0.1", "admin", ADMIN_PW).status,
        200
    );

    assert_eq!(mode(&data), 0o700, "data dir");
    let mut checked = 0;
    let mut stack = vec![data.join("db")];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no database files found under {}",
        data.display()
    );
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is readable by others",
                path.display()
            );
        }
    }
}
