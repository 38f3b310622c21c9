//! Tenancy with a team claim as the tenant key (`"owner": "team"`), against
//! the real AgentFlow server: two members of one team share threads and
//! memories, a member of another team does not, and a caller without the
//! claim belongs to no tenant (403).

use serde_json::json;

use crate::support::*;
use crate::support_agentflow::*;
use crate::tenancy::*;

#[test]
fn a_team_shares_and_other_teams_do_not() {
    let agent = AgentflowServer::start(None);
    let gw = tenant_gateway(agent.url(), json!({"owner": "team"}));
    let alice = auth_for("alice", &["user"], json!({"team": "red"}));
    let carol = auth_for("carol", &["user"], json!({"team": "red"}));
    let bob = auth_for("bob", &["user"], json!({"team": "blue"}));
    let nobody = auth_for("dave", &["user"], json!({}));

    let r = invoke_on(&gw, &alice, "t-red", "red team plans");
    assert_eq!(r.status, 200, "{}\n{}", r.body, agent.logs());
    let memory = remember(&gw, &alice, "red team secret");

    // Carol, same team: reads, continues, lists, sees the memory.
    let state = call(&gw, &carol, "GET", "/v1/threads/t-red/state", None);
    assert_reached(&state, "carol reads the team thread");
    let r = invoke_on(&gw, &carol, "t-red", "carol adds to it");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r.body["data"]["messages"])["thread_id"], "t-red");
    assert_eq!(
        listed_threads(&call(&gw, &carol, "GET", "/v1/threads", None)),
        vec!["t-red"]
    );
    let one = call(
        &gw,
        &carol,
        "POST",
        &format!("/v1/store/memories/{memory}"),
        Some(json!({})),
    );
    assert_eq!(
        one.body["data"]["memory"]["content"], "red team secret",
        "{}",
        one.body
    );
    let list = call(
        &gw,
        &carol,
        "POST",
        "/v1/store/memories/list",
        Some(json!({})),
    );
    assert_eq!(listed_memories(&list, "memories"), vec![memory.clone()]);

    // Bob, other team: nothing.
    assert_hidden(
        &call(&gw, &bob, "GET", "/v1/threads/t-red/state", None),
        "bob state",
    );
    assert_hidden(&invoke_on(&gw, &bob, "t-red", "let me in"), "bob invoke");
    assert_hidden(
        &call(
            &gw,
            &bob,
            "POST",
            &format!("/v1/store/memories/{memory}"),
            Some(json!({})),
        ),
        "bob memory",
    );
    assert!(listed_threads(&call(&gw, &bob, "GET", "/v1/threads", None)).is_empty());
    let list = call(
        &gw,
        &bob,
        "POST",
        "/v1/store/memories/list",
        Some(json!({})),
    );
    assert!(
        listed_memories(&list, "memories").is_empty(),
        "{}",
        list.body
    );

    // No team claim: no tenant, refused whatever the route.
    let r = call(&gw, &nobody, "GET", "/v1/threads", None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.detail().contains("`team`"), "{}", r.body);
    // Routes tenancy does not guard still work for them.
    assert_reached(
        &call(&gw, &nobody, "GET", "/v1/graph", None),
        "graph metadata",
    );
}

#[test]
fn tenancy_config_mistakes_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (tenancy, auth, key) in [
        (json!({"owner": 7}), json!("jwt"), "tenancy.owner"),
        (
            json!({"owner": "user_id", "bypass_roles": "admin"}),
            json!("jwt"),
            "tenancy.bypass_roles",
        ),
        (
            json!({"owner": "user_id", "shared": true}),
            json!("jwt"),
            "tenancy",
        ),
        (json!({"owner": "user_id"}), json!(null), "tenancy"),
    ] {
        let path = dir.path().join("agentflow.json");
        std::fs::write(
            &path,
            json!({"agent": "http://127.0.0.1:9", "auth": auth, "tenancy": tenancy}).to_string(),
        )
        .unwrap();
        let (code, _out, err) = run_agentflow(
            &["run", "--port", "0", "--config", path.to_str().unwrap()],
            &[("JWT_SECRET_KEY", SECRET)],
        );
        assert_ne!(code, 0, "{tenancy}: {err}");
        assert!(!err.contains("listening on"), "{err}");
        assert!(err.contains(&format!("`{key}`")), "{tenancy}: {err}");
    }
}
