//! JWTs from identity providers: a real JWKS + OpenID discovery server on
//! loopback that rotates its keys, floods of made-up `kid`s, two issuers
//! side by side, a provider that is down, and `agentflow token` claims.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A signing key pair made with the openssl command line, and its JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    signing: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn rsa(kid: &str) -> TestKey {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("k.pem");
        let pem = pem.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            pem,
        ]);
        let modulus =
            String::from_utf8(openssl(&["rsa", "-in", pem, "-noout", "-modulus"])).unwrap();
        let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let signing = EncodingKey::from_rsa_pem(&std::fs::read(pem).unwrap()).unwrap();
        // genpkey's public exponent is 65537 (AQAB).
        let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64(&n), "e": "AQAB"});
        TestKey {
            kid: kid.into(),
            alg: Algorithm::RS256,
            signing,
            jwk,
        }
    }

    fn ec(kid: &str) -> TestKey {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("k.pem");
        let pem = pem.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            pem,
        ]);
        // SubjectPublicKeyInfo DER of a P-256 key ends with 04 || x || y.
        let der = openssl(&["pkey", "-in", pem, "-pubout", "-outform", "DER"]);
        let point = &der[der.len() - 64..];
        let signing = EncodingKey::from_ec_pem(&std::fs::read(pem).unwrap()).unwrap();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[..32]), "y": b64(&point[32..])});
        TestKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            signing,
            jwk,
        }
    }

    /// A token with `claims`, signed by this key, naming `kid` in its header.
    fn sign_as(&self, kid: &str, claims: Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }

    fn sign(&self, claims: Value) -> String {
        self.sign_as(&self.kid.clone(), claims)
    }
}

#[derive(Default)]
struct Published {
    keys: Mutex<Value>,
    issuer: Mutex<String>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

/// An identity provider on loopback: `{issuer}/.well-known/openid-configuration`
/// and `{issuer}/jwks`, where issuer = base + `/realms/test` (Keycloak's
/// shape). It counts what is fetched.
struct Provider {
    issuer: String,
    jwks_url: String,
    state: Arc<Published>,
    _runtime: tokio::runtime::Runtime,
}

impl Provider {
    fn start(keys: &[&TestKey]) -> Provider {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let issuer = format!("http://{}/realms/test", listener.local_addr().unwrap());
        let state = Arc::new(Published::default());
        *state.issuer.lock().unwrap() = issuer.clone();
        let app = Router::new().fallback(serve).with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        let provider = Provider {
            jwks_url: format!("{issuer}/jwks"),
            issuer,
            state,
            _runtime: runtime,
        };
        provider.publish(keys);
        provider
    }

    /// Publishes exactly these keys from now on.
    fn publish(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() =
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    }

    fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    fn claims(&self, sub: &str) -> Value {
        json!({"iss": self.issuer, "sub": sub, "aud": "agentflow-test", "exp": now() + 600})
    }
}

async fn serve(State(state): State<Arc<Published>>, req: Request) -> Response {
    let issuer = state.issuer.lock().unwrap().clone();
    match req.uri().path() {
        "/realms/test/.well-known/openid-configuration" => {
            state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}))
                .into_response()
        }
        "/realms/test/jwks" => {
            state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            axum::Json(state.keys.lock().unwrap().clone()).into_response()
        }
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

fn whoami(server: &Server, token: &str) -> Reply {
    get(
        &server.url("/v1/whoami"),
        &[("authorization", &bearer(token))],
    )
}

fn assert_user(r: &Reply, user: &str) {
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user_id"], user, "{:?}", r.body);
}

fn assert_refused(r: &Reply, why: &str) {
    assert_eq!(r.status, 401, "{why}: {:?}", r.body);
    assert_eq!(r.body["code"], "invalid_token", "{why}: {:?}", r.body);
}

