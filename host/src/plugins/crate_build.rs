//! Plugins named by their crate folder: built for wasm32-wasip2 with cargo
//! when the server starts, so `agentflow.json` can point at source.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Whether `path` is a plugin crate folder rather than a `.wasm` file.
pub fn is_crate(path: &Path) -> bool {
    path.is_dir() && path.join("Cargo.toml").is_file()
}

/// Builds the crate at `dir` in release mode for wasm32-wasip2 and returns
/// the component it produced.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    // Absolute, because cargo runs inside the crate folder.
    let dir = &dir
        .canonicalize()
        .map_err(|e| format!("cannot open the crate folder: {e}"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    tracing::info!(crate_dir = %dir.display(), "building plugin crate for wasm32-wasip2");
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        // Flags meant for the host build must not leak into the guest build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                " (run `rustup target add wasm32-wasip2`)"
            } else {
                ""
            };
        return Err(format!(
            "cargo build failed{hint}:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    artifact(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        "cargo built no .wasm: is `crate-type = [\"cdylib\"]` set in [lib]?".to_owned()
    })
}

/// The last cdylib `.wasm` among cargo's JSON messages.
fn artifact(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cdylib_wasm_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"filenames":["/t/libserde.rlib"]}
{"reason":"compiler-artifact","target":{"kind":["cdylib","rlib"]},"filenames":["/t/api_key.wasm","/t/libapi_key.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(artifact(messages), Some(PathBuf::from("/t/api_key.wasm")));
        assert_eq!(artifact("not json\n"), None);
    }
}
