//! The real AgentFlow API server (`10xscale-agentflow-cli` 0.6.1 from PyPI)
//! as a test fixture: installed once per test process into
//! `target/agentflow-venv` by `scripts/agentflow-server-venv`, started with
//! `agentflow api` on a free loopback port over the no-LLM echo graph in
//! `tests/agentflow/`, and killed on drop.
//!
//! The echo graph answers every run with one assistant message whose text is
//! JSON `{"user_id", "thread_id", "last_user_message", "claims"}`: what the
//! server put in the run's `config`, so a test can see whom the server
//! attributed a request to. [`echoed`] digs it out of a response.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::repo_root;

/// How long a server may take to answer `/ping` after it was started. Python
/// imports are slow on a loaded two-core machine; generous on purpose.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts tried before giving up: the free port is picked before the server
/// binds it, so another process may take it in between.
const START_ATTEMPTS: usize = 3;

/// The algorithm the fixture's JWT mode uses (the server needs it named).
pub const AGENTFLOW_JWT_ALGORITHM: &str = "HS256";

/// The venv holding the AgentFlow server, installed on first use. Runs the
/// install script once per test process; the script itself returns at once
/// when the pinned version is already there, and may take minutes when pip
/// has to download it, so there is no timeout here.
pub fn agentflow_venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let script = repo_root().join("scripts").join("agentflow-server-venv");
        let out = Command::new(&script)
            .current_dir(repo_root())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (see its output above)",
            script.display()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().last().unwrap_or_default().trim();
        let venv = PathBuf::from(path);
        assert!(
            venv.join("bin").join("agentflow").is_file(),
            "{} printed {path:?}, which has no bin/agentflow",
            script.display()
        );
        venv
    })
}

/// A running AgentFlow API server, killed on drop.
pub struct AgentflowServer {
    child: Child,
    base: String,
    logs: Arc<Mutex<String>>,
    // Working directory of the server (uploads, eval reports land here).
    _dir: tempfile::TempDir,
}

impl AgentflowServer {
    /// Starts the server over the echo graph. `auth_jwt: None` runs it with
    /// its auth off (every caller is `anonymous`); `Some(secret)` runs it
    /// with `"auth": "jwt"`, verifying HS256 tokens with `secret`
    /// (`JWT_SECRET_KEY`), which then must carry `exp` and `user_id`.
    pub fn start(auth_jwt: Option<&str>) -> AgentflowServer {
        AgentflowServer::start_with_env(auth_jwt, &[])
    }

    /// [`AgentflowServer::start`] with extra environment variables for the
    /// server (e.g. `JWT_AUDIENCE`, `JWT_ISSUER`, `MODE`).
    pub fn start_with_env(auth_jwt: Option<&str>, env: &[(&str, &str)]) -> AgentflowServer {
        let venv = agentflow_venv();
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match AgentflowServer::spawn(venv, auth_jwt, env) {
                Ok(server) => return server,
                Err(logs) => failures.push_str(&format!("--- attempt {attempt} ---\n{logs}\n")),
            }
        }
        panic!("the AgentFlow server did not start:\n{failures}");
    }

    /// One start on a fresh free port; `Err(logs)` when it exits or does not
    /// answer `/ping` in time.
    fn spawn(
        venv: &Path,
        auth_jwt: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<AgentflowServer, String> {
        let config_name = if auth_jwt.is_some() {
            "agentflow-jwt.json"
        } else {
            "agentflow.json"
        };
        let config = repo_root()
            .join("tests")
            .join("agentflow")
            .join(config_name);
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();

        let mut cmd = Command::new(venv.join("bin").join("agentflow"));
        cmd.args([
            "api",
            "--no-reload",
            "--quiet",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--config",
        ])
        .arg(&config)
        .current_dir(dir.path())
        // The server reads dozens of settings from the environment (JWT_*,
        // MODE, ORIGINS, REDIS_URL, ...): start from nothing so the
        // developer's own cannot change what the tests see.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("PYTHONUNBUFFERED", "1")
        // Keeps tests/agentflow/ free of __pycache__ folders.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(secret) = auth_jwt {
            cmd.env("JWT_SECRET_KEY", secret)
                .env("JWT_ALGORITHM", AGENTFLOW_JWT_ALGORITHM);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", venv.join("bin/agentflow").display()))?;
        let logs = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), logs.clone());
        collect(child.stderr.take().unwrap(), logs.clone());

        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}:\n{}", logs.lock().unwrap()));
            }
            let pong = client
                .get(format!("{base}/ping"))
                .send()
                .ok()
                .filter(|r| r.status().is_success());
            if let Some(reply) = pong {
                let body: Value = reply.json().unwrap_or(Value::Null);
                if body["data"] == "pong" {
                    return Ok(AgentflowServer {
                        child,
                        base,
                        logs,
                        _dir: dir,
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "no answer on {base}/ping within {START_TIMEOUT:?}:\n{}",
            logs.lock().unwrap()
        ))
    }

    /// The server's base URL, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for AgentflowServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Appends what `pipe` prints to `logs` from a thread, so a chatty server
/// never blocks on a full pipe.
fn collect(pipe: impl Read + Send + 'static, logs: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            logs.lock().unwrap().push_str(&(line + "\n"));
        }
    });
}

/// A user message in the server's wire format.
pub fn user_message(text: &str) -> Value {
    serde_json::json!({"role": "user", "content": [{"type": "text", "text": text}]})
}

/// The text of a message in the server's wire format (its text blocks joined).
pub fn message_text(message: &Value) -> String {
    message["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

/// What the echo graph reported, from a list of messages (an invoke
/// response's `data.messages`, or a thread's messages): the JSON text of the
/// last assistant message that carries it.
pub fn echoed(messages: &Value) -> Value {
    messages
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "assistant")
        .filter_map(|m| serde_json::from_str::<Value>(&message_text(m)).ok())
        .rfind(|v| v.get("user_id").is_some())
        .unwrap_or_else(|| panic!("no echo among the messages: {messages}"))
}
