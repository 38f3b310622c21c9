//! `agentflow plugin new NAME`: a plugin crate that builds for
//! wasm32-wasip2 as is, with a unit test, starter conformance cases
//! (`tests/cases.json`, for `agentflow plugin test`) and a config for
//! hot-reload development.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// Which world the new plugin implements.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Decides who is calling (`"auth"` in agentflow.json).
    Authenticator,
    /// Decides what a caller may do (`"authorization"`).
    Authorizer,
}

/// Arguments of `plugin new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// Crate name (lower-case letters, digits, `-`); also the folder name.
    name: String,
    /// Which kind of plugin.
    #[arg(long, value_enum, default_value = "authenticator")]
    kind: Kind,
    /// Folder to create the crate in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The agentflow plugin SDK (`plugin-sdk` folder). Default: the
    /// `plugin-sdk` of the agentflow checkout around `--dir` or the current
    /// folder, else the one this binary was built from.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// Creates the crate and says what to do next.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        bail!("plugin name {name:?}: use lower-case letters, digits and `-`, e.g. \"my-auth\"");
    }
    let sdk = find_sdk(args.sdk, &args.dir)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let root = args.dir.canonicalize()?.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let in_workspace = enclosing_workspace(&root);
    let sdk_path = relative(&root, &sdk);
    std::fs::create_dir_all(root.join("src"))?;
    let write = |file: &str, text: String| {
        std::fs::write(root.join(file), text)
            .with_context(|| format!("cannot write {}", root.join(file).display()))
    };
    write(
        "Cargo.toml",
        manifest(name, &sdk_path, in_workspace.is_none()),
    )?;
    write("src/lib.rs", source(args.kind))?;
    write("agentflow.dev.json", dev_config(args.kind))?;
    std::fs::create_dir_all(root.join("tests"))?;
    write("tests/cases.json", cases(args.kind).into())?;
    write(".gitignore", "target/\ndata/\n.env\n".into())?;
    if args.kind == Kind::Authorizer {
        // The dev config's jwt method reads its key from this file.
        write(".env", format!("JWT_SECRET_KEY={}\n", random_hex(32)))?;
    }
    let shown = root.display();
    println!(
        "created {shown} ({:?}), using the SDK at {}",
        args.kind,
        sdk.display()
    );
    if let Some(ws) = in_workspace {
        println!(
            "note: {shown} is inside the cargo workspace at {}; make sure its `members` include it",
            ws.display()
        );
    }
    println!("next:");
    println!("  cargo test --manifest-path {shown}/Cargo.toml");
    println!("  agentflow plugin test {shown}   # runs tests/cases.json against the .wasm");
    println!(
        "  agentflow run --config {shown}/agentflow.dev.json --watch   # rebuilds on every save"
    );
    Ok(())
}

/// The SDK to depend on: `explicit`, else the `plugin-sdk` of the agentflow
/// checkout enclosing `dir` or the current folder, else the one this binary
/// was built from, if it is still there.
fn find_sdk(explicit: Option<PathBuf>, dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(sdk) = explicit {
        return is_sdk(&sdk)
            .then(|| sdk.canonicalize())
            .transpose()?
            .with_context(|| {
                format!(
                    "--sdk {}: not the agentflow-plugin-sdk crate (no Cargo.toml naming it)",
                    sdk.display()
                )
            });
    }
    let cwd = std::env::current_dir()?;
    let starts = [dir.canonicalize().unwrap_or_else(|_| cwd.join(dir)), cwd];
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    starts
        .iter()
        .flat_map(|s| s.ancestors().map(|a| a.join("plugin-sdk")))
        .chain([built_from])
        .find(|candidate| is_sdk(candidate))
        .map(|sdk| sdk.canonicalize())
        .transpose()?
        .context("no agentflow-plugin-sdk found in the checkout around --dir or the current folder, nor where this binary was built: pass --sdk PATH/TO/plugin-sdk")
}

