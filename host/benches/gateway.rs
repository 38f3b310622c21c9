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
//!
//!    The issues' comparisons run as pairs that always follow each other in
//!    a round, and their ratio is taken per round: tenancy off/on (issue 11,
//!    with the stream route's time to first event sampled one request at a
//!    time), metrics and rate limits off/on (issue 14), and the built-in
//!    accounts on sled and on PostgreSQL (issue 15: an account API key, a
//!    login's access token with its revocation check, and `POST /v1/login`
//!    throughput next to what argon2 allows). PostgreSQL is the server the
//!    end-to-end tests use (`AGENTFLOW_TEST_DATABASE_URL`, default
//!    postgres://postgres@127.0.0.1:5432/postgres; `scripts/postgres` starts
//!    it), in a schema of the run's own; without it those variants are
//!    reported as not run.
//! 2. **Micro**: single-threaded per-call latency of one JWT verification
//!    (`agentflow::jwt::JwtVerifier`), one plugin call through the public
//!    plugin API (`PluginRuntime::load` + `Plugin::authenticate` /
//!    `authorize`: a fresh sandbox is instantiated and called every time)
//!    and one argon2id password check.
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
//! (micro-benchmark iterations, default 20000), `BENCH_ONLY` (load-run only
//! the groups with a variant whose name contains it, e.g. `tenancy`; the
//! rest are reported as not selected).
//!
//! Nothing here runs under `cargo test`: without cargo bench's `--bench`
//! argument the binary prints how to run it and exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow::config::{AuthMethodConfig, Config, Env, JwtOptions, PluginConfig};
use agentflow::identity::Identity;
use agentflow::jwt::{JwtMethod, JwtSigner, JwtVerifier};
use agentflow::plugins::{Access, AuthnOutcome, AuthzOutcome, PluginRequest, PluginRuntime, Slot};
use serde_json::{Map, Value, json};

// The end-to-end harness: the same plugin builds and the same way of
// starting the binary and waiting for it as the tests (most of it unused
// here).
#[allow(dead_code)]
#[path = "../../tests/e2e/support.rs"]
mod support;

// In a folder of its own: a file directly in benches/ would be taken for
// another bench target.
#[path = "gateway/login_flood.rs"]
mod login_flood;
#[path = "gateway/scenarios.rs"]
mod scenarios;

const ROLE_VAR: &str = "AGENTFLOW_BENCH_ROLE";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const API_KEY: &str = "bench-api-key-0123456789";
const INVOKE_BODY: &str =
    r#"{"input":{"messages":[{"role":"user","content":"hello"}]},"config":{"tags":["bench"]}}"#;
/// The invoke body of the tenancy pair: it names a thread, so tenancy has an
/// owner to look up (the first request claims it for the caller).
const THREAD_INVOKE_BODY: &str = r#"{"input":{"messages":[{"role":"user","content":"hello"}]},"thread_id":"bench-thread","config":{"tags":["bench"]}}"#;
/// The body of the time-to-first-event samples (`POST /v1/graph/stream`).
const STREAM_BODY: &str = r#"{"input":{"messages":[{"role":"user","content":"hello"}]},"thread_id":"bench-stream-thread"}"#;

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
            .current_dir(support::repo_root())
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
        let plugins = support::plugins();
        let (api_key_wasm, rbac_wasm, cache_hint_wasm) = (
            plugins.api_key.clone(),
            plugins.rbac.clone(),
            plugins.cache_hint.clone(),
        );

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
        json!({"keys": [{"sha256": support::sha256_hex(API_KEY), "user_id": "bench-service", "roles": ["user"], "name": "bench"}]})
    }

    fn rbac_config(&self) -> Value {
        json!({"roles": {
            "admin": {"*": ["*"]},
            "user": {"graph": ["invoke", "stream"], "checkpointer": ["read"], "store": ["read"]}
        }})
    }
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

    // What one login costs at least: the password check the login route
    // runs (argon2id with the server's parameters).
    let s = argon2_samples((iters / 1000).clamp(5, 30));
    row(
        "argon2id password verify (`passwords::verify_password`, m=19 MiB, t=2)",
        &s,
    );
    report.micro.insert("argon2", s.pct(0.5));
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
type Proc = support::Listening;

fn start_upstream() -> (Proc, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE_VAR, "upstream");
    let p = support::spawn_listening(cmd, "the upstream");
    let addr = p.url.clone();
    (p, addr)
}

/// Starts the release `agentflow` binary on `config` with `env`.
fn start_server(
    fx: &Fixtures,
    name: &str,
    config: &Value,
    env: &[(&str, String)],
) -> (Proc, String, Duration) {
    start_server_with(fx, name, config, env, &[])
}

