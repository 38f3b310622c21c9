//! The operator console at `/admin`: the issue's walkthrough in a real
//! browser (Debian's chromium driven by playwright-core, see
//! `tests/console/flow.mjs`), and the safety properties checked over HTTP:
//! security headers and CSP on every console response, HttpOnly/Strict
//! cookies (`Secure` behind TLS), CSRF refusals, no inline script, session
//! refresh, and nothing admin-only for a non-superuser.

use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use serde_json::json;

use crate::support::*;

const ADMIN_PW: &str = "admin-password-1";

fn console_server(extra: &[(&str, &str)]) -> (Upstream, Server) {
    let up = Upstream::start();
    let mut env = vec![
        ("JWT_SECRET_KEY", SECRET),
        ("AGENTFLOW_SUPERUSER", "admin"),
        ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW),
    ];
    env.extend_from_slice(extra);
    let config = json!({
        "agent": up.base,
        "auth": ["jwt", "api_key"],
        "authorization": {"name": "policy", "path": plugins().rbac, "config": {"roles": {
            "admin": {"*": ["*"]}, "user": {"graph": ["invoke"]}
        }}},
    });
    let server = Server::start(config, &env);
    (up, server)
}

#[test]
fn the_issue_walkthrough_in_a_real_browser() {
    let (_up, server) = console_server(&[]);
    let shots = repo_root().join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let (result, exited_ok) = browser_script(
        "flow.mjs",
        &[
            ("BASE_URL", &server.base),
            ("ADMIN_USER", "admin"),
            ("ADMIN_PASSWORD", ADMIN_PW),
            ("SHOTS_DIR", &shots.to_string_lossy()),
        ],
    );
    assert_eq!(
        result["ok"],
        true,
        "browser walkthrough failed at {:?}: {}\nserver log:\n{}",
        result["step"],
        result["error"],
        server.logs()
    );
    assert!(exited_ok);
    eprintln!(
        "console page loads (ms, in the browser): {}",
        result["load_ms"]
    );
    assert_eq!(result["steps"].as_array().unwrap().len(), 11, "{result}");
    for name in [
        "01-sign-in",
        "02-users",
        "03-bob-inactive",
        "04-api-key-shown-once",
        "05-bob-own-account",
        "06-bob-signed-out",
        "07-audit",
        "08-plugins",
    ] {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("no screenshot {name}"));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
            "{name} is a real PNG"
        );
    }
}

