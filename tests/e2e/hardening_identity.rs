//! Issue 9 items 5–8, tried as an attacker would: a `user_id` that is not
//! an account credential, tokens after logout and refresh reuse, a demoted
//! superuser's live token, and reading a credential back through PATCH.

use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-1";
/// The key the api-key plugin accepts (in `x-plugin-key`).
const PLUGIN_KEY: &str = "plugin-key-0123456789";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
        ("AGENTFLOW_NEW_USER_IS_ACTIVE", "True"),
    ]
}

fn accounts_server(up: &Upstream) -> Server {
    Server::start(
        json!({"agent": up.base, "auth": ["jwt", "api_key"]}),
        &env(),
    )
}

fn login(server: &Server, username: &str, password: &str) -> Reply {
    let reply = post(
        &server.url("/v1/login"),
        &[],
        json!({"username": username, "password": password}),
    );
    assert_eq!(reply.status, 200, "login failed: {:?}", reply.body);
    reply
}

fn access(reply: &Reply) -> String {
    bearer(reply.body["access_token"].as_str().unwrap())
}

fn refresh_token(reply: &Reply) -> String {
    reply.body["refresh_token"].as_str().unwrap().to_owned()
}

fn id_of(server: &Server, auth: &str) -> String {
    let me = get(&server.url("/v1/users/whoami"), &[("authorization", auth)]);
    assert_eq!(me.status, 200, "{:?}", me.body);
    me.body["id"].as_str().unwrap().to_owned()
}

/// A refusal in the documented shape: status, JSON `detail` and `code`.
fn assert_refused(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
    assert_eq!(reply.body["code"], code, "{what}: {:?}", reply.body);
    assert!(!reply.detail().is_empty(), "{what}: {:?}", reply.body);
}

/// Every account endpoint refuses `auth` with 403, and nothing was created.
fn assert_account_api_refused(server: &Server, auth: (&str, &str), what: &str) {
    let h = [auth];
    assert_refused(
        &get(&server.url("/v1/users"), &h),
        403,
        "forbidden",
        &format!("{what}: list users"),
    );
    assert_refused(
        &get(&server.url("/v1/users/whoami"), &h),
        403,
        "forbidden",
        &format!("{what}: users/whoami"),
    );
    let create = post(
        &server.url("/v1/users"),
        &h,
        json!({"username": "mallory", "password": "mallory-password"}),
    );
    assert_refused(&create, 403, "forbidden", &format!("{what}: create user"));
    assert_refused(
        &post(&server.url("/v1/api-keys"), &h, json!({"name": "stolen"})),
        403,
        "forbidden",
        &format!("{what}: mint key"),
    );
    assert_refused(
        &get(&server.url("/v1/api-keys"), &h),
        403,
        "forbidden",
        &format!("{what}: list keys"),
    );
    assert_refused(
        &get(&server.url("/v1/variables"), &h),
        403,
        "forbidden",
        &format!("{what}: list variables"),
    );
    let var = post(
        &server.url("/v1/variables"),
        &h,
        json!({"name": "X", "value": "y"}),
    );
    assert_refused(&var, 403, "forbidden", &format!("{what}: create variable"));
}

