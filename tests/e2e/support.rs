//! Test harness: the real `agentflow` binary on a free loopback port, the
//! reference plugins built for wasm32-wasip2, and a small recording
//! upstream standing in for the agent server.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Paths of the plugins the tests use, built once per test run.
pub struct Plugins {
    pub api_key: PathBuf,
    pub rbac: PathBuf,
    pub hostile: PathBuf,
    pub probe: PathBuf,
    pub oauth: PathBuf,
    pub cache_hint: PathBuf,
    pub access_echo: PathBuf,
    /// An authenticator built with the contract 0.2 SDK.
    pub legacy_v0_2: PathBuf,
    /// An authorizer built with the contract 0.2 SDK.
    pub legacy_authz_v0_2: PathBuf,
    /// The reference TOTP second factor (an authorizer).
    pub totp: PathBuf,
    /// The reference webhook signature checker (an authenticator).
    pub webhook_hmac: PathBuf,
}

/// Builds the reference and test plugins for wasm32-wasip2 (release) in a
/// target dir of their own, so the outer `cargo test` lock is not in the way.
pub fn plugins() -> &'static Plugins {
    static PLUGINS: OnceLock<Plugins> = OnceLock::new();
    PLUGINS.get_or_init(|| {
        let target = repo_root().join("target").join("e2e-plugins");
        let status = Command::new(env!("CARGO"))
            .current_dir(repo_root())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "api-key",
                "-p",
                "rbac",
                "-p",
                "hostile-plugin",
            ])
            .args([
                "-p",
                "probe-plugin",
                "-p",
                "oauth-introspect",
                "-p",
                "cache-hint-plugin",
                "-p",
                "access-echo-plugin",
                "-p",
                "legacy-v0-2-plugin",
                "-p",
                "legacy-authz-v0-2-plugin",
            ])
            // The contract 0.3 reference plugins (reference_plugins.rs).
            .args(["-p", "totp", "-p", "webhook-hmac"])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the plugins");
        assert!(
            status.success(),
            "building the plugins failed (is the wasm32-wasip2 target installed?)"
        );
        let out = target.join("wasm32-wasip2").join("release");
        Plugins {
            api_key: out.join("api_key.wasm"),
            rbac: out.join("rbac.wasm"),
            hostile: out.join("hostile_plugin.wasm"),
            probe: out.join("probe_plugin.wasm"),
            oauth: out.join("oauth_introspect.wasm"),
            cache_hint: out.join("cache_hint_plugin.wasm"),
            access_echo: out.join("access_echo_plugin.wasm"),
            legacy_v0_2: out.join("legacy_v0_2_plugin.wasm"),
            legacy_authz_v0_2: out.join("legacy_authz_v0_2_plugin.wasm"),
            totp: out.join("totp.wasm"),
            webhook_hmac: out.join("webhook_hmac.wasm"),
        }
    })
}

/// A 32+ byte HMAC secret for tests.
pub const SECRET: &str = "e2e-test-secret-0123456789abcdef0123456789";

/// A running `agentflow run`, killed on drop.
pub struct Server {
    process: Listening,
    pub base: String,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
}

