//! The PostgreSQL the store tests run against: `AGENTFLOW_TEST_DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres` (what
//! `scripts/postgres` installs and starts). Each test gets a schema of its
//! own; schemas of runs older than an hour are dropped on the way.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::NoTls;

use super::{DatabaseSettings, PgStore, new_id, unix_now};

/// The server's URL.
pub fn server_url() -> String {
    std::env::var("AGENTFLOW_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its connections' `search_path` set to `schema`.
pub fn url_with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

static SWEPT: AtomicBool = AtomicBool::new(false);

/// Creates an empty schema and returns a URL that uses it.
pub async fn fresh_url() -> String {
    let url = server_url();
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("the store tests need PostgreSQL at {url} (run scripts/postgres): {e}")
        });
    tokio::spawn(connection);
    if !SWEPT.swap(true, Ordering::SeqCst) {
        let old = unix_now().saturating_sub(3600);
        let rows = client
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'agentflow_test_%'",
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let name: String = row.get(0);
            let born = name
                .split('_')
                .nth(2)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            if born < old {
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await;
            }
        }
    }
    let schema = format!("agentflow_test_{}_{}", unix_now(), &new_id()[..12]);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    url_with_schema(&url, &schema)
}

/// A store on a fresh schema.
pub async fn fresh() -> PgStore {
    PgStore::connect(&DatabaseSettings::for_url(&fresh_url().await))
        .await
        .expect("connect to the test schema")
}