#[test]
fn plugin_identity_with_the_superusers_id_is_not_the_superuser() {
    let up = Upstream::start();
    let server = accounts_server(&up);
    let admin = access(&login(&server, "admin", ADMIN_PW));
    let admin_id = id_of(&server, &admin);

    // Restart with a plugin that authenticates as the superuser's id, roles
    // and all (a misconfigured or hostile plugin, or an id collision).
    let stopped = server.stop();
    let plugin = json!({
        "method": "custom",
        "name": "static-keys",
        "path": plugins().api_key,
        "config": {"header": "x-plugin-key", "keys": [{"sha256": sha256_hex(PLUGIN_KEY), "user_id": admin_id, "roles": ["admin"]}]}
    });
    let config = json!({"agent": up.base, "auth": ["jwt", "api_key", plugin]});
    std::fs::write(&stopped.config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let server = stopped.start(&[]);

    let me = get(&server.url("/v1/whoami"), &[("x-plugin-key", PLUGIN_KEY)]);
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(
        me.body["user_id"],
        admin_id.as_str(),
        "the plugin does claim the superuser's id"
    );
    assert_account_api_refused(&server, ("x-plugin-key", PLUGIN_KEY), "plugin identity");
    let refused = get(&server.url("/v1/users"), &[("x-plugin-key", PLUGIN_KEY)]);
    assert!(
        refused.detail().contains("static-keys"),
        "the refusal names the plugin: {:?}",
        refused.body
    );

    // The plugin identity still works where plugins belong: the agent.
    assert_eq!(
        post(
            &server.url("/v1/graph/invoke"),
            &[("x-plugin-key", PLUGIN_KEY)],
            json!({})
        )
        .status,
        200
    );
    // Nothing was minted or created on the superuser's behalf.
    let admin = access(&login(&server, "admin", ADMIN_PW));
    assert_eq!(
        get(&server.url("/v1/api-keys"), &[("authorization", &admin)]).body,
        json!([])
    );
    assert_eq!(
        get(&server.url("/v1/users"), &[("authorization", &admin)]).body["total"],
        1
    );
}

#[test]
fn external_jwt_with_the_superusers_id_is_not_the_superuser() {
    let up = Upstream::start();
    let server = accounts_server(&up);
    let admin = access(&login(&server, "admin", ADMIN_PW));
    let admin_id = id_of(&server, &admin);
    let exp = now() + 600;

    // Signed with the same key (another service sharing JWT_SECRET_KEY, or
    // `agentflow token`), naming the superuser: a JWT, not a login.
    let external = bearer(&hs256(
        SECRET,
        json!({"sub": admin_id, "user_id": admin_id, "roles": ["admin"], "exp": exp}),
    ));
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("authorization", &external)]).status,
        200
    );
    assert_account_api_refused(&server, ("authorization", &external), "external JWT");
    assert_eq!(
        post(
            &server.url("/v1/graph/invoke"),
            &[("authorization", &external)],
            json!({})
        )
        .status,
        200
    );

    // Claiming to be one of our access tokens needs a live login of that
    // account: without one, or with a made-up one, the token is invalid.
    let login_id = "0123456789abcdef0123456789abcdef";
    for (claims, what) in [
        (
            json!({"user_id": admin_id, "type": "access", "exp": exp}),
            "no login claim",
        ),
        (
            json!({"user_id": admin_id, "type": "access", "sid": login_id, "exp": exp}),
            "unknown login",
        ),
        (
            json!({"user_id": admin_id, "type": "access", "sid": "../x", "exp": exp}),
            "malformed login",
        ),
    ] {
        let forged = bearer(&hs256(SECRET, claims));
        let reply = get(&server.url("/v1/users"), &[("authorization", &forged)]);
        assert_refused(&reply, 401, "invalid_token", what);
        assert!(
            reply
                .header("www-authenticate")
                .unwrap_or("")
                .contains("invalid_token"),
            "{what}"
        );
    }
    // A real login of another user cannot be borrowed for the superuser.
    create_user(&server, &admin, "bob", false);
    let bob = login(&server, "bob", "bob-password");
    let bob_claims = claims_of(bob.body["access_token"].as_str().unwrap());
    let borrowed = bearer(&hs256(
        SECRET,
        json!({"user_id": admin_id, "type": "access", "sid": bob_claims["sid"], "exp": exp}),
    ));
    assert_refused(
        &get(&server.url("/v1/users"), &[("authorization", &borrowed)]),
        401,
        "invalid_token",
        "borrowed login",
    );
}

