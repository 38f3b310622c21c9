//! The console's pages (GET): each fetches what it shows from the API as
//! the signed-in user and renders it with every value escaped.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::Value;

use super::html::{Notice, Section, Viewer, csrf_field, esc, page, query_value, time};
use super::session::{ConsoleError, Session};
use super::{Browser, error_response, html_response, redirect};
use crate::routes::AppState;
use crate::store::AuditKind;

/// Users per page.
const USERS_PER_PAGE: u64 = 20;
/// Events per page.
const EVENTS_PER_PAGE: u64 = 50;

/// The signed-in user as pages need them.
pub struct Me {
    /// Account id.
    pub id: String,
    /// Username.
    pub username: String,
    /// Whether admin sections are theirs.
    pub is_superuser: bool,
}

/// The session and its user, or the response that sends the browser to
/// sign in.
pub async fn signed_in(state: &AppState, browser: &Browser) -> Result<(Session, Me), Response> {
    let Some(mut session) = browser.session() else {
        return Err(redirect("/admin/login", browser, None));
    };
    match session
        .api(state, Method::GET, "/v1/users/whoami", None)
        .await
    {
        Ok(v) => Ok((
            session,
            Me {
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                username: v["username"].as_str().unwrap_or_default().to_owned(),
                is_superuser: v["is_superuser"].as_bool().unwrap_or(false),
            },
        )),
        Err(e) => Err(error_response(e, browser, Some(&session))),
    }
}

fn viewer<'a>(me: &'a Me, session: &'a Session) -> Viewer<'a> {
    Viewer {
        username: &me.username,
        is_superuser: me.is_superuser,
        csrf: &session.csrf,
    }
}

/// Fixed texts for `?done=` codes: query text is never shown as such.
fn done_notice(q: &HashMap<String, String>) -> Vec<Notice> {
    let text = match q.get("done").map(String::as_str) {
        Some("created") => "User created.",
        Some("changed") => "User updated.",
        Some("deleted") => "User deleted.",
        Some("password") => "Password changed.",
        Some("revoked") => "API key revoked.",
        Some("variable") => "Variable saved.",
        Some("variable_deleted") => "Variable deleted.",
        Some("admin_only") => "That section is for superusers; this is your own account.",
        _ => return Vec::new(),
    };
    vec![Notice::Done(text.into())]
}

/// `GET /admin`: superusers land on Users, everyone else on their account.
pub async fn home(State(state): State<AppState>, browser: Browser) -> Response {
    match signed_in(&state, &browser).await {
        Ok((s, me)) if me.is_superuser => redirect("/admin/users", &browser, Some(&s)),
        Ok((s, _)) => redirect("/admin/account", &browser, Some(&s)),
        Err(r) => r,
    }
}

/// `GET /admin/login`: the sign-in form.
pub async fn sign_in(browser: Browser, Query(q): Query<HashMap<String, String>>) -> Response {
    let notices: Vec<Notice> = match q.get("why").map(String::as_str) {
        Some("ended") => vec![Notice::Error(
            "Your session has ended; sign in again.".into(),
        )],
        Some("out") => vec![Notice::Done("Signed out.".into())],
        _ => Vec::new(),
    };
    sign_in_page(&browser, &notices, "", StatusCode::OK)
}

/// The sign-in form with `notices`, the username kept.
pub fn sign_in_page(
    browser: &Browser,
    notices: &[Notice],
    username: &str,
    status: StatusCode,
) -> Response {
    let body = format!(
        "<form method=\"post\" action=\"/admin/login\" class=\"card narrow\" id=\"sign-in\">{}\
         <label>Username <input name=\"username\" autocomplete=\"username\" required value=\"{}\"></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>",
        csrf_field(&browser.csrf()),
        esc(username)
    );
    let html = page("Sign in", Section::SignIn, None, notices, &body);
    html_response(status, html, browser, None)
}

/// `GET /admin/users` (superusers): search, paging, New User, and per-user
/// actions. Anyone else is shown their own account.
pub async fn users(
    State(state): State<AppState>,
    browser: Browser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (mut s, me) = match signed_in(&state, &browser).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !me.is_superuser {
        return redirect("/admin/account?done=admin_only", &browser, Some(&s));
    }
    users_page(&state, &browser, &mut s, &me, &q, done_notice(&q)).await
}

