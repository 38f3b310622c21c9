use super::*;
use serde_json::json;

fn answer(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn active_tokens_map_sub_scope_and_claims() {
    let a = answer(
        json!({"active": true, "sub": "alice", "scope": "user read", "client_id": "cli", "exp": 2000}),
    );
    match to_outcome(&a, "scope") {
        AuthnOutcome::Authenticated { who, .. } => {
            assert_eq!(who.user_id, "alice");
            assert_eq!(who.roles, ["user", "read"]);
            assert_eq!(who.claims["client_id"], "cli");
            assert!(!who.claims.contains_key("active"));
        }
        other => panic!("expected authenticated, got {other:?}"),
    }
}

#[test]
fn falls_back_to_username_and_list_roles() {
    let a = answer(json!({"active": true, "username": "bob", "roles": ["admin"]}));
    match to_outcome(&a, "roles") {
        AuthnOutcome::Authenticated { who, .. } => assert_eq!(
            (who.user_id.as_str(), who.roles.clone()),
            ("bob", vec!["admin".to_owned()])
        ),
        other => panic!("expected authenticated, got {other:?}"),
    }
}

#[test]
fn inactive_or_anonymous_tokens_are_refused() {
    assert!(matches!(
        to_outcome(&answer(json!({"active": false, "sub": "a"})), "scope"),
        AuthnOutcome::Refused(_)
    ));
    assert!(matches!(
        to_outcome(&answer(json!({"sub": "a"})), "scope"),
        AuthnOutcome::Refused(_)
    ));
    assert!(matches!(
        to_outcome(&answer(json!({"active": "true", "sub": "a"})), "scope"),
        AuthnOutcome::Refused(_)
    ));
    assert!(matches!(
        to_outcome(&answer(json!({"active": true})), "scope"),
        AuthnOutcome::Refused(_)
    ));
}

#[test]
fn cache_lasts_until_exp_but_no_longer_than_the_cap() {
    let now = 1_000;
    assert_eq!(
        cache::until(&answer(json!({"exp": 1_100})), now, 300),
        Some(1_100)
    );
    assert_eq!(
        cache::until(&answer(json!({"exp": 9_999})), now, 300),
        Some(1_300)
    );
    assert_eq!(cache::until(&answer(json!({"exp": 900})), now, 300), None);
    assert_eq!(cache::until(&answer(json!({})), now, 300), None);
    assert_eq!(cache::until(&answer(json!({"exp": 1_100})), now, 0), None);
}

#[test]
fn cache_entries_round_trip_and_never_hold_the_token() {
    let e = CacheEntry {
        until: 5,
        who: Identity::new("alice")
            .with_role("user")
            .with_claim("scope", "user"),
    };
    assert_eq!(CacheEntry::decode(&e.encode()), Some(e));
    assert_eq!(CacheEntry::decode(b"junk"), None);
    let k = cache::key("secret-token");
    assert!(k.starts_with("tok:") && !k.contains("secret-token"));
}

#[test]
fn config_must_name_an_http_endpoint() {
    let cfg = |url: &str| Config {
        introspection_url: url.into(),
        client_id: "c".into(),
        client_secret: "S".into(),
        cache_max_s: 300,
        roles_claim: "scope".into(),
    };
    assert!(OAuthIntrospect::new(cfg("ftp://x")).is_err());
    assert!(OAuthIntrospect::new(cfg("https://auth.example.com/introspect")).is_ok());
    assert!(matches!(
        OAuthIntrospect::new(cfg("http://x/"))
            .unwrap()
            .authenticate(&Request::new("GET", "/")),
        Ok(AuthnOutcome::NoCredentials)
    ));
}

#[test]
fn the_manifest_asks_for_the_endpoint_host_and_the_client_secret() {
    agentflow_plugin_sdk::testing::TestHost::new()
        .with_config(json!({"introspection_url": "https://Auth.example.com/oauth2/introspect", "client_id": "c", "client_secret": "OAUTH_SECRET"}))
        .install();
    let (_, manifest) = agentflow_plugin_sdk::testing::authenticator::<OAuthIntrospect>().unwrap();
    assert_eq!(manifest.outbound_hosts, ["auth.example.com:443"]);
    assert_eq!(manifest.secrets, ["OAUTH_SECRET"]);
    assert_eq!(
        endpoint_host("http://127.0.0.1:9100/x").as_deref(),
        Some("127.0.0.1:9100")
    );
    assert_eq!(endpoint_host("http://[::1]/x").as_deref(), Some("[::1]:80"));
}

#[test]
fn an_unreachable_endpoint_fails_closed_instead_of_panicking() {
    // The test host has no network and no secret: an error, not a refusal.
    agentflow_plugin_sdk::testing::TestHost::new().install();
    let p = OAuthIntrospect::new(Config {
        introspection_url: "http://127.0.0.1:9/introspect".into(),
        client_id: "c".into(),
        client_secret: "S".into(),
        cache_max_s: 300,
        roles_claim: "scope".into(),
    })
    .unwrap();
    let req = Request::new("GET", "/").with_header("authorization", "Bearer t");
    assert!(p.authenticate(&req).is_err());
}
