//! `agentflow superuser`: create a superuser (or reset its password) from
//! the command line, against the server's data dir.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::Args;

use crate::accounts::Accounts;
use crate::config::Config;

#[derive(Args, Debug)]
pub(super) struct SuperuserArgs {
    /// Path of agentflow.json (its `env` file holds the settings).
    #[arg(long, default_value = "agentflow.json")]
    config: PathBuf,
    /// The username; asked for when missing.
    #[arg(long)]
    username: Option<String>,
    /// Read the password from the first line of standard input instead of
    /// prompting.
    #[arg(long)]
    password_stdin: bool,
}

/// Creates the superuser and prints "Superuser created successfully."
pub(super) fn run(args: SuperuserArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let settings = crate::settings::AccountSettings::from_env(&cfg.env, &cfg.dir())?;
    if !settings.enable_superuser_cli {
        anyhow::bail!("`agentflow superuser` is disabled (AGENTFLOW_ENABLE_SUPERUSER_CLI=False)");
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let username = match args.username {
        Some(u) => u,
        None => {
            print!("Username: ");
            std::io::stdout().flush()?;
            lines
                .next()
                .transpose()?
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
    };
    let password = if args.password_stdin {
        lines
            .next()
            .transpose()?
            .unwrap_or_default()
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password (again): ")?;
        if first != second {
            anyhow::bail!("the passwords do not match");
        }
        first
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let accounts = Accounts::open(&cfg).await?;
        accounts
            .ensure_superuser(&username, &password)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok(())
    })?;
    println!("Superuser created successfully.");
    Ok(())
}
