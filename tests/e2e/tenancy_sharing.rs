//! Sharing on top of tenancy (`tenancy.share_via_authorizer` with the rbac
//! example's `sharing` rule), against the real AgentFlow server: bob reads
//! the thread alice shared with him through a claim, and nothing more; a
//! refusal on another tenant's thread is still the gateway's 404; without
//! `share_via_authorizer` a sharing claim opens nothing; an authorizer that
//! fails, or one built for contract 0.2 (which cannot see owners), shares
//! nothing.

use serde_json::{Value, json};

use crate::support::*;
use crate::support_agentflow::*;
use crate::tenancy::*;

/// The gateway with jwt, tenancy sharing through `authorization`.
fn sharing_gateway(agent: &str, authorization: Value) -> Server {
    Server::start(
        json!({
            "agent": agent,
            "auth": "jwt",
            "authorization": authorization,
            "tenancy": {"owner": "user_id", "bypass_roles": ["admin"], "share_via_authorizer": true},
        }),
        &[("JWT_SECRET_KEY", SECRET)],
    )
}

fn rbac_sharing() -> Value {
    json!({"path": plugins().rbac, "config": {
        "roles": {
            "user": {"graph": ["invoke", "stream"], "checkpointer": ["read", "write", "delete"], "store": ["*"]},
            "admin": {"*": ["*"]}
        },
        "sharing": {"claim": "shared_threads", "actions": ["read"], "bypass_roles": ["admin"]}
    }})
}

#[test]
fn a_thread_shared_through_a_claim_is_readable_and_nothing_more() {
    let agent = AgentflowServer::start(None);
    let gw = sharing_gateway(agent.url(), rbac_sharing());
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({"shared_threads": ["t-shared"]}));
    let carol = auth_for("carol", &["user"], json!({}));
    let admin = auth_for("root", &["admin"], json!({}));

    for thread in ["t-shared", "t-private"] {
        let r = invoke_on(&gw, &alice, thread, &format!("alice on {thread}"));
        assert_eq!(r.status, 200, "{}\n{}", r.body, agent.logs());
    }

    // Bob reads the shared thread (the rbac sharing rule allows `read`).
    let state = call(&gw, &bob, "GET", "/v1/threads/t-shared/state", None);
    assert_reached(&state, "bob reads the thread shared with him");
    let messages = call(&gw, &bob, "GET", "/v1/threads/t-shared/messages", None);
    assert_reached(&messages, "bob reads its messages");
    assert!(
        messages.body.to_string().contains("alice on t-shared"),
        "{}",
        messages.body
    );

    // ...but may not write to it, continue it or delete it: refused as if
    // it did not exist, and nothing reached the agent.
    assert_hidden(
        &invoke_on(&gw, &bob, "t-shared", "bob writes"),
        "bob continues the shared thread",
    );
    assert_hidden(
        &call(&gw, &bob, "DELETE", "/v1/threads/t-shared", Some(json!({}))),
        "bob deletes the shared thread",
    );
    let after = call(&gw, &alice, "GET", "/v1/threads/t-shared/messages", None);
    assert!(
        !after.body.to_string().contains("bob writes"),
        "bob's invoke reached the agent: {}",
        after.body
    );

    // Nothing else of alice's is his, and nobody else reads t-shared.
    assert_hidden(
        &call(&gw, &bob, "GET", "/v1/threads/t-private/state", None),
        "bob reads an unshared thread",
    );
    assert_hidden(
        &call(&gw, &carol, "GET", "/v1/threads/t-shared/state", None),
        "carol reads a thread shared with bob",
    );
    // A foreign id and an unknown id answer alike.
    let unknown = call(&gw, &carol, "GET", "/v1/threads/t-nothing/state", None);
    assert_hidden(&unknown, "an unknown thread");
    // The shared thread is not listed as bob's: listings stay his own.
    assert!(listed_threads(&call(&gw, &bob, "GET", "/v1/threads", None)).is_empty());

    // The owner and the bypass role keep every right.
    assert_reached(
        &call(&gw, &alice, "GET", "/v1/threads/t-private/state", None),
        "alice reads her own",
    );
    assert_reached(
        &call(&gw, &admin, "GET", "/v1/threads/t-private/state", None),
        "an admin reads any",
    );
    let r = call(
        &gw,
        &alice,
        "DELETE",
        "/v1/threads/t-shared",
        Some(json!({})),
    );
    assert_reached(&r, "alice deletes her shared thread");
}