/// Whether `dir` holds the agentflow-plugin-sdk crate.
fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| {
        t.lines()
            .any(|l| l.trim() == r#"name = "agentflow-plugin-sdk""#)
    })
}

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The folder of a `Cargo.toml` with `[workspace]` above `dir`, if any.
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().skip(1).find_map(|a| {
        let text = std::fs::read_to_string(a.join("Cargo.toml")).ok()?;
        text.lines()
            .any(|l| l.trim() == "[workspace]")
            .then(|| a.to_path_buf())
    })
}

/// `to` relative to `from` (both absolute), with `/` separators.
fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn manifest(name: &str, sdk: &str, own_workspace: bool) -> String {
    let mut text = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the .wasm the server loads; rlib: native unit tests (`cargo test`).
crate-type = ["cdylib", "rlib"]

[dependencies]
agentflow-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
"#
    );
    if own_workspace {
        text.push_str(
            r#"
# Small, fast plugins.
[profile.release]
codegen-units = 1
lto = "thin"

# A workspace of its own, so the crate builds wherever it lives.
[workspace]
"#,
        );
    }
    text
}

fn dev_config(kind: Kind) -> String {
    let (key, entry) = match kind {
        Kind::Authenticator => (
            "auth",
            r#"{"method": "custom", "path": ".", "credential_headers": ["x-token"], "config": {"token": "dev-token", "user": "dev"}}"#,
        ),
        Kind::Authorizer => (
            "authorization",
            r#"{"path": ".", "config": {"allow_roles": ["admin"]}}"#,
        ),
    };
    let auth = if kind == Kind::Authorizer {
        "\n  \"auth\": \"jwt\",\n  \"env\": \".env\","
    } else {
        ""
    };
    format!(
        "{{{auth}\n  \"{key}\": {entry},\n  \"plugins\": {{\"watch\": true, \"timeout_ms\": 200}}\n}}\n"
    )
}

/// The starter conformance cases (`agentflow plugin test`), matching the
/// starter source.
fn cases(kind: Kind) -> &'static str {
    match kind {
        Kind::Authenticator => AUTHENTICATOR_CASES,
        Kind::Authorizer => AUTHORIZER_CASES,
    }
}

const AUTHENTICATOR_CASES: &str = r#"{
  "config": {"token": "dev-token", "user": "dev"},
  "cases": [
    {
      "name": "the configured token authenticates",
      "request": {"method": "GET", "path": "/v1/whoami", "headers": {"x-token": "dev-token"}},
      "expect": {"outcome": "authenticated", "user_id": "dev", "roles": ["user"]}
    },
    {
      "name": "another token is refused",
      "request": {"headers": {"x-token": "guess"}},
      "expect": {"outcome": "refused", "status": 401, "detail": "invalid token"}
    },
    {
      "name": "no token: the next auth method gets its turn",
      "request": {"path": "/v1/whoami"},
      "expect": {"outcome": "no-credentials"}
    }
  ]
}
"#;

const AUTHORIZER_CASES: &str = r#"{
  "config": {"allow_roles": ["admin"]},
  "cases": [
    {
      "name": "an admin may write",
      "request": {"method": "POST", "path": "/v1/threads"},
      "identity": {"user_id": "a", "roles": ["admin"]},
      "access": {"resource": "checkpointer", "action": "write"},
      "expect": {"outcome": "allow"}
    },
    {
      "name": "a user is denied",
      "request": {"method": "POST", "path": "/v1/threads"},
      "identity": {"user_id": "u", "roles": ["user"]},
      "access": {"resource": "checkpointer", "action": "write"},
      "expect": {"outcome": "deny", "status": 403, "detail": "u may not write checkpointer"}
    }
  ]
}
"#;

fn source(kind: Kind) -> String {
    match kind {
        Kind::Authenticator => AUTHENTICATOR.into(),
        Kind::Authorizer => AUTHORIZER.into(),
    }
}

const AUTHENTICATOR: &str = r#"//! An agentflow authenticator: requests carrying `x-token: <config.token>`
//! are authenticated as `config.user`.

use agentflow_plugin_sdk::{Authenticator, AuthnOutcome, Identity, Manifest, Request, Result};
use serde::Deserialize;

