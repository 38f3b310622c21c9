//! The contract 0.3 reference plugins in a real chain: `plugins/totp` (a
//! second factor after `jwt`) and `plugins/webhook-hmac` (signed webhook
//! deliveries before `jwt`), each checked by what the client gets and by
//! what reached (or did not reach) the agent.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::support::*;

/// RFC 6238's test seed (`12345678901234567890`) and its base32 form, as an
/// authenticator app would show it.
const SEED: &[u8] = b"12345678901234567890";
const SEED_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// RFC 4226 HOTP with HMAC-SHA1 and dynamic truncation, written here from
/// the RFC rather than taken from the plugin, so a bug there cannot hide.
fn hotp(seed: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(seed).unwrap();
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let value = u32::from_be_bytes(hash[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!(
        "{:0width$}",
        value % 10u32.pow(digits),
        width = digits as usize
    )
}

/// The 6-digit code for the 30 s step holding unix time `t`.
fn totp_at(t: u64) -> String {
    hotp(SEED, t / 30, 6)
}

#[test]
fn the_test_totp_matches_rfc_6238() {
    // Appendix B, SHA-1 column (8 digits).
    for (t, code) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_234_567_890, "89005924"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(hotp(SEED, t / 30, 8), code, "T = {t}");
    }
}

/// A 6-digit code that is wrong at every step the plugin could accept
/// around now (skew 1), even if a step boundary passes meanwhile.
fn wrong_code() -> String {
    let t = now();
    let near: Vec<String> = (0..=3).map(|i| totp_at(t + i * 30 - 30)).collect();
    (0..)
        .map(|n: u32| format!("{:06}", (n * 7919) % 1_000_000))
        .find(|c| !near.contains(c))
        .unwrap()
}

/// A server with `jwt` then the totp authorizer configured by `totp`.
fn totp_server(up: &Upstream, totp: Value) -> Server {
    Server::start(
        json!({
            "agent": up.base,
            "auth": "jwt",
            "authorization": {"path": plugins().totp, "config": totp},
        }),
        &[("JWT_SECRET_KEY", SECRET)],
    )
}

fn token(user: &str, extra: Value) -> String {
    let mut claims = json!({"sub": user, "exp": now() + 600});
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        c.extend(e);
    }
    hs256(SECRET, claims)
}

#[test]
fn totp_from_a_header_allows_a_fresh_code_once() {
    let up = Upstream::start();
    let server = totp_server(
        &up,
        json!({"enroll": {"alice": SEED_BASE32}, "code_from": "header:x-totp-code"}),
    );
    let alice = bearer(&token("alice", json!({})));
    let threads = server.url("/v1/threads");

    let missing = get(&threads, &[("authorization", &alice)]);
    assert_eq!(missing.status, 401, "{:?}", missing.body);
    assert_eq!(missing.detail(), "one-time code required");

    let wrong = wrong_code();
    let refused = get(
        &threads,
        &[("authorization", &alice), ("x-totp-code", &wrong)],
    );
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.detail(), "invalid one-time code");
    assert_eq!(up.count(), 0, "a refused request reached the agent");

    let code = totp_at(now());
    let allowed = get(
        &threads,
        &[("authorization", &alice), ("x-totp-code", &code)],
    );
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().path_and_query, "/v1/threads");
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("alice"));
    // The same code again: its step was claimed by the first use.
    let replayed = get(
        &threads,
        &[("authorization", &alice), ("x-totp-code", &code)],
    );
    assert_eq!(replayed.status, 401, "{:?}", replayed.body);
    assert_eq!(replayed.detail(), "one-time code already used");
    assert_eq!(up.count(), 1, "a replayed code reached the agent");

    // A caller with no seed is a known user without a second factor: 403.
    let bob = bearer(&token("bob", json!({})));
    let unenrolled = get(&threads, &[("authorization", &bob), ("x-totp-code", &code)]);
    assert_eq!(unenrolled.status, 403, "{:?}", unenrolled.body);
    assert_eq!(unenrolled.detail(), "no second factor enrolled");
    assert_eq!(up.count(), 1);
}

#[test]
fn totp_from_a_jwt_claim_refuses_replays_and_limits_failures() {
    let up = Upstream::start();
    let server = totp_server(
        &up,
        json!({
            "enroll": {"alice": SEED_BASE32, "carol": SEED_BASE32},
            "code_from": "jwt:code",
            "max_failures": 2,
            "failure_window_s": 120,
        }),
    );
    let threads = server.url("/v1/threads");
    let code = totp_at(now());
    let with_code = bearer(&token("alice", json!({"code": code})));
    let allowed = get(&threads, &[("authorization", &with_code)]);
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("alice"));
    // The same token again carries the same, now used, code.
    let replayed = get(&threads, &[("authorization", &with_code)]);
    assert_eq!(replayed.status, 401, "{:?}", replayed.body);
    assert_eq!(replayed.detail(), "one-time code already used");
    // A code in a header is not read when the config names the claim.
    let plain = bearer(&token("alice", json!({})));
    let header_only = get(
        &threads,
        &[("authorization", &plain), ("x-totp-code", &totp_at(now()))],
    );
    assert_eq!(header_only.status, 401, "{:?}", header_only.body);
    assert_eq!(header_only.detail(), "one-time code required");
    assert_eq!(up.count(), 1);

    // carol guesses: the first wrong code is 401, the second reaches the
    // limit (429 with Retry-After), and then even a right code waits.
    let guess = bearer(&token("carol", json!({"code": wrong_code()})));
    let first = get(&threads, &[("authorization", &guess)]);
    assert_eq!(first.status, 401, "{:?}", first.body);
    let second = get(&threads, &[("authorization", &guess)]);
    assert_eq!(second.status, 429, "{:?}", second.body);
    assert_eq!(second.header("retry-after"), Some("120"));
    let right = bearer(&token("carol", json!({"code": totp_at(now())})));
    let locked = get(&threads, &[("authorization", &right)]);
    assert_eq!(locked.status, 429, "{:?}", locked.body);
    assert_eq!(up.count(), 1, "a refused request reached the agent");
}