/// [`start_server`] with extra `agentflow run` arguments.
fn start_server_with(
    fx: &Fixtures,
    name: &str,
    config: &Value,
    env: &[(&str, String)],
    args: &[&str],
) -> (Proc, String, Duration) {
    let path = fx.dir.path().join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let mut cmd = support::agentflow_command_at(&fx.server_bin);
    cmd.args(["run", "--port", "0", "--config"])
        .arg(&path)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let p = support::spawn_listening(cmd, &format!("agentflow ({name})"));
    let (addr, took) = (p.url.clone(), p.took);
    (p, addr, took)
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

#[derive(Clone)]
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
    /// Credentials made on each started server, added to `headers`.
    creds: Creds,
    /// The routes `wrk` drives.
    routes: &'static [Route],
    /// The body of `POST /v1/graph/invoke`.
    invoke_body: &'static str,
    /// Extra `agentflow run` arguments.
    args: Vec<&'static str>,
    /// Scrape the `--metrics-port` listener once a second while loaded.
    scrape_metrics: bool,
    /// Also sample the stream route's time to first event.
    stream_ttfe: bool,
    /// Why this variant cannot run on this machine (no PostgreSQL).
    unavailable: Option<String>,
}

impl Variant {
    /// A variant with fixed credentials on the forwarded and auth-only routes.
    fn new(
        name: &'static str,
        config: Value,
        env: Vec<(&'static str, String)>,
        headers: Vec<(&'static str, String)>,
    ) -> Variant {
        Variant {
            name,
            config,
            env,
            headers,
            creds: Creds::Fixed,
            routes: &[Route::Invoke, Route::Whoami],
            invoke_body: INVOKE_BODY,
            args: vec![],
            scrape_metrics: false,
            stream_ttfe: false,
            unavailable: None,
        }
    }
}

/// Where a variant's credentials come from.
#[derive(Clone, Copy, Debug)]
enum Creds {
    /// Only the variant's fixed `headers` (or none).
    Fixed,
    /// The bench admin's login access token (`sid` claim: the login is
    /// checked against the store on every request).
    LoginToken,
    /// An API key the bench admin creates with `POST /v1/api-keys`.
    AccountApiKey,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Route {
    Invoke,
    Whoami,
    /// `POST /v1/login` with the bench admin's right password.
    Login,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Invoke => "POST /v1/graph/invoke (forwarded)",
            Route::Whoami => "GET /v1/whoami (auth only)",
            Route::Login => "POST /v1/login (password check)",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Route::Invoke => "/v1/graph/invoke",
            Route::Whoami => "/v1/whoami",
            Route::Login => "/v1/login",
        }
    }
}

/// `POST /v1/login` is driven with this many connections: enough that a
/// login always waits for the hashing slot (this machine's default is one)
/// while another hashes, so the slot never idles; more would only queue,
/// and a login waiting over 2 s for a slot is refused (503).
const LOGIN_CONNECTIONS: u64 = 2;

#[derive(Clone, Debug)]
struct WrkResult {
    rps: f64,
    p50: Duration,
    p99: Duration,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

impl WrkResult {
    /// Requests per second that were answered 2xx.
    fn ok_rps(&self) -> f64 {
        let failed = (self.non_2xx + self.socket_errors).min(self.requests);
        if self.requests == 0 {
            return 0.0;
        }
        self.rps * (self.requests - failed) as f64 / self.requests as f64
    }
}

/// The variants in groups: a group's members always run one after the
/// other in a round (the pairs an issue compares), so their ratio comes from
/// the same minute of the same run.
fn variants(
    fx: &Fixtures,
    upstream: &str,
    pg: &Result<scenarios::Postgres, String>,
) -> Vec<Vec<Variant>> {
    let api_key = json!({"method": "custom", "name": "api-key", "path": fx.api_key_wasm, "config": fx.api_key_config()});
    let rbac = json!({"path": fx.rbac_wasm, "config": fx.rbac_config()});
    let hs_env = vec![
        ("JWT_SECRET_KEY", SECRET.to_owned()),
        ("JWT_ALGORITHM", "HS256".to_owned()),
    ];
    let bearer = |t: &str| vec![("Authorization", format!("Bearer {t}"))];
    let key = vec![("X-Api-Key", API_KEY.to_owned())];
    let mut groups: Vec<Vec<Variant>> = vec![
        Variant::new(
            "no auth",
            json!({"agent": upstream, "auth": null}),
            vec![],
            vec![],
        ),
        Variant::new(
            "JWT HS256",
            json!({"agent": upstream, "auth": "jwt"}),
            hs_env.clone(),
            bearer(&fx.hs256_token),
        ),
        // The identity channels (README "What the agent receives"): without
        // a token the body merge is on by default, as in the row above.
        Variant::new(
            "JWT HS256, merge off",
            json!({"agent": upstream, "auth": "jwt", "upstream": {"merge_body": false}}),
            hs_env.clone(),
            bearer(&fx.hs256_token),
        ),
        Variant::new(
            "JWT HS256, upstream token",
            json!({"agent": upstream, "auth": "jwt", "upstream": {"token": {"secret_env": "UPSTREAM_JWT_SECRET"}}}),
            [
                hs_env.clone(),
                vec![("UPSTREAM_JWT_SECRET", format!("{SECRET}-upstream"))],
            ]
            .concat(),
            bearer(&fx.hs256_token),
        ),
        Variant::new(
            "JWT RS256",
            json!({"agent": upstream, "auth": "jwt"}),
            vec![
                ("JWT_ALGORITHM", "RS256".to_owned()),
                ("JWT_PUBLIC_KEY", fx.rsa_public.display().to_string()),
            ],
            bearer(&fx.rs256_token),
        ),
        Variant::new(
            "api-key plugin",
            json!({"agent": upstream, "auth": api_key}),
            vec![],
            key.clone(),
        ),
        Variant::new(
            "api-key, reuse_instance",
            json!({"agent": upstream, "auth": reused(&api_key)}),
            vec![],
            key.clone(),
        ),
        Variant::new(
            "cache-hint plugin",
            json!({"agent": upstream, "auth": {"method": "custom", "name": "cache-hint", "path": fx.cache_hint_wasm,
                "config": {"token": API_KEY, "user_id": "bench-service", "roles": ["user"], "ttl_ms": 600_000}}}),
            vec![],
            key.clone(),
        ),
        Variant::new(
            "JWT HS256 + rbac",
            json!({"agent": upstream, "auth": "jwt", "authorization": rbac}),
            hs_env.clone(),
            bearer(&fx.hs256_token),
        ),
        Variant::new(
            "api-key + rbac",
            json!({"agent": upstream, "auth": api_key, "authorization": rbac}),
            vec![],
            key,
        ),
    ]
    .into_iter()
    .map(|v| vec![v])
    .collect();

    // Issue 11 (tenancy): the same JWT chain and thread-naming body, with
    // and without the ownership check; the stream's first event is timed too.
    let tenancy_pair = [TENANCY_OFF, TENANCY_ON].map(|name| {
        let mut config = json!({"agent": upstream, "auth": "jwt"});
        if name == TENANCY_ON {
            config["tenancy"] = json!({"owner": "user_id"});
        }
        Variant {
            invoke_body: THREAD_INVOKE_BODY,
            stream_ttfe: true,
            ..Variant::new(name, config, hs_env.clone(), bearer(&fx.hs256_token))
        }
    });
    groups.push(tenancy_pair.into());

    // Issue 14 (production gateway): the same JWT chain with every rate
    // limit off and nothing reading the metrics, then with per-address and
    // per-identity limits on both routes' classes (far above what wrk
    // reaches: 1 000 000 a second) and `/metrics` served on its own port
    // and scraped once a second. The counters themselves cannot be turned
    // off (src/metrics.rs records into a process-wide registry on every
    // request), so "off" means not exposed and not read.
    let high = json!({"requests": 1_000_000, "window_s": 1});
    let limits_on = json!({
        "agent": {"per_address": high, "per_identity": high},
        "account": {"per_address": high, "per_identity": high}
    });
    groups.push(vec![
        Variant::new(
            PRODUCTION_OFF,
            json!({"agent": upstream, "auth": "jwt", "rate_limits": {"login": {"per_address": null}}}),
            hs_env.clone(),
            bearer(&fx.hs256_token),
        ),
        Variant {
            args: vec!["--metrics-port", "0"],
            scrape_metrics: true,
            ..Variant::new(
                PRODUCTION_ON,
                json!({"agent": upstream, "auth": "jwt", "rate_limits": limits_on}),
                [
                    hs_env.clone(),
                    vec![("AGENTFLOW_METRICS_TOKEN", format!("{SECRET}-metrics"))],
                ]
                .concat(),
                bearer(&fx.hs256_token),
            )
        },
    ]);

    // Issue 15 (PostgreSQL): the built-in accounts on sled and on
    // PostgreSQL, side by side: an account API key, a login's access token
    // (its login checked for revocation on every request), and logins.
    let accounts_env = |store: &str| -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("JWT_SECRET_KEY", SECRET.to_owned()),
            ("AGENTFLOW_SUPERUSER", login_flood::ADMIN.to_owned()),
            (
                "AGENTFLOW_SUPERUSER_PASSWORD",
                login_flood::ADMIN_PW.to_owned(),
            ),
            // Logins are measured, not throttled: the bench logs in from
            // one address far more often than a person would.
            ("AGENTFLOW_LOGIN_ATTEMPTS_PER_MINUTE", "1000000".to_owned()),
            (
                "AGENTFLOW_LOGIN_IN_FLIGHT_PER_ADDRESS",
                "1000000".to_owned(),
            ),
        ];
        match (store, pg) {
            ("sled", _) => env.push((
                "AGENTFLOW_DATA_DIR",
                fx.dir.path().join("accounts-sled").display().to_string(),
            )),
            (_, Ok(pg)) => env.push(("AGENTFLOW_DATABASE_URL", pg.url.clone())),
            (_, Err(_)) => {}
        }
        env
    };
    let accounts = json!({"agent": upstream, "auth": ["jwt", "api_key"],
        "rate_limits": {"login": {"per_address": null}}});
    let on_store =
        |name: &'static str, store: &str, creds: Creds, routes: &'static [Route]| Variant {
            creds,
            routes,
            unavailable: match (store, pg) {
                ("postgres", Err(e)) => Some(format!("no PostgreSQL: {e}")),
                _ => None,
            },
            ..Variant::new(name, accounts.clone(), accounts_env(store), vec![])
        };
    let both: &'static [Route] = &[Route::Invoke, Route::Whoami];
    for (sled, postgres, creds, routes) in [
        (KEY_SLED, KEY_PG, Creds::AccountApiKey, both),
        (LOGIN_JWT_SLED, LOGIN_JWT_PG, Creds::LoginToken, both),
        (LOGINS_SLED, LOGINS_PG, Creds::Fixed, &[Route::Login][..]),
    ] {
        groups.push(vec![
            on_store(sled, "sled", creds, routes),
            on_store(postgres, "postgres", creds, routes),
        ]);
    }
    groups
}

