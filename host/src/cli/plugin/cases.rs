//! `agentflow plugin test`: runs a plugin against a file of request ->
//! expected-outcome cases, a conformance kit its author keeps beside the
//! crate (`tests/cases.json`) and runs in CI.
//!
//! The file (see the README's "Test a plugin against cases"):
//!
//! ```json
//! {"config": {"token": "t", "user": "dev"},
//!  "cases": [{"name": "accepts the token",
//!             "request": {"headers": {"x-token": "t"}},
//!             "expect": {"outcome": "authenticated", "user_id": "dev"}}]}
//! ```
//!
//! Cases run in file order, each in a fresh sandbox and a freshly loaded
//! plugin (so no cached answer carries over), but against one key-value
//! store, so a case can rely on what an earlier one stored (a replayed code
//! refused, a counter that counts).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::harness::{AccessSpec, Harness, IdentitySpec, RequestSpec};

/// Arguments of `plugin test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// The component to test, or a plugin crate folder (built first).
    /// Default: the `path` of the `--config-from` entry.
    file: Option<PathBuf>,
    /// The cases file. Default: `tests/cases.json` in the crate folder.
    #[arg(long, value_name = "FILE")]
    cases: Option<PathBuf>,
    /// Take the plugin's config, grants, limits and name from an entry of
    /// an agentflow.json (`FILE#KEY`, as for `plugin call`); the cases
    /// file's `config` and a case's own still win.
    #[arg(long, value_name = "FILE#KEY")]
    config_from: Option<String>,
    /// Environment variables the plugin may read as secrets.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// `host:port` the plugin may send HTTP requests to.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    allowed_hosts: Vec<String>,
}

/// Some cases did not get the outcome they expect (exit status 1, apart
/// from the 2 of a file or plugin that could not be run at all).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} cases failed")]
pub struct CasesFailed {
    /// How many failed.
    pub failed: usize,
    /// How many ran.
    pub total: usize,
}

/// A cases file: a list of cases, or an object with `cases` and a `config`
/// for all of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum CasesFile {
    List(Vec<Case>),
    Object(CasesObject),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesObject {
    #[serde(default)]
    config: Option<Value>,
    cases: Vec<Case>,
}

/// One request and the outcome it must get.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    request: RequestSpec,
    /// For an authorizer: who is asking.
    #[serde(default)]
    identity: Option<IdentitySpec>,
    /// For an authorizer: what they want to do.
    #[serde(default)]
    access: Option<AccessSpec>,
    /// The plugin's config for this case alone.
    #[serde(default)]
    config: Option<Value>,
    /// Stored in the key-value store before the call.
    #[serde(default)]
    kv: Map<String, Value>,
    expect: Expect,
}

/// What a case must get; every field given is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `authenticated`, `no-credentials`, `refused`, `allow`, `deny`, or
    /// `failed` (a trap, limit or nonsense answer: a 503 in the server).
    outcome: String,
    /// The refusal's or denial's HTTP status (401, 403, 429).
    #[serde(default)]
    status: Option<u16>,
    /// Text the refusal's detail (or the failure's message) contains.
    #[serde(default)]
    detail: Option<String>,
    /// The authenticated user.
    #[serde(default)]
    user_id: Option<String>,
    /// The authenticated roles, in any order.
    #[serde(default)]
    roles: Option<Vec<String>>,
    /// Claims the identity has (others may be there too).
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    /// Whether the answer carries a cache hint.
    #[serde(default)]
    cache: Option<bool>,
    /// Keys of the store after the call: a value, or null for absent.
    #[serde(default)]
    kv: Option<Map<String, Value>>,
}

const OUTCOMES: [&str; 6] = [
    "authenticated",
    "no-credentials",
    "refused",
    "allow",
    "deny",
    "failed",
];

/// Runs every case and prints one line each; fails with [`CasesFailed`]
/// when any case did not get its expected outcome.
pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let crate_dir = args.file.clone().filter(|f| f.join("Cargo.toml").is_file());
    let cases_path = match (&args.cases, crate_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => dir.join("tests").join("cases.json"),
        (None, None) => bail!("give the cases file with --cases FILE"),
    };
    let text = std::fs::read_to_string(&cases_path)
        .with_context(|| format!("cannot read {}", cases_path.display()))?;
    let file: CasesFile =
        serde_json::from_str(&text).with_context(|| format!("{}", cases_path.display()))?;
    let (file_config, cases) = match file {
        CasesFile::List(cases) => (None, cases),
        CasesFile::Object(o) => (o.config, o.cases),
    };
    for case in &cases {
        if !OUTCOMES.contains(&case.expect.outcome.as_str()) {
            bail!(
                "{}: case {:?}: unknown outcome {:?}; use one of {}",
                cases_path.display(),
                case.name,
                case.expect.outcome,
                OUTCOMES.join(", ")
            );
        }
    }
    let (wasm, mut cfg, env) = super::settings(args.file, args.config_from.as_deref())?;
    if let Some(config) = file_config {
        cfg.config = config;
    }
    cfg.secrets.extend(args.secrets);
    cfg.allowed_hosts
        .extend_parsed(&args.allowed_hosts)
        .map_err(|(_, why)| anyhow::anyhow!("--allow-host: {why}"))?;
    let harness = Harness::new(&wasm)?;
    println!(
        "testing {} against {} ({} cases)",
        wasm.display(),
        cases_path.display(),
        cases.len()
    );
    let total = cases.len();
    let mut failed = 0;
    for case in cases {
        let name = case.name.clone();
        let problems = match run_case(&harness, &cfg, &env, case) {
            Ok(problems) => problems,
            Err(e) => vec![format!("{e:#}")],
        };
        if problems.is_empty() {
            println!("ok    {name}");
        } else {
            failed += 1;
            println!("FAIL  {name}");
            for p in problems {
                println!("      {p}");
            }
        }
    }
    println!("{} passed, {failed} failed", total - failed);
    if failed > 0 {
        return Err(CasesFailed { failed, total }.into());
    }
    Ok(())
}

