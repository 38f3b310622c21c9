//! The generated wit-bindgen glue (wasm builds only). Private: plugin
//! authors use the types in the crate root instead, and the export macros
//! reach in here.

/// Bindings for the `authenticator` world (also the home of the shared
/// `types`, `host` and `plugin` interfaces).
#[doc(hidden)]
pub mod authn {
    wit_bindgen::generate!({
        world: "authenticator",
        path: "wit/v0.3",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "agentflow_plugin_sdk::__private::authn",
    });
}

/// Bindings for the `authorizer` world, sharing the types above.
#[doc(hidden)]
pub mod authz {
    wit_bindgen::generate!({
        world: "authorizer",
        path: "wit/v0.3",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "agentflow_plugin_sdk::__private::authz",
        with: {
            "agentflow:auth/types@0.3.0": super::authn::agentflow::auth::types,
            "agentflow:auth/host@0.3.0": super::authn::agentflow::auth::host,
        },
    });
}

pub use authn::agentflow::auth::host as wit_host;
pub use authn::agentflow::auth::types as wit;
