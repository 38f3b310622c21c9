//! The OpenAPI document at `/openapi.json` and the offline docs page at
//! `DOCS_PATH`, and schemathesis (from PyPI, see scripts/schemathesis-venv)
//! fuzzing the running server against its own document: no 5xx, and every
//! status, media type, body and header as documented.

use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::support::*;

const ADMIN_PW: &str = "admin-password-1";

/// A gateway with accounts, API keys, an authorizer plugin (so `/v1/plugins`
/// lists one) and a recording upstream (so proxied routes answer).
fn config(up: &Upstream) -> Value {
    json!({
        "agent": up.base,
        "auth": ["jwt", "api_key"],
        "authorization": {"name": "policy", "path": plugins().rbac, "config": {"roles": {
            "admin": {"*": ["*"]}
        }}},
    })
}

fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
    ];
    env.extend_from_slice(extra);
    env
}

fn docs_server(up: &Upstream, extra: &[(&str, &str)]) -> Server {
    Server::start(config(up), &env(extra))
}

/// The superuser's access token, as an `Authorization` value.
fn admin_bearer(server: &Server) -> String {
    let reply = post(
        &server.url("/v1/login"),
        &[],
        json!({"username": "admin", "password": ADMIN_PW}),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    bearer(reply.body["access_token"].as_str().unwrap())
}

/// The `src`/`href` values of a page's script and stylesheet tags.
fn asset_urls(html: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            urls.push(part.split('"').next().unwrap().to_owned());
        }
    }
    urls
}

#[test]
fn the_document_lists_the_api_and_the_docs_page_is_offline() {
    let up = Upstream::start();
    let server = docs_server(&up, &[]);

    // Public: no credentials needed, as the AgentFlow server's docs.
    let doc = get(&server.url("/openapi.json"), &[]);
    assert_eq!(doc.status, 200, "{:?}", doc.body);
    assert_eq!(doc.header("content-type"), Some("application/json"));
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    for path in [
        "/v1/login",
        "/v1/users",
        "/v1/users/{id}",
        "/v1/api-keys",
        "/v1/variables",
        "/v1/plugins",
        "/v1/audit",
        "/v1/auth/verify",
        "/v1/graph/invoke",
        "/v1/threads/{thread_id}",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert_eq!(
        paths["/v1/threads/{thread_id}"]["delete"]["x-agentflow-access"],
        json!({"resource": "checkpointer", "action": "delete",
               "id": {"in": "path", "name": "thread_id"}, "websocket": false})
    );

    let page = get(&server.url("/docs"), &[]);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = page.body.as_str().unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("<script>"),
        "the page must name only this server and run no inline script:\n{html}"
    );
    // Every asset it loads is served here, from the binary.
    let urls = asset_urls(html);
    assert!(urls.len() >= 3, "{urls:?}");
    for url in urls.iter().filter(|u| u.starts_with('/')) {
        let asset = get(&server.url(url), &[]);
        assert_eq!(asset.status, 200, "{url}");
        let ct = asset.header("content-type").unwrap();
        assert!(
            ct.starts_with("text/javascript") || ct.starts_with("text/css"),
            "{url}: {ct}"
        );
    }
    assert!(urls.contains(&"/docs/swagger-ui-bundle.js".to_owned()));
    let bundle = get(&server.url("/docs/swagger-ui-bundle.js"), &[]);
    assert!(bundle.body.as_str().unwrap().contains("SwaggerUIBundle"));
    // The page tells Swagger UI where the document is.
    assert!(html.contains("data-spec=\"/openapi.json\""), "{html}");
}

#[test]
fn the_docs_page_renders_offline_in_a_real_browser() {
    let up = Upstream::start();
    let server = docs_server(&up, &[]);
    let (result, exited_ok) = browser_script(
        "docs.mjs",
        &[("BASE_URL", &server.base), ("DOCS_PATH", "/docs")],
    );
    assert_eq!(
        result["ok"], true,
        "the docs page failed at {:?}: {}\n{result}",
        result["step"], result["error"]
    );
    assert!(exited_ok);
}

#[test]
fn docs_path_moves_the_page_and_empty_turns_docs_off() {
    let up = Upstream::start();
    let moved = docs_server(&up, &[("DOCS_PATH", "/api/docs")]);
    assert_eq!(get(&moved.url("/api/docs"), &[]).status, 200);
    let html = get(&moved.url("/api/docs"), &[]).body;
    assert!(
        html.as_str()
            .unwrap()
            .contains("src=\"/api/docs/swagger-ui-bundle.js\""),
        "{html}"
    );
    assert_eq!(
        get(&moved.url("/api/docs/swagger-ui-bundle.js"), &[]).status,
        200
    );
    assert_eq!(get(&moved.url("/openapi.json"), &[]).status, 200);
    let admin = admin_bearer(&moved);
    assert_eq!(
        get(&moved.url("/docs"), &[("authorization", &admin)]).status,
        404
    );
    drop(moved);

    let off = docs_server(&up, &[("DOCS_PATH", "")]);
    let admin = admin_bearer(&off);
    for path in ["/docs", "/openapi.json", "/docs/swagger-ui-bundle.js"] {
        // As any unknown route: with credentials 404, and without them the
        // authentication layer answers first (401), so nothing is served.
        let reply = get(&off.url(path), &[("authorization", &admin)]);
        assert_eq!(reply.status, 404, "{path}: {:?}", reply.body);
        assert_eq!(get(&off.url(path), &[]).status, 401, "{path}");
    }
    assert_eq!(up.count(), 0, "nothing was forwarded to the agent");
}

