//! `agentflow token`: mint a JWT with the configured key.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::jwt::JwtSigner;

#[derive(Args, Debug)]
pub(super) struct TokenArgs {
    /// Path of agentflow.json (its `env` file holds the key).
    #[arg(long, default_value = "agentflow.json")]
    config: PathBuf,
    /// The subject; also the `user_id` claim unless `--claim user_id=...`
    /// sets another (the AgentFlow server requires `user_id`).
    #[arg(long)]
    sub: String,
    /// A role; repeat for several.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Lifetime: a number with s, m, h or d (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h")]
    exp: String,
    /// An extra claim `key=value`, repeatable; the value is parsed as JSON
    /// when it can be (`level=3`, `tags=["a","b"]`), else kept as a string.
    /// `sub`, `iat` and `exp` come from the other options.
    #[arg(long = "claim")]
    claims: Vec<String>,
}

/// Prints a signed token for the given subject, roles and claims.
pub(super) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let signer = JwtSigner::from_env(&cfg.env, &cfg.dir())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    println!("{}", signer.sign(&claims_of(args, now)?)?);
    Ok(())
}

/// The claims `args` ask for, issued at `now`.
fn claims_of(args: TokenArgs, now: u64) -> anyhow::Result<Map<String, Value>> {
    let lifetime = parse_duration(&args.exp).ok_or_else(|| {
        anyhow::anyhow!(
            "--exp {:?}: use a number with s, m, h or d, e.g. 1h",
            args.exp
        )
    })?;
    let mut claims = Map::new();
    for claim in &args.claims {
        let (k, v) = claim
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("--claim {claim:?}: use key=value"))?;
        claims.insert(
            k.trim().to_owned(),
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())),
        );
    }
    // The AgentFlow server reads the user from `user_id` only.
    claims
        .entry("user_id")
        .or_insert_with(|| Value::String(args.sub.clone()));
    claims.insert("sub".into(), Value::String(args.sub));
    if !args.roles.is_empty() {
        claims.insert(
            "roles".into(),
            args.roles.into_iter().map(Value::String).collect(),
        );
    }
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + lifetime).into());
    Ok(claims)
}

/// `90s`, `30m`, `1h`, `7d` (a bare number is seconds) into seconds.
fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(sub: &str, claims: &[&str]) -> TokenArgs {
        TokenArgs {
            config: "agentflow.json".into(),
            sub: sub.into(),
            roles: vec![],
            exp: "1h".into(),
            claims: claims.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn user_id_defaults_to_the_subject() {
        let c = claims_of(args("u1", &[]), 1_000).unwrap();
        assert_eq!(
            (&c["sub"], &c["user_id"], &c["iat"], &c["exp"]),
            (&json!("u1"), &json!("u1"), &json!(1_000), &json!(4_600))
        );
    }

    #[test]
    fn claims_set_user_id_and_parse_json_values() {
        let c = claims_of(
            args(
                "u1",
                &[
                    "user_id=alice",
                    "level=3",
                    r#"tags=["a","b"]"#,
                    "note=a=b",
                    "exp=1",
                ],
            ),
            1_000,
        )
        .unwrap();
        assert_eq!(c["user_id"], "alice");
        assert_eq!(c["sub"], "u1");
        assert_eq!(c["level"], 3);
        assert_eq!(c["tags"], json!(["a", "b"]));
        assert_eq!(c["note"], "a=b", "only the first = splits");
        assert_eq!(c["exp"], 4_600, "exp comes from --exp");
        assert!(claims_of(args("u1", &["novalue"]), 0).is_err());
        assert!(claims_of(args("u1", &["=x"]), 0).is_err());
    }

    #[test]
    fn parses_lifetimes() {
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("h"), None);
    }
}
