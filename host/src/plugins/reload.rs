//! Hot reload: watches every loaded plugin's file (or crate folder) and
//! swaps in a new version when it changes, off the request path.
//!
//! A `.wasm` is watched through its folder (cargo replaces the file rather
//! than rewriting it); events are debounced until the file has been quiet
//! for a moment, so a build that writes it several times reloads once. A
//! crate folder is watched recursively (its `target/` ignored) and rebuilt
//! with cargo when its sources change. A version that fails to build,
//! compile or fit its slot never replaces the running one: the reason is
//! logged and shown by `GET /v1/plugins`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use super::crate_build;
use super::plugin::{Plugin, Reloaded};

/// Quiet time after the last write of a `.wasm` before it is loaded.
const WASM_QUIET: Duration = Duration::from_millis(50);
/// Quiet time after the last source change before a crate is rebuilt.
const CRATE_QUIET: Duration = Duration::from_millis(300);

/// Watches plugins while alive; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// What one plugin's watch looks at.
struct Watched {
    plugin: Arc<Plugin>,
    target: Target,
}

enum Target {
    /// A component file, watched through its folder.
    File {
        dir: PathBuf,
        name: std::ffi::OsString,
    },
    /// A crate folder, rebuilt when anything outside `target/` changes.
    Crate { dir: PathBuf },
}

impl Target {
    fn of(path: &Path) -> Result<Target, String> {
        let path = path
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
        if crate_build::is_crate(&path) {
            return Ok(Target::Crate { dir: path });
        }
        let dir = path
            .parent()
            .ok_or_else(|| format!("{} has no folder", path.display()))?
            .to_path_buf();
        let name = path
            .file_name()
            .ok_or_else(|| format!("{} has no file name", path.display()))?
            .to_owned();
        Ok(Target::File { dir, name })
    }

    fn matches(&self, changed: &Path) -> bool {
        match self {
            Target::File { dir, name } => {
                changed.file_name() == Some(name) && changed.parent() == Some(dir)
            }
            Target::Crate { dir } => changed.strip_prefix(dir).is_ok_and(is_source),
        }
    }

    /// The folders to watch. A crate's own folder is watched without its
    /// subfolders (its manifest, lock file and `build.rs`), and only `src/`
    /// and `wit/` recursively: a standalone crate's `target/` holds
    /// thousands of folders a recursive watch would subscribe to one by one
    /// and a build would flood with events.
    fn watches(&self) -> Vec<(PathBuf, RecursiveMode)> {
        match self {
            Target::File { dir, .. } => vec![(dir.clone(), RecursiveMode::NonRecursive)],
            Target::Crate { dir } => std::iter::once((dir.clone(), RecursiveMode::NonRecursive))
                .chain(
                    ["src", "wit"]
                        .iter()
                        .map(|sub| dir.join(sub))
                        .filter(|sub| sub.is_dir())
                        .map(|sub| (sub, RecursiveMode::Recursive)),
                )
                .collect(),
        }
    }

    fn quiet(&self) -> Duration {
        match self {
            Target::File { .. } => WASM_QUIET,
            Target::Crate { .. } => CRATE_QUIET,
        }
    }
}

/// Whether `rel` (inside a crate folder) is a source whose change needs a
/// rebuild: `src/` and `wit/` files, the manifest, the lock file, `build.rs`;
/// never build output, data or hidden (editor) files.
fn is_source(rel: &Path) -> bool {
    let hidden = rel
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')));
    let top = rel
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    !hidden
        && matches!(
            top,
            "src" | "wit" | "Cargo.toml" | "Cargo.lock" | "build.rs"
        )
}

/// What one reload did, handed to the watcher's `report` callback (the
/// audit trail keeps it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The plugin's name.
    pub plugin: String,
    /// The new version's SHA-256, or why the new build was refused (the
    /// last good version keeps serving).
    pub outcome: Result<String, String>,
}

/// Called on the reload thread after every reload that swapped or failed.
pub type ReloadCallback = Box<dyn Fn(ReloadReport) + Send>;

