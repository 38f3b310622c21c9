//! The account system over HTTP: the seeds' walkthrough, API keys, refresh
//! rotation, throttling, encrypted variables, restarts and key rotation.

use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-1";

fn accounts_server(up: &Upstream, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
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

fn access(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "login failed: {:?}", reply.body);
    bearer(reply.body["access_token"].as_str().unwrap())
}

fn create_user(server: &Server, admin: &str, name: &str, extra: Value) -> Reply {
    let mut body = json!({"username": name, "password": format!("{name}-password")});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    post(&server.url("/v1/users"), &[("authorization", admin)], body)
}

#[test]
fn seeds_walkthrough_superuser_activation_and_permissions() {
    let up = Upstream::start();
    let server = accounts_server(&up, &[]);
    assert_eq!(
        get(&server.url("/v1/auto_login"), &[]).status,
        403,
        "AUTO_LOGIN defaults to False"
    );

    let reply = login(&server, "admin", ADMIN_PW);
    assert_eq!(reply.body["token_type"], "bearer");
    assert!(reply.body["expires_in"].as_u64().unwrap() > 0);
    let admin = access(&reply);
    let me = get(
        &server.url("/v1/users/whoami"),
        &[("authorization", &admin)],
    );
    assert_eq!(me.body["username"], "admin");
    assert_eq!(me.body["is_superuser"], true);
    assert!(me.body.get("password_hash").is_none());
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("authorization", &admin)]).body["roles"],
        json!(["admin"])
    );

    let bob = create_user(&server, &admin, "bob", json!({}));
    assert_eq!(bob.status, 201, "{:?}", bob.body);
    assert_eq!(
        bob.body["is_active"], false,
        "AGENTFLOW_NEW_USER_IS_ACTIVE defaults to False"
    );
    let bob_id = bob.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        create_user(&server, &admin, "BOB", json!({})).status,
        409,
        "usernames are unique ignoring case"
    );

    let refused = login(&server, "bob", "bob-password");
    assert_eq!(refused.status, 401);
    assert!(
        refused.detail().contains("not active"),
        "{:?}",
        refused.body
    );

    let activated = send(
        "PATCH",
        &server.url(&format!("/v1/users/{bob_id}")),
        &[("authorization", &admin)],
        Some(json!({"is_active": true})),
    );
    assert_eq!(activated.status, 200, "{:?}", activated.body);
    let bob_token = access(&login(&server, "bob", "bob-password"));

    assert_eq!(
        get(&server.url("/v1/users"), &[("authorization", &bob_token)]).status,
        403,
        "non-superuser lists users"
    );
    assert_eq!(
        create_user(&server, &bob_token, "eve", json!({})).status,
        403
    );
    let promote = send(
        "PATCH",
        &server.url(&format!("/v1/users/{bob_id}")),
        &[("authorization", &bob_token)],
        Some(json!({"is_superuser": true})),
    );
    assert_eq!(promote.status, 403);
    let own_pw = send(
        "PATCH",
        &server.url(&format!("/v1/users/{bob_id}")),
        &[("authorization", &bob_token)],
        Some(json!({"password": "bob-new-password"})),
    );
    assert_eq!(own_pw.status, 200, "{:?}", own_pw.body);
    assert_eq!(login(&server, "bob", "bob-password").status, 401);
    assert_eq!(login(&server, "bob", "bob-new-password").status, 200);

    let list = get(
        &server.url("/v1/users?limit=1"),
        &[("authorization", &admin)],
    );
    assert_eq!(list.body["total"], 2);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);

    // The login token works on the gateway like any JWT, and dies with the account.
    assert_eq!(
        post(
            &server.url("/v1/graph/invoke"),
            &[("authorization", &bob_token)],
            json!({})
        )
        .status,
        200
    );
    assert_eq!(
        up.last().header("x-agentflow-user-id"),
        Some(bob_id.as_str())
    );
    let me_id = me.body["id"].as_str().unwrap();
    assert_eq!(
        send(
            "DELETE",
            &server.url(&format!("/v1/users/{me_id}")),
            &[("authorization", &admin)],
            None
        )
        .status,
        400,
        "not self"
    );
    assert_eq!(
        send(
            "DELETE",
            &server.url(&format!("/v1/users/{bob_id}")),
            &[("authorization", &admin)],
            None
        )
        .status,
        204
    );
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("authorization", &bob_token)]).status,
        401,
        "deleted user's token stops at once"
    );
}

