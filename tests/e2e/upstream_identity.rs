//! Identity the agent can verify: the gateway signs a short-lived JWT for the
//! caller (`upstream.token`) and the REAL AgentFlow server, with its own
//! `"auth": "jwt"` and the same secret, knows the user on graph, stream,
//! thread and store routes. Clients authenticate to the gateway with a
//! different secret, so nothing the client holds works at the agent.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

use crate::support::*;
use crate::support_agentflow::*;

/// The agent's `JWT_SECRET_KEY`; the gateway signs upstream tokens with it.
const AGENT_SECRET: &str = "upstream-identity-agent-secret-0123456789abcdef";

/// A client token for the gateway (signed with the gateway's own secret).
fn client_token(user: &str) -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": user, "roles": ["user"], "team": format!("{user}-team"), "exp": now() + 600}),
    ))
}

/// The gateway in front of `agent`, clients on built-in jwt (`SECRET`),
/// upstream token signed with `AGENT_SECRET`; `token` is `upstream.token`.
fn gateway(agent: &str, token: Option<Value>) -> Server {
    let mut config = json!({"agent": agent, "auth": "jwt"});
    if let Some(token) = token {
        config["upstream"] = json!({"token": token});
    }
    Server::start(
        config,
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("UPSTREAM_JWT_SECRET", AGENT_SECRET),
        ],
    )
}

fn invoke(gw: &Server, auth: &str, thread: &str) -> Reply {
    post(
        &gw.url("/v1/graph/invoke"),
        &[("authorization", auth)],
        json!({"messages": [user_message(&format!("hi from {thread}"))],
               "config": {"thread_id": thread, "user_id": "mallory", "user": {"user_id": "mallory"}}}),
    )
}

