//! Per-call sandbox state and the `host` interface plugins may import:
//! logging (within the limits of [`super::log_limit`]), config, granted
//! secrets, private key-value storage, and `wasi:http` limited to the
//! plugin's allowed hosts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::kv::PluginKv;
use super::log_limit::{self, CallBudget, LogLimiter};
use super::outbound::{AllowList, OutboundPolicy};

/// How much of a plugin's stderr is kept for error reports (a Rust panic
/// message lands there).
const STDERR_CAPTURE: usize = 16 * 1024;

/// What every call of one plugin version shares.
#[derive(Debug)]
pub(crate) struct PluginShared {
    /// The plugin's name, for logs.
    pub name: String,
    /// Its `config`, as JSON text.
    pub config_json: String,
    /// The secrets it was granted, by name.
    pub secrets: HashMap<String, String>,
    /// Its private storage, when the server has storage.
    pub kv: Option<Arc<PluginKv>>,
    /// The hosts it may send HTTP requests to.
    pub allowed_hosts: AllowList,
    /// How much it may still write into the server's log.
    pub log: Arc<LogLimiter>,
}

/// The data of one sandbox (one `Store`), created fresh for every call.
pub(crate) struct PluginState {
    /// When the current call must end; read by the epoch callback.
    pub deadline: Instant,
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: StoreLimits,
    pub stderr: MemoryOutputPipe,
    shared: Arc<PluginShared>,
    http: WasiHttpCtx,
    outbound: OutboundPolicy,
    /// What the current call has logged.
    call_log: CallBudget,
}

impl PluginState {
    /// A closed sandbox: no files, no environment, no sockets; stderr kept;
    /// outbound HTTP only to the allowed hosts and only until `deadline`.
    pub fn new(shared: Arc<PluginShared>, limits: StoreLimits, deadline: Instant) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let outbound = OutboundPolicy::new(
            shared.name.clone(),
            shared.allowed_hosts.clone(),
            shared.log.clone(),
            deadline,
        );
        PluginState {
            deadline,
            wasi,
            table: ResourceTable::new(),
            limits,
            stderr,
            shared,
            http: WasiHttpCtx::new(),
            outbound,
            call_log: CallBudget::default(),
        }
    }

    /// Starts another call in a reused sandbox: a new deadline for guest
    /// code and outbound HTTP alike, and a new per-call log budget.
    pub fn begin_call(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.outbound.set_deadline(deadline);
        self.call_log = CallBudget::default();
    }

    /// Ends a call (whatever its outcome): says how many log lines the
    /// plugin's limits dropped, when a note is due.
    pub fn end_call(&self) {
        if let Some(dropped) = self.shared.log.due_note() {
            tracing::warn!(
                plugin = %self.shared.name,
                dropped,
                "suppressed {dropped} log lines from this plugin: over its log limit ({} lines / {} KiB per call, {} KiB/s)",
                log_limit::MAX_LINES_PER_CALL,
                log_limit::MAX_BYTES_PER_CALL / 1024,
                log_limit::REFILL_BYTES_PER_SEC as usize / 1024,
            );
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What the `host` interface does, shared by every contract version's
/// bindings (see [`super::v0_2`], [`super::v0_3`]).
impl PluginState {
    /// Writes a plugin's log line, within its limits.
    pub(crate) fn log_line(&mut self, level: tracing::Level, message: &str) {
        let plugin = self.shared.name.as_str();
        let message = log_limit::sanitize(message, log_limit::MAX_LINE);
        if !self.shared.log.admit(&mut self.call_log, message.len()) {
            return;
        }
        match level {
            tracing::Level::DEBUG | tracing::Level::TRACE => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            _ => tracing::error!(plugin, "{message}"),
        }
    }

    /// The plugin's config as JSON text.
    pub(crate) fn config_json(&self) -> String {
        self.shared.config_json.clone()
    }

    /// A granted secret's value.
    pub(crate) fn secret_value(&self, name: &str) -> Option<String> {
        self.shared.secrets.get(name).cloned()
    }

    /// The plugin's storage, when the server has any.
    pub(crate) fn kv(&self) -> Option<&PluginKv> {
        self.shared.kv.as_deref()
    }

    /// The plugin's storage, or why there is none.
    pub(crate) fn kv_or_err(&self) -> Result<&PluginKv, String> {
        self.kv()
            .ok_or_else(|| "plugin storage is not available (the server has no data dir)".into())
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
