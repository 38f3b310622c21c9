//! Host-side bindings generated from `wit/` for the two plugin worlds.

/// The `authenticator` world; also home of the shared `types` and `host`
/// interfaces.
pub mod authn {
    wasmtime::component::bindgen!({
        world: "authenticator",
        path: "../wit",
        exports: { default: async },
    });
}

/// The `authorizer` world, reusing the types generated above.
pub mod authz {
    wasmtime::component::bindgen!({
        world: "authorizer",
        path: "../wit",
        exports: { default: async },
        with: {
            "agentflow:auth/types": super::authn::agentflow::auth::types,
            "agentflow:auth/host": super::authn::agentflow::auth::host,
        },
    });
}

pub use authn::agentflow::auth::host as wit_host;
pub use authn::agentflow::auth::types as wit;
