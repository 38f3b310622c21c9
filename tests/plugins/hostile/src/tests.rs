//! Unit tests, run natively with `cargo test`.

use super::*;
use serde_json::json;

fn hostile(config: serde_json::Value) -> Hostile {
    Hostile::new(serde_json::from_value(config).unwrap()).unwrap()
}

fn who(outcome: AuthnOutcome) -> Identity {
    match outcome {
        AuthnOutcome::Authenticated { who, .. } => who,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

fn req() -> Request {
    Request::new("GET", "/")
}

#[test]
fn ok_mode_authenticates_with_default_or_configured_user() {
    let id = who(hostile(json!({"mode": "ok"})).authenticate(&req()).unwrap());
    assert_eq!(
        (id.user_id.as_str(), id.roles.as_slice()),
        ("hostile-ok", &["user".to_owned()][..])
    );
    let id = who(hostile(json!({"user_id": "v2"}))
        .authenticate(&req())
        .unwrap());
    assert_eq!(id.user_id, "v2");
}

#[test]
fn slow_mode_waits_then_authenticates() {
    let start = Instant::now();
    let id = who(hostile(json!({"mode": "slow", "ms": 30}))
        .authenticate(&req())
        .unwrap());
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(id.user_id, "hostile-slow");
}

#[test]
fn huge_output_returns_an_8_mib_user_id() {
    let id = who(hostile(json!({"mode": "huge-output"}))
        .authenticate(&req())
        .unwrap());
    assert_eq!(id.user_id.len(), HUGE_USER_ID_LEN);
}

#[test]
#[should_panic(expected = "hostile plugin trapped on purpose")]
fn trap_mode_panics() {
    hostile(json!({"mode": "trap"}))
        .authenticate(&req())
        .unwrap();
}

#[test]
fn modes_parse_in_kebab_case_and_typos_are_rejected() {
    let mode = |m: &str| serde_json::from_value::<Config>(json!({"mode": m})).map(|c| c.mode);
    assert_eq!(mode("grow-memory").unwrap(), Mode::GrowMemory);
    assert_eq!(mode("huge-output").unwrap(), Mode::HugeOutput);
    assert_eq!(mode("recurse").unwrap(), Mode::Recurse);
    assert_eq!(mode("loop").unwrap(), Mode::Loop);
    assert_eq!(mode("log-flood").unwrap(), Mode::LogFlood);
    assert!(mode("grow_memory").is_err());
    assert!(serde_json::from_value::<Config>(json!({"mdoe": "ok"})).is_err());
}
