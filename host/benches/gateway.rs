//! The gateway benchmark: `cargo bench -p agentflow --bench gateway`
//! (or `scripts/bench`, which installs what it needs first).
//!
//! Two parts, all in one run so the ratios compare like with like:
//!
//! 1. **Load**: for each variant (no auth, built-in JWT HS256 and RS256, the
//!    api-key plugin, a plugin with a cache hint, and authenticator +
//!    authorizer chains, and the api-key plugin with `reuse_instance`) the real release `agentflow` binary is started on a
//!    loopback port with a generated config, and `wrk` drives two routes:
//!    `POST /v1/graph/invoke` (authenticated, authorized, forwarded to the
//!    upstream) and `GET /v1/whoami` (authentication only, no forwarding, so
//!    the cost of auth is visible without the upstream's). Each variant
//!    reports requests/s, p50 and p99 and its ratio to "no auth" on the same
//!    route. Server start-up with three plugins is timed too.
//! 2. **Micro**: single-threaded per-call latency of one JWT verification
//!    (`agentflow::jwt::JwtVerifier`) and one plugin call through the public
//!    plugin API (`PluginRuntime::load` + `Plugin::authenticate` /
//!    `authorize`: a fresh sandbox is instantiated and called every time).
//!
//! The upstream ("agent") is this same executable re-run as a separate,
//! single-threaded process (`AGENTFLOW_BENCH_ROLE=upstream`): it answers every
//! request with a small JSON body. A separate process keeps its work out of
//! the bench process (which times micro-benchmarks) and makes its CPU use
//! visible to the OS scheduler like the server's; one thread caps what it can
//! take from the server on a small machine. It is the same for every
//! variant, so it cancels out of the ratios.
//!
//! Options (after `--`): `--quick` (1 s per load run), `--micro` (only the
//! micro-benchmarks), `--load` (only the load runs), `--login-flood` (only
//! authenticated latency during a login flood; see `gateway/login_flood.rs`). Environment:
//! `BENCH_DURATION` (seconds per load run, default 3), `BENCH_ROUNDS` (passes over
//! all variants, default 3; figures are medians), `BENCH_CONNECTIONS`
//! (default 32), `BENCH_THREADS` (wrk threads, default 2), `BENCH_ITERS`
//! (micro-benchmark iterations, default 20000).
//!
//! Nothing here runs under `cargo test`: without cargo bench's `--bench`
//! argument the binary prints how to run it and exits.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentflow::config::{AuthMethodConfig, Config, Env, JwtOptions, PluginConfig};
use agentflow::identity::Identity;
use agentflow::jwt::{JwtMethod, JwtSigner, JwtVerifier};
use agentflow::plugins::{Access, AuthnOutcome, AuthzOutcome, PluginRequest, PluginRuntime, Slot};
use serde_json::{Map, Value, json};

// In a folder of its own: a file directly in benches/ would be taken for
// another bench target.
#[path = "gateway/login_flood.rs"]
mod login_flood;

const ROLE_VAR: &str = "AGENTFLOW_BENCH_ROLE";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const API_KEY: &str = "bench-api-key-0123456789";
const INVOKE_BODY: &str =
    r#"{"input":{"messages":[{"role":"user","content":"hello"}]},"config":{"tags":["bench"]}}"#;