#[test]
fn unknown_user_and_wrong_password_look_the_same_and_failures_are_throttled() {
    let up = Upstream::start();
    let server = accounts_server(&up, &[]);
    let unknown = login(&server, "nobody", "whatever-pw");
    let wrong = login(&server, "admin", "wrong-password");
    assert_eq!((unknown.status, wrong.status), (401, 401));
    // Same answer apart from the per-request metadata (id, time).
    assert_eq!(
        (&unknown.body["detail"], &unknown.body["error"]),
        (&wrong.body["detail"], &wrong.body["error"])
    );
    // Five failures on one account lock it.
    for _ in 0..4 {
        assert_eq!(login(&server, "admin", "wrong-password").status, 401);
    }
    let throttled = login(&server, "admin", "wrong-password");
    assert_eq!(throttled.status, 429, "{:?}", throttled.body);
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0);
    assert_eq!(
        login(&server, "admin", ADMIN_PW).status,
        429,
        "locked even with the right password"
    );
}

#[test]
fn api_keys_create_use_list_revoke() {
    let up = Upstream::start();
    let server = accounts_server(&up, &[("AGENTFLOW_NEW_USER_IS_ACTIVE", "True")]);
    let admin = access(&login(&server, "admin", ADMIN_PW));
    assert_eq!(
        create_user(&server, &admin, "carol", json!({})).body["is_active"],
        true
    );
    let carol = access(&login(&server, "carol", "carol-password"));

    let created = post(
        &server.url("/v1/api-keys"),
        &[("authorization", &carol)],
        json!({"name": "laptop"}),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key = created.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-") && key.len() >= 3 + 32, "{key}");
    let key_id = created.body["id"].as_str().unwrap().to_owned();

    let listed = get(&server.url("/v1/api-keys"), &[("authorization", &carol)]);
    let entry = &listed.body[0];
    assert_eq!(entry["name"], "laptop");
    assert!(entry.get("key").is_none());
    let masked = entry["masked"].as_str().unwrap();
    assert!(
        masked.ends_with(&key[key.len() - 4..]) && !masked.contains(&key[10..key.len() - 4]),
        "{masked}"
    );
    assert_eq!(entry["last_used_at"], Value::Null);

    let me = get(&server.url("/v1/whoami"), &[("x-api-key", &key)]);
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["claims"]["username"], "carol");
    assert_eq!(
        post(
            &server.url("/v1/graph/invoke"),
            &[("x-api-key", &key)],
            json!({})
        )
        .status,
        200
    );
    assert_ne!(
        get(&server.url("/v1/api-keys"), &[("x-api-key", &key)]).body[0]["last_used_at"],
        Value::Null
    );
    assert_eq!(
        get(
            &server.url("/v1/whoami"),
            &[("x-api-key", "sk-not-a-real-key")]
        )
        .status,
        401
    );

    assert_eq!(
        send(
            "DELETE",
            &server.url(&format!("/v1/api-keys/{key_id}")),
            &[("authorization", "Bearer x")],
            None
        )
        .status,
        401
    );
    let dave_id = create_user(&server, &admin, "dave", json!({})).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dave = access(&login(&server, "dave", "dave-password"));
    assert_eq!(
        send(
            "DELETE",
            &server.url(&format!("/v1/api-keys/{key_id}")),
            &[("authorization", &dave)],
            None
        )
        .status,
        404,
        "not the owner"
    );
    assert_eq!(
        send(
            "DELETE",
            &server.url(&format!("/v1/api-keys/{key_id}")),
            &[("authorization", &carol)],
            None
        )
        .status,
        204
    );
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("x-api-key", &key)]).status,
        401,
        "revoked"
    );

    // Deactivating a user stops their keys at once.
    let dave_key = post(
        &server.url("/v1/api-keys"),
        &[("authorization", &dave)],
        json!({}),
    )
    .body["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("x-api-key", &dave_key)]).status,
        200
    );
    send(
        "PATCH",
        &server.url(&format!("/v1/users/{dave_id}")),
        &[("authorization", &admin)],
        Some(json!({"is_active": false})),
    );
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("x-api-key", &dave_key)]).status,
        401
    );
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("authorization", &dave)]).status,
        401
    );
}