/// The Users page with `notices`.
pub async fn users_page(
    state: &AppState,
    browser: &Browser,
    s: &mut Session,
    me: &Me,
    q: &HashMap<String, String>,
    notices: Vec<Notice>,
) -> Response {
    let search = q.get("q").map(|v| v.trim().to_owned()).unwrap_or_default();
    let offset: u64 = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let path = format!(
        "/v1/users?offset={offset}&limit={USERS_PER_PAGE}&q={}",
        query_value(&search)
    );
    let list = match s.api(state, Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) => return error_response(e, browser, Some(s)),
    };
    let csrf = csrf_field(&s.csrf);
    let mut body = String::new();
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/admin/users\" class=\"row\">\
         <label>Search <input name=\"q\" value=\"{}\"></label><button type=\"submit\">Search</button></form>",
        esc(&search)
    );
    body.push_str("<table id=\"users\"><thead><tr><th>Username</th><th>Active</th><th>Superuser</th><th>Created</th><th>Actions</th></tr></thead><tbody>");
    for u in list["items"].as_array().into_iter().flatten() {
        let id = u["id"].as_str().unwrap_or_default();
        let name = u["username"].as_str().unwrap_or_default();
        let active = u["is_active"].as_bool().unwrap_or(false);
        let superuser = u["is_superuser"].as_bool().unwrap_or(false);
        let act = |action: &str, label: &str| {
            format!(
                "<form method=\"post\" action=\"/admin/users/{}/{action}\" class=\"inline\">{csrf}<button type=\"submit\" name=\"do\" value=\"{action}\">{label}</button></form>",
                esc(id)
            )
        };
        let mut actions = String::new();
        if id != me.id {
            actions.push_str(&if active {
                act("deactivate", "Deactivate")
            } else {
                act("activate", "Activate")
            });
            actions.push_str(&if superuser {
                act("demote", "Demote")
            } else {
                act("promote", "Promote")
            });
        }
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"/admin/users/{id}/password\" class=\"inline\">{csrf}\
             <input name=\"password\" type=\"password\" minlength=\"8\" required placeholder=\"new password\" aria-label=\"New password for {name}\" autocomplete=\"new-password\">\
             <button type=\"submit\">Reset password</button></form>",
            id = esc(id),
            name = esc(name),
        );
        if id != me.id {
            let _ = write!(
                actions,
                "<form method=\"post\" action=\"/admin/users/{id}/delete\" class=\"inline danger\">{csrf}\
                 <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> sure</label>\
                 <button type=\"submit\">Delete</button></form>",
                id = esc(id)
            );
        }
        let _ = write!(
            body,
            "<tr data-username=\"{n}\"><td class=\"name\">{n}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"actions\">{actions}</td></tr>",
            if active { "yes" } else { "no" },
            if superuser { "yes" } else { "no" },
            esc(&time(u["created_at"].as_u64())),
            n = esc(name),
        );
    }
    body.push_str("</tbody></table>");
    let total = list["total"].as_u64().unwrap_or(0);
    body.push_str(&pager(
        "/admin/users",
        &[("q", &search)],
        offset,
        USERS_PER_PAGE,
        total,
    ));
    let _ = write!(
        body,
        "<h2>New user</h2><form method=\"post\" action=\"/admin/users\" class=\"card\" id=\"new-user\">{csrf}\
         <label>Username <input name=\"username\" required minlength=\"3\" maxlength=\"64\" autocomplete=\"off\"></label>\
         <label>Password <input name=\"password\" type=\"password\" required minlength=\"8\" autocomplete=\"new-password\"></label>\
         <label><input type=\"checkbox\" name=\"is_active\" value=\"yes\" checked> Active</label>\
         <label><input type=\"checkbox\" name=\"is_superuser\" value=\"yes\"> Superuser</label>\
         <button type=\"submit\">Create user</button></form>"
    );
    let html = page(
        "Users",
        Section::Users,
        Some(&viewer(me, s)),
        &notices,
        &body,
    );
    html_response(StatusCode::OK, html, browser, Some(s))
}

