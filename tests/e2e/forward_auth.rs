//! Forward-auth (issue 14, item 4): `/v1/auth/verify` behind Debian's real
//! nginx (`auth_request` + `auth_request_set`, installed by
//! `scripts/install-nginx`), and the Traefik and Envoy forms asked directly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// The secret the gateway signs the agent's token with (as the agent's
/// JWT_SECRET_KEY would be).
const AGENT_SECRET: &str = "agent-side-secret-0123456789abcdef0123456789";

fn token(user: &str) -> String {
    bearer(&hs256(
        SECRET,
        json!({"sub": user, "roles": ["user", "ops"], "exp": now() + 600}),
    ))
}

/// The gateway with JWT auth, the access-echo authorizer allowing only the
/// thread `t-ok`, and a signed upstream token; no `agent` (forward-auth only).
fn gateway() -> Server {
    Server::start(
        json!({
            "auth": "jwt",
            "authorization": {"path": plugins().access_echo, "config": {"allow_id": "t-ok"}},
            "upstream": {"token": {"algorithm": "HS256", "secret_env": "UPSTREAM_JWT_SECRET"}},
        }),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("UPSTREAM_JWT_SECRET", AGENT_SECRET),
        ],
    )
}

/// nginx on a loopback port, killed on drop.
struct Nginx {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    let status = Command::new(repo_root().join("scripts/install-nginx"))
        .status()
        .expect("running scripts/install-nginx");
    assert!(status.success(), "scripts/install-nginx failed");
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx installed by scripts/install-nginx")
}

/// A free loopback port (nginx needs a number in its config).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The documented nginx setup (README, "Forward-auth"), pointed at `gateway`
/// for the check and at `upstream` for the traffic.
fn nginx_config(dir: &Path, port: u16, gateway: &str, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /_agentflow_verify {{
      internal;
      proxy_pass {gateway}/v1/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
    location / {{
      auth_request /_agentflow_verify;
      auth_request_set $agentflow_user $upstream_http_x_agentflow_user_id;
      auth_request_set $agentflow_roles $upstream_http_x_agentflow_roles;
      auth_request_set $agentflow_token $upstream_http_authorization;
      proxy_set_header X-AgentFlow-User-Id $agentflow_user;
      proxy_set_header X-AgentFlow-Roles $agentflow_roles;
      proxy_set_header Authorization $agentflow_token;
      proxy_pass {upstream};
    }}
  }}
}}
"#
    )
}

fn start_nginx(gateway: &str, upstream: &str) -> Nginx {
    let binary = nginx_binary();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir.path(), port, gateway, upstream)).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    let base = format!("http://127.0.0.1:{port}");
    let up = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let nginx = Nginx { child, base, dir };
    assert!(
        up.is_some(),
        "nginx did not start:\n{}",
        std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
    );
    nginx
}

#[test]
fn nginx_auth_request_passes_the_identity_and_refuses_what_the_gateway_refuses() {
    let upstream = Upstream::start();
    let server = gateway();
    let nginx = start_nginx(&server.base, &upstream.base);
    let url = |path: &str| format!("{}{path}", nginx.base);
    let alice = token("alice");

    // Allowed: the upstream gets the identity the gateway answered with,
    // not what the client claimed.
    let reply = get(
        &url("/v1/threads/t-ok?limit=1"),
        &[
            ("authorization", alice.as_str()),
            ("x-agentflow-user-id", "mallory"),
        ],
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = upstream.last();
    assert_eq!(seen.path_and_query, "/v1/threads/t-ok?limit=1");
    assert_eq!(seen.header("x-agentflow-user-id"), Some("alice"));
    assert_eq!(seen.header("x-agentflow-roles"), Some("user,ops"));
    let agent_token = seen
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("the gateway-signed token reached the upstream");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        agent_token,
        &jsonwebtoken::DecodingKey::from_secret(AGENT_SECRET.as_bytes()),
        &validation,
    )
    .expect("signed with the upstream secret")
    .claims;
    assert_eq!(claims["user_id"], "alice", "{claims}");

    // Refused by the authorizer (another thread): 403 at nginx, nothing forwarded.
    let before = upstream.count();
    let reply = get(
        &url("/v1/threads/t-other"),
        &[("authorization", alice.as_str())],
    );
    assert_eq!(reply.status, 403);
    // No credentials, or a bad one: 401.
    assert_eq!(get(&url("/v1/threads/t-ok"), &[]).status, 401);
    let forged = bearer(&hs256(
        "another-secret-0123456789abcdef0123456789",
        json!({"sub": "alice", "exp": now() + 600}),
    ));
    assert_eq!(
        get(
            &url("/v1/threads/t-ok"),
            &[("authorization", forged.as_str())]
        )
        .status,
        401
    );
    assert_eq!(
        upstream.count(),
        before,
        "a refused request reached the upstream"
    );
}