/// Runs one case; what did not match, empty when it passed.
fn run_case(
    harness: &Harness,
    cfg: &crate::config::PluginConfig,
    env: &crate::config::Env,
    case: Case,
) -> anyhow::Result<Vec<String>> {
    let mut cfg = cfg.clone();
    if let Some(config) = case.config {
        cfg.config = config;
    }
    let seeds = case
        .kv
        .iter()
        .map(|(k, v)| {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            (k.clone(), text)
        })
        .collect::<Vec<_>>();
    harness.seed(&cfg, &seeds)?;
    let slot = harness.slot(case.access.is_some())?;
    let got = match harness.call(&cfg, env, slot, case.request, case.identity, case.access)? {
        Ok(answer) => answer,
        Err(failure) => serde_json::json!({"outcome": "failed", "detail": failure.to_string()}),
    };
    let kv = harness.kv(&cfg)?;
    Ok(mismatches(&case.expect, &got, &kv))
}

/// Every way `got` (and the store after the call) differs from `expect`.
fn mismatches(expect: &Expect, got: &Value, kv: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let outcome = got["outcome"].as_str().unwrap_or_default();
    if outcome != expect.outcome {
        out.push(format!(
            "expected outcome {:?}, got {}",
            expect.outcome,
            serde_json::to_string(got).unwrap_or_default()
        ));
        return out;
    }
    if let Some(status) = expect.status
        && got["status"].as_u64() != Some(u64::from(status))
    {
        out.push(format!("expected status {status}, got {}", got["status"]));
    }
    if let Some(detail) = &expect.detail {
        let actual = got["detail"].as_str().unwrap_or_default();
        if !actual.contains(detail.as_str()) {
            out.push(format!(
                "expected a detail containing {detail:?}, got {actual:?}"
            ));
        }
    }
    let identity = &got["identity"];
    if let Some(user) = &expect.user_id
        && identity["user_id"].as_str() != Some(user.as_str())
    {
        out.push(format!(
            "expected user_id {user:?}, got {}",
            identity["user_id"]
        ));
    }
    if let Some(roles) = &expect.roles {
        let mut want = roles.clone();
        want.sort();
        let mut have: Vec<String> = identity["roles"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        have.sort();
        if want != have {
            out.push(format!("expected roles {want:?}, got {have:?}"));
        }
    }
    if let Some(claims) = &expect.claims {
        for (k, v) in claims {
            if identity["claims"].get(k) != Some(v) {
                out.push(format!(
                    "expected claim {k:?} = {v}, got {}",
                    identity["claims"].get(k).unwrap_or(&Value::Null)
                ));
            }
        }
    }
    if let Some(cache) = expect.cache {
        let has = !got["cache"].is_null();
        if has != cache {
            out.push(format!(
                "expected {} cache hint, got {}",
                if cache { "a" } else { "no" },
                got["cache"]
            ));
        }
    }
    if let Some(want) = &expect.kv {
        for (k, v) in want {
            let have = kv.get(k).unwrap_or(&Value::Null);
            if have != v {
                out.push(format!("expected kv {k:?} = {v}, got {have}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(v: Value) -> Expect {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_expected_field_is_checked() {
        let got = json!({"outcome": "authenticated", "identity": {"user_id": "dev", "roles": ["b", "a"], "claims": {"t": 1}}, "cache": null});
        let kv = Map::new();
        let pass = expect(
            json!({"outcome": "authenticated", "user_id": "dev", "roles": ["a", "b"], "claims": {"t": 1}, "cache": false, "kv": {"gone": null}}),
        );
        assert!(mismatches(&pass, &got, &kv).is_empty());
        let fail = expect(
            json!({"outcome": "authenticated", "user_id": "x", "roles": ["a"], "claims": {"t": 2}, "cache": true, "kv": {"k": "v"}}),
        );
        assert_eq!(
            mismatches(&fail, &got, &kv).len(),
            5,
            "{:?}",
            mismatches(&fail, &got, &kv)
        );
        let other = expect(json!({"outcome": "refused", "status": 401}));
        let found = mismatches(&other, &got, &kv);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("expected outcome \"refused\""),
            "{found:?}"
        );
    }

    #[test]
    fn refusals_match_status_and_detail_text() {
        let got =
            json!({"outcome": "deny", "status": 403, "detail": "u may not write checkpointer"});
        let kv = Map::new();
        assert!(
            mismatches(
                &expect(json!({"outcome": "deny", "status": 403, "detail": "may not write"})),
                &got,
                &kv
            )
            .is_empty()
        );
        assert_eq!(
            mismatches(
                &expect(json!({"outcome": "deny", "status": 401, "detail": "admin"})),
                &got,
                &kv
            )
            .len(),
            2
        );
    }
}