#[test]
fn logout_ends_every_access_token_of_that_login_at_once() {
    let up = Upstream::start();
    let server = accounts_server(&up);
    let first = login(&server, "admin", ADMIN_PW);
    let other = access(&login(&server, "admin", ADMIN_PW));
    let token = access(&first);
    // A refreshed token belongs to the same login.
    let refreshed = post(
        &server.url("/v1/refresh"),
        &[],
        json!({"refresh_token": refresh_token(&first)}),
    );
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    let token2 = access(&refreshed);
    for t in [&token, &token2] {
        assert_eq!(
            get(&server.url("/v1/whoami"), &[("authorization", t)]).status,
            200
        );
    }

    let out = post(
        &server.url("/v1/logout"),
        &[],
        json!({"refresh_token": refresh_token(&refreshed)}),
    );
    assert_eq!(out.status, 200, "{:?}", out.body);
    let forwarded = up.count();
    for t in [&token, &token2] {
        assert_refused(
            &get(&server.url("/v1/whoami"), &[("authorization", t)]),
            401,
            "invalid_token",
            "whoami after logout",
        );
        assert_refused(
            &get(&server.url("/v1/users"), &[("authorization", t)]),
            401,
            "invalid_token",
            "users after logout",
        );
        let agent = post(
            &server.url("/v1/graph/invoke"),
            &[("authorization", t)],
            json!({}),
        );
        assert_refused(&agent, 401, "invalid_token", "agent after logout");
    }
    assert_eq!(
        up.count(),
        forwarded,
        "nothing reached the agent after logout"
    );
    // Another login of the same user is not affected.
    assert_eq!(
        get(&server.url("/v1/users"), &[("authorization", &other)]).status,
        200
    );
}

#[test]
fn refresh_token_reuse_ends_every_access_token_of_that_login_at_once() {
    let up = Upstream::start();
    let server = accounts_server(&up);
    let first = login(&server, "admin", ADMIN_PW);
    let r1 = refresh_token(&first);
    let second = post(
        &server.url("/v1/refresh"),
        &[],
        json!({"refresh_token": r1}),
    );
    assert_eq!(second.status, 200, "{:?}", second.body);
    let (a1, a2) = (access(&first), access(&second));
    assert_eq!(
        get(&server.url("/v1/whoami"), &[("authorization", &a2)]).status,
        200
    );

    // Someone replays the spent refresh token (stolen): the login is revoked.
    assert_eq!(
        post(
            &server.url("/v1/refresh"),
            &[],
            json!({"refresh_token": r1})
        )
        .status,
        401
    );
    for (t, what) in [(&a1, "first access token"), (&a2, "refreshed access token")] {
        assert_refused(
            &get(&server.url("/v1/whoami"), &[("authorization", t)]),
            401,
            "invalid_token",
            what,
        );
        assert_refused(
            &post(
                &server.url("/v1/api-keys"),
                &[("authorization", t)],
                json!({}),
            ),
            401,
            "invalid_token",
            what,
        );
    }
}