fn main() {
    if std::env::var(ROLE_VAR).as_deref() == Ok("upstream") {
        upstream::main();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "gateway benchmark: run it with `cargo bench -p agentflow --bench gateway` (or scripts/bench)"
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only_micro = args.iter().any(|a| a == "--micro");
    let only_load = args.iter().any(|a| a == "--load");
    let opts = LoadOpts {
        duration_s: env_num("BENCH_DURATION", if quick { 1 } else { 3 }),
        rounds: env_num("BENCH_ROUNDS", if quick { 1 } else { 3 }),
        connections: env_num("BENCH_CONNECTIONS", 32),
        threads: env_num("BENCH_THREADS", 2),
    };
    let iters = env_num("BENCH_ITERS", if quick { 5_000 } else { 20_000 }) as usize;

    print_machine();
    let fixtures = Fixtures::prepare();
    if args.iter().any(|a| a == "--login-flood") {
        login_flood::run(&fixtures, &opts);
        return;
    }
    let mut report = Report::default();
    if !only_load {
        micro(&fixtures, iters, &mut report);
    }
    if !only_micro {
        startup(&fixtures, &mut report);
        load(&fixtures, &opts, &mut report);
    }
    report.targets();
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# agentflow gateway benchmark");
    println!();
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(repo_root())
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!("machine: {cores} cores, {cpu}, {mem} RAM");
    println!(
        "code: {commit}{}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    println!("(numbers from a shared or busy machine are noisy; compare ratios within one run)");
    println!();
}

// ---------------------------------------------------------------------------
// Fixtures: plugins, keys, tokens
// ---------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Fixtures {
    dir: tempfile::TempDir,
    /// A private copy of the release binary, so a rebuild in the shared
    /// target dir during the run cannot change what is measured.
    server_bin: PathBuf,
    api_key_wasm: PathBuf,
    rbac_wasm: PathBuf,
    cache_hint_wasm: PathBuf,
    rsa_public: PathBuf,
    hs256_token: String,
    rs256_token: String,
}

impl Fixtures {
    fn prepare() -> Fixtures {
        let dir = tempfile::tempdir().expect("temp dir");
        let server_bin = dir.path().join("agentflow");
        std::fs::copy(env!("CARGO_BIN_EXE_agentflow"), &server_bin)
            .expect("copying the agentflow binary");
        let (api_key_wasm, rbac_wasm, cache_hint_wasm) = build_plugins();

        // RS256 keys from the openssl command line, as the README suggests.
        let private = dir.path().join("rsa-private.pem");
        let public = dir.path().join("rsa-public.pem");
        run_ok(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&private),
        );
        run_ok(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public),
        );
        let private_pem = std::fs::read_to_string(&private).unwrap();

        let claims = {
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3 * 3600;
            let mut m = Map::new();
            m.insert("sub".into(), json!("bench-user"));
            m.insert("role".into(), json!("user"));
            m.insert("exp".into(), json!(exp));
            m
        };
        let sign = |pairs: &[(&str, &str)]| {
            let env = Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            JwtSigner::from_env(&env, dir.path())
                .expect("signer")
                .sign(&claims)
                .expect("signing")
        };
        let hs256_token = sign(&[("JWT_SECRET_KEY", SECRET), ("JWT_ALGORITHM", "HS256")]);
        let rs256_token = sign(&[("JWT_SECRET_KEY", &private_pem), ("JWT_ALGORITHM", "RS256")]);
        Fixtures {
            dir,
            server_bin,
            api_key_wasm,
            rbac_wasm,
            cache_hint_wasm,
            rsa_public: public,
            hs256_token,
            rs256_token,
        }
    }

    fn api_key_config(&self) -> Value {
        json!({"keys": [{"sha256": sha256_hex(API_KEY), "user_id": "bench-service", "roles": ["user"], "name": "bench"}]})
    }

    fn rbac_config(&self) -> Value {
        json!({"roles": {
            "admin": {"*": ["*"]},
            "user": {"graph": ["invoke", "stream"], "checkpointer": ["read"], "store": ["read"]}
        }})
    }
}

