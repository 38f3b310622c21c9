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
    /// The subject (user id).
    #[arg(long)]
    sub: String,
    /// A role; repeat for several.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Lifetime: a number with s, m, h or d (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h")]
    exp: String,
    /// An extra claim `key=value`; the value is parsed as JSON when it can be.
    #[arg(long = "claim")]
    claims: Vec<String>,
}

/// Prints a signed token for the given subject, roles and claims.
pub(super) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let signer = JwtSigner::from_env(&cfg.env, &cfg.dir())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let lifetime = parse_duration(&args.exp).ok_or_else(|| anyhow::anyhow!("--exp {:?}: use a number with s, m, h or d, e.g. 1h", args.exp))?;
    let mut claims = Map::new();
    for claim in &args.claims {
        let (k, v) = claim.split_once('=').ok_or_else(|| anyhow::anyhow!("--claim {claim:?}: use key=value"))?;
        claims.insert(k.to_owned(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())));
    }
    claims.insert("sub".into(), Value::String(args.sub));
    if !args.roles.is_empty() {
        claims.insert("roles".into(), args.roles.into_iter().map(Value::String).collect());
    }
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + lifetime).into());
    println!("{}", signer.sign(&claims)?);
    Ok(())
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
    use super::parse_duration;

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
