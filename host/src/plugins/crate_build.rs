//! Plugins named by their crate folder: built for wasm32-wasip2 with cargo
//! when the server starts, so `agentflow.json` can point at source.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Whether `path` is a plugin crate folder rather than a `.wasm` file.
pub fn is_crate(path: &Path) -> bool {
    path.is_dir() && path.join("Cargo.toml").is_file()
}

/// How a crate folder is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildProfile {
    /// `--release`, with whatever the crate's workspace sets for it (LTO
    /// and one codegen unit in this repository and in scaffolds): what is
    /// shipped.
    #[default]
    Release,
    /// The `agentflow-dev` profile, defined on cargo's command line so any
    /// crate has it: release optimisations, but no LTO, 16 codegen units
    /// and incremental compilation, so a save rebuilds in about a second
    /// instead of several. Used while the server watches plugins.
    Watch,
}

/// The profile [`BuildProfile::Watch`] builds with; its output lands in
/// `target/wasm32-wasip2/agentflow-dev/`, apart from release builds, so
/// switching between the two never rebuilds either.
pub const WATCH_PROFILE: &str = "agentflow-dev";

/// The most cargo output a failed build keeps (the rest is cut, saying so):
/// enough for any real error list, bounded for the log and the listing.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Builds the crate at `dir` for wasm32-wasip2 with `profile` and returns
/// the component it produced.
pub fn build(dir: &Path, profile: BuildProfile) -> Result<PathBuf, String> {
    // Absolute, because cargo runs inside the crate folder.
    let dir = &dir
        .canonicalize()
        .map_err(|e| format!("cannot open the crate folder: {e}"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    tracing::info!(crate_dir = %dir.display(), ?profile, "building plugin crate for wasm32-wasip2");
    let mut command = Command::new(cargo);
    command.current_dir(dir).arg("build");
    match profile {
        BuildProfile::Release => {
            command.arg("--release");
        }
        BuildProfile::Watch => {
            command.args(["--profile", WATCH_PROFILE]);
            for setting in [
                format!("profile.{WATCH_PROFILE}.inherits=\"release\""),
                format!("profile.{WATCH_PROFILE}.lto=false"),
                format!("profile.{WATCH_PROFILE}.codegen-units=16"),
                format!("profile.{WATCH_PROFILE}.incremental=true"),
            ] {
                command.arg("--config").arg(setting);
            }
        }
    }
    let output = command
        .args([
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
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                " (run `rustup target add wasm32-wasip2`)"
            } else {
                ""
            };
        return Err(format!(
            "cargo build failed{hint}:\n{}",
            diagnostics(&stderr)
        ));
    }
    artifact(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        "cargo built no .wasm: is `crate-type = [\"cdylib\"]` set in [lib]?".to_owned()
    })
}

/// Cargo's stderr without its progress lines (`Compiling ...`, `Blocking
/// ...`): every error and warning in full, up to [`MAX_ERROR_BYTES`].
fn diagnostics(stderr: &str) -> String {
    const PROGRESS: [&str; 12] = [
        "Compiling",
        "Checking",
        "Fresh",
        "Building",
        "Blocking",
        "Updating",
        "Downloading",
        "Downloaded",
        "Locking",
        "Adding",
        "Finished",
        "Running",
    ];
    let mut kept = String::new();
    let mut cut = 0usize;
    for line in stderr.lines() {
        // Progress lines are right-aligned verbs; diagnostics never are.
        let trimmed = line.trim_start();
        let verb = trimmed.split(' ').next().unwrap_or_default();
        if line.len() - trimmed.len() <= 12 && line.starts_with(' ') && PROGRESS.contains(&verb) {
            continue;
        }
        if kept.len() + line.len() + 1 > MAX_ERROR_BYTES {
            cut += 1;
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if cut > 0 {
        kept.push_str(&format!("... ({cut} more lines of cargo output cut)\n"));
    }
    kept.truncate(kept.trim_end().len());
    kept
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

    #[test]
    fn failures_keep_every_diagnostic_and_drop_progress_lines() {
        let mut stderr =
            String::from("   Compiling serde v1.0.0\n    Blocking waiting for file lock\n");
        for i in 0..40 {
            stderr.push_str(&format!("error[E0425]: cannot find value `x{i}` in this scope\n  --> src/lib.rs:{i}:5\n   |\n"));
        }
        stderr.push_str("error: could not compile `p` (lib) due to 40 previous errors\n");
        let kept = diagnostics(&stderr);
        assert!(
            !kept.contains("Compiling") && !kept.contains("Blocking"),
            "{kept}"
        );
        assert!(
            kept.contains("`x0`") && kept.contains("`x39`"),
            "all 40 errors are kept"
        );
        assert!(kept.ends_with("due to 40 previous errors"), "{kept}");

        let huge = "error: x\n".repeat(MAX_ERROR_BYTES);
        let kept = diagnostics(&huge);
        assert!(kept.len() <= MAX_ERROR_BYTES + 100);
        assert!(
            kept.ends_with("more lines of cargo output cut)"),
            "{}",
            &kept[kept.len() - 80..]
        );
    }
}
