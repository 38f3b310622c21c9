//! Request bodies that carry identity (graph routes): parsed and rewritten
//! whatever the client's Content-Type says, so no content type, charset or
//! `+json` variant lets a forged `config.user_id` through.

use std::borrow::Cow;
use std::fmt;

use http::header::{self, HeaderMap};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::identity::Identity;

/// Refuses more than one `Content-Type`: the host and the agent could each
/// read a different one.
pub fn check_single_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::BadRequest(
            "more than one Content-Type header".into(),
        ));
    }
    Ok(())
}

/// The body to forward for a route that carries identity: the client's JSON
/// object (already read and size-checked by
/// [`AgentRequest::with_body`](crate::agent_request::AgentRequest::with_body))
/// with `config.user` and `config.user_id` set by the host, or `None` when
/// the body is empty (nothing to rewrite; it is forwarded empty). Anything
/// else — not JSON, not an object — is refused with 400 rather than
/// forwarded as sent.
pub fn with_identity(bytes: &[u8], who: &Identity) -> Result<Option<Vec<u8>>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    merge_identity_into(bytes, who).map(Some)
}

/// Puts the identity into `config.user` / `config.user_id` of a JSON object
/// by splicing: the client's members are copied byte for byte, except the
/// last `config` (the one the agent reads), which is rewritten without any
/// client `user` / `user_id` member and with the host's two appended. Keys
/// are compared by their decoded value, so `"user\u005fid"` is `user_id`.
fn merge_identity_into(body: &[u8], who: &Identity) -> Result<Vec<u8>, ApiError> {
    let root = object_members(body, "request body must be a JSON object", |e| {
        format!("request body is not valid JSON: {e}")
    })?;
    // Earlier duplicates of `config` are dropped: the agent reads the last.
    let config_at = root.iter().rposition(|(key, _)| key == "config");
    let config = match config_at.map(|i| root[i].1.get()) {
        None | Some("null") => Vec::new(),
        Some(raw) => object_members(
            raw.as_bytes(),
            "`config` in the request body must be an object",
            |e| format!("`config` in the request body is not valid JSON: {e}"),
        )?,
    };

    let mut out = Vec::with_capacity(body.len() + 256);
    out.push(b'{');
    let mut first = true;
    for (i, (key, value)) in root.iter().enumerate() {
        if key == "config" && Some(i) != config_at {
            continue;
        }
        separator(&mut out, &mut first);
        if Some(i) == config_at {
            write_config(&mut out, &config, who)?;
        } else {
            write_member(&mut out, key, value.get())?;
        }
    }
    if config_at.is_none() {
        separator(&mut out, &mut first);
        write_config(&mut out, &config, who)?;
    }
    out.push(b'}');
    Ok(out)
}

/// One member of a JSON object: its key decoded, its value as written.
type Member<'a> = (Cow<'a, str>, &'a RawValue);

/// The members of the JSON object `text`, in order, duplicates kept. Not
/// JSON: `invalid(error)`; JSON but not an object: `not_object`.
fn object_members<'a>(
    text: &'a [u8],
    not_object: &str,
    invalid: impl FnOnce(serde_json::Error) -> String,
) -> Result<Vec<Member<'a>>, ApiError> {
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(text) {
            Ok(_) => ApiError::BadRequest(not_object.into()),
            Err(e) => ApiError::BadRequest(invalid(e)),
        });
    }
    serde_json::from_slice::<Members<'a>>(text)
        .map(|m| m.0)
        .map_err(|e| ApiError::BadRequest(invalid(e)))
}