#[test]
fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let up = Upstream::start();
    let server = accounts_server(&up, &[]);
    let first = login(&server, "admin", ADMIN_PW);
    let r1 = first.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        get(
            &server.url("/v1/whoami"),
            &[("authorization", &bearer(&r1))]
        )
        .status,
        401,
        "refresh token is not an access token"
    );

    let second = post(
        &server.url("/v1/refresh"),
        &[],
        json!({"refresh_token": r1}),
    );
    assert_eq!(second.status, 200, "{:?}", second.body);
    let r2 = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(
        get(
            &server.url("/v1/whoami"),
            &[("authorization", &access(&second))]
        )
        .status,
        200
    );

    let replay = post(
        &server.url("/v1/refresh"),
        &[],
        json!({"refresh_token": r1}),
    );
    assert_eq!(replay.status, 401, "single use");
    assert_eq!(
        post(
            &server.url("/v1/refresh"),
            &[],
            json!({"refresh_token": r2})
        )
        .status,
        401,
        "reuse revoked the whole family"
    );

    let other = login(&server, "admin", ADMIN_PW);
    let r3 = other.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        post(&server.url("/v1/logout"), &[], json!({"refresh_token": r3})).status,
        200
    );
    assert_eq!(
        post(
            &server.url("/v1/refresh"),
            &[],
            json!({"refresh_token": r3})
        )
        .status,
        401,
        "logged out"
    );

    // Form-encoded login, as Langflow clients send it.
    let form = reqwest::blocking::Client::new()
        .post(server.url("/v1/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=admin&password={ADMIN_PW}"))
        .send()
        .unwrap();
    assert_eq!(form.status(), 200);
}

#[test]
fn variables_are_encrypted_and_credentials_never_returned() {
    let up = Upstream::start();
    let server = accounts_server(&up, &[]);
    let admin = access(&login(&server, "admin", ADMIN_PW));
    let generic = post(
        &server.url("/v1/variables"),
        &[("authorization", &admin)],
        json!({"name": "REGION", "value": "eu-west-visible"}),
    );
    assert_eq!(generic.status, 201, "{:?}", generic.body);
    assert_eq!(generic.body["value"], "eu-west-visible");
    let cred = post(
        &server.url("/v1/variables"),
        &[("authorization", &admin)],
        json!({"name": "OPENAI_KEY", "value": "sk-plaintext-credential-123", "type": "credential"}),
    );
    assert_eq!(cred.status, 201);
    assert_eq!(cred.body["value"], Value::Null);
    let listed = get(&server.url("/v1/variables"), &[("authorization", &admin)]);
    assert!(
        !listed
            .body
            .to_string()
            .contains("sk-plaintext-credential-123")
    );
    let cred_id = cred.body["id"].as_str().unwrap();
    let patched = send(
        "PATCH",
        &server.url(&format!("/v1/variables/{cred_id}")),
        &[("authorization", &admin)],
        Some(json!({"value": "sk-rotated-credential-456"})),
    );
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["value"], Value::Null);

    // Nothing in the data dir holds a plaintext value.
    let server = server.restart(&[]);
    for entry in walk(&server.dir.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        for secret in ["eu-west-visible", "sk-rotated-credential-456"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {}",
                entry.display()
            );
        }
    }
    // Restart keeps everything.
    let admin = access(&login(&server, "admin", ADMIN_PW));
    let listed = get(&server.url("/v1/variables"), &[("authorization", &admin)]);
    assert_eq!(listed.body.as_array().unwrap().len(), 2);
    assert!(listed.body.to_string().contains("eu-west-visible"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path))
        } else {
            out.push(path)
        }
    }
    out
}

fn generate_key() -> String {
    let (code, out, _) = run_agentflow(&["secret-key", "generate"], &[]);
    assert_eq!(code, 0);
    out.trim().to_owned()
}

