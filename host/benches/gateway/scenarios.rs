//! What the issue scenarios need besides `wrk`: a PostgreSQL schema of the
//! run's own (issue 15), credentials made on the running server (an account
//! login's token or API key), stream time-to-first-event samples (issue 11)
//! and a Prometheus scraper (issue 14).

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// A fresh schema on the machine's PostgreSQL (the server the end-to-end
/// tests use: `AGENTFLOW_TEST_DATABASE_URL`, default
/// postgres://postgres@127.0.0.1:5432/postgres, started by
/// `scripts/postgres`); dropped at the end of the run.
pub struct Postgres {
    server: String,
    schema: String,
    /// The URL for `AGENTFLOW_DATABASE_URL`: connections use the schema.
    pub url: String,
}

fn execute(url: &str, sql: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(url, tokio_postgres::NoTls),
        )
        .await
        .map_err(|_| format!("PostgreSQL at {url} did not answer within 5 s"))?
        .map_err(|e| format!("PostgreSQL at {url} (run scripts/postgres): {e}"))?;
        tokio::spawn(connection);
        client.batch_execute(sql).await.map_err(|e| e.to_string())
    })
}

impl Postgres {
    /// Creates the schema, or says why PostgreSQL cannot be used.
    pub fn open() -> Result<Postgres, String> {
        let server = std::env::var("AGENTFLOW_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let schema = format!("agentflow_bench_{}_{}", now.as_secs(), std::process::id());
        execute(&server, &format!("CREATE SCHEMA {schema}"))?;
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-csearch_path%3D{schema}");
        Ok(Postgres {
            server,
            schema,
            url,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = execute(
            &self.server,
            &format!("DROP SCHEMA {} CASCADE", self.schema),
        ) {
            eprintln!("could not drop the bench schema {}: {e}", self.schema);
        }
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The request headers of a variant's credentials on a running server.
pub fn credentials(base: &str, creds: Creds) -> Result<Vec<(&'static str, String)>, String> {
    match creds {
        Creds::Fixed => Ok(vec![]),
        Creds::LoginToken => {
            let token = login_flood::admin_token(base)?;
            Ok(vec![("Authorization", format!("Bearer {token}"))])
        }
        Creds::AccountApiKey => {
            let token = login_flood::admin_token(base)?;
            let resp = client()
                .post(format!("{base}/v1/api-keys"))
                .bearer_auth(token)
                .json(&json!({"name": "bench"}))
                .send()
                .map_err(|e| e.to_string())?;
            let body: Value = resp.json().map_err(|e| e.to_string())?;
            let key = body["key"]
                .as_str()
                .ok_or_else(|| format!("creating an API key failed: {body}"))?;
            Ok(vec![("X-Api-Key", key.to_owned())])
        }
    }
}

/// Time from sending `POST /v1/graph/stream` to reading the first byte of
/// its body, `n` times in a row on one keep-alive connection (after a few
/// discarded warm-up requests); each stream is read to its end before the
/// next is sent.
pub fn stream_first_event(
    base: &str,
    headers: &[(&'static str, String)],
    n: usize,
) -> Result<Vec<Duration>, String> {
    let client = client();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let mut req = client
            .post(format!("{base}/v1/graph/stream"))
            .header("content-type", "application/json")
            .body(STREAM_BODY);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let started = Instant::now();
        let mut resp = req.send().map_err(|e| e.to_string())?;
        if resp.status().as_u16() != 200 {
            let status = resp.status();
            return Err(format!("{status}: {}", resp.text().unwrap_or_default()));
        }
        let mut first = [0u8; 1];
        match resp.read(&mut first) {
            Ok(1) => {}
            Ok(_) => return Err("the stream ended without an event".into()),
            Err(e) => return Err(e.to_string()),
        }
        let took = started.elapsed();
        let mut rest = Vec::new();
        resp.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        // The first byte read is the start of the first event: every
        // event's blank-line terminator is in `rest`.
        let events = rest.windows(2).filter(|w| w == b"\n\n").count();
        if events < upstream::STREAM_EVENTS {
            return Err(format!(
                "{events} events arrived, {} sent",
                upstream::STREAM_EVENTS
            ));
        }
        if i >= 20 {
            samples.push(took);
        }
    }
    Ok(samples)
}

/// Reads `/metrics` from the `--metrics-port` listener once a second until
/// dropped, as a Prometheus server would.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Scraper {
    /// Starts scraping the listener the server logged ("metrics on …").
    pub fn start(server: &Proc) -> Result<Scraper, String> {
        let url = server
            .logs
            .lock()
            .unwrap()
            .lines()
            .find_map(|l| l.split("metrics on ").nth(1))
            .map(|u| u.trim().to_owned())
            .ok_or("the server did not log its metrics listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let client = client();
        client
            .get(&url)
            .send()
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("scraping {url}: {e}"))?;
        let thread = std::thread::spawn(move || {
            let mut scrapes = 0;
            while !flag.load(Ordering::Relaxed) {
                if client.get(&url).send().and_then(|r| r.text()).is_ok() {
                    scrapes += 1;
                }
                for _ in 0..10 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            scrapes
        });
        Ok(Scraper {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