/// `"config":{...client members but user/user_id...,"user":…,"user_id":…}`.
fn write_config(out: &mut Vec<u8>, client: &[Member<'_>], who: &Identity) -> Result<(), ApiError> {
    write_key(out, "config")?;
    out.push(b'{');
    for (key, value) in client
        .iter()
        .filter(|(key, _)| key != "user" && key != "user_id")
    {
        write_member(out, key, value.get())?;
        out.push(b',');
    }
    write_key(out, "user")?;
    serde_json::to_writer(&mut *out, &who.to_json()).map_err(internal)?;
    out.push(b',');
    write_key(out, "user_id")?;
    serde_json::to_writer(&mut *out, &who.user_id).map_err(internal)?;
    out.push(b'}');
    Ok(())
}

fn write_member(out: &mut Vec<u8>, key: &str, raw: &str) -> Result<(), ApiError> {
    write_key(out, key)?;
    out.extend_from_slice(raw.as_bytes());
    Ok(())
}

/// The key re-escaped from its decoded form (same value, canonical spelling).
fn write_key(out: &mut Vec<u8>, key: &str) -> Result<(), ApiError> {
    serde_json::to_writer(&mut *out, key).map_err(internal)?;
    out.push(b':');
    Ok(())
}

fn separator(out: &mut Vec<u8>, first: &mut bool) {
    if !std::mem::replace(first, false) {
        out.push(b',');
    }
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("writing the request body: {e}"))
}

