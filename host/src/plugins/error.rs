//! Plugin failures: loading problems (fatal at start, kept as "last error"
//! on reload) and call failures (503 for that request).

use std::path::PathBuf;

/// What went wrong with a plugin; always names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine could not be set up.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// The plugins' storage could not be opened.
    #[error("plugin storage: {0}")]
    Storage(String),
    /// The file could not be compiled or does not fit its slot.
    #[error("plugin {name:?} ({path}): {reason}")]
    Load {
        /// The plugin's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The plugin's `init` refused its config, or its manifest asks for
    /// more than the operator granted (`field` is the config key to fix).
    #[error("plugin {name:?}: {reason}")]
    Refused {
        /// The plugin's name.
        name: String,
        /// The key of the plugin's entry at fault: `config`, `secrets`,
        /// `allowed_hosts` or `credential_headers`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A call into the plugin failed; the request fails closed.
    #[error("plugin {plugin:?} failed in {export}: {cause}")]
    Call {
        /// The plugin's name.
        plugin: String,
        /// The export that was called.
        export: &'static str,
        /// What happened.
        cause: CallFailure,
    },
}

/// Why one call into a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    /// It ran past its time limit.
    #[error("ran past its {0} ms time limit")]
    Timeout(u32),
    /// It tried to use more memory than allowed.
    #[error("exceeded its {0} MiB memory limit")]
    MemoryLimit(u32),
    /// It overflowed its stack.
    #[error("stack overflow")]
    StackOverflow,
    /// It trapped (a panic, `unreachable`, ...).
    #[error("the guest trapped: {0}")]
    Trap(String),
    /// It reported that it could not decide (`failed`).
    #[error("failed: {0}")]
    Failed(String),
    /// It answered with something the host does not accept.
    #[error("returned an unacceptable answer: {0}")]
    BadOutput(String),
}
