//! `agentflow store migrate --to postgres://…`: copies a sled data dir
//! (accounts, audit trail, ownership registry and plugin storage) into
//! PostgreSQL so a single-node install can grow to several instances.
//! Idempotent (ids are kept; rows already there are left alone) and
//! verified (every copied entity is counted back).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::settings::AccountSettings;
use crate::store::{DatabaseSettings, PgStore, SledStore};

#[derive(Subcommand, Debug)]
pub(super) enum StoreCommand {
    /// Copy the sled data dir into a PostgreSQL database (stop the server first).
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
pub(super) struct MigrateArgs {
    /// Path of agentflow.json (its data dir is the source).
    #[arg(long, default_value = "agentflow.json")]
    config: PathBuf,
    /// The target database: postgres://user:password@host:5432/database.
    #[arg(long)]
    to: String,
}

/// Runs a `store` subcommand.
pub(super) fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate(args) => migrate(args),
    }
}

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let settings = AccountSettings::from_env(&cfg.env, &cfg.dir())?;
    let target =
        DatabaseSettings::from_url(&args.to).map_err(|reason| anyhow::anyhow!("--to: {reason}"))?;
    let source = settings.data_dir.join("db");
    let sled = SledStore::open(&source).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the database in {}: {e} (stop the server first)",
            settings.data_dir.display()
        )
    })?;
    let export = sled.export()?;
    let kv = read_plugin_kv(&settings.data_dir.join("plugins-kv"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    runtime.block_on(async {
        let pg = PgStore::connect(&target).await.map_err(|e| {
            anyhow::anyhow!("cannot open the database {}: {e}", target.masked_url())
        })?;
        let counts = pg.import(&export).await?;
        problems.extend(counts.mismatches());
        for (what, want, got) in &counts.rows {
            lines.push(format!("{what}: {got}/{want}"));
        }
        for (plugin, entries) in &kv {
            let got = pg.import_plugin_kv(plugin, entries).await?;
            let want = entries.len() as u64;
            if got != want {
                problems.push(format!(
                    "plugin storage of {plugin:?}: {want} in sled, {got} in PostgreSQL"
                ));
            }
            lines.push(format!("plugin storage of {plugin:?}: {got}/{want}"));
        }
        anyhow::Ok(())
    })?;
    for line in &lines {
        println!("{line}");
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "the copy is incomplete (rows that clash with different ones already in the database?): {}",
            problems.join("; ")
        );
    }
    println!(
        "Copied into {}. Set AGENTFLOW_DATABASE_URL on every instance (and the same AGENTFLOW_SECRET_KEY and JWT keys).",
        target.masked_url()
    );
    Ok(())
}

/// One plugin's tree: its name and its `(key, value)` entries.
type PluginTree = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Every plugin tree in the sled plugin storage.
fn read_plugin_kv(path: &std::path::Path) -> anyhow::Result<Vec<PluginTree>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let db = sled::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open plugin storage at {}: {e} (stop the server first)",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for name in db.tree_names() {
        let Some(plugin) = std::str::from_utf8(&name)
            .ok()
            .and_then(|n| n.strip_prefix("plugin:"))
        else {
            continue;
        };
        let tree = db.open_tree(&name)?;
        let entries = tree
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>()?;
        out.push((plugin.to_string(), entries));
    }
    Ok(out)
}