/// `"config"` in agentflow.json.
#[derive(Deserialize)]
pub struct Config {
    /// The token to accept.
    pub token: String,
    /// Who it authenticates as.
    pub user: String,
}

/// The plugin.
pub struct Plugin(Config);

impl Authenticator for Plugin {
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if config.token.is_empty() {
            // Stops the server at start, naming this plugin's `config`.
            return Err("token must not be empty".into());
        }
        Ok(Plugin(config))
    }

    /// `x-token` carries a credential: never forwarded to the agent.
    fn manifest(&self) -> Manifest {
        Manifest::new().credential_header("x-token")
    }

    fn authenticate(&self, req: &Request) -> Result<AuthnOutcome> {
        Ok(match req.header("x-token") {
            None => AuthnOutcome::NoCredentials,
            Some(t) if t == self.0.token => AuthnOutcome::authenticated(Identity::new(&self.0.user).with_role("user")),
            Some(_) => AuthnOutcome::refused("invalid token"),
        })
    }
}

// Exports only in the .wasm build; call it unconditionally.
agentflow_plugin_sdk::export_authenticator!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> Plugin {
        Plugin::new(Config { token: "t".into(), user: "dev".into() }).unwrap()
    }

    #[test]
    fn accepts_the_token_and_refuses_others() {
        let ok = plugin().authenticate(&Request::new("GET", "/").with_header("x-token", "t")).unwrap();
        assert!(matches!(ok, AuthnOutcome::Authenticated { ref who, .. } if who.user_id == "dev"));
        let bad = plugin().authenticate(&Request::new("GET", "/").with_header("x-token", "x")).unwrap();
        assert!(matches!(bad, AuthnOutcome::Refused(_)));
        assert_eq!(plugin().authenticate(&Request::new("GET", "/")).unwrap(), AuthnOutcome::NoCredentials);
    }
}
"#;

const AUTHORIZER: &str = r#"//! An agentflow authorizer: callers with one of `config.allow_roles` may do
//! anything; everyone else is denied.

use agentflow_plugin_sdk::{Access, Authorizer, AuthzOutcome, Identity, Request, Result};
use serde::Deserialize;

/// `"config"` in agentflow.json.
#[derive(Deserialize)]
pub struct Config {
    /// Roles allowed everything.
    pub allow_roles: Vec<String>,
}

/// The plugin.
pub struct Plugin(Config);

impl Authorizer for Plugin {
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        Ok(Plugin(config))
    }

    fn authorize(&self, who: &Identity, access: &Access, _req: &Request) -> Result<AuthzOutcome> {
        Ok(if self.0.allow_roles.iter().any(|r| who.has_role(r)) {
            AuthzOutcome::Allow
        } else {
            AuthzOutcome::deny(format!("{} may not {} {}", who.user_id, access.action, access.resource))
        })
    }
}

// Exports only in the .wasm build; call it unconditionally.
agentflow_plugin_sdk::export_authorizer!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_listed_roles_only() {
        let p = Plugin::new(Config { allow_roles: vec!["admin".into()] }).unwrap();
        let req = Request::new("POST", "/v1/threads");
        let access = Access::new("checkpointer", "write");
        assert_eq!(p.authorize(&Identity::new("a").with_role("admin"), &access, &req).unwrap(), AuthzOutcome::Allow);
        assert!(matches!(p.authorize(&Identity::new("u").with_role("user"), &access, &req), Ok(AuthzOutcome::Deny(_))));
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        assert_eq!(
            relative(Path::new("/a/b/c"), Path::new("/a/sdk")),
            "../../sdk"
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a/sdk")), "sdk");
    }

    #[test]
    fn the_sdk_is_found_in_the_checkout_around_the_target_folder() {
        let sdk = find_sdk(None, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(is_sdk(&sdk), "{}", sdk.display());
        let err = find_sdk(Some(PathBuf::from("/")), Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("--sdk"), "{err}");
    }

    #[test]
    fn manifests_get_their_own_workspace_only_outside_one() {
        assert!(manifest("p", "../sdk", true).contains("[workspace]"));
        assert!(!manifest("p", "../sdk", false).contains("[workspace]"));
    }
}
