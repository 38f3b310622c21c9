//! agentflow: authentication and authorization in front of an agent API.
//!
//! `main.rs` only parses the command line; [`cli`] runs commands, [`server`]
//! assembles a running server from a [`config::Config`], and [`routes::app`]
//! builds the router it serves (the console also sends its API calls
//! through it in-process). Tests drive the real binary over loopback
//! (`tests/e2e`), not the router.
pub mod accounts;
pub mod agent_request;
pub mod audit;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod console;
pub mod cors;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod identity;
pub mod jwt;
pub mod live;
pub mod login_throttle;
pub mod metrics;
pub mod openapi;
pub mod passwords;
pub mod pipeline;
pub mod plugins;
pub mod proxy;
pub mod rate_limit;
pub mod readiness;
pub mod request_id;
pub mod route_class;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod store;
pub mod tenancy;
pub mod upstream_token;