#[test]
fn rotated_keys_verify_and_dropped_keys_live_out_their_grace_period() {
    let (k1, k2) = (TestKey::rsa("k1"), TestKey::rsa("k2"));
    let idp = Provider::start(&[&k1]);
    let up = Upstream::start();
    let server = Server::start(
        json!({"agent": up.base, "auth": {
            "method": "jwt", "issuer": idp.issuer, "discovery": true, "audience": ["agentflow-test"],
            "jwks_min_interval_s": 1, "jwks_grace_s": 5,
        }}),
        &[],
    );
    let before = k1.sign(idp.claims("alice"));
    assert_user(&whoami(&server, &before), "alice");
    let r = post(
        &server.url("/v1/graph/invoke"),
        &[("authorization", &bearer(&before))],
        json!({"config": {}}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("alice"));
    assert_eq!(
        idp.state.discovery_fetches.load(Ordering::SeqCst),
        1,
        "discovery once, then the jwks_uri is kept"
    );

    // The provider rotates: k2 replaces k1. A k2 token makes the gateway
    // fetch again (once the 1 s minimum interval has passed).
    idp.publish(&[&k2]);
    std::thread::sleep(Duration::from_millis(1_100));
    let fetches = idp.jwks_fetches();
    assert_user(&whoami(&server, &k2.sign(idp.claims("bob"))), "bob");
    assert_eq!(
        idp.jwks_fetches(),
        fetches + 1,
        "an unknown kid fetched the set once"
    );
    let rotated_at = Instant::now();

    // k1 is no longer published but keeps verifying for the grace period:
    // a token never seen before (not a cache hit) still passes.
    assert_user(&whoami(&server, &k1.sign(idp.claims("carol"))), "carol");
    assert!(
        rotated_at.elapsed() < Duration::from_secs(4),
        "too slow to test the grace period"
    );
    // A token naming k2 but signed with k1 is forged.
    assert_refused(
        &whoami(&server, &k1.sign_as("k2", idp.claims("mallory"))),
        "kid k2, signed by k1",
    );

    // After the grace period k1 is gone: new k1 tokens and the ones verified
    // (and cached) before are refused alike.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(rotated_at.elapsed()));
    let r = whoami(&server, &k1.sign(idp.claims("dave")));
    assert_refused(&r, "k1 after its grace period");
    assert!(r.detail().contains("unknown key id"), "{:?}", r.body);
    assert_refused(
        &whoami(&server, &before),
        "a cached k1 token after k1 was dropped",
    );
    assert_user(&whoami(&server, &k2.sign(idp.claims("bob"))), "bob");
}

#[test]
fn a_flood_of_unknown_kids_fetches_the_keys_at_most_once_per_interval() {
    let (real, attacker) = (TestKey::rsa("real"), TestKey::rsa("attacker"));
    let idp = Provider::start(&[&real]);
    let server = Server::start(
        json!({"auth": {"method": "jwt", "jwks_url": idp.jwks_url, "audience": ["agentflow-test"], "jwks_min_interval_s": 3}}),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(10), || idp.jwks_fetches() == 1).is_some(),
        "the keys are fetched at start-up"
    );
    assert!(
        server.logged("identity provider keys loaded"),
        "{}",
        server.logs()
    );
    // Let the minimum interval pass, so the flood's first miss may fetch.
    std::thread::sleep(Duration::from_millis(3_100));

    let started = Instant::now();
    let base = server.base.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (base, claims) = (base.clone(), idp.claims("mallory"));
            let token =
                |i: usize| attacker.sign_as(&format!("random-{t}-{i}-{}", now()), claims.clone());
            let tokens: Vec<String> = (0..25).map(token).collect();
            std::thread::spawn(move || {
                tokens
                    .iter()
                    .map(|t| {
                        get(
                            &format!("{base}/v1/whoami"),
                            &[("authorization", &bearer(t))],
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<Reply> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let took = started.elapsed();
    assert_eq!(replies.len(), 200);
    for r in &replies {
        assert_refused(r, "a made-up kid");
    }
    let extra = idp.jwks_fetches() - 1;
    let allowed = 1 + (took.as_secs() / 3) as usize;
    assert!(
        (1..=allowed).contains(&extra),
        "{extra} fetches for 200 unknown kids in {took:?} (allowed {allowed})"
    );
    assert_user(&whoami(&server, &real.sign(idp.claims("alice"))), "alice");
}

#[test]
fn two_issuers_verify_with_their_own_keys_only() {
    let (ka, kb) = (TestKey::rsa("a1"), TestKey::ec("b1"));
    let (a, b) = (Provider::start(&[&ka]), Provider::start(&[&kb]));
    let server = Server::start(
        json!({"auth": [
            {"method": "jwt", "jwks_url": a.jwks_url, "issuer": a.issuer, "audience": ["agentflow-test"]},
            // Firebase's shape: the audience is the project id.
            {"method": "jwt", "discovery": true, "issuer": b.issuer, "audience": ["my-project"]},
        ]}),
        &[],
    );
    let b_claims = |sub: &str| json!({"iss": b.issuer, "sub": sub, "user_id": sub, "aud": "my-project", "exp": now() + 600});
    assert_user(&whoami(&server, &ka.sign(a.claims("alice"))), "alice");
    assert_user(&whoami(&server, &kb.sign(b_claims("bob"))), "bob");

    // Issuer A's claims with B's key (and B's kid): A's keys decide, refused.
    assert_refused(
        &whoami(&server, &kb.sign(a.claims("mallory"))),
        "iss A signed by B's key",
    );
    // ... and naming A's kid does not help.
    assert_refused(
        &whoami(&server, &kb.sign_as("a1", a.claims("mallory"))),
        "iss A, kid a1, signed by B's key",
    );
    // B's token with A's audience, and a token from an issuer nobody named.
    let wrong_aud = kb
        .sign(json!({"iss": b.issuer, "sub": "bob", "aud": "agentflow-test", "exp": now() + 600}));
    assert_refused(
        &whoami(&server, &wrong_aud),
        "B's token for another audience",
    );
    let r = whoami(
        &server,
        &ka.sign(json!({"iss": "https://elsewhere.example", "sub": "x", "exp": now() + 600})),
    );
    assert_refused(&r, "unknown issuer");
    assert!(r.detail().contains("issuer not accepted"), "{:?}", r.body);
}

#[test]
fn an_unreachable_provider_starts_the_server_and_its_tokens_get_503() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = TestKey::ec("k");
    let server = Server::start(
        json!({"auth": {"method": "jwt", "jwks_url": format!("http://127.0.0.1:{port}/jwks"), "jwks_min_interval_s": 1}}),
        &[],
    );
    assert_eq!(get(&server.url("/ping"), &[]).status, 200);
    let r = whoami(
        &server,
        &key.sign(json!({"sub": "alice", "exp": now() + 600})),
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["code"], "jwks_unavailable");
    assert!(
        server.logged("cannot fetch the identity provider's keys"),
        "{}",
        server.logs()
    );
    assert_eq!(whoami(&server, "").status, 401, "no token is still 401");
}

#[test]
fn provider_settings_are_checked_at_start() {
    let refuses = |auth: Value| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentflow.json");
        std::fs::write(&path, json!({"auth": auth}).to_string()).unwrap();
        let (code, _, err) = run_agentflow(
            &["run", "--port", "0", "--config", path.to_str().unwrap()],
            &[],
        );
        assert_ne!(code, 0, "should refuse to start:\n{err}");
        err
    };
    let err = refuses(json!({"method": "jwt", "jwks_url": "http://idp.example.com/jwks"}));
    assert!(
        err.contains("auth.jwks_url") && err.contains("https"),
        "{err}"
    );
    let err = refuses(json!({"method": "jwt", "discovery": true}));
    assert!(
        err.contains("auth.issuer") && err.contains("required"),
        "{err}"
    );
    let err = refuses(
        json!([{"method": "jwt", "jwks_url": "https://idp.example.com/jwks", "jwks_min_interval_s": 0}]),
    );
    assert!(err.contains("auth[0].jwks_min_interval_s"), "{err}");
    let err = refuses(json!({"method": "jwt", "jwks_grace_s": 5}));
    assert!(
        err.contains("auth.jwks_grace_s") && err.contains("only applies"),
        "{err}"
    );
}

#[test]
fn minted_tokens_carry_user_id_for_the_agentflow_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agentflow.json");
    std::fs::write(&cfg, json!({"auth": "jwt"}).to_string()).unwrap();
    let env = [("JWT_SECRET_KEY", SECRET)];
    let claims_of = |args: &[&str]| {
        let mut all = vec!["token", "--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        let (code, out, err) = run_agentflow(&all, &env);
        assert_eq!(code, 0, "{err}");
        let payload = out.trim().split('.').nth(1).unwrap().to_owned();
        serde_json::from_slice::<Value>(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let c = claims_of(&["--sub", "u1"]);
    assert_eq!(
        (&c["sub"], &c["user_id"]),
        (&json!("u1"), &json!("u1")),
        "{c}"
    );
    assert!(c["exp"].as_u64().unwrap() > now());
    let c = claims_of(&[
        "--sub",
        "u1",
        "--claim",
        "user_id=alice",
        "--claim",
        r#"tenant={"id":7}"#,
    ]);
    assert_eq!(
        (&c["sub"], &c["user_id"], &c["tenant"]["id"]),
        (&json!("u1"), &json!("alice"), &json!(7)),
        "{c}"
    );
}