// The names of the issue pairs' variants (the targets look them up).
const TENANCY_OFF: &str = "JWT HS256, thread id, tenancy off";
const TENANCY_ON: &str = "JWT HS256, thread id, tenancy on";
const PRODUCTION_OFF: &str = "JWT HS256, metrics + rate limits off";
const PRODUCTION_ON: &str = "JWT HS256, metrics + rate limits on";
const KEY_SLED: &str = "account API key, sled";
const KEY_PG: &str = "account API key, PostgreSQL";
const LOGIN_JWT_SLED: &str = "login JWT (revocation check), sled";
const LOGIN_JWT_PG: &str = "login JWT (revocation check), PostgreSQL";
const LOGINS_SLED: &str = "logins, sled";
const LOGINS_PG: &str = "logins, PostgreSQL";

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

/// The JSON body `route` is sent with (`invoke_body` on the invoke route).
fn route_body(route: Route, invoke_body: &str) -> Option<String> {
    match route {
        Route::Invoke => Some(invoke_body.to_owned()),
        Route::Whoami => None,
        Route::Login => Some(
            json!({"username": login_flood::ADMIN, "password": login_flood::ADMIN_PW}).to_string(),
        ),
    }
}

fn wrk_script(
    dir: &Path,
    name: &str,
    route: Route,
    invoke_body: &str,
    headers: &[(&'static str, String)],
) -> PathBuf {
    let mut lua = String::new();
    match route_body(route, invoke_body) {
        Some(body) => {
            lua.push_str("wrk.method = \"POST\"\n");
            lua.push_str(&format!("wrk.body = {}\n", lua_string(&body)));
            lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
        }
        None => lua.push_str("wrk.method = \"GET\"\n"),
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
    let path = dir.join(format!("{}-{:?}.lua", file_name(name), route));
    std::fs::write(&path, lua).unwrap();
    path
}

/// `name` with only characters that are safe in a file name.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
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
fn check_ok(
    base: &str,
    route: Route,
    invoke_body: &str,
    headers: &[(&'static str, String)],
) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{base}{}", route.path());
    let mut req = match route_body(route, invoke_body) {
        Some(body) => client
            .post(url)
            .header("content-type", "application/json")
            .body(body),
        None => client.get(url),
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

/// Per (variant, route): one result per round, or why it could not run.
type Runs = HashMap<(&'static str, Route), Result<Vec<WrkResult>, String>>;

fn load(fx: &Fixtures, opts: &LoadOpts, report: &mut Report) {
    let pg = scenarios::Postgres::open();
    if let Err(e) = &pg {
        eprintln!("PostgreSQL variants skipped: {e}");
    }
    let (_upstream, upstream_url) = start_upstream();
    let mut groups = variants(fx, &upstream_url, &pg);
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        select_groups(&mut groups, &only);
    }
    let mut runs: Runs = HashMap::new();
    // Per variant: the stream's time-to-first-event samples of each round.
    let mut ttfe: HashMap<&'static str, Result<Vec<Vec<Duration>>, String>> = HashMap::new();
    let ttfe_samples = if opts.duration_s <= 1 { 50 } else { 300 };
    for round in 1..=opts.rounds {
        // Each round starts one group later, so no variant always runs
        // right after the same neighbour (order effects showed up as
        // ±0.2× between variants doing identical work). Within a group the
        // order alternates, so neither side of a pair always goes first.
        let order = groups
            .iter()
            .cycle()
            .skip((round - 1) as usize % groups.len())
            .take(groups.len())
            .flat_map(|g| {
                let mut g: Vec<&Variant> = g.iter().collect();
                if round % 2 == 0 {
                    g.reverse();
                }
                g
            });
        for v in order {
            let fail_all = |runs: &mut Runs, ttfe: &mut HashMap<_, _>, why: &str| {
                for route in v.routes {
                    runs.insert((v.name, *route), Err(why.to_owned()));
                }
                if v.stream_ttfe {
                    ttfe.insert(v.name, Err(why.to_owned()));
                }
            };
            if let Some(why) = &v.unavailable {
                fail_all(&mut runs, &mut ttfe, why);
                continue;
            }
            let (server, base, _) =
                start_server_with(fx, &file_name(v.name), &v.config, &v.env, &v.args);
            let headers = match scenarios::credentials(&base, v.creds) {
                Ok(made) => [v.headers.clone(), made].concat(),
                Err(e) => {
                    eprintln!("  {}: no credentials: {e}", v.name);
                    fail_all(&mut runs, &mut ttfe, &format!("no credentials: {e}"));
                    continue;
                }
            };
            let scraper = if v.scrape_metrics {
                match scenarios::Scraper::start(&server) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        fail_all(&mut runs, &mut ttfe, &e);
                        continue;
                    }
                }
            } else {
                None
            };
            for &route in v.routes {
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
                if let Err(e) = check_ok(&base, route, v.invoke_body, &headers) {
                    eprintln!("  skipped: a single request did not answer 200: {e}");
                    *entry = Err(e);
                    continue;
                }
                let script = wrk_script(fx.dir.path(), v.name, route, v.invoke_body, &headers);
                let url = format!("{base}{}", route.path());
                let route_opts = match route {
                    Route::Login => LoadOpts {
                        connections: LOGIN_CONNECTIONS.max(opts.threads),
                        ..opts.clone()
                    },
                    _ => opts.clone(),
                };
                run_wrk(&route_opts, 1, &script, &url); // warm-up, discarded
                if route == Route::Login {
                    // The hashing ceiling, measured next to the logins so the
                    // machine is as busy (or not) as during them.
                    report.argon2_in_load.extend(argon2_samples(5).0);
                }
                done.push(run_wrk(&route_opts, opts.duration_s, &script, &url));
            }
            if v.stream_ttfe {
                let entry = ttfe.entry(v.name).or_insert_with(|| Ok(Vec::new()));
                if let Ok(done) = entry {
                    eprintln!(
                        "load, round {round}/{}: {} — stream time to first event ({ttfe_samples} requests)",
                        opts.rounds, v.name
                    );
                    match scenarios::stream_first_event(&base, &headers, ttfe_samples) {
                        Ok(s) => done.push(s),
                        Err(e) => {
                            eprintln!("  skipped: {e}");
                            *entry = Err(e);
                        }
                    }
                }
            }
            drop(scraper);
            drop(server);
        }
    }
    drop(pg);

    let variants: Vec<&Variant> = groups.iter().flatten().collect();
    println!(
        "## Load: wrk, {} threads, {} connections ({LOGIN_CONNECTIONS} on the login route), {} s per run after a 1 s warm-up, {} round(s) over all variants (medians); server, upstream and wrk on one machine",
        opts.threads, opts.connections, opts.duration_s, opts.rounds
    );
    for route in [Route::Invoke, Route::Whoami, Route::Login] {
        print_route_table(route, &variants, &runs, report);
    }
    println!();
    pairs(&runs, report);
    stream_ttfe(&ttfe, report);
    logins(&runs, report);
}

/// Marks every group without a variant whose name contains `only`
/// (case-insensitive) as not run, so a pair can be measured over many
/// rounds without the whole matrix.
fn select_groups(groups: &mut [Vec<Variant>], only: &str) {
    let only = only.to_lowercase();
    for group in groups {
        if !group.iter().any(|v| v.name.to_lowercase().contains(&only)) {
            for v in group {
                v.unavailable
                    .get_or_insert_with(|| format!("not selected (BENCH_ONLY={only})"));
            }
        }
    }
}

/// One route's table: every variant that drives it, with its ratio to no
/// auth in the same round.
fn print_route_table(route: Route, variants: &[&Variant], runs: &Runs, report: &mut Report) {
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
    for v in variants.iter().filter(|v| v.routes.contains(&route)) {
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
                let times = |r: f64| {
                    if r.is_nan() {
                        "—".to_owned()
                    } else {
                        format!("{r:.2}×")
                    }
                };
                println!(
                    "| {name} | {:.0} | {} | {} | {} | {} | {} |",
                    median(rounds.iter().map(|w| w.rps)),
                    ms(secs(|w| w.p50)),
                    ms(secs(|w| w.p99)),
                    times(ratio),
                    times(p99r),
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

/// A comparison an issue asks for: `variant` against `base` on `route`,
/// measured back to back in every round.
struct Pair {
    issue: &'static str,
    base: &'static str,
    variant: &'static str,
    route: Route,
    /// The least `variant / base` throughput the issue accepts.
    goal: f64,
}

const PAIRS: &[Pair] = &[
    Pair {
        issue: "11 tenancy",
        base: TENANCY_OFF,
        variant: TENANCY_ON,
        route: Route::Invoke,
        goal: 0.95,
    },
    Pair {
        issue: "14 production",
        base: PRODUCTION_OFF,
        variant: PRODUCTION_ON,
        route: Route::Invoke,
        goal: 0.95,
    },
    Pair {
        issue: "14 production",
        base: PRODUCTION_OFF,
        variant: PRODUCTION_ON,
        route: Route::Whoami,
        goal: 0.95,
    },
    Pair {
        issue: "15 PostgreSQL",
        base: KEY_SLED,
        variant: KEY_PG,
        route: Route::Invoke,
        goal: 0.9,
    },
    Pair {
        issue: "15 PostgreSQL",
        base: KEY_SLED,
        variant: KEY_PG,
        route: Route::Whoami,
        goal: 0.9,
    },
    Pair {
        issue: "15 PostgreSQL",
        base: LOGIN_JWT_SLED,
        variant: LOGIN_JWT_PG,
        route: Route::Invoke,
        goal: 0.9,
    },
    Pair {
        issue: "15 PostgreSQL",
        base: LOGIN_JWT_SLED,
        variant: LOGIN_JWT_PG,
        route: Route::Whoami,
        goal: 0.9,
    },
    Pair {
        issue: "15 PostgreSQL",
        base: LOGINS_SLED,
        variant: LOGINS_PG,
        route: Route::Login,
        goal: 0.9,
    },
];

/// Runs without errors, or why there are none. On the login route, logins
/// shed because the hashing slot stayed busy (503) are part of what is
/// measured: they are counted, and only answered logins count as throughput.
fn clean<'a>(runs: &'a Runs, name: &'static str, route: Route) -> Result<&'a [WrkResult], String> {
    match runs.get(&(name, route)) {
        Some(Ok(r)) if r.is_empty() => Err("not run".into()),
        Some(Ok(r))
            if route != Route::Login && r.iter().any(|w| w.non_2xx + w.socket_errors > 0) =>
        {
            Err("errors under load".into())
        }
        Some(Ok(r)) => Ok(r.as_slice()),
        Some(Err(e)) => Err(e.clone()),
        None => Err("not run".into()),
    }
}

/// The pairs' table: each pair's ratio is the median of its per-round
/// ratios (the two ran one after the other in every round), printed with
/// three decimals so a ratio just under its goal does not read as equal.
fn pairs(runs: &Runs, report: &mut Report) {
    println!(
        "## Issue pairs (run back to back in every round; ratio = median of the per-round ratios)"
    );
    println!();
    println!(
        "| issue | route | base → variant | base req/s | variant req/s | ratio | per round | base p99 → variant p99 | goal |"
    );
    println!("|---|---|---|---:|---:|---:|---|---:|---|");
    for p in PAIRS {
        let (base, variant) = match (
            clean(runs, p.base, p.route),
            clean(runs, p.variant, p.route),
        ) {
            (Ok(b), Ok(v)) => (b, v),
            (b, v) => {
                let why = b.err().or(v.err()).unwrap_or_default();
                println!(
                    "| {} | {} | {} → {} | — | — | — | — | — | ≥ {}×: not measured ({why}) |",
                    p.issue,
                    p.route.label(),
                    p.base,
                    p.variant,
                    p.goal
                );
                report.pairs.push((p, None));
                continue;
            }
        };
        let per_round: Vec<f64> = base
            .iter()
            .zip(variant)
            .map(|(b, v)| v.ok_rps() / b.ok_rps())
            .collect();
        let ratio = median(per_round.iter().copied());
        let per_round = per_round
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let p99 = |r: &[WrkResult]| {
            Duration::from_secs_f64(median(r.iter().map(|w| w.p99.as_secs_f64())))
        };
        println!(
            "| {} | {} | {} → {} | {:.0} | {:.0} | {ratio:.3}× | {per_round} | {} → {} | ≥ {}×: {} |",
            p.issue,
            p.route.label(),
            p.base,
            p.variant,
            median(base.iter().map(WrkResult::ok_rps)),
            median(variant.iter().map(WrkResult::ok_rps)),
            ms(p99(base)),
            ms(p99(variant)),
            p.goal,
            met(ratio >= p.goal)
        );
        report.pairs.push((p, Some(ratio)));
    }
    println!();
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The stream's time to first event, tenancy off and on: the samples of
/// all rounds pooled for the percentiles; the p50 ratio is the median of
/// the per-round ratios.
fn stream_ttfe(
    ttfe: &HashMap<&'static str, Result<Vec<Vec<Duration>>, String>>,
    report: &mut Report,
) {
    println!(
        "## Stream time to first event (`POST /v1/graph/stream` through the gateway, one request at a time; the upstream sends its first event at once and the next 10 ms later)"
    );
    println!();
    println!("| variant | samples | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    let pooled = |rounds: &Vec<Vec<Duration>>| {
        let mut all: Vec<Duration> = rounds.iter().flatten().copied().collect();
        all.sort();
        Samples(all)
    };
    for name in [TENANCY_OFF, TENANCY_ON] {
        match ttfe.get(name) {
            Some(Ok(rounds)) if rounds.iter().any(|r| !r.is_empty()) => {
                let s = pooled(rounds);
                println!(
                    "| {name} | {} | {} | {} | {} | {} |",
                    s.0.len(),
                    ms(s.pct(0.5)),
                    ms(s.pct(0.9)),
                    ms(s.pct(0.99)),
                    ms(*s.0.last().unwrap())
                );
            }
            Some(Err(e)) => println!("| {name} | not run: {e} |||||"),
            _ => println!("| {name} | not run |||||"),
        }
    }
    println!();
    if let (Some(Ok(off)), Some(Ok(on))) = (ttfe.get(TENANCY_OFF), ttfe.get(TENANCY_ON))
        && !off.is_empty()
        && off.len() == on.len()
    {
        let p50 = |r: &Vec<Duration>| {
            let mut r = r.clone();
            r.sort();
            Samples(r).pct(0.5).as_secs_f64()
        };
        let ratio = median(off.iter().zip(on).map(|(a, b)| p50(b) / p50(a)));
        let (off, on) = (pooled(off), pooled(on));
        report.ttfe = Some(Ttfe {
            off_p50: off.pct(0.5),
            on_p50: on.pct(0.5),
            off_p99: off.pct(0.99),
            on_p99: on.pct(0.99),
            p50_ratio: ratio,
        });
    }
}

/// Login throughput on each store next to what password hashing allows.
fn logins(runs: &Runs, report: &mut Report) {
    let argon2 = if report.argon2_in_load.is_empty() {
        argon2_samples(10).pct(0.5)
    } else {
        let mut v = report.argon2_in_load.clone();
        v.sort();
        Samples(v).pct(0.5)
    };
    let permits = agentflow::passwords::pool::default_permits();
    let ceiling = permits as f64 / argon2.as_secs_f64();
    report.login_ceiling = Some(ceiling);
    println!(
        "## Logins against the hashing ceiling: argon2id verify p50 {} on one thread (sampled in the bench process just before each login run), {permits} hashing slot(s) (`AGENTFLOW_PASSWORD_HASH_CONCURRENCY` default: cores − 1) → at most {ceiling:.1} logins/s",
        ms(argon2)
    );
    println!();
    println!(
        "| store | logins answered/s | p50 | p99 | share of the hashing ceiling | shed (503) or failed |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for name in [LOGINS_SLED, LOGINS_PG] {
        match clean(runs, name, Route::Login) {
            Ok(r) => {
                let rps = median(r.iter().map(WrkResult::ok_rps));
                let secs = |f: fn(&WrkResult) -> Duration| {
                    Duration::from_secs_f64(median(r.iter().map(|w| f(w).as_secs_f64())))
                };
                let failed: u64 = r.iter().map(|w| w.non_2xx + w.socket_errors).sum();
                let requests: u64 = r.iter().map(|w| w.requests).sum();
                println!(
                    "| {name} | {rps:.1} | {} | {} | {:.2}× | {failed} of {requests} |",
                    ms(secs(|w| w.p50)),
                    ms(secs(|w| w.p99)),
                    rps / ceiling
                );
                report.logins.insert(name, rps);
            }
            Err(e) => println!("| {name} | not run: {e} ||||"),
        }
    }
    println!();
}

/// argon2id verifications with the server's parameters, one at a time.
fn argon2_samples(n: usize) -> Samples {
    let phc = agentflow::passwords::hash_password(login_flood::ADMIN_PW).expect("hashing");
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let t = Instant::now();
        assert!(agentflow::passwords::verify_password(
            std::hint::black_box(login_flood::ADMIN_PW),
            &phc
        ));
        if i >= 2 {
            v.push(t.elapsed());
        }
    }
    v.sort();
    Samples(v)
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
    /// The issue pairs and their throughput ratios (`None`: not measured).
    pairs: Vec<(&'static Pair, Option<f64>)>,
    /// The stream's time to first event, tenancy off and on.
    ttfe: Option<Ttfe>,
    /// Logins per second by variant.
    logins: HashMap<&'static str, f64>,
    /// Logins per second the hashing slots allow at most.
    login_ceiling: Option<f64>,
    /// argon2id verifications timed next to the login runs.
    argon2_in_load: Vec<Duration>,
}

/// Time to first event of the stream route, tenancy off and on.
struct Ttfe {
    off_p50: Duration,
    on_p50: Duration,
    off_p99: Duration,
    on_p99: Duration,
    /// Median over rounds of (on p50 / off p50).
    p50_ratio: f64,
}

/// How much a time-to-first-event percentile may grow before it counts as
/// "measurably" longer: 5 % or 50 µs, whichever is larger (below that,
/// back-to-back runs of the same server differ by as much on this machine).
fn ttfe_grew(off: Duration, on: Duration) -> bool {
    let slack = (off.as_secs_f64() * 0.05).max(50e-6);
    on.as_secs_f64() - off.as_secs_f64() > slack
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
        self.issue_targets();
    }

    /// The targets of issues 11 (tenancy), 14 (production gateway) and 15
    /// (PostgreSQL), from pairs run back to back in every round.
    fn issue_targets(&self) {
        if self.pairs.is_empty() {
            return;
        }
        println!("| issue | target | goal | measured |");
        println!("|---|---|---|---:|");
        for (p, ratio) in &self.pairs {
            println!(
                "| {} | {}, {}: {} vs {} | ≥ {}× | {} |",
                p.issue,
                if p.route == Route::Login {
                    "login throughput"
                } else {
                    "throughput"
                },
                p.route.label(),
                p.variant,
                p.base,
                p.goal,
                match ratio {
                    Some(r) => format!("{r:.3}× {}", met(*r >= p.goal)),
                    None => "not measured (or errors)".into(),
                }
            );
        }
        match &self.ttfe {
            Some(t) => {
                println!(
                    "| 11 tenancy | stream time to first event p50, tenancy on vs off | does not grow measurably (≤ +5 % or +50 µs) | {} → {} ({:.2}× per-round median) {} |",
                    ms(t.off_p50),
                    ms(t.on_p50),
                    t.p50_ratio,
                    met(!ttfe_grew(t.off_p50, t.on_p50))
                );
                println!(
                    "| 11 tenancy | stream time to first event p99, tenancy on vs off | (same, informative: p99 of one-at-a-time requests is noisy) | {} → {} {} |",
                    ms(t.off_p99),
                    ms(t.on_p99),
                    met(!ttfe_grew(t.off_p99, t.on_p99))
                );
            }
            None => println!(
                "| 11 tenancy | stream time to first event, tenancy on vs off | does not grow measurably | not measured |"
            ),
        }
        if let Some(ceiling) = self.login_ceiling {
            for name in [LOGINS_SLED, LOGINS_PG] {
                println!(
                    "| 15 PostgreSQL | {name}: bounded by password hashing | ≥ 0.8× the hashing ceiling ({ceiling:.1}/s) | {} |",
                    match self.logins.get(name) {
                        Some(rps) => format!(
                            "{rps:.1}/s = {:.2}× {}",
                            rps / ceiling,
                            met(rps / ceiling >= 0.8)
                        ),
                        None => "not measured".into(),
                    }
                );
            }
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

    /// Events of one `POST /v1/graph/stream` answer.
    pub const STREAM_EVENTS: usize = 3;
    /// The pause before each event after the first.
    const STREAM_GAP: std::time::Duration = std::time::Duration::from_millis(10);

    /// A single-threaded server answering every request with a small JSON
    /// body, and `POST /v1/graph/stream` with server-sent events.
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
            let app = Router::new()
                .route("/v1/graph/stream", axum::routing::post(stream))
                .fallback(answer);
            axum::serve(listener, app).await.unwrap();
        });
    }

    /// The first event at once (with the response head), the others
    /// [`STREAM_GAP`] apart, as an agent streams a run.
    async fn stream(req: Request) -> Response {
        let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
        let events = futures_util::stream::unfold(0, |n| async move {
            if n == STREAM_EVENTS {
                return None;
            }
            if n > 0 {
                tokio::time::sleep(STREAM_GAP).await;
            }
            let event = format!(
                "event: values\ndata: {{\"n\":{n},\"messages\":[{{\"role\":\"assistant\",\"content\":\"hi\"}}]}}\n\n"
            );
            Some((Ok::<_, std::convert::Infallible>(event), n + 1))
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap()
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
