//! Thread ids in graph request bodies, read the way the AgentFlow server's
//! `RequirePermission` and `normalize_thread_id` read strings: stripped,
//! blank / `null` mean "no id". A thread id that is not a string is refused
//! (400), as is anything the server would read differently, so the id an
//! authorizer (and tenancy) decides on is the thread the agent runs.

use serde::Deserialize;
use serde_json::Value;

use super::table::BodyId;

/// The fields that can carry a thread id. Unknown fields are skipped
/// without building a tree; a duplicate of one of these is an error (the
/// server would take the last one, a plugin might look at the first).
#[derive(Deserialize)]
struct IdFields {
    #[serde(default)]
    thread_id: Option<Value>,
    #[serde(default, rename = "threadId")]
    ag_ui_thread_id: Option<Value>,
    #[serde(default)]
    config: Option<Value>,
}

/// The thread id `body` names for a route whose id lives in the body.
/// `Err` carries the reason shown to the client (a 400).
pub fn thread_id(kind: BodyId, body: &[u8]) -> Result<Option<String>, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let fields = match first {
        None => IdFields {
            thread_id: None,
            ag_ui_thread_id: None,
            config: None,
        },
        Some(b'{') => serde_json::from_slice::<IdFields>(body)
            .map_err(|e| format!("request body is not a valid JSON object: {e}"))?,
        Some(_) => return Err("request body must be a JSON object".into()),
    };
    match kind {
        BodyId::RunThread => {
            let root = normalize(fields.thread_id.as_ref(), "thread_id")?;
            let in_config = config_thread_id(fields.config.as_ref())?;
            match (root, in_config) {
                (Some(a), Some(b)) if a != b => {
                    Err("thread_id and config.thread_id must match".into())
                }
                (root, in_config) => Ok(in_config.or(root)),
            }
        }
        BodyId::RequiredThread => {
            let root = match fields.thread_id {
                Some(Value::String(s)) => strip(&s).to_owned(),
                None | Some(Value::Null) => return Err("`thread_id` is required".into()),
                Some(_) => return Err("`thread_id` must be a string".into()),
            };
            if root.is_empty() {
                return Err("`thread_id` must not be blank".into());
            }
            match config_thread_id(fields.config.as_ref())? {
                Some(other) if other != root => {
                    Err("thread_id and config.thread_id must match".into())
                }
                _ => Ok(Some(root)),
            }
        }
        // The AG-UI SDK's `RunAgentInput` also takes the field's Python
        // name (`populate_by_name`), so `thread_id` names the thread too; a
        // body giving both is refused rather than guessing which one wins.
        BodyId::AgUiThread => match (fields.ag_ui_thread_id, fields.thread_id) {
            (None | Some(Value::Null), None | Some(Value::Null)) => Ok(None),
            (Some(id), None | Some(Value::Null)) => normalize(Some(&id), "threadId"),
            (None | Some(Value::Null), Some(id)) => normalize(Some(&id), "thread_id"),
            (Some(_), Some(_)) => {
                Err("name the thread once: `threadId` or `thread_id`, not both".into())
            }
        },
    }
}

/// `config.thread_id`; `config` itself must be an object when present.
fn config_thread_id(config: Option<&Value>) -> Result<Option<String>, String> {
    match config {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => normalize(map.get("thread_id"), "config.thread_id"),
        Some(_) => Err("`config` in the request body must be an object".into()),
    }
}

/// `normalize_thread_id` for strings: stripped, blank means none; `null`
/// is none. Anything else (integers, booleans, floats, arrays) is refused:
/// the server would turn `42` and `"42"` into one thread and `true` into a
/// new one, so only one spelling of an id is accepted.
fn normalize(v: Option<&Value>, field: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(strip(s).to_owned()).filter(|s| !s.is_empty())),
        Some(_) => Err(format!("`{field}` must be a string")),
    }
}

