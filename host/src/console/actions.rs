//! The console's forms (POST): each checks the CSRF token, calls the API as
//! the signed-in user, and answers with a redirect (done) or the page again
//! with the API's refusal shown.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{Method, StatusCode, header};
use serde_json::json;

use super::html::Notice;
use super::pages::{Me, account_page, sign_in_page, signed_in, users_page};
use super::session::{
    self, ACCESS_COOKIE, ConsoleError, REFRESH_COOKIE, Session, csrf_ok, set_cookie,
};
use super::{Browser, COOKIE_MAX_AGE, error_response, form_fields, redirect, signed_out};
use crate::routes::AppState;

/// The answer to a form whose CSRF token is missing or wrong.
fn csrf_refused(browser: &Browser) -> Response {
    error_response(
        ConsoleError::Refused(
            StatusCode::FORBIDDEN,
            "This form is out of date or was not sent by the console; reload the page and try again."
                .into(),
        ),
        browser,
        None,
    )
}

/// The form's fields after the CSRF check; `Err` is the refusal to send.
#[allow(
    clippy::result_large_err,
    reason = "the Err is the refusal response itself, sent as is"
)]
fn checked_form(browser: &Browser, body: &[u8]) -> Result<HashMap<String, String>, Response> {
    let fields = form_fields(body);
    let token = fields.get("csrf").map(String::as_str).unwrap_or_default();
    if csrf_ok(&browser.headers, token) {
        Ok(fields)
    } else {
        Err(csrf_refused(browser))
    }
}

/// A signed-in form: the session, its user and the fields.
async fn signed_in_form(
    state: &AppState,
    browser: &Browser,
    body: &[u8],
) -> Result<(Session, Me, HashMap<String, String>), Response> {
    let fields = checked_form(browser, body)?;
    let (session, me) = signed_in(state, browser).await?;
    Ok((session, me, fields))
}

fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> &'a str {
    fields.get(name).map(String::as_str).unwrap_or_default()
}

fn checked(fields: &HashMap<String, String>, name: &str) -> bool {
    fields.contains_key(name)
}

