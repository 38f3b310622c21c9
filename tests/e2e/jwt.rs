//! Built-in JWT: what is accepted, what is refused and how.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::support::*;

fn jwt_server(up: &Upstream) -> Server {
    Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[("JWT_SECRET_KEY", SECRET)],
    )
}

fn invoke(server: &Server, auth: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
    post(
        &server.url("/v1/graph/invoke"),
        &headers,
        json!({"messages": [], "config": {"thread_id": "t1"}}),
    )
}

#[test]
fn missing_token_is_401_with_bearer_challenge() {
    let up = Upstream::start();
    let server = jwt_server(&up);
    let r = invoke(&server, None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.body["code"], "not_authenticated");
    assert!(!r.detail().is_empty());
    assert_eq!(up.count(), 0, "nothing may reach the upstream");
    assert_eq!(
        get(&server.url("/ping"), &[]).status,
        200,
        "/ping stays public"
    );
}

#[test]
fn valid_token_reaches_the_upstream_with_identity() {
    let up = Upstream::start();
    let server = jwt_server(&up);
    let token = hs256(
        SECRET,
        json!({"sub": "user-123", "role": "user", "name": "Alice", "exp": now() + 3600}),
    );
    let r = invoke(&server, Some(&bearer(&token)));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["ok"], true);
    let seen = up.last();
    assert_eq!(seen.header("x-agentflow-user-id"), Some("user-123"));
    assert_eq!(seen.header("x-agentflow-roles"), Some("user"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "credentials are not forwarded"
    );
    assert_eq!(
        seen.json()["config"]["user_id"],
        "user-123",
        "without an upstream token the body merge is on"
    );

    let me = get(
        &server.url("/v1/whoami"),
        &[("authorization", &bearer(&token))],
    );
    assert_eq!(me.status, 200);
    assert_eq!(me.body["user_id"], "user-123");
    assert_eq!(me.body["roles"], json!(["user"]));
    assert_eq!(me.body["claims"]["name"], "Alice");
}

#[test]
fn bad_tokens_are_401_invalid_token() {
    let up = Upstream::start();
    let server = jwt_server(&up);
    let good = hs256(SECRET, json!({"sub": "u1", "exp": now() + 3600}));
    let (head, rest) = good.split_once('.').unwrap();
    let sig = rest.split_once('.').unwrap().1;
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let tampered = format!(
        "{head}.{}.{sig}",
        b64(&json!({"sub": "admin", "exp": now() + 3600}).to_string())
    );
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&json!({"sub": "u1", "exp": now() + 3600}).to_string())
    );
    let cases = [
        (
            "expired",
            hs256(SECRET, json!({"sub": "u1", "exp": now() - 3600})),
        ),
        (
            "wrong key",
            hs256(
                "another-secret-another-secret-another-secret",
                json!({"sub": "u1", "exp": now() + 3600}),
            ),
        ),
        (
            "wrong algorithm",
            sign(
                Algorithm::HS512,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                json!({"sub": "u1", "exp": now() + 3600}),
            ),
        ),
        ("alg none", alg_none),
        ("tampered payload", tampered),
        ("no exp", hs256(SECRET, json!({"sub": "u1"}))),
        ("not a jwt", "not-a-token".to_owned()),
    ];
    for (case, token) in cases {
        let r = invoke(&server, Some(&bearer(&token)));
        assert_eq!(r.status, 401, "{case}: {:?}", r.body);
        assert_eq!(r.body["code"], "invalid_token", "{case}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{case}: {challenge}"
        );
    }
    let expired = invoke(
        &server,
        Some(&bearer(&hs256(
            SECRET,
            json!({"sub": "u1", "exp": now() - 3600}),
        ))),
    );
    assert!(expired.detail().contains("expired"), "{:?}", expired.body);
    assert_eq!(up.count(), 0);
}

/// Generates a key pair with the openssl command line: (private PEM, public PEM).
fn openssl_keys(dir: &std::path::Path, genpkey_args: &[&str]) -> (String, String) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let ok = std::process::Command::new("openssl")
        .stderr(std::process::Stdio::null())
        .arg("genpkey")
        .args(genpkey_args)
        .arg("-out")
        .arg(&private)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(ok.success());
    (
        std::fs::read_to_string(private).unwrap(),
        std::fs::read_to_string(public).unwrap(),
    )
}

fn asymmetric_round_trip(
    alg: &str,
    genpkey_args: &[&str],
    encoding_key: fn(&[u8]) -> EncodingKey,
    algorithm: Algorithm,
) {
    let up = Upstream::start();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = openssl_keys(keys.path(), genpkey_args);
    let server = Server::start(
        json!({"agent": up.base, "auth": "jwt"}),
        &[("JWT_ALGORITHM", alg), ("JWT_PUBLIC_KEY", &public)],
    );
    let token = sign(
        algorithm,
        &encoding_key(private.as_bytes()),
        json!({"sub": "rs-user", "exp": now() + 600}),
    );
    let r = invoke(&server, Some(&bearer(&token)));
    assert_eq!(r.status, 200, "{alg}: {:?}", r.body);
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("rs-user"));

    // The same claims under an HMAC algorithm keyed with the public key:
    // the classic confusion attack must fail.
    let confused = hs256(&public, json!({"sub": "rs-user", "exp": now() + 600}));
    assert_eq!(
        invoke(&server, Some(&bearer(&confused))).status,
        401,
        "{alg}: key confusion"
    );

    // `agentflow token` signs with the private key in JWT_SECRET_KEY.
    let cfg = server.dir.path().join("agentflow.json");
    let (code, out, err) = run_agentflow(
        &[
            "token",
            "--config",
            cfg.to_str().unwrap(),
            "--sub",
            "cli-user",
            "--role",
            "admin",
        ],
        &[("JWT_ALGORITHM", alg), ("JWT_SECRET_KEY", &private)],
    );
    assert_eq!(code, 0, "{err}");
    let me = get(
        &server.url("/v1/whoami"),
        &[("authorization", &bearer(out.trim()))],
    );
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["user_id"], "cli-user");
    assert_eq!(me.body["roles"], json!(["admin"]));
}

#[test]
fn rs256_tokens_verify_with_the_public_key() {
    asymmetric_round_trip(
        "RS256",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        |pem| EncodingKey::from_rsa_pem(pem).unwrap(),
        Algorithm::RS256,
    );
}

#[test]
fn es256_tokens_verify_with_the_public_key() {
    asymmetric_round_trip(
        "ES256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        |pem| EncodingKey::from_ec_pem(pem).unwrap(),
        Algorithm::ES256,
    );
}

#[test]
fn token_command_mints_tokens_the_server_accepts() {
    let up = Upstream::start();
    let server = jwt_server(&up);
    let cfg = server.dir.path().join("agentflow.json");
    let (code, out, err) = run_agentflow(
        &[
            "token",
            "--config",
            cfg.to_str().unwrap(),
            "--sub",
            "u9",
            "--role",
            "user",
            "--exp",
            "10m",
            "--claim",
            "team=\"red\"",
            "--claim",
            "level=3",
        ],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 0, "{err}");
    let me = get(
        &server.url("/v1/whoami"),
        &[("authorization", &bearer(out.trim()))],
    );
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["claims"]["team"], "red");
    assert_eq!(me.body["claims"]["level"], 3);
    let exp = me.body["claims"]["exp"].as_u64().unwrap();
    assert!(exp > now() + 500 && exp <= now() + 600, "exp {exp}");
}
