//! The generated wit-bindgen glue. Private: plugin authors use the types in
//! the crate root instead, and the export macros reach in here.

/// Bindings for the `authenticator` world (also the home of the shared
/// `types` and `host` interfaces).
#[doc(hidden)]
pub mod authn {
    wit_bindgen::generate!({
        world: "authenticator",
        path: "../../../plugin-sdk/wit/v0.2",
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
        path: "../../../plugin-sdk/wit/v0.2",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "agentflow_plugin_sdk::__private::authz",
        with: {
            "agentflow:auth/types@0.2.0": super::authn::agentflow::auth::types,
            "agentflow:auth/host@0.2.0": super::authn::agentflow::auth::host,
        },
    });
}

pub use authn::agentflow::auth::host as wit_host;
pub use authn::agentflow::auth::types as wit;