#[test]
fn a_docs_path_that_shadows_a_route_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentflow.json");
    std::fs::write(&path, json!({"auth": "jwt"}).to_string()).unwrap();
    let (code, _, err) = run_agentflow(
        &["run", "--port", "0", "--config", path.to_str().unwrap()],
        &[("JWT_SECRET_KEY", SECRET), ("DOCS_PATH", "/v1/docs")],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("DOCS_PATH") && err.contains("/v1"),
        "the error names the variable and the route: {err}"
    );
}

/// schemathesis's `st`, installed on first use by scripts/schemathesis-venv.
fn schemathesis() -> std::path::PathBuf {
    let out = Command::new(repo_root().join("scripts/schemathesis-venv"))
        .output()
        .expect("running scripts/schemathesis-venv");
    assert!(
        out.status.success(),
        "scripts/schemathesis-venv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    std::path::Path::new(&venv).join("bin/st")
}

#[test]
fn schemathesis_finds_no_server_errors_and_no_answer_off_the_document() {
    let st = schemathesis();
    let up = Upstream::start();
    // Every success path reachable: a signing key so the JWKS is published
    // (and forward-auth answers with a token), auto-login on, and a login
    // throttle loose enough that refresh and logout are not all 429.
    let dir = tempfile::tempdir().unwrap();
    let key = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(dir.path().join("upstream.pem"))
        .status()
        .expect("running openssl");
    assert!(key.success(), "openssl genpkey");
    let mut config = config(&up);
    config["upstream"] =
        json!({"token": {"algorithm": "ES256", "private_key_file": "upstream.pem"}});
    let file = dir.path().join("agentflow.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let server = Server::start_file(
        dir,
        &file,
        &env(&[
            ("AGENTFLOW_AUTO_LOGIN", "true"),
            ("AGENTFLOW_LOGIN_ATTEMPTS_PER_MINUTE", "1000000"),
        ]),
    );
    assert_eq!(get(&server.url("/.well-known/jwks.json"), &[]).status, 200);
    // An access token, not an API key: schemathesis may revoke every key it
    // can list, and must not lock itself out doing so. Deactivating,
    // demoting or deleting the caller's own account is refused by the
    // server itself (400), so no operation needs excluding.
    let admin = admin_bearer(&server);
    let started = Instant::now();
    // Every operation: no 5xx, and every answer as documented.
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                  response_schema_conformance,response_headers_conformance";
    let report = run_schemathesis(&st, &server, &admin, &["--checks", checks]);
    // The gateway's own operations also refuse what the document rules out.
    // Not the agent's: their bodies are the agent's to validate, and the
    // recording upstream here accepts anything.
    let strict = format!("{checks},negative_data_rejection");
    run_schemathesis(
        &st,
        &server,
        &admin,
        &[
            "--checks",
            &strict,
            "--exclude-operation-id-regex",
            "^agent_",
        ],
    );
    // It did test the API, authenticated: the upstream saw forwarded calls,
    // and the account routes were reached.
    assert!(up.count() > 0, "{report}");
    let audit = get(
        &server.url("/v1/audit?limit=500"),
        &[("authorization", &admin)],
    );
    let kinds: Vec<&Value> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["type"])
        .collect();
    assert!(kinds.contains(&&json!("login.failed")), "{kinds:?}");
    eprintln!("schemathesis ran in {:?}:\n{report}", started.elapsed());
}

/// `st run` on the server's document as `admin` (an `Authorization` value)
/// with `args` added; panics with its report and the server's log unless it
/// passes, else returns the report.
fn run_schemathesis(st: &std::path::Path, server: &Server, admin: &str, args: &[&str]) -> String {
    let out = Command::new(st)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(args)
        .args([
            "--max-examples",
            "10",
            "--workers",
            "2",
            "--request-timeout",
            "10",
        ])
        .arg("--header")
        .arg(format!("Authorization: {admin}"))
        .env("NO_COLOR", "1")
        .current_dir(&server.dir)
        .output()
        .expect("running schemathesis");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis {args:?} found problems:\n{report}\n--- server log ---\n{}",
        server.logs()
    );
    report
}
