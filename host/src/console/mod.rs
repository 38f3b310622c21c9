//! The operator console at `/admin`: server-rendered pages (no framework,
//! no CDN, assets embedded in the binary) that act only through the HTTP
//! API, called in-process as the signed-in user (see [`session`]). Every
//! console response carries a strict Content-Security-Policy (no inline
//! script or style) and the usual security headers; every value on a page
//! is escaped (see [`html`]).

mod actions;
pub mod html;
mod pages;
pub mod session;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::routes::AppState;
use session::{
    ACCESS_COOKIE, CSRF_COOKIE, ConsoleError, Origin, REFRESH_COOKIE, Session, set_cookie,
};

/// The console's Content-Security-Policy: only this server's own script,
/// styles and images; no inline code, no framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How long the console keeps its cookies (the refresh token's lifetime
/// bounds the session anyway).
const COOKIE_MAX_AGE: u64 = 7 * 86_400;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's routes (outside API authentication: pages check the
/// session cookie themselves), with the security headers on every response.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(pages::home))
        .route("/admin/", get(pages::home))
        .route("/admin/login", get(pages::sign_in).post(actions::sign_in))
        .route("/admin/logout", post(actions::sign_out))
        .route("/admin/users", get(pages::users).post(actions::create_user))
        .route("/admin/users/{id}/{action}", post(actions::change_user))
        .route("/admin/account", get(pages::account))
        .route("/admin/account/password", post(actions::change_password))
        .route("/admin/account/keys", post(actions::create_key))
        .route("/admin/account/keys/{id}/revoke", post(actions::revoke_key))
        .route("/admin/account/variables", post(actions::create_variable))
        .route(
            "/admin/account/variables/{id}",
            post(actions::update_variable),
        )
        .route(
            "/admin/account/variables/{id}/delete",
            post(actions::delete_variable),
        )
        .route("/admin/plugins", get(pages::plugins))
        .route("/admin/audit", get(pages::audit))
        .route("/admin/assets/console.css", get(css))
        .route("/admin/assets/console.js", get(js))
        .layer(middleware::from_fn(security_headers))
}

/// `GET /`: the AgentFlow API has no route there, so a browser landing on
/// the gateway is sent to the console.
pub async fn root() -> Redirect {
    Redirect::to("/admin")
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
}

/// Adds the console's security headers to every console response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    set(h, "cache-control", "no-store");
    response
}

/// What every console handler needs from the request: its headers and how
/// it was reached.
pub struct Browser {
    /// The request headers (cookies, origin).
    pub headers: HeaderMap,
    /// Peer address and whether cookies get `Secure`.
    pub origin: Origin,
    /// The CSRF token: the cookie's, or one made once for this request (so
    /// the form and the cookie set with it carry the same one).
    csrf: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Browser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let csrf = session::cookie(&parts.headers, CSRF_COOKIE)
            .map(str::to_owned)
            .unwrap_or_else(session::new_csrf);
        Ok(Browser {
            csrf,
            origin: Origin {
                peer,
                secure: session::is_secure(&parts.headers),
            },
            headers: parts.headers.clone(),
        })
    }
}

impl Browser {
    /// The signed-in session, if the cookies carry one.
    pub fn session(&self) -> Option<Session> {
        Session::from_headers(&self.headers, self.origin.clone(), self.csrf.clone())
    }

    /// The CSRF token of this browser (made for this request if it had none).
    pub fn csrf(&self) -> String {
        self.csrf.clone()
    }
}

/// An HTML page response, storing the CSRF token (and rotated tokens).
pub fn html_response(
    status: StatusCode,
    body: String,
    browser: &Browser,
    session: Option<&Session>,
) -> Response {
    let csrf = session
        .map(|s| s.csrf.clone())
        .unwrap_or_else(|| browser.csrf());
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    finish(&mut response, browser, session, &csrf);
    response
}

/// A 303 to `to`, storing the CSRF token (and rotated tokens).
pub fn redirect(to: &str, browser: &Browser, session: Option<&Session>) -> Response {
    let csrf = session
        .map(|s| s.csrf.clone())
        .unwrap_or_else(|| browser.csrf());
    let mut response = Redirect::to(to).into_response();
    finish(&mut response, browser, session, &csrf);
    response
}

fn finish(response: &mut Response, browser: &Browser, session: Option<&Session>, csrf: &str) {
    let secure = browser.origin.secure;
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(CSRF_COOKIE, csrf, COOKIE_MAX_AGE, secure),
    );
    if let Some((access, refresh)) = session.and_then(|s| s.rotated.as_ref()) {
        h.append(
            header::SET_COOKIE,
            set_cookie(ACCESS_COOKIE, access, COOKIE_MAX_AGE, secure),
        );
        h.append(
            header::SET_COOKIE,
            set_cookie(REFRESH_COOKIE, refresh, COOKIE_MAX_AGE, secure),
        );
    }
}

/// Sends the browser to the sign-in page, forgetting its tokens; `why` is
/// shown there (a fixed message chosen by code, never reflected input).
pub fn signed_out(browser: &Browser, why: &str) -> Response {
    let secure = browser.origin.secure;
    let mut response = Redirect::to(&format!("/admin/login?why={why}")).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(ACCESS_COOKIE, "", 0, secure));
    h.append(
        header::SET_COOKIE,
        set_cookie(REFRESH_COOKIE, "", 0, secure),
    );
    response
}

/// The response for a console error: sign in again, or the refusal shown.
pub fn error_response(e: ConsoleError, browser: &Browser, session: Option<&Session>) -> Response {
    match e {
        ConsoleError::SignedOut(_) => signed_out(browser, "ended"),
        ConsoleError::Refused(status, detail) => {
            let body = html::page(
                "Refused",
                html::Section::SignIn,
                None,
                &[html::Notice::Error(detail)],
                "<p><a href=\"/admin\">Back to the console</a></p>",
            );
            html_response(status, body, browser, session)
        }
    }
}

/// A urlencoded form body as name → value (the last value of a repeated name).
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}