/// `POST /admin/login`: signs in through `POST /v1/login` and keeps the
/// tokens in HttpOnly cookies.
pub async fn sign_in(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let fields = match checked_form(&browser, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let username = field(&fields, "username");
    let login = json!({ "username": username, "password": field(&fields, "password") });
    let (status, pair) = session::call(
        &state,
        &browser.origin,
        Method::POST,
        "/v1/login",
        None,
        Some(login),
    )
    .await;
    let tokens = match status {
        StatusCode::OK => (
            pair["access_token"].as_str(),
            pair["refresh_token"].as_str(),
        ),
        _ => (None, None),
    };
    let (Some(access), Some(refresh)) = tokens else {
        let status = if status.is_success() {
            StatusCode::BAD_GATEWAY
        } else {
            status
        };
        let why = Notice::Error(session::detail(&pair));
        return sign_in_page(&browser, &[why], username, status);
    };
    let mut response = redirect("/admin", &browser, None);
    let secure = browser.origin.secure;
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(ACCESS_COOKIE, access, COOKIE_MAX_AGE, secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(REFRESH_COOKIE, refresh, COOKIE_MAX_AGE, secure),
    );
    response
}

/// `POST /admin/logout`: ends the login (`POST /v1/logout`) and forgets the
/// cookies.
pub async fn sign_out(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    if let Err(r) = checked_form(&browser, &body) {
        return r;
    }
    if let Some(s) = browser.session()
        && let Some(refresh) = s.refresh_token()
    {
        let form = json!({ "refresh_token": refresh });
        session::call(
            &state,
            &browser.origin,
            Method::POST,
            "/v1/logout",
            None,
            Some(form),
        )
        .await;
    }
    signed_out(&browser, "out")
}

/// `POST /admin/users` (superusers): New User.
pub async fn create_user(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (mut s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let new = json!({
        "username": field(&f, "username"),
        "password": field(&f, "password"),
        "is_active": checked(&f, "is_active"),
        "is_superuser": checked(&f, "is_superuser"),
    });
    match s.api(&state, Method::POST, "/v1/users", Some(new)).await {
        Ok(_) => redirect("/admin/users?done=created", &browser, Some(&s)),
        Err(ConsoleError::Refused(_, detail)) => {
            users_page(
                &state,
                &browser,
                &mut s,
                &me,
                &HashMap::new(),
                vec![Notice::Error(detail)],
            )
            .await
        }
        Err(e) => error_response(e, &browser, Some(&s)),
    }
}

/// `POST /admin/users/{id}/{action}` (superusers): activate, deactivate,
/// promote, demote, password (reset) or delete (needs `confirm`).
pub async fn change_user(
    State(state): State<AppState>,
    browser: Browser,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (mut s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let path = format!("/v1/users/{}", super::html::query_value(&id));
    let (method, patch, done) = match action.as_str() {
        "activate" => (Method::PATCH, Some(json!({"is_active": true})), "changed"),
        "deactivate" => (Method::PATCH, Some(json!({"is_active": false})), "changed"),
        "promote" => (
            Method::PATCH,
            Some(json!({"is_superuser": true})),
            "changed",
        ),
        "demote" => (
            Method::PATCH,
            Some(json!({"is_superuser": false})),
            "changed",
        ),
        "password" => (
            Method::PATCH,
            Some(json!({"password": field(&f, "password")})),
            "changed",
        ),
        "delete" if field(&f, "confirm") == "yes" => (Method::DELETE, None, "deleted"),
        "delete" => {
            let why = Notice::Error("Tick \"sure\" to delete a user.".into());
            return users_page(&state, &browser, &mut s, &me, &HashMap::new(), vec![why]).await;
        }
        _ => {
            return error_response(
                ConsoleError::Refused(StatusCode::NOT_FOUND, "unknown action".into()),
                &browser,
                Some(&s),
            );
        }
    };
    match s.api(&state, method, &path, patch).await {
        Ok(_) => redirect(&format!("/admin/users?done={done}"), &browser, Some(&s)),
        Err(ConsoleError::Refused(_, detail)) => {
            users_page(
                &state,
                &browser,
                &mut s,
                &me,
                &HashMap::new(),
                vec![Notice::Error(detail)],
            )
            .await
        }
        Err(e) => error_response(e, &browser, Some(&s)),
    }
}

/// Runs an account action; done → redirect with `done`, refused → the
/// account page with the reason.
async fn account_action(
    state: &AppState,
    browser: &Browser,
    (mut s, me): (Session, Me),
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    done: &str,
) -> Response {
    match s.api(state, method, path, body).await {
        Ok(_) => redirect(&format!("/admin/account?done={done}"), browser, Some(&s)),
        Err(ConsoleError::Refused(_, detail)) => {
            account_page(
                state,
                browser,
                &mut s,
                &me,
                vec![Notice::Error(detail)],
                None,
            )
            .await
        }
        Err(e) => error_response(e, browser, Some(&s)),
    }
}

/// `POST /admin/account/password`: the caller's own password.
pub async fn change_password(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (mut s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if field(&f, "password") != field(&f, "repeat") {
        let why = Notice::Error("The two passwords differ.".into());
        return account_page(&state, &browser, &mut s, &me, vec![why], None).await;
    }
    let path = format!("/v1/users/{}", me.id);
    let patch = json!({ "password": field(&f, "password") });
    account_action(
        &state,
        &browser,
        (s, me),
        Method::PATCH,
        &path,
        Some(patch),
        "password",
    )
    .await
}

/// `POST /admin/account/keys`: creates a key and shows it this once.
pub async fn create_key(State(state): State<AppState>, browser: Browser, body: Bytes) -> Response {
    let (mut s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let new = json!({ "name": field(&f, "name") });
    match s.api(&state, Method::POST, "/v1/api-keys", Some(new)).await {
        Ok(created) => {
            let key = created["key"].as_str().unwrap_or_default().to_owned();
            let done = Notice::Done("API key created.".into());
            account_page(&state, &browser, &mut s, &me, vec![done], Some(&key)).await
        }
        Err(ConsoleError::Refused(_, detail)) => {
            account_page(
                &state,
                &browser,
                &mut s,
                &me,
                vec![Notice::Error(detail)],
                None,
            )
            .await
        }
        Err(e) => error_response(e, &browser, Some(&s)),
    }
}

/// `POST /admin/account/keys/{id}/revoke` (needs `confirm`).
pub async fn revoke_key(
    State(state): State<AppState>,
    browser: Browser,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (mut s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if field(&f, "confirm") != "yes" {
        let why = Notice::Error("Tick \"sure\" to revoke a key.".into());
        return account_page(&state, &browser, &mut s, &me, vec![why], None).await;
    }
    let path = format!("/v1/api-keys/{}", super::html::query_value(&id));
    account_action(
        &state,
        &browser,
        (s, me),
        Method::DELETE,
        &path,
        None,
        "revoked",
    )
    .await
}

/// `POST /admin/account/variables`: a new variable.
pub async fn create_variable(
    State(state): State<AppState>,
    browser: Browser,
    body: Bytes,
) -> Response {
    let (s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let new = json!({
        "name": field(&f, "name"),
        "value": field(&f, "value"),
        "type": field(&f, "type"),
    });
    account_action(
        &state,
        &browser,
        (s, me),
        Method::POST,
        "/v1/variables",
        Some(new),
        "variable",
    )
    .await
}

/// `POST /admin/account/variables/{id}`: a new value and/or type.
pub async fn update_variable(
    State(state): State<AppState>,
    browser: Browser,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut patch = serde_json::Map::new();
    if !field(&f, "value").is_empty() {
        patch.insert("value".into(), json!(field(&f, "value")));
    }
    if !field(&f, "type").is_empty() {
        patch.insert("type".into(), json!(field(&f, "type")));
    }
    let path = format!("/v1/variables/{}", super::html::query_value(&id));
    account_action(
        &state,
        &browser,
        (s, me),
        Method::PATCH,
        &path,
        Some(patch.into()),
        "variable",
    )
    .await
}

/// `POST /admin/account/variables/{id}/delete` (needs `confirm`).
pub async fn delete_variable(
    State(state): State<AppState>,
    browser: Browser,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (mut s, me, f) = match signed_in_form(&state, &browser, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if field(&f, "confirm") != "yes" {
        let why = Notice::Error("Tick \"sure\" to delete a variable.".into());
        return account_page(&state, &browser, &mut s, &me, vec![why], None).await;
    }
    let path = format!("/v1/variables/{}", super::html::query_value(&id));
    account_action(
        &state,
        &browser,
        (s, me),
        Method::DELETE,
        &path,
        None,
        "variable_deleted",
    )
    .await
}