/// Builds the reference plugins and the bench's cache-hint fixture for
/// wasm32-wasip2 (release), in the target dir the end-to-end tests use.
fn build_plugins() -> (PathBuf, PathBuf, PathBuf) {
    let target = repo_root().join("target").join("e2e-plugins");
    eprintln!(
        "building plugins for wasm32-wasip2 (release) in {}",
        target.display()
    );
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
            "cache-hint-plugin",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let out = target.join("wasm32-wasip2").join("release");
    (
        out.join("api_key.wasm"),
        out.join("rbac.wasm"),
        out.join("cache_hint_plugin.wasm"),
    )
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

// ---------------------------------------------------------------------------
// Micro-benchmarks
// ---------------------------------------------------------------------------

/// Per-call latencies, sorted.
struct Samples(Vec<Duration>);

impl Samples {
    fn measure(iters: usize, mut f: impl FnMut()) -> Samples {
        for _ in 0..(iters / 10).max(100) {
            f();
        }
        let mut v = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            f();
            v.push(t.elapsed());
        }
        v.sort();
        Samples(v)
    }

    fn pct(&self, p: f64) -> Duration {
        let i = ((p * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[i]
    }

    fn mean(&self) -> Duration {
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The plugins' resolved configs, read through `Config::load` like the
/// server does (so defaults and limits follow the config code).
fn plugin_configs(fx: &Fixtures) -> (PluginConfig, PluginConfig) {
    let path = fx.dir.path().join("micro.json");
    let config = json!({
        "auth": {"method": "custom", "name": "api-key", "path": fx.api_key_wasm, "config": fx.api_key_config()},
        "authorization": {"name": "rbac", "path": fx.rbac_wasm, "config": fx.rbac_config()}
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("micro-benchmark config: {e}"));
    let authn = match cfg.auth.as_slice() {
        [AuthMethodConfig::Plugin(p)] => p.clone(),
        other => panic!("unexpected auth config: {other:?}"),
    };
    (authn, cfg.authorization.expect("the authorizer"))
}

fn micro(fx: &Fixtures, iters: usize, report: &mut Report) {
    println!("## Micro-benchmarks (one thread, {iters} calls each, after a warm-up)");
    println!();
    println!("| operation | p50 | p99 | mean |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, s: &Samples| {
        println!(
            "| {name} | {} | {} | {} |",
            us(s.pct(0.5)),
            us(s.pct(0.99)),
            us(s.mean())
        )
    };

    // JWT verification.
    let hs = JwtVerifier::from_env(
        &Env::from_pairs([("JWT_SECRET_KEY".into(), SECRET.into())]),
        fx.dir.path(),
        &JwtOptions::default(),
    )
    .expect("HS256 verifier");
    let s = Samples::measure(iters, || {
        std::hint::black_box(
            hs.verify(std::hint::black_box(&fx.hs256_token))
                .expect("valid HS256 token"),
        );
    });
    row("JWT HS256 verify (`JwtVerifier::verify`)", &s);
    report.micro.insert("hs256", s.pct(0.5));
    let rs = JwtVerifier::from_env(
        &Env::from_pairs([
            ("JWT_ALGORITHM".into(), "RS256".into()),
            ("JWT_PUBLIC_KEY".into(), fx.rsa_public.display().to_string()),
        ]),
        fx.dir.path(),
        &JwtOptions::default(),
    )
    .expect("RS256 verifier");
    let s = Samples::measure(iters, || {
        std::hint::black_box(
            rs.verify(std::hint::black_box(&fx.rs256_token))
                .expect("valid RS256 token"),
        );
    });
    row("JWT RS256 verify (2048-bit key)", &s);

    // The gateway-signed upstream token: a cache hit per request for a known identity.
    let issuer =
        agentflow::upstream_token::TokenIssuer::new(&agentflow::config::UpstreamTokenConfig {
            algorithm: agentflow::config::UpstreamAlgorithm::Hs256,
            key: agentflow::config::UpstreamKey::Secret(SECRET.as_bytes().to_vec()),
            ttl_s: 3600,
            issuer: None,
            audience: None,
        })
        .expect("upstream token issuer");
    let who = hs.verify(&fx.hs256_token).expect("valid HS256 token");
    let s = Samples::measure(iters, || {
        std::hint::black_box(
            issuer
                .authorization(std::hint::black_box(&who))
                .expect("upstream token"),
        );
    });
    row(
        "upstream token, cached (`TokenIssuer::authorization`, HS256)",
        &s,
    );

    // Plugins and the gate's jwt method, on a single-threaded tokio runtime
    // (entering it per call costs well under a microsecond).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The gate's jwt method: a token seen before is answered from the
    // verified-token cache (digest + lookup + identity clone).
    let cached = JwtMethod::build(
        &Env::from_pairs([
            ("JWT_ALGORITHM".into(), "RS256".into()),
            ("JWT_PUBLIC_KEY".into(), fx.rsa_public.display().to_string()),
        ]),
        fx.dir.path(),
        &JwtOptions::default(),
    )
    .expect("RS256 method");
    rt.block_on(cached.verify(&fx.rs256_token))
        .expect("valid RS256 token");
    let s = Samples::measure(iters, || {
        std::hint::black_box(
            rt.block_on(cached.verify(std::hint::black_box(&fx.rs256_token)))
                .expect("cached token"),
        );
    });
    row(
        "JWT RS256 verify, cached (`JwtMethod::verify`, token seen before)",
        &s,
    );
    let runtime = PluginRuntime::new().expect("plugin engine");
    let env = Env::default();
    let t = Instant::now();
    let (api_key_cfg, rbac_cfg) = plugin_configs(fx);
    let api_key = runtime
        .load(&api_key_cfg, Slot::Authenticator, &env)
        .expect("loading api-key");
    let load_api_key = t.elapsed();
    let t = Instant::now();
    let rbac = runtime
        .load(&rbac_cfg, Slot::Authorizer, &env)
        .expect("loading rbac");
    let load_rbac = t.elapsed();

    let req = PluginRequest::new(
        "POST".into(),
        "/v1/graph/invoke".into(),
        String::new(),
        vec![
            ("content-type".into(), "application/json".into()),
            ("x-api-key".into(), API_KEY.into()),
        ],
        Some("127.0.0.1".into()),
    );
    let s = Samples::measure(iters, || {
        let out = rt
            .block_on(api_key.authenticate(&req))
            .expect("api-key call");
        assert!(
            matches!(out, AuthnOutcome::Authenticated { .. }),
            "api-key did not authenticate: {out:?}"
        );
    });
    row(
        "plugin call: api-key `authenticate` (instantiate + call, fresh sandbox)",
        &s,
    );
    report.micro.insert("plugin", s.pct(0.5));

    let reused = runtime
        .load(
            &PluginConfig {
                reuse_instance: true,
                ..api_key_cfg.clone()
            },
            Slot::Authenticator,
            &env,
        )
        .expect("loading api-key with reuse_instance");
    let s = Samples::measure(iters, || {
        let out = rt
            .block_on(reused.authenticate(&req))
            .expect("api-key call");
        assert!(
            matches!(out, AuthnOutcome::Authenticated { .. }),
            "api-key did not authenticate: {out:?}"
        );
    });
    row(
        "plugin call: api-key `authenticate` (warm sandbox, `reuse_instance`)",
        &s,
    );

    // A new caller every time, so rbac's cache hint never answers for it.
    let access = Access {
        resource: "graph",
        action: "invoke",
        resource_id: None,
        owner: None,
        tenant: None,
    };
    let mut n = 0u64;
    let s = Samples::measure(iters, || {
        n += 1;
        let who = Identity {
            user_id: format!("bench-{n}"),
            roles: vec!["user".into()],
            claims: Map::new(),
        };
        let out = rt
            .block_on(rbac.authorize(&who, &access, &req))
            .expect("rbac call");
        assert_eq!(out, AuthzOutcome::Allow);
    });
    row(
        "plugin call: rbac `authorize` (instantiate + call, fresh sandbox)",
        &s,
    );
    println!();
    println!(
        "Plugin load (read + compile + link, `PluginRuntime::load`): api-key {}, rbac {}",
        ms(load_api_key),
        ms(load_rbac)
    );
    println!();
}

// ---------------------------------------------------------------------------
// Processes: the upstream and the server
// ---------------------------------------------------------------------------

/// A child process killed on drop, with its stderr kept.
struct Proc {
    child: Child,
    logs: Arc<Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` and waits for a line containing "listening on "; returns the
/// process, the address after it, and the time from spawn to that line.
fn spawn_listening(mut cmd: Command, what: &str) -> (Proc, String, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let sink = logs.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send((addr.trim().to_owned(), started.elapsed()));
            }
            let mut l = sink.lock().unwrap();
            if l.len() < 64 * 1024 {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    let proc = Proc { child, logs };
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((addr, took)) => (proc, addr, took),
        Err(_) => panic!("{what} did not start:\n{}", proc.logs.lock().unwrap()),
    }
}

fn start_upstream() -> (Proc, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE_VAR, "upstream");
    let (p, addr, _) = spawn_listening(cmd, "the upstream");
    (p, addr)
}

/// Starts the release `agentflow` binary on `config` with `env`.
fn start_server(
    fx: &Fixtures,
    name: &str,
    config: &Value,
    env: &[(&str, String)],
) -> (Proc, String, Duration) {
    let path = fx.dir.path().join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let mut cmd = Command::new(&fx.server_bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("JWT_") || k.starts_with("AGENTFLOW_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .args(["run", "--port", "0", "--config"])
        .arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn_listening(cmd, &format!("agentflow ({name})"))
}

// ---------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------

fn startup(fx: &Fixtures, report: &mut Report) {
    // Three plugins: two authenticators and an authorizer, given as .wasm
    // files (crate folders would add a cargo build to every start).
    let config = json!({
        "agent": "http://127.0.0.1:9",
        "auth": [
            {"method": "custom", "name": "api-key", "path": fx.api_key_wasm, "config": fx.api_key_config()},
            {"method": "custom", "name": "cache-hint", "path": fx.cache_hint_wasm,
             "config": {"token": API_KEY, "user_id": "bench-service", "roles": ["user"]}}
        ],
        "authorization": {"path": fx.rbac_wasm, "config": fx.rbac_config()}
    });
    let mut times = Vec::new();
    for _ in 0..6 {
        let (p, _, took) = start_server(fx, "startup", &config, &[]);
        drop(p);
        times.push(took);
    }
    let first = times[0];
    let mut warm = times[1..].to_vec();
    warm.sort();
    let median = warm[warm.len() / 2];
    println!("## Server start-up with three plugins (spawn → \"listening on\" line)");
    println!();
    println!("| run | time |");
    println!("|---|---:|");
    println!("| first start | {} |", ms(first));
    println!("| next {} starts: median | {} |", warm.len(), ms(median));
    println!(
        "| next {} starts: min / max | {} / {} |",
        warm.len(),
        ms(warm[0]),
        ms(*warm.last().unwrap())
    );
    println!();
    report.startup_warm = Some(median);
}

// ---------------------------------------------------------------------------
// Load runs
// ---------------------------------------------------------------------------

struct LoadOpts {
    duration_s: u64,
    /// Passes over all variants; each figure is the median over passes, so
    /// a compile or a CPU frequency change during one pass moves it less.
    rounds: u64,
    connections: u64,
    threads: u64,
}

struct Variant {
    name: &'static str,
    config: Value,
    env: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Route {
    Invoke,
    Whoami,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Invoke => "POST /v1/graph/invoke (forwarded)",
            Route::Whoami => "GET /v1/whoami (auth only)",
        }
    }
}

#[derive(Clone, Debug)]
struct WrkResult {
    rps: f64,
    p50: Duration,
    p99: Duration,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

fn variants(fx: &Fixtures, upstream: &str) -> Vec<Variant> {
    let api_key = json!({"method": "custom", "name": "api-key", "path": fx.api_key_wasm, "config": fx.api_key_config()});
    let rbac = json!({"path": fx.rbac_wasm, "config": fx.rbac_config()});
    let hs_env = vec![
        ("JWT_SECRET_KEY", SECRET.to_owned()),
        ("JWT_ALGORITHM", "HS256".to_owned()),
    ];
    let bearer = |t: &str| vec![("Authorization", format!("Bearer {t}"))];
    let key = vec![("X-Api-Key", API_KEY.to_owned())];
    vec![
        Variant {
            name: "no auth",
            config: json!({"agent": upstream, "auth": null}),
            env: vec![],
            headers: vec![],
        },
        Variant {
            name: "JWT HS256",
            config: json!({"agent": upstream, "auth": "jwt"}),
            env: hs_env.clone(),
            headers: bearer(&fx.hs256_token),
        },
        // The identity channels (README "What the agent receives"): without
        // a token the body merge is on by default, as in the row above.
        Variant {
            name: "JWT HS256, merge off",
            config: json!({"agent": upstream, "auth": "jwt", "upstream": {"merge_body": false}}),
            env: hs_env.clone(),
            headers: bearer(&fx.hs256_token),
        },
        Variant {
            name: "JWT HS256, upstream token",
            config: json!({"agent": upstream, "auth": "jwt", "upstream": {"token": {"secret_env": "UPSTREAM_JWT_SECRET"}}}),
            env: [
                hs_env.clone(),
                vec![("UPSTREAM_JWT_SECRET", format!("{SECRET}-upstream"))],
            ]
            .concat(),
            headers: bearer(&fx.hs256_token),
        },
        Variant {
            name: "JWT RS256",
            config: json!({"agent": upstream, "auth": "jwt"}),
            env: vec![
                ("JWT_ALGORITHM", "RS256".to_owned()),
                ("JWT_PUBLIC_KEY", fx.rsa_public.display().to_string()),
            ],
            headers: bearer(&fx.rs256_token),
        },
        Variant {
            name: "api-key plugin",
            config: json!({"agent": upstream, "auth": api_key}),
            env: vec![],
            headers: key.clone(),
        },
        Variant {
            name: "api-key, reuse_instance",
            config: json!({"agent": upstream, "auth": reused(&api_key)}),
            env: vec![],
            headers: key.clone(),
        },
        Variant {
            name: "cache-hint plugin",
            config: json!({"agent": upstream, "auth": {"method": "custom", "name": "cache-hint", "path": fx.cache_hint_wasm,
                "config": {"token": API_KEY, "user_id": "bench-service", "roles": ["user"], "ttl_ms": 600_000}}}),
            env: vec![],
            headers: key.clone(),
        },
        Variant {
            name: "JWT HS256 + rbac",
            config: json!({"agent": upstream, "auth": "jwt", "authorization": rbac}),
            env: hs_env,
            headers: bearer(&fx.hs256_token),
        },
        Variant {
            name: "api-key + rbac",
            config: json!({"agent": upstream, "auth": api_key, "authorization": rbac}),
            env: vec![],
            headers: key,
        },
    ]
}

/// `plugin` with the instance-reuse opt-in.
fn reused(plugin: &Value) -> Value {
    let mut plugin = plugin.clone();
    plugin["reuse_instance"] = json!(true);
    plugin
}

fn lua_string(s: &str) -> String {
    assert!(!s.contains("]==]"));
    format!("[==[{s}]==]")
}

fn wrk_script(dir: &Path, name: &str, route: Route, headers: &[(&'static str, String)]) -> PathBuf {
    let mut lua = String::new();
    match route {
        Route::Invoke => {
            lua.push_str("wrk.method = \"POST\"\n");
            lua.push_str(&format!("wrk.body = {}\n", lua_string(INVOKE_BODY)));
            lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
        }
        Route::Whoami => lua.push_str("wrk.method = \"GET\"\n"),
    }
    for (k, v) in headers {
        // Header names as plain quoted strings: `headers[[==[` would open a
        // Lua long string.
        assert!(
            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "header name {k:?}"
        );
        lua.push_str(&format!("wrk.headers[\"{k}\"] = {}\n", lua_string(v)));
    }
    let path = dir.join(format!("{}-{:?}.lua", name.replace([' ', '+'], "_"), route));
    std::fs::write(&path, lua).unwrap();
    path
}

fn run_wrk(opts: &LoadOpts, duration_s: u64, script: &Path, url: &str) -> WrkResult {
    let out = Command::new("wrk")
        .arg(format!("-t{}", opts.threads))
        .arg(format!("-c{}", opts.connections))
        .arg(format!("-d{duration_s}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .expect("running wrk (install it: apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).unwrap_or_else(|| panic!("cannot read wrk's output:\n{text}"))
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult {
        rps: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        requests: 0,
        non_2xx: 0,
        socket_errors: 0,
    };
    let (mut have_rps, mut have_p50, mut have_p99) = (false, false, false);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                r.rps = v.parse().ok()?;
                have_rps = true;
            }
            ["50%", v] => {
                r.p50 = parse_duration(v)?;
                have_p50 = true;
            }
            ["99%", v] => {
                r.p99 = parse_duration(v)?;
                have_p99 = true;
            }
            [n, "requests", "in", ..] => r.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    (have_rps && have_p50 && have_p99).then_some(r)
}

/// One request with the variant's credentials; the answer must be 200.
fn check_ok(base: &str, route: Route, headers: &[(&'static str, String)]) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = match route {
        Route::Invoke => client
            .post(format!("{base}/v1/graph/invoke"))
            .header("content-type", "application/json")
            .body(INVOKE_BODY),
        Route::Whoami => client.get(format!("{base}/v1/whoami")),
    };
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    if status.as_u16() == 200 {
        Ok(())
    } else {
        Err(format!("{status}: {body}"))
    }
}

fn load(fx: &Fixtures, opts: &LoadOpts, report: &mut Report) {
    let (_upstream, upstream_url) = start_upstream();
    let routes = [Route::Invoke, Route::Whoami];
    let variants = variants(fx, &upstream_url);
    // Per (variant, route): one result per round, or why it could not run.
    let mut runs: HashMap<(&'static str, Route), Result<Vec<WrkResult>, String>> = HashMap::new();
    for round in 1..=opts.rounds {
        // Each round starts one variant later, so no variant always runs
        // right after the same neighbour (order effects showed up as
        // ±0.2× between variants doing identical work).
        let order = variants
            .iter()
            .cycle()
            .skip((round - 1) as usize % variants.len())
            .take(variants.len());
        for v in order {
            let (server, base, _) =
                start_server(fx, &v.name.replace([' ', '+', ','], "_"), &v.config, &v.env);
            for route in routes {
                let entry = runs
                    .entry((v.name, route))
                    .or_insert_with(|| Ok(Vec::new()));
                let Ok(done) = entry else { continue };
                eprintln!(
                    "load, round {round}/{}: {} — {}",
                    opts.rounds,
                    v.name,
                    route.label()
                );
                if let Err(e) = check_ok(&base, route, &v.headers) {
                    eprintln!("  skipped: a single request did not answer 200: {e}");
                    *entry = Err(e);
                    continue;
                }
                let script = wrk_script(fx.dir.path(), v.name, route, &v.headers);
                let path = match route {
                    Route::Invoke => "/v1/graph/invoke",
                    Route::Whoami => "/v1/whoami",
                };
                let url = format!("{base}{path}");
                run_wrk(opts, 1, &script, &url); // warm-up, discarded
                done.push(run_wrk(opts, opts.duration_s, &script, &url));
            }
            drop(server);
        }
    }

    println!(
        "## Load: wrk, {} threads, {} connections, {} s per run after a 1 s warm-up, {} round(s) over all variants (medians); server, upstream and wrk on one machine",
        opts.threads, opts.connections, opts.duration_s, opts.rounds
    );
    for route in routes {
        println!();
        println!("### {}", route.label());
        println!();
        println!(
            "| variant | req/s | p50 | p99 | ratio to no auth (req/s) | p99 / no-auth p99 | errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let base = match runs.get(&("no auth", route)) {
            Some(Ok(b)) if !b.is_empty() => Some(b),
            _ => None,
        };
        for v in &variants {
            let name = v.name;
            match &runs[&(name, route)] {
                Ok(rounds) => {
                    // Ratios per round (against the no-auth run of the same
                    // round), then the median of those.
                    let (ratio, p99r) = match base {
                        Some(b) => (
                            median(rounds.iter().zip(b).map(|(w, b)| w.rps / b.rps)),
                            median(
                                rounds
                                    .iter()
                                    .zip(b)
                                    .map(|(w, b)| w.p99.as_secs_f64() / b.p99.as_secs_f64()),
                            ),
                        ),
                        None => (f64::NAN, f64::NAN),
                    };
                    let errors: u64 = rounds.iter().map(|w| w.non_2xx + w.socket_errors).sum();
                    let requests: u64 = rounds.iter().map(|w| w.requests).sum();
                    let secs = |f: fn(&WrkResult) -> Duration| {
                        Duration::from_secs_f64(median(rounds.iter().map(|w| f(w).as_secs_f64())))
                    };
                    println!(
                        "| {name} | {:.0} | {} | {} | {ratio:.2}× | {p99r:.2}× | {} |",
                        median(rounds.iter().map(|w| w.rps)),
                        ms(secs(|w| w.p50)),
                        ms(secs(|w| w.p99)),
                        if errors == 0 {
                            "0".to_owned()
                        } else {
                            format!("{errors} of {requests}")
                        }
                    );
                    if errors == 0 {
                        report.load.insert((name, route), (ratio, p99r));
                    }
                }
                Err(e) => println!("| {name} | — | — | — | — | — | not run: {e} |"),
            }
        }
    }
    println!();
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    micro: HashMap<&'static str, Duration>,
    startup_warm: Option<Duration>,
    /// (variant, route) → (throughput ratio, p99 ratio) against no auth.
    load: HashMap<(&'static str, Route), (f64, f64)>,
}

impl Report {
    fn targets(&self) {
        println!("## Targets");
        println!();
        println!("| target | goal | forwarded route | auth-only route |");
        println!("|---|---|---:|---:|");
        let status = |ok: bool| if ok { "met" } else { "MISSED" };
        let ratio_row = |what: &str, variant: &'static str, goal: f64| {
            let cell = |route| match self.load.get(&(variant, route)) {
                Some((r, _)) => format!("{r:.2}× {}", status(*r >= goal)),
                None => "not measured (or errors)".into(),
            };
            println!(
                "| {what} | ≥ {goal}× no auth | {} | {} |",
                cell(Route::Invoke),
                cell(Route::Whoami)
            );
        };
        ratio_row(
            "fresh-sandbox plugin (api-key) throughput",
            "api-key plugin",
            0.6,
        );
        ratio_row(
            "plugin with a cache hint throughput",
            "cache-hint plugin",
            0.9,
        );
        ratio_row("built-in JWT HS256 throughput", "JWT HS256", 0.9);
        let p99 = |route| match self.load.get(&("api-key plugin", route)) {
            Some((_, p)) => format!("{p:.2}× {}", status(*p <= 2.0)),
            None => "not measured (or errors)".into(),
        };
        println!(
            "| p99 with a plugin (api-key) | ≤ 2× no-auth p99 | {} | {} |",
            p99(Route::Invoke),
            p99(Route::Whoami)
        );
        println!();
        println!("| target | goal | measured |");
        println!("|---|---|---:|");
        match self.micro.get("plugin") {
            Some(d) => println!(
                "| plugin instantiate + call, p50, one thread | ≤ 10 µs | {} {} |",
                us(*d),
                status(*d <= Duration::from_micros(10))
            ),
            None => {
                println!("| plugin instantiate + call, p50, one thread | ≤ 10 µs | not measured |")
            }
        }
        match self.startup_warm {
            Some(d) => println!(
                "| server start with three plugins, warm | ≤ 300 ms | {} {} |",
                ms(d),
                status(d <= Duration::from_millis(300))
            ),
            None => println!("| server start with three plugins, warm | ≤ 300 ms | not measured |"),
        }
        println!();
    }
}

// ---------------------------------------------------------------------------
// The upstream process
// ---------------------------------------------------------------------------

mod upstream {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;

    const ANSWER: &str =
        r#"{"ok":true,"output":{"messages":[{"role":"assistant","content":"hi"}]}}"#;

    /// A single-threaded server answering every request with a small JSON body.
    pub fn main() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            eprintln!(
                "bench upstream listening on http://{}",
                listener.local_addr().unwrap()
            );
            let app = Router::new().fallback(answer);
            axum::serve(listener, app).await.unwrap();
        });
    }

    async fn answer(req: Request) -> Response {
        // Read the body, as a real agent would.
        let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(ANSWER))
            .unwrap()
    }
}