/// Previous / next links keeping `params`.
fn pager(base: &str, params: &[(&str, &str)], offset: u64, per_page: u64, total: u64) -> String {
    let link = |to: u64, label: &str| {
        let mut href = format!("{base}?offset={to}");
        for (k, v) in params {
            if !v.is_empty() {
                let _ = write!(href, "&{k}={}", query_value(v));
            }
        }
        format!(
            "<a href=\"{}\" rel=\"{}\">{label}</a>",
            esc(&href),
            if label.starts_with('←') {
                "prev"
            } else {
                "next"
            }
        )
    };
    let mut out = String::from("<nav class=\"pager\">");
    if offset > 0 {
        out.push_str(&link(offset.saturating_sub(per_page), "← Newer"));
    }
    let shown_to = (offset + per_page).min(total);
    let _ = write!(
        out,
        "<span>{}–{} of {total}</span>",
        if total == 0 { 0 } else { offset + 1 },
        shown_to
    );
    if offset + per_page < total {
        out.push_str(&link(offset + per_page, "Older →"));
    }
    out.push_str("</nav>");
    out
}

/// `GET /admin/account`: password, API keys, variables (everyone).
pub async fn account(
    State(state): State<AppState>,
    browser: Browser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (mut s, me) = match signed_in(&state, &browser).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    account_page(&state, &browser, &mut s, &me, done_notice(&q), None).await
}