/// A JSON object read without building a tree: values stay borrowed text.
struct Members<'a>(Vec<Member<'a>>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An object key, decoded (escapes resolved); borrowed when it had none.
/// (serde's own `Cow<str>` always copies.)
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::{Value, json};

    fn alice() -> Identity {
        Identity {
            user_id: "alice".into(),
            roles: vec!["user".into()],
            claims: Default::default(),
        }
    }

    fn run(body: &'static [u8]) -> Result<Option<Value>, ApiError> {
        with_identity(body, &alice()).map(|o| o.map(|b| serde_json::from_slice(&b).unwrap()))
    }

    #[test]
    fn merge_overwrites_spoofed_user() {
        let body =
            br#"{"messages": [], "config": {"thread_id": "t1", "user_id": "mallory", "user": {"user_id": "mallory"}}}"#;
        let out: Value =
            serde_json::from_slice(&merge_identity_into(body, &alice()).unwrap()).unwrap();
        assert_eq!(out["config"]["user_id"], "alice");
        assert_eq!(out["config"]["user"]["user_id"], "alice");
        assert_eq!(out["config"]["thread_id"], "t1");
    }

    #[test]
    fn duplicate_keys_leave_only_the_hosts_value() {
        let body = br#"{"config": {"user_id": "mallory"}, "config": {"user_id": "mallory", "user_id": "eve"}}"#;
        let out = String::from_utf8(merge_identity_into(body, &alice()).unwrap()).unwrap();
        assert!(!out.contains("mallory") && !out.contains("eve"), "{out}");
    }

    #[test]
    fn merge_creates_config_and_rejects_non_objects() {
        let out: Value =
            serde_json::from_slice(&merge_identity_into(b"{}", &alice()).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"config": {"user_id": "alice", "user": alice().to_json()}})
        );
        assert!(matches!(
            merge_identity_into(b"[1]", &alice()),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            merge_identity_into(b"{\"config\": 3}", &alice()),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            merge_identity_into(b"{", &alice()),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn only_json_objects_are_forwarded() {
        let out = run(br#"{"config": {"user_id": "mallory"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(out["config"]["user_id"], "alice");
        assert!(matches!(
            run(b"user_id=mallory"),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn empty_bodies_stay_empty() {
        assert!(run(b"").unwrap().is_none());
        assert!(run(b" \r\n").unwrap().is_none());
    }

    /// The merge as it was before splicing: parse, set, re-serialize.
    fn tree_merge(body: &[u8], who: &Identity) -> Value {
        let mut value: Value = serde_json::from_slice(body).unwrap();
        let config = value
            .as_object_mut()
            .unwrap()
            .entry("config")
            .or_insert_with(|| json!({}));
        if config.is_null() {
            *config = json!({});
        }
        let config = config.as_object_mut().unwrap();
        config.insert("user".into(), who.to_json());
        config.insert("user_id".into(), Value::String(who.user_id.clone()));
        value
    }

    fn splice(body: &str) -> Value {
        let out = merge_identity_into(body.as_bytes(), &alice()).unwrap();
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn forged_users_in_any_spelling_are_dropped() {
        for body in [
            r#"{"config": {"user_id": "mallory", "user_id": "mallory"}}"#,
            r#"{"config": {"user\u005fid": "mallory", "\u0075ser": {"user_id": "mallory"}}}"#,
            r#"{"config": {"\u0075\u0073\u0065\u0072\u005F\u0069\u0064": "mallory"}}"#,
            r#"{"config": {"user": 1, "user": "mallory", "user_id": null, "user_id": "mallory"}}"#,
            r#"{"con\u0066ig": {"user_id": "mallory"}}"#,
            r#"{"config": {"user_id": "x"}, "con\u0066ig": {"user_id": "mallory", "us\u0065r": "mallory"}}"#,
            r#"{"config": {"user_id": "mallory"}, "config": null}"#,
            " \n{ \"config\" :\t{ \"user_id\" :\r\n \"mallory\" } } \n",
        ] {
            let out = splice(body);
            assert_eq!(out["config"]["user_id"], "alice", "{body}");
            assert_eq!(out["config"]["user"], alice().to_json(), "{body}");
            assert!(!out.to_string().contains("mallory"), "{body} -> {out}");
            assert_eq!(out, tree_merge(body.as_bytes(), &alice()), "{body}");
        }
    }

    #[test]
    fn splicing_reads_as_the_tree_merge_did() {
        for body in [
            r#"{}"#,
            r#"{"config": null}"#,
            r#"{"messages": [{"role": "user", "content": "h\u00e9 \"quoted\" \ud83d\ude00 ünï"}], "config": {"thread_id": "t1"}}"#,
            r#"{"config": {"configurable": {"user_id": "nested stays"}, "tags": ["a"]}, "input": {"config": {"user_id": "x"}}}"#,
            r#"{"n": 1.50e+3, "big": 123456789012345678901234567890, "k\u00e9y": true, "empty": {}, "config": {}}"#,
            r#"{"a": 1, "a": 2, "config": {"thread_id": "t", "thread_id": "u"}}"#,
            "{\n  \"config\": {\n    \"recursion_limit\": 5\n  },\n  \"input\": [ ]\n}",
        ] {
            assert_eq!(
                splice(body),
                tree_merge(body.as_bytes(), &alice()),
                "{body}"
            );
        }
    }

    #[test]
    fn client_values_are_copied_byte_for_byte() {
        let body = r#"{"input": {"x": 1.0e2, "s": "\u00e9\/"}, "config": {"tags": [ 1 , 2 ]}}"#;
        let out =
            String::from_utf8(merge_identity_into(body.as_bytes(), &alice()).unwrap()).unwrap();
        assert!(
            out.starts_with(
                r#"{"input":{"x": 1.0e2, "s": "\u00e9\/"},"config":{"tags":[ 1 , 2 ],"user":"#
            ),
            "{out}"
        );
    }

    #[test]
    fn malformed_bodies_are_refused_not_forwarded() {
        let bad = |body: &str| match merge_identity_into(body.as_bytes(), &alice()) {
            Err(ApiError::BadRequest(detail)) => detail,
            other => panic!(
                "{body}: {:?}",
                other.map(|b| String::from_utf8_lossy(&b).into_owned())
            ),
        };
        assert_eq!(bad("[1]"), "request body must be a JSON object");
        assert_eq!(bad(r#""{}""#), "request body must be a JSON object");
        for config in ["3", r#""x""#, "[]", "true"] {
            assert_eq!(
                bad(&format!(r#"{{"config": {config}}}"#)),
                "`config` in the request body must be an object"
            );
        }
        for body in [
            "{",
            "{} x",
            r#"{"a": }"#,
            r#"{"config": {"a": 1,}}"#,
            r#"{"\ud800": 1}"#,
            "{\"a\": \"\u{1}\"}",
        ] {
            assert!(
                bad(body).starts_with("request body is not valid JSON"),
                "{body}"
            );
        }
        // Deep values are skipped without recursion (no stack to exhaust)
        // and copied as they are, like on routes that forward unread.
        let deep = format!(r#"{{"a": {}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(merge_identity_into(deep.as_bytes(), &alice()).is_ok());
        assert!(matches!(
            merge_identity_into(b"{\"a\": \"\xff\"}", &alice()),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn two_content_types_are_refused() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(check_single_content_type(&h).is_ok());
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            check_single_content_type(&h),
            Err(ApiError::BadRequest(_))
        ));
    }
}
