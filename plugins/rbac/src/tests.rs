//! Unit tests, run natively with `cargo test`.

use super::*;
use agentflow_plugin_sdk::Refusal;
use serde_json::json;

fn example() -> Rbac {
    let config = json!({"roles": {
        "admin": {"*": ["*"]},
        "user": {"graph": ["invoke", "stream"], "checkpointer": ["read"], "store": ["read"]},
        "guest": {"graph": ["invoke"]}
    }});
    Rbac::new(serde_json::from_value(config).unwrap()).unwrap()
}

fn decide(rbac: &Rbac, roles: &[&str], resource: &str, action: &str) -> AuthzOutcome {
    let who = Identity::new("u1").with_roles(roles.iter().copied());
    rbac.authorize(
        &who,
        &Access::new(resource, action),
        &Request::new("POST", "/"),
    )
    .expect("rbac always decides")
}

fn allowed(rbac: &Rbac, roles: &[&str], resource: &str, action: &str) -> bool {
    match decide(rbac, roles, resource, action) {
        AuthzOutcome::AllowCached(hint) => {
            assert_eq!(
                hint,
                CacheHint::for_ms(ALLOW_TTL_MS),
                "allows are cacheable, on no header"
            );
            true
        }
        AuthzOutcome::Allow => panic!("rbac allows always carry a cache hint"),
        AuthzOutcome::Deny(_) => false,
    }
}

const RESOURCES: [&str; 3] = ["graph", "checkpointer", "store"];
const ACTIONS: [&str; 7] = [
    "invoke", "stream", "read", "write", "delete", "stop", "setup",
];

#[test]
fn admin_may_do_everything() {
    let rbac = example();
    for resource in RESOURCES {
        for action in ACTIONS {
            assert!(
                allowed(&rbac, &["admin"], resource, action),
                "{resource} {action}"
            );
        }
    }
}

#[test]
fn user_gets_exactly_its_grants() {
    let rbac = example();
    for (resource, action) in [
        ("graph", "invoke"),
        ("graph", "stream"),
        ("checkpointer", "read"),
        ("store", "read"),
    ] {
        assert!(
            allowed(&rbac, &["user"], resource, action),
            "{resource} {action}"
        );
    }
    for (resource, action) in [
        ("checkpointer", "write"),
        ("store", "delete"),
        ("graph", "setup"),
        ("store", "write"),
    ] {
        assert!(
            !allowed(&rbac, &["user"], resource, action),
            "{resource} {action}"
        );
    }
}

#[test]
fn guest_may_only_invoke_the_graph() {
    let rbac = example();
    assert!(allowed(&rbac, &["guest"], "graph", "invoke"));
    assert!(!allowed(&rbac, &["guest"], "graph", "stream"));
    assert_eq!(
        decide(&rbac, &["guest"], "checkpointer", "read"),
        AuthzOutcome::deny("role(s) [guest] may not read checkpointer")
    );
    match decide(&rbac, &["guest"], "checkpointer", "write") {
        AuthzOutcome::Deny(r) => {
            assert_eq!(r.status(), 403);
            assert_eq!(
                r,
                Refusal::forbidden("role(s) [guest] may not write checkpointer")
            );
        }
        other => panic!("guest must not write: {other:?}"),
    }
}

#[test]
fn unknown_roles_and_no_roles_are_denied() {
    let rbac = example();
    assert_eq!(
        decide(&rbac, &["intruder"], "graph", "invoke"),
        AuthzOutcome::deny("role(s) [intruder] may not invoke graph")
    );
    assert_eq!(
        decide(&rbac, &[], "graph", "invoke"),
        AuthzOutcome::deny("caller has no roles, so may not invoke graph")
    );
}

#[test]
fn any_role_granting_is_enough() {
    let rbac = example();
    assert!(allowed(&rbac, &["guest", "user"], "store", "read"));
    assert!(allowed(&rbac, &["intruder", "admin"], "store", "delete"));
    assert_eq!(
        decide(&rbac, &["guest", "user"], "store", "delete"),
        AuthzOutcome::deny("role(s) [guest, user] may not delete store")
    );
}

#[test]
fn wildcards_work_on_resources_and_actions_separately() {
    let config = json!({"roles": {
        "reader": {"*": ["read"]},
        "grapher": {"graph": ["*"]}
    }});
    let rbac = Rbac::new(serde_json::from_value(config).unwrap()).unwrap();
    for resource in RESOURCES {
        assert!(allowed(&rbac, &["reader"], resource, "read"));
        assert!(!allowed(&rbac, &["reader"], resource, "write"));
    }
    for action in ACTIONS {
        assert!(allowed(&rbac, &["grapher"], "graph", action));
        assert!(!allowed(&rbac, &["grapher"], "store", action));
    }
    // "*" is only special in the config, not in the request.
    assert!(!allowed(&example(), &["user"], "*", "read"));
}

