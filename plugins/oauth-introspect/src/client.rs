//! The introspection request (RFC 7662 §2.1): a form POST with the token,
//! authenticated with HTTP Basic client credentials.

use agentflow_plugin_sdk::http::HttpRequest;
use agentflow_plugin_sdk::{Map, Value, host};
use base64::Engine;

use crate::Config;

/// Asks the endpoint about `token`; `Err` says why no answer could be had.
pub fn introspect(cfg: &Config, token: &str) -> Result<Map<String, Value>, String> {
    let secret = host::secret(&cfg.client_secret).ok_or_else(|| {
        format!(
            "secret {:?} is not granted to this plugin or not set (add it to \"secrets\")",
            cfg.client_secret
        )
    })?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form_encode(&cfg.client_id),
        form_encode(&secret)
    ));
    let resp = HttpRequest::post(&cfg.introspection_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .header("authorization", &format!("Basic {basic}"))
        .body(format!(
            "token={}&token_type_hint=access_token",
            form_encode(token)
        ))
        .send()
        .map_err(|e| {
            format!(
                "token introspection at {} failed: {e}",
                cfg.introspection_url
            )
        })?;
    if resp.status != 200 {
        return Err(format!(
            "token introspection at {} answered HTTP {}",
            cfg.introspection_url, resp.status
        ));
    }
    resp.json::<Map<String, Value>>()
        .map_err(|e| format!("token introspection at {}: {e}", cfg.introspection_url))
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