fn rotate(stopped: &Stopped, env: &[(&str, &str)], new_key: &str) -> String {
    let (code, out, err) = run_agentflow(
        &[
            "secret-key",
            "rotate",
            "--config",
            stopped.config.to_str().unwrap(),
            "--new-key",
            new_key,
        ],
        env,
    );
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn variable_values(server: &Server) -> String {
    let admin = access(&login(server, "admin", ADMIN_PW));
    let listed = get(&server.url("/v1/variables"), &[("authorization", &admin)]);
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    listed.body.to_string()
}

#[test]
fn secret_key_rotation_with_the_key_in_the_environment() {
    let up = Upstream::start();
    let (k1, k2) = (generate_key(), generate_key());
    let server = accounts_server(&up, &[("AGENTFLOW_SECRET_KEY", &k1)]);
    let admin = access(&login(&server, "admin", ADMIN_PW));
    post(
        &server.url("/v1/variables"),
        &[("authorization", &admin)],
        json!({"name": "A", "value": "value-a"}),
    );
    let stopped = server.stop();
    let out = rotate(&stopped, &[("AGENTFLOW_SECRET_KEY", &k1)], &k2);
    assert!(out.contains("Re-encrypted 1"), "{out}");
    // As the command says: the new key current, the old one previous.
    let server = stopped.start(&[
        ("AGENTFLOW_SECRET_KEY", &k2),
        ("AGENTFLOW_SECRET_KEY_PREVIOUS", &k1),
    ]);
    assert!(variable_values(&server).contains("value-a"));
    // Every value was re-encrypted: the new key alone reads them.
    let server = server.restart(&[
        ("AGENTFLOW_SECRET_KEY", &k2),
        ("AGENTFLOW_SECRET_KEY_PREVIOUS", ""),
    ]);
    assert!(variable_values(&server).contains("value-a"));
}

#[test]
fn secret_key_rotation_with_the_key_in_the_data_dir() {
    let up = Upstream::start();
    let server = accounts_server(&up, &[]);
    let key_file = server.dir.path().join("data").join("secret_key");
    assert!(server.logged("generated"), "a generated key is announced");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let admin = access(&login(&server, "admin", ADMIN_PW));
    post(
        &server.url("/v1/variables"),
        &[("authorization", &admin)],
        json!({"name": "B", "value": "value-b"}),
    );
    let old = std::fs::read_to_string(&key_file).unwrap();
    let stopped = server.stop();
    let new_key = generate_key();
    rotate(&stopped, &[], &new_key);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), new_key);
    assert!(
        !key_file.with_file_name("secret_key.previous").exists(),
        "rotation finished"
    );
    let server = stopped.start(&[]);
    assert!(variable_values(&server).contains("value-b"));
    assert_ne!(old.trim(), new_key);
}

#[test]
fn invalid_secret_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, json!({"auth": null}).to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[("AGENTFLOW_SECRET_KEY", "not-a-fernet-key")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("AGENTFLOW_SECRET_KEY"), "{err}");
}

#[test]
fn superuser_command_creates_a_superuser() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, json!({"auth": "jwt"}).to_string()).unwrap();
    let mut cmd = agentflow_command();
    cmd.args([
        "superuser",
        "--username",
        "root",
        "--password-stdin",
        "--config",
        path.to_str().unwrap(),
    ])
    .env("JWT_SECRET_KEY", SECRET)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"root-password-9\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Superuser created successfully."));

    let server = Server::start_file(dir, &path, &[("JWT_SECRET_KEY", SECRET)]);
    let token = access(&login(&server, "root", "root-password-9"));
    assert_eq!(
        get(
            &server.url("/v1/users/whoami"),
            &[("authorization", &token)]
        )
        .body["is_superuser"],
        true
    );
    let stopped = server.stop();

    let (code, _, err) = run_agentflow(
        &[
            "superuser",
            "--username",
            "x",
            "--password-stdin",
            "--config",
            stopped.config.to_str().unwrap(),
        ],
        &[("AGENTFLOW_ENABLE_SUPERUSER_CLI", "False")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("disabled"), "{err}");
}

#[test]
fn auto_login_hands_out_a_superuser_token_when_enabled() {
    let up = Upstream::start();
    let server = accounts_server(&up, &[("AGENTFLOW_AUTO_LOGIN", "True")]);
    assert!(server.logged("AUTO_LOGIN"), "a loud warning at start");
    let reply = get(&server.url("/v1/auto_login"), &[]);
    let token = access(&reply);
    let me = get(
        &server.url("/v1/users/whoami"),
        &[("authorization", &token)],
    );
    assert_eq!(me.body["username"], "admin");
    assert_eq!(me.body["is_superuser"], true);
}