/// A direct call, as a proxy makes it.
fn verify(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(method, &server.url(path), headers, None)
}

#[test]
fn verify_decides_on_the_original_method_and_uri_in_every_proxy_form() {
    let server = gateway();
    let alice = token("alice");
    let auth = ("authorization", alice.as_str());

    // nginx headers: the authorizer is asked about the original request.
    let reply = verify(
        &server,
        "GET",
        "/v1/auth/verify",
        &[
            auth,
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/v1/threads/t-no"),
        ],
    );
    assert_eq!(reply.status, 403, "{:?}", reply.body);
    let access: Value = serde_json::from_str(reply.detail()).unwrap();
    assert_eq!(
        access,
        json!({
            "resource": "checkpointer",
            "action": "delete",
            "resource_id": "t-no",
            // Tenancy is off here: no recorded owner, no tenant key.
            "resource_owner": null,
            "caller_tenant": null
        })
    );

    // Traefik headers, allowed: 200 with the identity headers and token.
    let reply = verify(
        &server,
        "GET",
        "/v1/auth/verify",
        &[
            auth,
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/v1/threads/t-ok"),
        ],
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-agentflow-user-id"), Some("alice"));
    assert_eq!(reply.header("x-agentflow-roles"), Some("user,ops"));
    assert!(
        reply
            .header("authorization")
            .is_some_and(|v| v.starts_with("Bearer ")),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.body["user_id"], "alice");

    // Envoy's path_prefix: the request's own method, the path after the prefix.
    let reply = verify(
        &server,
        "DELETE",
        "/v1/auth/verify/v1/threads/t-ok",
        &[auth],
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let reply = verify(
        &server,
        "PUT",
        "/v1/auth/verify/v1/threads/t-no/state",
        &[auth],
    );
    let access: Value = serde_json::from_str(reply.detail()).unwrap();
    assert_eq!(access["resource_id"], "t-no");

    // Without credentials: 401 JSON, with the bearer challenge.
    let reply = verify(
        &server,
        "GET",
        "/v1/auth/verify",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/v1/threads/t-ok"),
        ],
    );
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    assert!(!reply.detail().is_empty());

    // The method is never guessed; a URI that is not a path is refused.
    let reply = verify(
        &server,
        "GET",
        "/v1/auth/verify",
        &[auth, ("x-original-uri", "/v1/threads")],
    );
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(
        reply.detail().contains("X-Original-Method"),
        "{:?}",
        reply.body
    );
    let reply = verify(
        &server,
        "GET",
        "/v1/auth/verify",
        &[
            auth,
            ("x-original-method", "GET"),
            ("x-original-uri", "https://evil.example/v1/threads"),
        ],
    );
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    // A path the agent does not serve: the proxy's 404.
    let reply = verify(
        &server,
        "GET",
        "/v1/auth/verify",
        &[
            auth,
            ("x-original-method", "GET"),
            ("x-original-uri", "/v1/nope"),
        ],
    );
    assert_eq!(reply.status, 404, "{:?}", reply.body);
}

/// With tenancy on, forward-auth cannot see the body (invoke's thread id)
/// or the agent's answer (listings to filter): a tenant is refused there
/// rather than let through unchecked; by-id routes keep their 404, and a
/// bypass role is let through.
#[test]
fn verify_refuses_what_tenancy_cannot_check_without_the_body_or_answer() {
    let server = Server::start(
        json!({"auth": "jwt", "tenancy": {"owner": "user_id", "bypass_roles": ["admin"]}}),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let bob = token("bob");
    let admin = bearer(&hs256(
        SECRET,
        json!({"sub": "root", "roles": ["admin"], "exp": now() + 600}),
    ));
    let ask = |who: &str, method: &str, uri: &str| {
        verify(
            &server,
            "GET",
            "/v1/auth/verify",
            &[
                ("authorization", who),
                ("x-original-method", method),
                ("x-original-uri", uri),
            ],
        )
    };
    for (method, uri) in [
        ("POST", "/v1/graph/invoke"),
        ("POST", "/v1/graph/stream"),
        ("POST", "/v1/graph/stop"),
        ("GET", "/v1/threads"),
        ("POST", "/v1/store/search"),
    ] {
        let reply = ask(&bob, method, uri);
        assert_eq!(reply.status, 403, "{method} {uri}: {:?}", reply.body);
        assert!(reply.detail().contains("forward-auth"), "{:?}", reply.body);
    }
    // Nobody owns this id: 404 for a tenant, as through the proxy.
    assert_eq!(ask(&bob, "GET", "/v1/threads/t-1/state").status, 404);
    // A bypass role is not filtered, so nothing needs the proxy.
    assert_eq!(ask(&admin, "GET", "/v1/threads").status, 200);
}