/// Python's `str.strip()`: Unicode whitespace plus the separators
/// U+001C..U+001F, which Python counts as whitespace and Rust does not.
fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> Result<Option<String>, String> {
        thread_id(BodyId::RunThread, body.as_bytes())
    }

    fn stop(body: &str) -> Result<Option<String>, String> {
        thread_id(BodyId::RequiredThread, body.as_bytes())
    }

    fn some(s: &str) -> Result<Option<String>, String> {
        Ok(Some(s.to_owned()))
    }

    #[test]
    fn run_ids_come_from_config_or_root_and_must_agree() {
        assert_eq!(
            run(r#"{"messages": [], "config": {"thread_id": "t1"}}"#),
            some("t1")
        );
        assert_eq!(run(r#"{"thread_id": "t1"}"#), some("t1"));
        assert_eq!(
            run(r#"{"thread_id": " t1 ", "config": {"thread_id": "t1"}}"#),
            some("t1")
        );
        assert!(
            run(r#"{"thread_id": "t1", "config": {"thread_id": "t2"}}"#)
                .unwrap_err()
                .contains("must match")
        );
        assert_eq!(run(r#"{"messages": []}"#), Ok(None));
        assert_eq!(run(""), Ok(None));
        assert_eq!(run("  \n"), Ok(None));
    }

    #[test]
    fn run_ids_are_normalized_like_the_server() {
        assert_eq!(run(r#"{"config": {"thread_id": "  t-1\t"}}"#), some("t-1"));
        assert_eq!(
            run("{\"config\": {\"thread_id\": \"\\u001ft\\u001c\"}}"),
            some("t"),
            "Python strips U+001C..1F"
        );
        for none in [r#""   ""#, "null"] {
            assert_eq!(
                run(&format!(r#"{{"config": {{"thread_id": {none}}}}}"#)),
                Ok(None),
                "{none}"
            );
        }
        for bad in [
            "42",
            "-7",
            "true",
            "false",
            "4.5",
            "1e16",
            "[\"t1\"]",
            "{\"id\": 1}",
        ] {
            assert!(
                run(&format!(r#"{{"config": {{"thread_id": {bad}}}}}"#)).is_err(),
                "{bad}"
            );
        }
        assert!(run(r#"{"thread_id": ["t1"]}"#).is_err());
    }

    #[test]
    fn malformed_or_ambiguous_bodies_are_refused() {
        assert!(run("[1]").is_err());
        assert!(run("\"t1\"").is_err());
        assert!(run("{").is_err());
        assert!(run(r#"{"config": 3}"#).is_err());
        assert!(run(r#"{"config": {}} trailing"#).is_err());
        assert!(
            run(r#"{"config": {"thread_id": "a"}, "config": {"thread_id": "b"}}"#).is_err(),
            "duplicate config"
        );
        assert!(
            run(r#"{"thread_id": "a", "thread_id": "b"}"#).is_err(),
            "duplicate thread_id"
        );
    }

    #[test]
    fn stop_and_fix_need_a_string_thread_id() {
        assert_eq!(stop(r#"{"thread_id": " t1 "}"#), some("t1"));
        assert_eq!(
            stop(r#"{"thread_id": "t1", "config": {"thread_id": "t1"}}"#),
            some("t1")
        );
        assert!(stop(r#"{"thread_id": "t1", "config": {"thread_id": "t2"}}"#).is_err());
        for bad in [
            r#"{"thread_id": 42}"#,
            r#"{"thread_id": true}"#,
            r#"{"thread_id": "  "}"#,
            "{}",
            "",
            r#"{"thread_id": null}"#,
        ] {
            assert!(stop(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ag_ui_uses_thread_id_in_camel_case() {
        assert_eq!(
            thread_id(BodyId::AgUiThread, br#"{"threadId": "t9", "runId": "r"}"#),
            some("t9")
        );
        assert_eq!(
            thread_id(BodyId::AgUiThread, br#"{"threadId": " "}"#),
            Ok(None)
        );
        assert!(thread_id(BodyId::AgUiThread, br#"{"threadId": 9}"#).is_err());
    }

    #[test]
    fn ag_ui_also_reads_the_python_name_and_refuses_both() {
        let ag_ui = |body: &str| thread_id(BodyId::AgUiThread, body.as_bytes());
        // `RunAgentInput` takes `thread_id` too: it names the thread.
        assert_eq!(
            ag_ui(r#"{"thread_id": " t-alice ", "runId": "r"}"#),
            some("t-alice")
        );
        assert!(
            ag_ui(r#"{"thread_id": 7}"#)
                .unwrap_err()
                .contains("thread_id")
        );
        assert!(
            ag_ui(r#"{"threadId": "t-bob", "thread_id": "t-alice"}"#)
                .unwrap_err()
                .contains("not both")
        );
        assert!(ag_ui(r#"{"threadId": "t", "thread_id": "t"}"#).is_err());
        // A null spelling is no id; the other one is the one checked.
        assert_eq!(
            ag_ui(r#"{"threadId": null, "thread_id": "t-alice"}"#),
            some("t-alice")
        );
        assert_eq!(ag_ui(r#"{"threadId": null}"#), Ok(None));
    }
}
