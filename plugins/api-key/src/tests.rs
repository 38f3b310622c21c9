//! Unit tests, run natively with `cargo test`.

use super::*;
use serde_json::json;

fn sha(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn plugin(extra: serde_json::Value) -> std::result::Result<ApiKey, String> {
    let mut config = json!({
        "keys": [
            {"sha256": sha("secret-1"), "user_id": "svc-1", "roles": ["user"], "name": "ci"},
            {"sha256": sha("secret-2").to_uppercase(), "user_id": "svc-2"}
        ]
    });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    ApiKey::new(serde_json::from_value(config).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())
}

/// The plugin's answer, which these tests expect to be an outcome.
trait Answer {
    fn answer(&self, req: &Request) -> AuthnOutcome;
}

impl Answer for ApiKey {
    fn answer(&self, req: &Request) -> AuthnOutcome {
        self.authenticate(req).expect("an outcome, not an error")
    }
}

fn get() -> Request {
    Request::new("GET", "/v1/graph/invoke")
}

fn who(outcome: AuthnOutcome) -> Identity {
    match outcome {
        AuthnOutcome::Authenticated { who, cache: None } => who,
        other => panic!("expected authenticated without cache hint, got {other:?}"),
    }
}

#[test]
fn valid_key_authenticates_with_roles_and_claims() {
    let p = plugin(json!({})).unwrap();
    let id = who(p.answer(&get().with_header("x-api-key", "secret-1")));
    assert_eq!(id.user_id, "svc-1");
    assert_eq!(id.roles, ["user"]);
    assert_eq!(id.claims["auth_method"], "api_key");
    assert_eq!(id.claims["key_name"], "ci");

    // Upper-case digests are accepted; unnamed keys have no key_name.
    let id = who(p.answer(&get().with_header("x-api-key", "secret-2")));
    assert_eq!(id.user_id, "svc-2");
    assert!(id.roles.is_empty());
    assert!(!id.claims.contains_key("key_name"));
}

#[test]
fn wrong_key_is_refused() {
    let p = plugin(json!({})).unwrap();
    let outcome = p.answer(&get().with_header("x-api-key", "secret-3"));
    assert_eq!(outcome, AuthnOutcome::refused("invalid API key"));
}

#[test]
fn missing_key_is_no_credentials() {
    let p = plugin(json!({})).unwrap();
    assert_eq!(p.answer(&get()), AuthnOutcome::NoCredentials);
    assert_eq!(
        p.answer(&get().with_header("x-api-key", "  ")),
        AuthnOutcome::NoCredentials
    );
    // A bearer token is ignored unless accept_bearer is on.
    let bearer = get().with_header("authorization", "Bearer secret-1");
    assert_eq!(p.answer(&bearer), AuthnOutcome::NoCredentials);
}

#[test]
fn header_name_is_case_insensitive() {
    let p = plugin(json!({"header": "X-Service-Key"})).unwrap();
    let id = who(p.answer(&get().with_header("x-SERVICE-key", "secret-1")));
    assert_eq!(id.user_id, "svc-1");
    // The default header no longer counts once another is configured.
    let outcome = p.answer(&get().with_header("x-api-key", "secret-1"));
    assert_eq!(outcome, AuthnOutcome::NoCredentials);
}

#[test]
fn bearer_is_accepted_only_when_enabled() {
    let p = plugin(json!({"accept_bearer": true})).unwrap();
    let id = who(p.answer(&get().with_header("Authorization", "Bearer secret-2")));
    assert_eq!(id.user_id, "svc-2");
    let bad = get().with_header("Authorization", "Bearer nope");
    assert_eq!(p.answer(&bad), AuthnOutcome::refused("invalid API key"));
    // The configured header wins over the bearer token.
    let both = get()
        .with_header("x-api-key", "secret-1")
        .with_header("authorization", "Bearer x");
    assert_eq!(who(p.answer(&both)).user_id, "svc-1");
}

#[test]
fn malformed_config_is_rejected_naming_the_entry() {
    let cfg = |keys| {
        ApiKey::new(serde_json::from_value(json!({"keys": keys})).unwrap())
            .map_err(|e| e.to_string())
    };
    let err = cfg(json!([{"sha256": sha("a"), "user_id": "u"}, {"sha256": "abc", "user_id": "u"}]));
    assert_eq!(
        err.err().unwrap(),
        "keys[1].sha256 must be 64 hex characters"
    );
    let not_hex = "z".repeat(64);
    let err = cfg(json!([{"sha256": not_hex, "user_id": "u"}]));
    assert_eq!(
        err.err().unwrap(),
        "keys[0].sha256 must be 64 hex characters"
    );
    let err = cfg(json!([{"sha256": sha("a"), "user_id": ""}]));
    assert_eq!(err.err().unwrap(), "keys[0].user_id must not be empty");
    let err =
        cfg(json!([{"sha256": sha("a"), "user_id": "u"}, {"sha256": sha("a"), "user_id": "v"}]));
    assert_eq!(
        err.err().unwrap(),
        "keys[1].sha256 duplicates keys[0].sha256"
    );
    // Typos in field names are caught rather than silently ignored.
    assert!(serde_json::from_value::<Config>(json!({"keys": [], "acept_bearer": true})).is_err());
}

#[test]
fn ct_eq_compares_whole_digests() {
    let a = [7u8; 32];
    let mut b = a;
    assert!(ct_eq(&a, &b));
    b[31] ^= 1;
    assert!(!ct_eq(&a, &b));
}
