//! End-to-end tests: the real `agentflow` binary on a loopback port, real
//! plugins built for wasm32-wasip2, a real upstream recording what reaches it.
//!
//! One test binary (faster to link on a small machine); one module per area.

mod support;
mod support_agentflow;

mod accounts;
mod agentflow_server;
mod audit;
mod audit_plugins;
mod auth_chain;
mod config_errors;
mod config_reload;
mod console;
mod contract_v0_3;
mod envelope;
mod first_contact;
mod forward_auth;
mod hardening_identity;
mod hardening_login;
mod hardening_paths;
mod hardening_plugins;
mod hardening_server;
mod hostile_plugins;
mod jwks;
mod jwt;
mod lifecycle;
mod metrics;
mod multi_instance;
mod oauth;
mod openapi;
mod performance;
mod plugin_dev;
mod plugin_platform;
mod plugin_tools;
mod proxy;
mod rate_limits;
mod reference_plugins;
mod routes;
mod tenancy;
mod tenancy_sharing;
mod tenancy_team;
mod trusted_proxies;
mod upstream_identity;
mod upstream_retry;
mod websocket;