/// A child process that logged `listening on <url>` (the server, or the
/// benchmark's upstream), killed on drop. Shared with the benchmark
/// (`host/benches/gateway.rs`), which times start-up with it.
pub struct Listening {
    pub child: Child,
    /// The URL after `listening on `.
    pub url: String,
    /// From spawn to that line (the benchmark's start-up time).
    #[allow(dead_code, reason = "read by the benchmark, not the tests")]
    pub took: Duration,
    /// What it wrote to stderr (the first 16 MiB).
    pub logs: Arc<Mutex<String>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` (stderr piped, stdout discarded) and waits up to two
/// minutes for it to log `listening on <url>`; panics with its output if it
/// does not.
pub fn spawn_listening(mut cmd: Command, what: &str) -> Listening {
    let started = Instant::now();
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                // The URL ends at a space or, in JSON logs, a quote.
                let url = addr.split(['"', ' ']).next().unwrap_or(addr);
                let _ = tx.send((url.trim().to_owned(), started.elapsed()));
            }
            // Bounded: a load run must not grow it without end.
            let mut logs = sink.lock().unwrap();
            if logs.len() < 16 << 20 {
                logs.push_str(&line);
                logs.push('\n');
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((url, took)) => Listening {
            child,
            url,
            took,
            logs,
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not start:\n{}", logs.lock().unwrap());
        }
    }
}

impl Server {
    /// Starts the binary on `config` with `env` set; panics with the
    /// server's output if it does not come up.
    pub fn start(config: Value, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentflow.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Server::start_file(dir, &path, env)
    }

    /// Starts the binary on an existing config file.
    pub fn start_file(dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::spawn(dir, config.to_path_buf(), env)
    }

    /// Stops the server and starts it again on the same config, data dir
    /// and environment (with `extra` variables overriding).
    pub fn restart(self, extra: &[(&str, &str)]) -> Server {
        self.stop().start(extra)
    }

    /// Stops the server, keeping its folder (config and data dir).
    pub fn stop(self) -> Stopped {
        let Server {
            process,
            dir,
            config,
            env,
            ..
        } = self;
        drop(process); // killed and reaped
        Stopped { dir, config, env }
    }

    /// Starts the binary with its open-files limit (soft and hard) lowered
    /// to `nofile`, as on a host with `ulimit -n` that low.
    pub fn start_with_fd_limit(config: Value, env: &[(&str, &str)], nofile: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentflow.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cmd = agentflow_command();
        limit_open_files(&mut cmd, nofile);
        Server::spawn_command(cmd, dir, path, env)
    }

    /// Starts the binary with `args` added to `run` (e.g. `--log-format json`).
    pub fn start_with_args(config: Value, env: &[(&str, &str)], args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentflow.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cmd = agentflow_command();
        cmd.arg("run").args(args);
        Server::spawn_command(cmd, dir, path, env)
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn spawn(dir: tempfile::TempDir, config: PathBuf, env: Vec<(String, String)>) -> Server {
        Server::spawn_command(agentflow_command(), dir, config, env)
    }

    fn spawn_command(
        mut cmd: Command,
        dir: tempfile::TempDir,
        config: PathBuf,
        env: Vec<(String, String)>,
    ) -> Server {
        // `start_with_args` has put `run` and its extra flags first.
        if !cmd.get_args().any(|a| a == "run") {
            cmd.arg("run");
        }
        cmd.args(["--port", "0", "--config"]).arg(&config);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let process = spawn_listening(cmd, "agentflow");
        Server {
            base: process.url.clone(),
            process,
            dir,
            config,
            env,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.process.logs.lock().unwrap().clone()
    }

    /// Whether the log shows `needle` within a few seconds: lines reach us
    /// through a reader thread, so a line logged just before a response may
    /// arrive just after it.
    pub fn logged(&self, needle: &str) -> bool {
        wait_for(Duration::from_secs(5), || self.logs().contains(needle)).is_some()
    }
}

/// A stopped server's folder and settings.
pub struct Stopped {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Stopped {
    /// Starts it again (with `extra` variables overriding).
    pub fn start(mut self, extra: &[(&str, &str)]) -> Server {
        for (k, v) in extra {
            self.env.retain(|(name, _)| name != k);
            self.env.push((k.to_string(), v.to_string()));
        }
        Server::spawn(self.dir, self.config, self.env)
    }
}

/// The `agentflow` binary with a clean environment for the variables the
/// server reads, so the developer's own settings cannot leak into tests.
pub fn agentflow_command() -> Command {
    agentflow_command_at(Path::new(env!("CARGO_BIN_EXE_agentflow")))
}

/// [`agentflow_command`] for the binary at `bin` (the benchmark runs a
/// private copy, so a rebuild during its run cannot change what it measures).
pub fn agentflow_command_at(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("JWT_") || k.starts_with("AGENTFLOW_") || k == "DOCS_PATH" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Lowers the child's `RLIMIT_NOFILE` (soft and hard) to `nofile`.
fn limit_open_files(cmd: &mut Command, nofile: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub fn run_agentflow(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = agentflow_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running agentflow");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A stand-in agent server on loopback that records every request. It
/// answers `{"ok": true, "path": ...}`, and `/v1/graph/stream` with three
/// server-sent events 300 ms apart.
pub struct Upstream {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new().fallback(record).with_state(seen.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream {
            base: format!("http://{addr}"),
            seen,
            _runtime: runtime,
        }
    }

    /// The last request received.
    pub fn last(&self) -> Recorded {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn record(State(seen): State<Arc<Mutex<Vec<Recorded>>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
    });
    if parts.uri.path() == "/v1/graph/stream" {
        let events = futures_util::stream::unfold(0u32, |i| async move {
            if i == 3 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(format!("data: {{\"n\": {i}}}\n\n"))),
                i + 1,
            ))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap();
    }
    let body = json!({"ok": true, "path": path_and_query});
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "yes")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// What a test sees of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `detail` of an error body.
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or("")
    }
}

/// Sends a request with blocking I/O (tests are plain `#[test]` functions).
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> Reply {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers, None)
}

pub fn post(url: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    send("POST", url, headers, Some(body))
}

/// Unix time now, in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `claims` signed with `secret`.
pub fn hs256(secret: &str, claims: Value) -> String {
    sign(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

pub fn sign(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    claims: Value,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// SHA-256 hex of `s` (how api-key plugin configs store keys).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Polls `f` every 10 ms until it is true or `limit` passes; how long it took.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if f() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Runs the headless-Chromium script `tests/console/<script>` under node
/// with `env` (and `CHROMIUM` set), and returns the JSON result it printed
/// last and whether it exited successfully; panics with its output if it
/// printed none.
pub fn browser_script(script: &str, env: &[(&str, &str)]) -> (Value, bool) {
    let root = repo_root();
    assert!(
        root.join("tests/console/node_modules/playwright-core")
            .is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs chromium and playwright-core: run scripts/install-browser-test"
    );
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/console").join(script))
        .env("CHROMIUM", "/usr/bin/chromium");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the browser script printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (result, out.status.success())
}