/// The account page with `notices`, and a just-created key shown once.
pub async fn account_page(
    state: &AppState,
    browser: &Browser,
    s: &mut Session,
    me: &Me,
    notices: Vec<Notice>,
    new_key: Option<&str>,
) -> Response {
    let keys = match s.api(state, Method::GET, "/v1/api-keys", None).await {
        Ok(v) => v,
        Err(e) => return error_response(e, browser, Some(s)),
    };
    let vars = match s.api(state, Method::GET, "/v1/variables", None).await {
        Ok(v) => v,
        Err(e) => return error_response(e, browser, Some(s)),
    };
    let csrf = csrf_field(&s.csrf);
    let mut body = String::new();
    let _ = write!(
        body,
        "<p>Signed in as <strong id=\"me\">{}</strong>{}.</p>",
        esc(&me.username),
        if me.is_superuser { " (superuser)" } else { "" }
    );
    let _ = write!(
        body,
        "<h2>Password</h2><form method=\"post\" action=\"/admin/account/password\" class=\"card\">{csrf}\
         <label>New password <input name=\"password\" type=\"password\" minlength=\"8\" required autocomplete=\"new-password\"></label>\
         <label>Repeat <input name=\"repeat\" type=\"password\" minlength=\"8\" required autocomplete=\"new-password\"></label>\
         <button type=\"submit\">Change password</button></form>"
    );
    body.push_str("<h2>API keys</h2>");
    if let Some(key) = new_key {
        let _ = write!(
            body,
            "<div class=\"card new-key\" id=\"new-key-panel\"><p>Your new key. It is shown this once: copy it now.</p>\
             <input id=\"new-key\" readonly value=\"{}\" aria-label=\"New API key\">\
             <button type=\"button\" class=\"copy\" data-copy=\"new-key\">Copy</button></div>",
            esc(key)
        );
    }
    body.push_str("<table id=\"keys\"><thead><tr><th>Name</th><th>Key</th><th>Created</th><th>Last used</th><th></th></tr></thead><tbody>");
    for k in keys.as_array().into_iter().flatten() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>\
             <form method=\"post\" action=\"/admin/account/keys/{}/revoke\" class=\"inline danger\">{csrf}\
             <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> sure</label>\
             <button type=\"submit\">Revoke</button></form></td></tr>",
            esc(k["name"].as_str().unwrap_or_default()),
            esc(k["masked"].as_str().unwrap_or_default()),
            esc(&time(k["created_at"].as_u64())),
            esc(&time(k["last_used_at"].as_u64())),
            esc(k["id"].as_str().unwrap_or_default()),
        );
    }
    let _ = write!(
        body,
        "</tbody></table><form method=\"post\" action=\"/admin/account/keys\" class=\"row\" id=\"new-key-form\">{csrf}\
         <label>Name <input name=\"name\" maxlength=\"100\"></label><button type=\"submit\">Create API key</button></form>"
    );
    body.push_str("<h2>Variables</h2><table id=\"variables\"><thead><tr><th>Name</th><th>Type</th><th>Value</th><th>Change</th><th></th></tr></thead><tbody>");
    for v in vars.as_array().into_iter().flatten() {
        let id = esc(v["id"].as_str().unwrap_or_default());
        let kind = v["type"].as_str().unwrap_or_default();
        // Credential values never come from the API; generic ones are shown.
        let value = match v["value"].as_str() {
            Some(text) => format!("<code>{}</code>", esc(text)),
            None => "<span class=\"muted\">hidden</span>".into(),
        };
        let _ = write!(
            body,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{value}</td><td>\
             <form method=\"post\" action=\"/admin/account/variables/{id}\" class=\"inline\">{csrf}\
             <input name=\"value\" placeholder=\"new value\" aria-label=\"New value\" autocomplete=\"off\">{}\
             <button type=\"submit\">Save</button></form></td><td>\
             <form method=\"post\" action=\"/admin/account/variables/{id}/delete\" class=\"inline danger\">{csrf}\
             <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> sure</label>\
             <button type=\"submit\">Delete</button></form></td></tr>",
            esc(v["name"].as_str().unwrap_or_default()),
            esc(kind),
            kind_select(kind),
        );
    }
    let _ = write!(
        body,
        "</tbody></table><form method=\"post\" action=\"/admin/account/variables\" class=\"card\" id=\"new-variable\">{csrf}\
         <label>Name <input name=\"name\" required maxlength=\"128\" autocomplete=\"off\"></label>\
         <label>Value <input name=\"value\" autocomplete=\"off\"></label>{}\
         <button type=\"submit\">Add variable</button></form>",
        kind_select("credential")
    );
    let html = page(
        "My account",
        Section::Account,
        Some(&viewer(me, s)),
        &notices,
        &body,
    );
    let mut response = html_response(StatusCode::OK, html, browser, Some(s));
    if new_key.is_some() {
        // A page that holds a secret is never stored.
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

fn kind_select(current: &str) -> String {
    let opt = |value: &str, label: &str| {
        let sel = if value.eq_ignore_ascii_case(current) {
            " selected"
        } else {
            ""
        };
        format!("<option value=\"{value}\"{sel}>{label}</option>")
    };
    format!(
        "<select name=\"type\" aria-label=\"Type\">{}{}</select>",
        opt("credential", "Credential"),
        opt("generic", "Generic")
    )
}

/// `GET /admin/plugins` (superusers): what each plugin runs and how it fares.
pub async fn plugins(State(state): State<AppState>, browser: Browser) -> Response {
    let (mut s, me) = match signed_in(&state, &browser).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !me.is_superuser {
        return redirect("/admin/account?done=admin_only", &browser, Some(&s));
    }
    let list = match s.api(&state, Method::GET, "/v1/plugins", None).await {
        Ok(v) => v,
        Err(e) => return error_response(e, &browser, Some(&s)),
    };
    let mut body = String::from(
        "<table id=\"plugins\"><thead><tr><th>Name</th><th>Slot</th><th>Contract</th><th>SHA-256</th>\
         <th>Loaded</th><th>Last reload error</th><th>Calls</th><th>Refusals</th><th>Failures</th>\
         <th>p50</th><th>p99</th></tr></thead><tbody>",
    );
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        body.push_str(
            "<tr><td colspan=\"11\" class=\"muted\">No plugins are configured.</td></tr>",
        );
    }
    for p in &plugins {
        let text = |k: &str| esc(&value_text(&p[k]));
        let latency = |k: &str| match p[k].as_f64() {
            Some(us) => format!("{:.0} µs", us),
            None => "–".into(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code class=\"hash\">{}</code></td><td>{}</td>\
             <td class=\"error-text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text("name"),
            text("slot"),
            text("contract"),
            text("sha256"),
            esc(&time(p["loaded_at"].as_u64())),
            text("last_error"),
            text("calls"),
            text("denials"),
            text("failures"),
            esc(&latency("latency_p50_us")),
            esc(&latency("latency_p99_us")),
        );
    }
    body.push_str("</tbody></table>");
    // What the last reload of agentflow.json did (a refused one keeps the
    // last good setup serving, so the error is worth seeing here).
    let config = &list["config"];
    if config.is_object() {
        let _ = write!(
            body,
            "<p id=\"config-reload\">Config <code>{}</code>: watched {}, {} reloads, serving since {}.",
            esc(&value_text(&config["file"])),
            if config["watch"] == true { "yes" } else { "no" },
            esc(&value_text(&config["reloads"])),
            esc(&time(config["loaded_at"].as_u64())),
        );
        if let Some(error) = config["last_error"].as_str() {
            let _ = write!(
                body,
                " <span class=\"error-text\">Last reload refused: {}</span>",
                esc(error)
            );
        }
        body.push_str("</p>");
    }
    let html = page(
        "Plugins",
        Section::Plugins,
        Some(&viewer(&me, &s)),
        &[],
        &body,
    );
    html_response(StatusCode::OK, html, &browser, Some(&s))
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `datetime-local` value (`2026-01-31T12:00`) as RFC 3339 UTC; other
/// text (unix seconds, full RFC 3339) as given.
fn time_filter(v: &str) -> String {
    let v = v.trim();
    if v.len() == 16 && v.as_bytes().get(10) == Some(&b'T') {
        format!("{v}:00Z")
    } else {
        v.to_owned()
    }
}

/// `GET /admin/audit` (superusers): the trail, filtered and paged.
pub async fn audit(
    State(state): State<AppState>,
    browser: Browser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (mut s, me) = match signed_in(&state, &browser).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !me.is_superuser {
        return redirect("/admin/account?done=admin_only", &browser, Some(&s));
    }
    let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (kind, user, since, until) = (get("type"), get("user"), get("since"), get("until"));
    let offset: u64 = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let path = format!(
        "/v1/audit?offset={offset}&limit={EVENTS_PER_PAGE}&type={}&user={}&since={}&until={}",
        query_value(&kind),
        query_value(&user),
        query_value(&time_filter(&since)),
        query_value(&time_filter(&until)),
    );
    let mut notices = Vec::new();
    let list = match s.api(&state, Method::GET, &path, None).await {
        Ok(v) => v,
        Err(ConsoleError::Refused(_, detail)) => {
            notices.push(Notice::Error(detail));
            Value::Null
        }
        Err(e) => return error_response(e, &browser, Some(&s)),
    };
    let mut body = String::from(
        "<form method=\"get\" action=\"/admin/audit\" class=\"row\" id=\"audit-filter\"><label>Type <select name=\"type\"><option value=\"\">any</option>",
    );
    for k in AuditKind::ALL {
        let sel = if k.as_str() == kind { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{k}\"{sel}>{k}</option>");
    }
    let _ = write!(
        body,
        "</select></label><label>User <input name=\"user\" value=\"{}\"></label>\
         <label>Since <input name=\"since\" type=\"datetime-local\" value=\"{}\"></label>\
         <label>Until <input name=\"until\" type=\"datetime-local\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        esc(&user),
        esc(&since),
        esc(&until)
    );
    body.push_str("<table id=\"audit\"><thead><tr><th>Time</th><th>Type</th><th>Actor</th><th>Subject</th><th>Client</th><th>Details</th><th>Request</th></tr></thead><tbody>");
    for e in list["items"].as_array().into_iter().flatten() {
        let text = |k: &str| esc(&value_text(&e[k]));
        let details = match &e["details"] {
            Value::Object(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(&value_text(v))))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let _ = write!(
            body,
            "<tr data-type=\"{ty}\"><td>{}</td><td class=\"type\">{ty}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"details\">{details}</td><td><code>{}</code></td></tr>",
            esc(&time(e["time"].as_u64())),
            text("actor"),
            text("subject"),
            text("client_ip"),
            text("request_id"),
            ty = text("type"),
        );
    }
    body.push_str("</tbody></table>");
    let total = list["total"].as_u64().unwrap_or(0);
    body.push_str(&pager(
        "/admin/audit",
        &[
            ("type", &kind),
            ("user", &user),
            ("since", &since),
            ("until", &until),
        ],
        offset,
        EVENTS_PER_PAGE,
        total,
    ));
    let html = page(
        "Audit",
        Section::Audit,
        Some(&viewer(&me, &s)),
        &notices,
        &body,
    );
    html_response(StatusCode::OK, html, &browser, Some(&s))
}
