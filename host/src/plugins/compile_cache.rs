//! Compiled components kept on disk, keyed by the component's SHA-256 and
//! the engine's compatibility hash (wasmtime version and settings), so an
//! unchanged plugin starts without running Cranelift.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

/// A folder of precompiled components.
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    /// The cached compilation of the component whose bytes hash to
    /// `sha256`, or `compile()` stored for next time. A cache that cannot be
    /// read or written only costs a compilation.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        compile: impl FnOnce() -> Result<Component, String>,
    ) -> Result<Component, String> {
        let name = format!("{sha256}-{}.cwasm", self.engine_key);
        let path = self.dir.join(name);
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` of this
            // same engine configuration (the name carries its compatibility
            // hash) into the server's own data dir; wasmtime still checks
            // the header and refuses files from other versions or settings.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled plugin")
                }
            }
        }
        let component = compile()?;
        if let Err(e) = self.write(&path, &component) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot cache the compiled plugin");
        }
        Ok(component)
    }

    fn write(&self, path: &std::path::Path, component: &Component) -> Result<(), String> {
        let bytes = component.serialize().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        // Write aside and rename: a half-written file is never read.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    }
}