/// The echo of a streamed run, read line by line.
fn stream_echo(gw: &Server, auth: &str) -> Value {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let resp = client
        .post(gw.url("/v1/graph/stream"))
        .header("authorization", auth)
        .json(&json!({"messages": [user_message("stream me")]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let lines: Vec<Value> = BufReader::new(resp)
        .lines()
        .map(Result::unwrap)
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let echo = lines
        .iter()
        .find(|e| e["message"]["role"] == "assistant")
        .unwrap_or_else(|| panic!("no echo: {lines:?}"));
    serde_json::from_str(&message_text(&echo["message"])).unwrap()
}

#[test]
fn the_real_agent_knows_each_user_on_graph_stream_thread_and_store_routes() {
    let agent = AgentflowServer::start(Some(AGENT_SECRET));
    let gw = gateway(
        agent.url(),
        Some(json!({"algorithm": "HS256", "secret_env": "UPSTREAM_JWT_SECRET"})),
    );

    for user in ["alice", "bob"] {
        let auth = client_token(user);
        let thread = format!("t-{user}");

        let r = invoke(&gw, &auth, &thread);
        assert_eq!(r.status, 200, "{user}: {}\n{}", r.body, agent.logs());
        let seen = echoed(&r.body["data"]["messages"]);
        assert_eq!(seen["user_id"], user, "invoke: {seen}");
        assert_eq!(seen["claims"]["roles"], json!(["user"]), "{seen}");
        assert_eq!(
            seen["claims"]["team"],
            format!("{user}-team"),
            "the identity's claims reach the graph: {seen}"
        );

        assert_eq!(stream_echo(&gw, &auth)["user_id"], user, "stream");

        // A thread route: the agent authenticates the gateway's token and
        // serves the run made as this user.
        let msgs = get(
            &gw.url(&format!("/v1/threads/{thread}/messages")),
            &[("authorization", &auth)],
        );
        assert_eq!(msgs.status, 200, "{}", msgs.body);
        let seen = echoed(&msgs.body["data"]["messages"]);
        assert_eq!(
            (seen["user_id"].as_str(), seen["thread_id"].as_str()),
            (Some(user), Some(thread.as_str()))
        );

        // A store route: create stamps the verified user; read it back.
        let created = post(
            &gw.url("/v1/store/memories"),
            &[("authorization", &auth)],
            json!({"content": format!("{user}'s note")}),
        );
        assert_eq!(created.status, 200, "{}", created.body);
        let id = created.body["data"]["memory_id"]
            .as_str()
            .expect("memory_id")
            .to_owned();
        // (Read back through `list`: get-one, `POST /v1/store/memories/{id}`,
        // is not in the gateway's route table on this branch.)
        let list = post(
            &gw.url("/v1/store/memories/list"),
            &[("authorization", &auth)],
            json!({}),
        );
        assert_eq!(list.status, 200, "{}", list.body);
        let mine = list.body["data"]["memories"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["id"] == id.as_str()))
            .unwrap_or_else(|| panic!("{user}'s memory not listed: {}", list.body));
        assert_eq!(mine["user_id"], user, "{mine}");
    }
}

#[test]
fn a_forged_subprotocol_credential_on_http_never_reaches_the_agent() {
    let agent = AgentflowServer::start(Some(AGENT_SECRET));
    // Someone who learned the agent's secret (or a token for another user)
    // hides it where the agent also looks on plain HTTP.
    let forged = hs256(
        AGENT_SECRET,
        json!({"user_id": "mallory", "exp": now() + 600}),
    );
    let protocol = format!("agentflow-bearer, {forged}");
    let alice = client_token("alice");
    let headers = [
        ("authorization", alice.as_str()),
        ("sec-websocket-protocol", protocol.as_str()),
    ];

    // Headers only (no upstream token): the agent gets no credential at all.
    let headers_only = gateway(agent.url(), None);
    let r = send("GET", &headers_only.url("/v1/threads"), &headers, None);
    assert_eq!(
        r.status, 401,
        "the forged credential must not authenticate: {}",
        r.body
    );
    assert_eq!(r.body["error"]["code"], "REVOKED_TOKEN", "{}", r.body);

    // With the upstream token the agent sees alice, never mallory.
    let signed = gateway(agent.url(), Some(json!({})));
    let r = post(
        &signed.url("/v1/graph/invoke"),
        &headers,
        json!({"messages": [user_message("who am i")], "config": {"thread_id": "t-forged"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r.body["data"]["messages"])["user_id"], "alice");

    // What reaches an upstream: no subprotocol header on HTTP.
    let up = Upstream::start();
    let gw = gateway(&up.base, Some(json!({})));
    assert_eq!(
        send("GET", &gw.url("/v1/threads"), &headers, None).status,
        200
    );
    assert_eq!(up.last().header("sec-websocket-protocol"), None);
}

#[test]
fn audience_and_issuer_are_sent_when_configured_and_match_the_agent() {
    let agent = AgentflowServer::start_with_env(
        Some(AGENT_SECRET),
        &[
            ("JWT_AUDIENCE", "agent-api"),
            ("JWT_ISSUER", "agentflow-gateway"),
        ],
    );
    let gw = gateway(
        agent.url(),
        Some(json!({"issuer": "agentflow-gateway", "audience": "agent-api"})),
    );
    let r = invoke(&gw, &client_token("carol"), "t-aud");
    assert_eq!(r.status, 200, "{}\n{}", r.body, agent.logs());
    assert_eq!(echoed(&r.body["data"]["messages"])["user_id"], "carol");

    // The same agent refuses a token without them: the setting is what makes it work.
    let plain = gateway(agent.url(), Some(json!({})));
    let r = invoke(&plain, &client_token("carol"), "t-aud");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "INVALID_TOKEN", "{}", r.body);
}

#[test]
fn one_signature_per_user_is_reused_and_hmac_publishes_no_keys() {
    let up = Upstream::start();
    let gw = gateway(&up.base, Some(json!({"ttl_s": 120})));
    let alice = client_token("alice");
    // Two different client tokens of the same user, then bob.
    let alice_again = bearer(&hs256(
        SECRET,
        json!({"sub": "alice", "roles": ["user"], "team": "alice-team", "exp": now() + 900}),
    ));
    for auth in [&alice, &alice_again, &client_token("bob")] {
        assert_eq!(
            send(
                "GET",
                &gw.url("/v1/threads"),
                &[("authorization", auth)],
                None
            )
            .status,
            200
        );
    }
    let seen = up.seen.lock().unwrap().clone();
    let tokens: Vec<&str> = seen
        .iter()
        .map(|r| r.header("authorization").expect("a token upstream"))
        .collect();
    assert_eq!(tokens[0], tokens[1], "alice's token is reused");
    assert_ne!(tokens[0], tokens[2]);
    assert!(
        !tokens.contains(&alice.as_str()),
        "the client's own credential is never forwarded"
    );

    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims = ["exp".to_owned()].into();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(
        &tokens[2]["Bearer ".len()..],
        &DecodingKey::from_secret(AGENT_SECRET.as_bytes()),
        &v,
    )
    .expect("signed with the agent's secret")
    .claims;
    assert_eq!(claims["user_id"], "bob");
    let ttl = claims["exp"].as_u64().unwrap() - now();
    assert!((100..=120).contains(&ttl), "exp follows ttl_s: {ttl}");
    assert!(
        !claims.contains_key("aud") && !claims.contains_key("iss"),
        "{claims:?}"
    );

    let keys = get(&gw.url("/.well-known/jwks.json"), &[]);
    assert_eq!(
        keys.status, 404,
        "an HMAC secret is never published: {}",
        keys.body
    );
    assert!(!keys.detail().is_empty());
}

/// An openssl-made private key written as `upstream.pem` in `dir`.
fn private_key(dir: &std::path::Path, genpkey_args: &[&str]) -> std::path::PathBuf {
    let path = dir.join("upstream.pem");
    let ok = std::process::Command::new("openssl")
        .stderr(std::process::Stdio::null())
        .arg("genpkey")
        .args(genpkey_args)
        .arg("-out")
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success(), "openssl genpkey");
    path
}

fn asymmetric(
    alg: &str,
    genpkey_args: &[&str],
    algorithm: Algorithm,
    key: fn(&Value) -> DecodingKey,
) {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    private_key(dir.path(), genpkey_args);
    let config = json!({"agent": up.base, "auth": "jwt",
        "upstream": {"token": {"algorithm": alg, "private_key_file": "upstream.pem", "issuer": "gw"}}});
    let file = dir.path().join("agentflow.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let gw = Server::start_file(dir, &file, &[("JWT_SECRET_KEY", SECRET)]);

    let r = send(
        "GET",
        &gw.url("/v1/threads"),
        &[("authorization", &client_token("alice"))],
        None,
    );
    assert_eq!(r.status, 200, "{alg}: {}", r.body);
    let token =
        up.last().header("authorization").expect("a token upstream")["Bearer ".len()..].to_owned();

    // Public, no credentials needed.
    let keys = get(&gw.url("/.well-known/jwks.json"), &[]);
    assert_eq!(keys.status, 200, "{alg}: {}", keys.body);
    let jwk = &keys.body["keys"][0];
    assert_eq!(jwk["alg"], alg);
    assert!(
        jwk.get("d").is_none(),
        "{alg}: private parts published: {jwk}"
    );
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        jwk["kid"].as_str(),
        "{alg}: kid names the published key"
    );

    let mut v = Validation::new(algorithm);
    v.set_issuer(&["gw"]);
    v.required_spec_claims = ["exp".to_owned(), "iss".to_owned()].into();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(&token, &key(jwk), &v)
        .unwrap_or_else(|e| panic!("{alg}: the published key does not verify the token: {e}"))
        .claims;
    assert_eq!(claims["user_id"], "alice");
    assert_eq!(claims["iss"], "gw");
}

#[test]
fn rs256_tokens_verify_with_the_published_jwks() {
    asymmetric(
        "RS256",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        Algorithm::RS256,
        |jwk| {
            DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
                .unwrap()
        },
    );
}

#[test]
fn es256_tokens_verify_with_the_published_jwks() {
    asymmetric(
        "ES256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Algorithm::ES256,
        |jwk| {
            DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
                .unwrap()
        },
    );
}

#[test]
fn a_bad_upstream_token_setting_stops_the_start_and_names_the_key() {
    for (upstream, env, key) in [
        (
            json!({"token": {}}),
            vec![("UPSTREAM_JWT_SECRET", "short")],
            "env:UPSTREAM_JWT_SECRET",
        ),
        (json!({"token": {}}), vec![], "env:UPSTREAM_JWT_SECRET"),
        (
            json!({"token": {"ttl_s": 5}}),
            vec![("UPSTREAM_JWT_SECRET", AGENT_SECRET)],
            "upstream.token.ttl_s",
        ),
        (
            json!({"token": {"algorithm": "none"}}),
            vec![],
            "upstream.token.algorithm",
        ),
        (
            json!({"token": {"algorithm": "RS256"}}),
            vec![],
            "upstream.token.private_key_file",
        ),
        (json!({"token": {"secret": "x"}}), vec![], "upstream.token"),
        (json!({"merge": true}), vec![], "upstream"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentflow.json");
        std::fs::write(
            &file,
            json!({"agent": "http://127.0.0.1:9", "auth": "jwt", "upstream": upstream}).to_string(),
        )
        .unwrap();
        let mut env: Vec<(&str, &str)> = env.clone();
        env.push(("JWT_SECRET_KEY", SECRET));
        let (code, _, stderr) = run_agentflow(
            &["run", "--port", "0", "--config", file.to_str().unwrap()],
            &env,
        );
        assert_ne!(code, 0, "{upstream}: started");
        assert!(
            stderr.contains(&format!("`{key}`")),
            "{upstream}: expected `{key}` in:\n{stderr}"
        );
    }
}