#[test]
fn a_failing_authorizer_shares_nothing_and_fails_closed_for_the_owner() {
    let agent = AgentflowServer::start(None);
    // Alice's threads are made under rbac; then the authorizer becomes one
    // whose check fails for `t-broken` and allows only `t-open`.
    let gw = sharing_gateway(agent.url(), rbac_sharing());
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({"shared_threads": ["t-broken"]}));
    for thread in ["t-broken", "t-open"] {
        let r = invoke_on(&gw, &alice, thread, &format!("alice on {thread}"));
        assert_eq!(r.status, 200, "{}\n{}", r.body, agent.logs());
    }
    let stopped = gw.stop();
    let echo = json!({"path": plugins().access_echo, "config": {"allow_id": "t-open", "fail_id": "t-broken"}});
    let config = json!({
        "agent": agent.url(),
        "auth": "jwt",
        "authorization": echo,
        "tenancy": {"owner": "user_id", "bypass_roles": ["admin"], "share_via_authorizer": true},
    });
    std::fs::write(&stopped.config, config.to_string()).unwrap();
    let gw = stopped.start(&[]);

    // Bob names alice's thread whose check fails: the same 404 as for a
    // thread that does not exist, never the plugin's 503 (which would say
    // the thread is there), and nothing reaches the agent.
    let state = call(&gw, &bob, "GET", "/v1/threads/t-broken/state", None);
    assert_hidden(&state, "a failed check on another tenant's thread");
    let continued = invoke_on(&gw, &bob, "t-broken", "bob writes");
    assert_hidden(&continued, "bob continues it while the check fails");
    // An allow from this authorizer does share (the path works at all).
    assert_reached(
        &call(&gw, &bob, "GET", "/v1/threads/t-open/state", None),
        "the authorizer allows t-open",
    );
    // The owner's own request fails closed: 503, not forwarded.
    let own = invoke_on(&gw, &alice, "t-broken", "alice again");
    assert_eq!(own.status, 503, "{}", own.body);
    let messages = agent_messages(&agent, "t-broken");
    assert!(
        messages.iter().any(|m| m == "alice on t-broken")
            && !messages
                .iter()
                .any(|m| m == "bob writes" || m == "alice again"),
        "a refused invoke reached the agent: {messages:?}"
    );
}

#[test]
fn a_contract_0_2_authorizer_keeps_working_and_its_allow_shares_nothing() {
    let agent = AgentflowServer::start(None);
    // Allows everything but `t-denied`: it cannot see owners, so an allow
    // from it says nothing about another tenant's thread.
    let legacy = json!({"path": plugins().legacy_authz_v0_2, "config": {"deny_id": "t-denied"}});
    let gw = sharing_gateway(agent.url(), legacy);
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({"shared_threads": ["t-alice"]}));
    let admin = auth_for("root", &["admin"], json!({}));

    let own = invoke_on(&gw, &alice, "t-alice", "alice writes");
    assert_eq!(own.status, 200, "{}\n{}", own.body, agent.logs());
    assert_reached(
        &call(&gw, &alice, "GET", "/v1/threads/t-alice/state", None),
        "the owner reads her thread through a 0.2 authorizer",
    );
    // The 0.2 authorizer's own refusal still applies to the owner.
    let denied = invoke_on(&gw, &alice, "t-denied", "alice on a denied id");
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.detail(), "legacy authorizer: denied id");

    // Bob, although the 0.2 plugin allows everything he asks: 404, nothing
    // forwarded.
    assert_hidden(
        &call(&gw, &bob, "GET", "/v1/threads/t-alice/state", None),
        "a 0.2 allow on another tenant's thread",
    );
    assert_hidden(
        &invoke_on(&gw, &bob, "t-alice", "bob writes"),
        "bob continues alice's thread under a 0.2 authorizer",
    );
    assert_reached(
        &call(&gw, &admin, "GET", "/v1/threads/t-alice/state", None),
        "a bypass role still sees every thread",
    );
    let messages = agent_messages(&agent, "t-alice");
    assert!(
        messages.iter().any(|m| m == "alice writes") && !messages.iter().any(|m| m == "bob writes"),
        "{messages:?}"
    );
    let denied_thread = get(
        &format!("{}/v1/threads/t-denied/messages", agent.url()),
        &[],
    );
    assert!(
        denied_thread.status == 404
            || (denied_thread.status == 200
                && denied_thread.body["data"]["messages"]
                    .as_array()
                    .is_some_and(Vec::is_empty)),
        "a denied invoke reached the agent: {} {}",
        denied_thread.status,
        denied_thread.body
    );
}

#[test]
fn without_share_via_authorizer_a_sharing_claim_opens_nothing() {
    let agent = AgentflowServer::start(None);
    let gw = Server::start(
        json!({
            "agent": agent.url(),
            "auth": "jwt",
            "authorization": rbac_sharing(),
            "tenancy": {"owner": "user_id"},
        }),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let alice = auth_for("alice", &["user"], json!({}));
    let bob = auth_for("bob", &["user"], json!({"shared_threads": ["t-shared"]}));
    let r = invoke_on(&gw, &alice, "t-shared", "alice");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_hidden(
        &call(&gw, &bob, "GET", "/v1/threads/t-shared/state", None),
        "sharing is off",
    );
}

#[test]
fn sharing_without_an_authorizer_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    let config = json!({
        "agent": "http://127.0.0.1:9",
        "auth": "jwt",
        "tenancy": {"owner": "user_id", "share_via_authorizer": true},
    });
    std::fs::write(&path, config.to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tenancy.share_via_authorizer") && err.contains("needs an authorizer"),
        "{err}"
    );
}