const WEBHOOK_SECRET: &str = "whsec-e2e-0123456789abcdef";

/// `sha256=<hex HMAC-SHA256(secret, body)>`, as GitHub signs deliveries.
fn signature(body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs exactly `body` (JSON), so the signature covers the bytes sent.
fn post_bytes(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

/// A server with the webhook plugin first and `jwt` after it.
fn webhook_server(up: &Upstream) -> Server {
    Server::start(
        json!({
            "agent": up.base,
            "auth": [
                {
                    "method": "custom", "path": plugins().webhook_hmac,
                    "secrets": ["WEBHOOK_SECRET"], "body_kb": 1,
                    "config": {"secret": "WEBHOOK_SECRET", "user_id": "github", "roles": ["webhook"]}
                },
                "jwt"
            ],
            // The bytes the sender signed are the bytes the agent gets.
            "upstream": {"merge_body": false},
        }),
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
}

#[test]
fn webhook_hmac_accepts_signed_bodies_only() {
    let up = Upstream::start();
    let server = webhook_server(&up);
    let invoke = server.url("/v1/graph/invoke");
    let body = br#"{"input": {"messages": [{"role": "user", "content": "deploy"}]}, "config": {"thread_id": "t1"}}"#;
    let sig = signature(body);

    let signed = post_bytes(&invoke, &[("x-hub-signature-256", &sig)], body);
    assert_eq!(signed.status, 200, "{:?}", signed.body);
    let seen = up.last();
    assert_eq!(seen.body.as_ref(), body, "the agent got other bytes");
    assert_eq!(seen.header("x-agentflow-user-id"), Some("github"));
    assert_eq!(
        seen.header("x-hub-signature-256"),
        None,
        "a credential was forwarded"
    );

    // One byte changed after signing: 401, and the agent never sees it.
    let tampered: Vec<u8> = body
        .iter()
        .map(|&b| if b == b'1' { b'2' } else { b })
        .collect();
    assert_ne!(tampered, body);
    let refused = post_bytes(&invoke, &[("x-hub-signature-256", &sig)], &tampered);
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.detail(), "invalid signature");
    // A signature that is not even hex, or under another prefix.
    for bad in ["sha256=zz", &sig.replace("sha256=", "sha1=")] {
        let r = post_bytes(&invoke, &[("x-hub-signature-256", bad)], body);
        assert_eq!(r.status, 401, "{bad}: {:?}", r.body);
    }
    // A body over `body_kb` cannot be verified.
    let big = format!(r#"{{"input": "{}"}}"#, "x".repeat(2048));
    let too_large = post_bytes(
        &invoke,
        &[("x-hub-signature-256", &signature(big.as_bytes()))],
        big.as_bytes(),
    );
    assert_eq!(too_large.status, 401, "{:?}", too_large.body);
    assert!(
        too_large.detail().contains("cannot be verified"),
        "{:?}",
        too_large.body
    );
    assert_eq!(up.count(), 1, "a refused delivery reached the agent");
}

#[test]
fn webhook_hmac_passes_unsigned_requests_on_and_refuses_replayed_deliveries() {
    let up = Upstream::start();
    let server = webhook_server(&up);
    let invoke = server.url("/v1/graph/invoke");
    let body = br#"{"input": {}, "config": {"thread_id": "t2"}}"#;

    // No signature header: not the plugin's credential, so the next
    // method (jwt) decides: nothing at all is 401 from the chain's end...
    let none = post_bytes(&invoke, &[], body);
    assert_eq!(none.status, 401, "{:?}", none.body);
    assert_eq!(none.body["code"], "not_authenticated");
    // ...and a valid JWT is let through as its own user.
    let alice = bearer(&hs256(SECRET, json!({"sub": "alice", "exp": now() + 600})));
    let by_jwt = post_bytes(&invoke, &[("authorization", &alice)], body);
    assert_eq!(by_jwt.status, 200, "{:?}", by_jwt.body);
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("alice"));

    // A delivery id is single-use, even with a valid signature.
    let sig = signature(body);
    let first = [
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", "d-1"),
    ];
    let delivered = post_bytes(&invoke, &first, body);
    assert_eq!(delivered.status, 200, "{:?}", delivered.body);
    assert_eq!(up.last().header("x-agentflow-user-id"), Some("github"));
    let replayed = post_bytes(&invoke, &first, body);
    assert_eq!(replayed.status, 401, "{:?}", replayed.body);
    assert_eq!(replayed.detail(), "delivery already received");
    assert_eq!(up.count(), 2, "a replayed delivery reached the agent");
    // Another delivery id with the same signed body is a new delivery.
    let other = post_bytes(
        &invoke,
        &[("x-hub-signature-256", &sig), ("x-github-delivery", "d-2")],
        body,
    );
    assert_eq!(other.status, 200, "{:?}", other.body);
    assert_eq!(up.count(), 3);
}