/// Starts watching `plugins`; reloads run on a thread of their own, and each
/// one that swapped a version or failed is passed to `report`.
pub fn watch(plugins: Vec<Arc<Plugin>>, report: ReloadCallback) -> Result<PluginWatcher, String> {
    let (tx, rx) = channel();
    let mut watcher =
        notify::recommended_watcher(tx).map_err(|e| format!("cannot watch plugin files: {e}"))?;
    let mut watched = Vec::new();
    for plugin in plugins {
        let target = Target::of(&plugin.config().path)
            .map_err(|e| format!("plugin {:?}: {e}", plugin.name()))?;
        let dir = match &target {
            Target::File { dir, .. } | Target::Crate { dir } => dir.clone(),
        };
        for (path, mode) in target.watches() {
            watcher.watch(&path, mode).map_err(|e| {
                format!(
                    "plugin {:?}: cannot watch {}: {e}",
                    plugin.name(),
                    path.display()
                )
            })?;
        }
        tracing::info!(plugin = %plugin.name(), watching = %dir.display(), "hot reload on");
        watched.push(Watched { plugin, target });
    }
    std::thread::Builder::new()
        .name("plugin-reload".into())
        .spawn(move || reload_loop(rx, watched, report))
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;
    Ok(PluginWatcher { _watcher: watcher })
}

/// Collects change events, and reloads each plugin once its files have been
/// quiet for a moment. Ends when the watcher is dropped.
fn reload_loop(
    rx: Receiver<notify::Result<notify::Event>>,
    watched: Vec<Watched>,
    report: ReloadCallback,
) {
    // Plugin index -> (first change, last change) of the pending burst.
    let mut pending: HashMap<usize, (Instant, Instant)> = HashMap::new();
    loop {
        let now = Instant::now();
        let wait = pending
            .iter()
            .map(|(i, (_, last))| {
                (*last + watched[*i].target.quiet()).saturating_duration_since(now)
            })
            .min()
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Ok(event)) if is_change(&event.kind) => {
                let now = Instant::now();
                for (i, w) in watched.iter().enumerate() {
                    if event.paths.iter().any(|p| w.target.matches(p)) {
                        pending
                            .entry(i)
                            .and_modify(|(_, last)| *last = now)
                            .or_insert((now, now));
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "plugin file watch error"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let due: Vec<usize> = pending
            .iter()
            .filter(|(i, (_, last))| *last + watched[**i].target.quiet() <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            let (first, _) = pending.remove(&i).expect("due entries are pending");
            if let Some(r) = reload_one(&watched[i], first) {
                report(r);
            }
        }
    }
}

/// Writes and renames count; reads (including our own) do not.
fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any
    )
}

fn reload_one(w: &Watched, first_change: Instant) -> Option<ReloadReport> {
    let plugin = &w.plugin;
    if let Target::File { dir, name } = &w.target
        && !dir.join(name).is_file()
    {
        // Removed mid-build; its re-creation will bring us back.
        return None;
    }
    let outcome = match plugin.reload() {
        Ok(Reloaded::Swapped { sha256 }) => {
            tracing::info!(
                plugin = %plugin.name(),
                sha256 = %sha256,
                after_ms = first_change.elapsed().as_millis() as u64,
                "plugin reloaded: new requests use the new version"
            );
            Ok(sha256)
        }
        Ok(Reloaded::Unchanged) => {
            tracing::debug!(plugin = %plugin.name(), "plugin file touched, content unchanged");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "plugin reload failed; the last good version keeps serving");
            Err(e.to_string())
        }
    };
    Some(ReloadReport {
        plugin: plugin.name().to_owned(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_targets_match_only_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.wasm");
        std::fs::write(&file, b"x").unwrap();
        let t = Target::of(&file).unwrap();
        let canon = file.canonicalize().unwrap();
        assert!(t.matches(&canon));
        assert!(!t.matches(&canon.with_file_name("q.wasm")));
        assert_eq!(t.quiet(), WASM_QUIET);
    }

    #[test]
    fn crate_targets_ignore_their_build_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]").unwrap();
        let t = Target::of(dir.path()).unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert!(t.matches(&root.join("src/lib.rs")));
        assert!(t.matches(&root.join("Cargo.toml")));
        assert!(!t.matches(&root.join("target/release/p.wasm")));
        assert!(!t.matches(&root.join("data/plugins-kv/db")));
        assert!(!t.matches(&root.join("src/.lib.rs.swp")));
        assert!(!t.matches(Path::new("/elsewhere/src/lib.rs")));
    }

    #[test]
    fn crate_targets_never_watch_their_target_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]").unwrap();
        for sub in ["src/nested", "target/wasm32-wasip2/release/deps", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let root = dir.path().canonicalize().unwrap();
        let watches = Target::of(dir.path()).unwrap().watches();
        assert_eq!(
            watches,
            [
                (root.clone(), RecursiveMode::NonRecursive),
                (root.join("src"), RecursiveMode::Recursive)
            ]
        );
    }
}
