//! # hostile-plugin — TEST FIXTURE, NOT AN EXAMPLE
//!
//! **Do not copy this crate.** It is a deliberately misbehaving
//! [`Authenticator`] used only by agentflow's end-to-end tests to prove that
//! the host's sandbox limits hold: timeouts, memory caps, traps, stack
//! overflow and oversized results must all fail the request closed (and
//! leave the server healthy). For how a real plugin looks, read
//! `plugins/api-key` or `plugins/rbac`.
//!
//! ## Config
//!
//! ```json
//! {"mode": "ok", "user_id": "hostile-ok", "ms": 300}
//! ```
//!
//! `mode` (default `"ok"`) picks the behaviour of every `authenticate` call:
//!
//! | mode          | behaviour                                                        |
//! |---------------|------------------------------------------------------------------|
//! | `ok`          | authenticated as `user_id` (default `hostile-ok`), role `user`   |
//! | `loop`        | spins forever (the host's timeout must stop it)                  |
//! | `trap`        | panics, i.e. the wasm instance traps                             |
//! | `grow-memory` | allocates and fills 1 MiB blocks forever, keeping them all       |
//! | `recurse`     | unbounded recursion (stack overflow)                             |
//! | `huge-output` | authenticated with an 8 MiB `user_id` (the host must reject it)  |
//! | `slow`        | busy-waits `ms` milliseconds (default 300), then authenticated as `hostile-slow`, role `user` |
//! | `log-flood`   | writes `lines` (default 5000) 64 KiB log lines, each with a forged line break, then authenticated as `hostile-log-flood` |
//!
//! `user_id` only matters in `ok` mode (hot-reload tests change it to see
//! which build answered); `ms` only in `slow` mode; `lines` only in
//! `log-flood` mode. Unknown modes or fields make `new` fail, which the
//! host reports as a 503.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentflow_plugin_sdk::{Authenticator, AuthnOutcome, Identity, Request, host};
use serde::Deserialize;

/// Size of each block hoarded by `grow-memory`.
const MIB: usize = 1 << 20;

/// Length of the `user_id` returned by `huge-output`.
pub const HUGE_USER_ID_LEN: usize = 8 * MIB;

/// What the plugin does when asked to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Behave: authenticate as the configured user.
    #[default]
    Ok,
    /// Never return.
    Loop,
    /// Panic.
    Trap,
    /// Exhaust linear memory.
    GrowMemory,
    /// Exhaust the stack.
    Recurse,
    /// Return an oversized identity.
    HugeOutput,
    /// Take `ms` milliseconds of CPU, then succeed.
    Slow,
    /// Flood the server's log, then succeed.
    LogFlood,
}

/// The fixture's `config` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The behaviour to exhibit.
    #[serde(default)]
    pub mode: Mode,
    /// The user `ok` mode authenticates as.
    #[serde(default = "default_user_id")]
    pub user_id: String,
    /// How long `slow` mode busy-waits, in milliseconds.
    #[serde(default = "default_ms")]
    pub ms: u64,
    /// How many lines `log-flood` mode writes.
    #[serde(default = "default_lines")]
    pub lines: u32,
}

fn default_lines() -> u32 {
    5000
}

/// Length of each line `log-flood` writes.
pub const FLOOD_LINE_LEN: usize = 64 * 1024;

/// What `log-flood` writes after its forged line break, to show whether a
/// plugin can start a log line of its own.
pub const FORGED_LINE: &str = "ERROR agentflow: forged by hostile-plugin";

fn default_user_id() -> String {
    "hostile-ok".to_owned()
}

fn default_ms() -> u64 {
    300
}

/// The hostile authenticator.
pub struct Hostile(Config);

impl Authenticator for Hostile {
    type Config = Config;

    fn new(config: Config) -> agentflow_plugin_sdk::Result<Self> {
        Ok(Hostile(config))
    }

    fn authenticate(&self, _req: &Request) -> agentflow_plugin_sdk::Result<AuthnOutcome> {
        let who = match self.0.mode {
            Mode::Ok => Identity::new(&self.0.user_id).with_role("user"),
            Mode::Loop => spin_forever(),
            Mode::Trap => panic!("hostile plugin trapped on purpose"),
            Mode::GrowMemory => hoard_memory(),
            Mode::Recurse => {
                recurse(0);
                unreachable!("unbounded recursion returned")
            }
            Mode::HugeOutput => Identity::new("x".repeat(HUGE_USER_ID_LEN)).with_role("user"),
            Mode::Slow => {
                busy_wait(Duration::from_millis(self.0.ms));
                Identity::new("hostile-slow").with_role("user")
            }
            Mode::LogFlood => {
                flood_log(self.0.lines);
                Identity::new("hostile-log-flood").with_role("user")
            }
        };
        Ok(AuthnOutcome::authenticated(who))
    }
}

/// Loops forever; black_box on the counter stops the optimiser from
/// proving the loop side-effect free and removing it.
fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB blocks forever, writing every byte (so the pages are
/// really committed) and keeping every block alive.
fn hoard_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // A non-zero fill cannot be served by lazily-zeroed fresh pages.
        hoard.push(vec![0xA5; MIB]);
        black_box(&mut hoard);
    }
}

/// Deepest level `recurse` reached; storing it is the side effect that
/// keeps the optimiser from deleting the recursion.
static DEPTH: AtomicU64 = AtomicU64::new(0);

/// Recurses without bound on the wasm call stack, so the engine reports a
/// stack overflow. The result is used after the call (not a tail call, not
/// foldable into a loop), and nothing takes a local's address: `black_box`
/// here would move every frame onto Rust's 1 MiB shadow stack in linear
/// memory, which overflows first and traps as an out-of-bounds access.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    DEPTH.store(depth, Ordering::Relaxed);
    let below = recurse(depth + 1);
    below.wrapping_mul(31) ^ depth
}

/// Writes `lines` log lines of [`FLOOD_LINE_LEN`] bytes, each starting with
/// a line break and a forged log line.
fn flood_log(lines: u32) {
    let mut line = format!("flood\n{FORGED_LINE} ");
    line.push_str(&"x".repeat(FLOOD_LINE_LEN - line.len()));
    for _ in 0..lines {
        host::info(black_box(&line));
    }
}

/// Burns CPU until `duration` has passed (no sleeping: the host must see a
/// busy guest, as with a genuinely slow plugin).
fn busy_wait(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

agentflow_plugin_sdk::export_authenticator!(Hostile);

#[cfg(test)]
mod tests;