/// A client that does not follow redirects and keeps no cookies.
fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn set_cookies(r: &Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// `name=value` of the `Set-Cookie` for `name`.
fn cookie_pair(cookies: &[String], name: &str) -> Option<String> {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

fn assert_console_headers(r: &Response, what: &str) {
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let csp = h("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(
        h("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{what}");
    assert_eq!(
        h("referrer-policy").as_deref(),
        Some("same-origin"),
        "{what}"
    );
    assert_eq!(h("cache-control").as_deref(), Some("no-store"), "{what}");
}

/// Signs in through the console form; the cookie header to send afterwards.
fn console_sign_in(server: &Server, user: &str, password: &str) -> String {
    let c = client();
    let page = c.get(server.url("/admin/login")).send().unwrap();
    let csrf = cookie_pair(&set_cookies(&page), "af_csrf").unwrap();
    let token = csrf.split_once('=').unwrap().1.to_owned();
    let r = c
        .post(server.url("/admin/login"))
        .header("cookie", &csrf)
        .form(&[
            ("csrf", token.as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "console sign-in as {user}");
    let cookies = set_cookies(&r);
    let access = cookie_pair(&cookies, "af_access").unwrap();
    let refresh = cookie_pair(&cookies, "af_refresh").unwrap();
    format!("{csrf}; {access}; {refresh}")
}

#[test]
fn console_responses_are_locked_down_and_forms_need_csrf() {
    let (_up, server) = console_server(&[]);
    let c = client();

    // `/` has no agent route: it sends browsers to the console.
    let r = c.get(server.url("/")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin");

    // Anonymous: to sign in; the page is locked down and has no inline code.
    let r = c.get(server.url("/admin")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin/login");
    let r = c.get(server.url("/admin/login")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_console_headers(&r, "sign-in page");
    let cookies = set_cookies(&r);
    let csrf_cookie = cookies.iter().find(|c| c.starts_with("af_csrf=")).unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(csrf_cookie.contains(attr), "{csrf_cookie}");
    }
    assert!(!csrf_cookie.contains("Secure"), "plain HTTP: no Secure");
    let html = r.text().unwrap();
    assert!(html.contains("<script src=\"/admin/assets/console.js\" defer></script>"));
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    for inline in [
        " style=",
        " onclick=",
        " onload=",
        " onerror=",
        "javascript:",
    ] {
        assert!(!html.contains(inline), "inline code: {inline}");
    }
    for asset in ["/admin/assets/console.js", "/admin/assets/console.css"] {
        let r = c.get(server.url(asset)).send().unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert_console_headers(&r, asset);
    }

    // Behind a TLS proxy the cookies are Secure.
    let r = c
        .get(server.url("/admin/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .unwrap();
    assert!(set_cookies(&r).iter().all(|c| c.contains("; Secure")));

    // CSRF: no token, a wrong token, or another site's Origin are refused.
    let csrf = cookie_pair(&cookies, "af_csrf").unwrap();
    let token = csrf.split_once('=').unwrap().1.to_owned();
    let creds = [("username", "admin"), ("password", ADMIN_PW)];
    let r = c
        .post(server.url("/admin/login"))
        .form(&creds)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_console_headers(&r, "csrf refusal");
    let mut wrong = creds.to_vec();
    wrong.push(("csrf", "0123456789abcdef0123456789abcdef"));
    let r = c
        .post(server.url("/admin/login"))
        .header("cookie", &csrf)
        .form(&wrong)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut right = creds.to_vec();
    right.push(("csrf", token.as_str()));
    let r = c
        .post(server.url("/admin/login"))
        .header("cookie", &csrf)
        .header("origin", "http://evil.example")
        .form(&right)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site form");
    let r = c
        .post(server.url("/admin/login"))
        .header("cookie", &csrf)
        .form(&right)
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = set_cookies(&r);
    for name in ["af_access", "af_refresh"] {
        let c = session
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap();
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/admin"),
            "{c}"
        );
    }

    // Signed in as admin: a form without the token changes nothing.
    let admin = console_sign_in(&server, "admin", ADMIN_PW);
    let r = c
        .post(server.url("/admin/users"))
        .header("cookie", &admin)
        .form(&[("username", "mallory"), ("password", "mallory-password")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let users = c
        .get(server.url("/admin/users?q=mallory"))
        .header("cookie", &admin)
        .send()
        .unwrap();
    assert_console_headers(&users, "users page");
    assert!(!users.text().unwrap().contains("data-username=\"mallory\""));

    // The console's own pages answer well under 200 ms on the loopback.
    let mut took: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let r = c
                .get(server.url("/admin/users"))
                .header("cookie", &admin)
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().unwrap();
            t.elapsed()
        })
        .collect();
    took.sort();
    eprintln!("GET /admin/users: median {:?}", took[2]);
    assert!(took[2] < Duration::from_millis(200), "{took:?}");
}

#[test]
fn non_superusers_see_only_their_account_and_sessions_refresh() {
    let (_up, server) = console_server(&[
        ("AGENTFLOW_NEW_USER_IS_ACTIVE", "True"),
        ("AGENTFLOW_ACCESS_TOKEN_EXPIRE_SECONDS", "1"),
    ]);
    let admin = bearer(
        post(
            &server.url("/v1/login"),
            &[],
            json!({"username": "admin", "password": ADMIN_PW}),
        )
        .body["access_token"]
            .as_str()
            .unwrap(),
    );
    for name in ["zoe", "secret-operator"] {
        let r = post(
            &server.url("/v1/users"),
            &[("authorization", &admin)],
            json!({"username": name, "password": format!("{name}-password")}),
        );
        assert_eq!(r.status, 201);
    }
    let zoe = console_sign_in(&server, "zoe", "zoe-password");
    let c = client();
    for section in ["/admin/users", "/admin/plugins", "/admin/audit"] {
        let r = c
            .get(server.url(section))
            .header("cookie", &zoe)
            .send()
            .unwrap();
        assert_eq!(r.status(), 303, "{section}");
        assert_eq!(r.headers()["location"], "/admin/account?done=admin_only");
    }

    // The access token (1 s, plus the 5 s leeway JWTs get) expires: the
    // console refreshes it on its own.
    std::thread::sleep(Duration::from_millis(8000)); // past the 5 s leeway
    let r = c
        .get(server.url("/admin/account?done=admin_only"))
        .header("cookie", &zoe)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let rotated = set_cookies(&r);
    let new_access = cookie_pair(&rotated, "af_access").expect("a rotated access token");
    assert!(!zoe.contains(&new_access), "a new token");
    assert!(cookie_pair(&rotated, "af_refresh").is_some());
    let html = r.text().unwrap();
    assert!(html.contains("this is your own account"));
    assert!(html.contains("<strong id=\"me\">zoe</strong>"));
    for admin_only in [
        "secret-operator",
        "data-username",
        "/admin/audit",
        "/admin/plugins",
    ] {
        assert!(
            !html.contains(admin_only),
            "admin data on a user's page: {admin_only}"
        );
    }
    // The old refresh token was used: presenting it again ends that login.
    let r = c
        .get(server.url("/admin/account"))
        .header("cookie", &zoe)
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin/login?why=ended");
    assert!(server.logged("\"type\":\"token.reuse_detected\""));
}
