//! What a component file is, for `agentflow plugin check`: its imports and
//! exports, and for each plugin world whether it fits and, if not, why.

use super::{PluginRuntime, Slot, v0_2, v0_3};

/// The verdict on one component file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// SHA-256 of the file.
    pub sha256: String,
    /// Everything it imports (interface names).
    pub imports: Vec<String>,
    /// Everything it exports (interface names).
    pub exports: Vec<String>,
    /// For each world: `None` when the file satisfies it, else why not.
    pub worlds: Vec<WorldFit>,
}

/// Whether a component satisfies one world.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorldFit {
    /// `authenticator` or `authorizer`.
    pub world: &'static str,
    /// Why it does not fit; `None` when it does.
    pub problem: Option<String>,
}

impl Report {
    /// The slots the component can serve.
    pub fn fits(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.worlds
            .iter()
            .filter(|w| w.problem.is_none())
            .map(|w| w.world)
    }
}

/// World name of a slot, as written in `plugin-sdk/wit/*/agentflow-auth.wit`.
pub fn world_name(slot: Slot) -> &'static str {
    match slot {
        Slot::Authenticator => "authenticator",
        Slot::Authorizer => "authorizer",
    }
}

/// Inspects component `bytes`; `Err` when they are not a component at all.
pub fn check(runtime: &PluginRuntime, bytes: &[u8]) -> Result<Report, String> {
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    let component = runtime.component(bytes)?;
    let ty = component.component_type();
    let engine = runtime.engine();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let pre = runtime
        .linker()
        .instantiate_pre(&component)
        .map_err(|e| format!("{e:#}"));
    let worlds = [Slot::Authenticator, Slot::Authorizer]
        .into_iter()
        .map(|slot| {
            let problem = match &pre {
                Err(e) => Some(format!("imports something the host does not offer: {e}")),
                Ok(pre) => {
                    // Either contract version fits the slot.
                    let fits = match slot {
                        Slot::Authenticator => {
                            v0_3::authn::AuthenticatorPre::new(pre.clone()).is_ok()
                                || v0_2::authn::AuthenticatorPre::new(pre.clone()).is_ok()
                        }
                        Slot::Authorizer => {
                            v0_3::authz::AuthorizerPre::new(pre.clone()).is_ok()
                                || v0_2::authz::AuthorizerPre::new(pre.clone()).is_ok()
                        }
                    };
                    (!fits).then(|| format!("does not export `{}`", slot.export()))
                }
            };
            WorldFit {
                world: world_name(slot),
                problem,
            }
        })
        .collect();
    Ok(Report {
        sha256,
        imports,
        exports,
        worlds,
    })
}
