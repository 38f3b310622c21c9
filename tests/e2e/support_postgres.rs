//! PostgreSQL for the multi-instance tests: a fresh schema on the machine's
//! server (`AGENTFLOW_TEST_DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/postgres, started by
//! `scripts/postgres`), or a private cluster a test can stop and start.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The machine's server.
pub fn server_url() -> String {
    std::env::var("AGENTFLOW_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs `sql` on `url` (panics with the error).
pub fn execute(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} (run scripts/postgres): {e}"));
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    });
}

/// A URL whose connections use a new, empty schema on the machine's server.
pub fn fresh_database() -> String {
    let url = server_url();
    let schema = format!(
        "agentflow_test_{}_{}",
        crate::support::now(),
        &crate::support::sha256_hex(&format!("{:?}", std::time::Instant::now()))[..12]
    );
    execute(&url, &format!("CREATE SCHEMA {schema}"));
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// A PostgreSQL cluster of the test's own in a temporary folder, on a free
/// loopback port; stopped (immediately) on drop.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its loopback port.
    pub port: u16,
}

fn as_postgres(bin: &std::path::Path, tool: &str) -> Command {
    // initdb refuses to run as root: run the tools as `postgres` then.
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        cmd
    } else {
        Command::new(bin.join(tool))
    }
}

impl PrivateCluster {
    /// initdb + start (panics with the tool's output if either fails).
    pub fn start() -> PrivateCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL binaries in /usr/lib/postgresql (run scripts/postgres)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let out = as_postgres(&bin, "initdb")
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PrivateCluster { dir, bin, port };
        cluster.resume();
        cluster
    }

    /// The cluster's URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts it (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let out = self.pg_ctl(&[
            "-w",
            "-t",
            "30",
            "-o",
            &options,
            "-l",
            log.to_str().unwrap(),
            "start",
        ]);
        assert!(out.status.success(), "pg_ctl start: {out:?}");
        let up = crate::support::wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(up.is_some(), "the private cluster did not come up");
    }

    /// Stops it (fast shutdown: connections are closed at once).
    pub fn pause(&self) {
        let out = self.pg_ctl(&["-w", "-m", "fast", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
