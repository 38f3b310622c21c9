//! `agentflow secret-key generate | rotate`: the Fernet key that encrypts
//! values at rest.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::secrets::{self, KeyOrigin, SecretBox};
use crate::settings::AccountSettings;
use crate::store::{PgStore, SledStore, Store, StoreBackend, StoreError};

#[derive(Subcommand, Debug)]
pub(super) enum SecretKeyCommand {
    /// Print a new random Fernet key.
    Generate,
    /// Re-encrypt every stored value with a new key.
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
pub(super) struct RotateArgs {
    /// Path of agentflow.json (its `env` file holds the settings).
    #[arg(long, default_value = "agentflow.json")]
    config: PathBuf,
    /// The new key (from `agentflow secret-key generate`). Left out, it is
    /// read from `AGENTFLOW_NEW_SECRET_KEY` or else from stdin (one line;
    /// a hidden prompt on a terminal): an argument is visible to every
    /// user of the machine in `ps`.
    #[arg(long, env = "AGENTFLOW_NEW_SECRET_KEY", hide_env_values = true)]
    new_key: Option<String>,
}

/// The new key from the argument or environment, else from stdin.
fn new_key(given: Option<String>) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    if let Some(key) = given {
        return Ok(key.trim().to_owned());
    }
    let key = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("New Fernet key: ")?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        anyhow::bail!(
            "no new key: pipe it on stdin (`agentflow secret-key generate > new.key; agentflow secret-key rotate < new.key`) or set AGENTFLOW_NEW_SECRET_KEY"
        );
    }
    Ok(key)
}

/// Runs a `secret-key` subcommand.
pub(super) fn run(command: SecretKeyCommand) -> anyhow::Result<()> {
    match command {
        SecretKeyCommand::Generate => {
            println!("{}", SecretBox::generate_key());
            Ok(())
        }
        SecretKeyCommand::Rotate(args) => rotate(args),
    }
}

/// Re-encrypts all variables in one transaction. With the key in the data
/// dir, the old key is first set aside in `secret_key.previous`, so an
/// interruption at any point leaves every value readable; with the key in
/// the environment, the operator switches the settings afterwards.
fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let new_key = new_key(args.new_key)?;
    let cfg = Config::load(&args.config)?;
    let settings = AccountSettings::from_env(&cfg.env, &cfg.dir())?;
    let (old, origin) = SecretBox::from_settings(
        settings.secret_key.as_deref(),
        settings.secret_key_previous.as_deref(),
        &settings.data_dir,
    )?;
    let new = old.with_new_key(&new_key).map_err(|_| {
        anyhow::anyhow!("the new key is not a valid Fernet key (32 bytes, url-safe base64)")
    })?;
    let in_data_dir = matches!(origin, KeyOrigin::File { .. } | KeyOrigin::Generated { .. });
    if in_data_dir {
        secrets::write_previous_key_file(&settings.data_dir, &old.current_key_text())?;
        secrets::write_key_file(&settings.data_dir, &new_key)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let store = match &cfg.database {
        Some(db) => {
            StoreBackend::Postgres(runtime.block_on(PgStore::connect(db)).map_err(|e| {
                anyhow::anyhow!("cannot open the database {}: {e}", db.masked_url())
            })?)
        }
        None => {
            StoreBackend::Sled(SledStore::open(&settings.data_dir.join("db")).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the database in {}: {e} (stop the server first)",
                    settings.data_dir.display()
                )
            })?)
        }
    };
    let count = runtime.block_on(async {
        loop {
            match store.reencrypt_variables(|v| new.reencrypt(v)).await {
                Err(StoreError::Conflict(_)) => continue,
                other => break other,
            }
        }
    })?;
    // Recorded by the command itself: the server is stopped during a rotation.
    let event = crate::store::NewAuditEvent {
        time: crate::store::unix_now(),
        kind: crate::store::AuditKind::SecretKeyRotated,
        actor: Some("cli".into()),
        subject: None,
        client_ip: None,
        request_id: None,
        details: [("variables".to_owned(), serde_json::json!(count))]
            .into_iter()
            .collect(),
    };
    runtime.block_on(async {
        tracing::info!(target: crate::audit::LOG_TARGET, "{}", serde_json::json!(event));
        store.append_audit(event).await?;
        store.flush().await
    })?;
    if in_data_dir {
        secrets::remove_previous_key_file(&settings.data_dir)?;
        println!(
            "Re-encrypted {count} value(s); the new key is in {}.",
            settings.data_dir.join(secrets::KEY_FILE_NAME).display()
        );
    } else {
        println!("Re-encrypted {count} value(s) with the new key.");
        println!(
            "Now set AGENTFLOW_SECRET_KEY to the new key and AGENTFLOW_SECRET_KEY_PREVIOUS to the old one, then restart."
        );
    }
    Ok(())
}