#[test]
fn blank_names_in_config_are_rejected() {
    let cfg = |roles| Rbac::new(serde_json::from_value(json!({"roles": roles})).unwrap());
    assert!(cfg(json!({"r": {"": ["read"]}})).is_err());
    assert!(cfg(json!({"r": {"graph": [" "]}})).is_err());
    assert!(cfg(json!({})).is_ok());
}

#[test]
fn owners_and_callers_a_thread_was_shared_with_get_the_configured_actions() {
    let config = json!({
        "roles": {"guest": {"graph": ["invoke"]}},
        "owner_actions": ["read", "write", "delete"],
        "sharing": {"claim": "shared_threads"}
    });
    let rbac = Rbac::new(serde_json::from_value(config).unwrap()).unwrap();
    let req = Request::new("GET", "/v1/threads/t1");
    let decide = |who: &Identity, access: &Access| rbac.authorize(who, access, &req).unwrap();
    let is_allowed = |o: AuthzOutcome| matches!(o, AuthzOutcome::AllowCached(_));

    let owner = Identity::new("alice").with_role("guest");
    let read_own = Access::new("checkpointer", "read")
        .with_id("t1")
        .with_owner("alice");
    assert!(is_allowed(decide(&owner, &read_own)));
    let mut delete_own = read_own.clone();
    delete_own.action = "delete".into();
    assert!(is_allowed(decide(&owner, &delete_own)));
    // Owning is not enough for an action owners were not given.
    let mut stop_own = read_own.clone();
    stop_own.action = "stop".into();
    assert!(!is_allowed(decide(&owner, &stop_own)));

    // Bob is not the owner; he reads t1 only once alice shared it with him,
    // and sharing grants reading, not deleting.
    let bob = Identity::new("bob").with_role("guest");
    assert!(!is_allowed(decide(&bob, &read_own)));
    let bob_shared = bob
        .clone()
        .with_claim("shared_threads", json!(["t9", "t1"]));
    assert!(is_allowed(decide(&bob_shared, &read_own)));
    let mut delete_shared = read_own.clone();
    delete_shared.action = "delete".into();
    assert!(!is_allowed(decide(&bob_shared, &delete_shared)));
    // A claim that is not a list of ids shares nothing.
    let odd = bob.with_claim("shared_threads", "t1");
    assert!(!is_allowed(decide(&odd, &read_own)));
    // With a team as the tenant, the owner is the team's claim value: any
    // member owns it, whatever their user id.
    let team_read = Access::new("checkpointer", "read")
        .with_id("t2")
        .with_owner("acme")
        .with_tenant("acme");
    let carol = Identity::new("carol").with_role("guest");
    assert!(is_allowed(decide(&carol, &team_read)));
    assert!(!is_allowed(decide(
        &carol,
        &team_read.clone().with_tenant("globex")
    )));
    // With sharing on, a role grant reaches only the caller's own
    // resources, unless the role is one of sharing.bypass_roles.
    let config = json!({
        "roles": {"user": {"checkpointer": ["read"]}, "admin": {"*": ["*"]}},
        "sharing": {"claim": "shared_threads", "bypass_roles": ["admin"]}
    });
    let strict = Rbac::new(serde_json::from_value(config).unwrap()).unwrap();
    let decide_strict =
        |who: &Identity, access: &Access| strict.authorize(who, access, &req).unwrap();
    let alices = Access::new("checkpointer", "read")
        .with_id("t1")
        .with_owner("alice")
        .with_tenant("bob");
    let bob_user = Identity::new("bob").with_role("user");
    assert!(!is_allowed(decide_strict(&bob_user, &alices)));
    let bob_own = alices.clone().with_owner("bob");
    assert!(is_allowed(decide_strict(&bob_user, &bob_own)));
    let admin = Identity::new("root").with_role("admin");
    assert!(is_allowed(decide_strict(
        &admin,
        &alices.clone().with_tenant("root")
    )));
    let shared = bob_user.with_claim("shared_threads", json!(["t1"]));
    assert!(is_allowed(decide_strict(&shared, &alices)));
    // Without recorded owner, ownership grants nothing.
    let unowned = Access::new("checkpointer", "read").with_id("t1");
    assert!(!is_allowed(decide(&owner, &unowned)));
}

#[test]
fn an_empty_sharing_claim_is_a_config_error() {
    let config = json!({"roles": {}, "sharing": {"claim": " "}});
    let err = Rbac::new(serde_json::from_value(config).unwrap())
        .err()
        .unwrap();
    assert_eq!(err.message(), "sharing.claim must not be empty");
}