#[test]
fn a_demoted_superuser_loses_admin_on_the_next_request() {
    let up = Upstream::start();
    let server = accounts_server(&up);
    let admin = access(&login(&server, "admin", ADMIN_PW));
    let carol_id = create_user(&server, &admin, "carol", true);
    let carol = access(&login(&server, "carol", "carol-password"));
    let key = post(
        &server.url("/v1/api-keys"),
        &[("authorization", &carol)],
        json!({"name": "k"}),
    );
    assert_eq!(key.status, 201, "{:?}", key.body);
    let key = key.body["key"].as_str().unwrap().to_owned();
    for h in [
        ("authorization", carol.as_str()),
        ("x-api-key", key.as_str()),
    ] {
        assert_eq!(
            get(&server.url("/v1/whoami"), &[h]).body["roles"],
            json!(["admin"])
        );
        assert_eq!(get(&server.url("/v1/users"), &[h]).status, 200);
        assert_eq!(get(&server.url("/v1/plugins"), &[h]).status, 200);
    }

    let demote = send(
        "PATCH",
        &server.url(&format!("/v1/users/{carol_id}")),
        &[("authorization", &admin)],
        Some(json!({"is_superuser": false})),
    );
    assert_eq!(demote.status, 200, "{:?}", demote.body);

    for h in [
        ("authorization", carol.as_str()),
        ("x-api-key", key.as_str()),
    ] {
        let me = get(&server.url("/v1/whoami"), &[h]);
        assert_eq!(me.status, 200, "still a user: {:?}", me.body);
        assert_eq!(me.body["roles"], json!(["user"]), "{:?}", me.body);
        assert!(
            !me.body.to_string().contains("admin"),
            "no admin anywhere, claims included: {:?}",
            me.body
        );
        assert_refused(
            &get(&server.url("/v1/users"), &[h]),
            403,
            "forbidden",
            "list users after demotion",
        );
        assert_refused(
            &get(&server.url("/v1/plugins"), &[h]),
            403,
            "forbidden",
            "admin-only route after demotion",
        );
        assert_eq!(
            post(&server.url("/v1/graph/invoke"), &[h], json!({})).status,
            200
        );
        let seen = up.last();
        assert_eq!(
            seen.header("x-agentflow-roles"),
            Some("user"),
            "the agent sees the roles of now"
        );
        assert!(
            !seen.json()["config"]["user"].to_string().contains("admin"),
            "{:?}",
            seen.json()
        );
    }
}

#[test]
fn a_credential_cannot_be_read_back_by_making_it_generic() {
    let up = Upstream::start();
    let server = accounts_server(&up);
    let admin = access(&login(&server, "admin", ADMIN_PW));
    let h = [("authorization", admin.as_str())];
    let secret = "sk-credential-never-shown-42";
    let cred = post(
        &server.url("/v1/variables"),
        &h,
        json!({"name": "OPENAI_KEY", "value": secret, "type": "credential"}),
    );
    assert_eq!(cred.status, 201, "{:?}", cred.body);
    let id = cred.body["id"].as_str().unwrap().to_owned();
    let url = server.url(&format!("/v1/variables/{id}"));

    let flip = send("PATCH", &url, &h, Some(json!({"type": "generic"})));
    assert_refused(
        &flip,
        400,
        "bad_request",
        "credential -> generic without a value",
    );
    assert!(
        flip.detail().contains("value"),
        "names the field: {:?}",
        flip.body
    );
    assert!(!flip.body.to_string().contains(secret));
    // Also with an explicit null value.
    let flip = send(
        "PATCH",
        &url,
        &h,
        Some(json!({"type": "generic", "value": null})),
    );
    assert_refused(
        &flip,
        400,
        "bad_request",
        "credential -> generic with value null",
    );

    let listed = get(&server.url("/v1/variables"), &h);
    assert_eq!(listed.status, 200);
    assert!(
        !listed.body.to_string().contains(secret),
        "{:?}",
        listed.body
    );
    assert_eq!(
        listed.body[0]["type"], "credential",
        "the refused PATCH changed nothing"
    );
    assert_eq!(listed.body[0]["value"], Value::Null);

    // With a new value the change is fine, and only the new value shows.
    let replaced = send(
        "PATCH",
        &url,
        &h,
        Some(json!({"type": "generic", "value": "now-public"})),
    );
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    assert_eq!(replaced.body["value"], "now-public");
    let listed = get(&server.url("/v1/variables"), &h);
    assert!(!listed.body.to_string().contains(secret));
    assert_eq!(listed.body[0]["value"], "now-public");
}

/// Creates a user (superuser or not) with password `{name}-password`; its id.
fn create_user(server: &Server, admin: &str, name: &str, is_superuser: bool) -> String {
    let body = json!({"username": name, "password": format!("{name}-password"), "is_superuser": is_superuser});
    let reply = post(&server.url("/v1/users"), &[("authorization", admin)], body);
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// The claims of a JWT (unverified: the test only reads its own token).
fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
