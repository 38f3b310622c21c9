//! Prometheus metrics (`GET /metrics`): one process-wide registry of
//! counters, gauges and histograms from the `prometheus` crate (atomics;
//! a label lookup per event). Labels are bounded: route classes, status
//! codes, method kinds, the plugin names of agentflow.json and fixed
//! outcome words; never user ids or raw paths.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::error::ApiError;
use crate::plugins::{CallFailure, PluginError};
use crate::route_class::RouteClass;

/// Every metric family the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// `agentflow_http_requests_total{class, status}`.
    pub requests: IntCounterVec,
    /// `agentflow_http_request_duration_seconds{class}`.
    pub request_seconds: HistogramVec,
    /// `agentflow_http_open_connections`.
    pub open_connections: IntGauge,
    /// `agentflow_auth_outcomes_total{method, outcome}`: authenticated,
    /// no-credentials, refused, failed.
    pub auth: IntCounterVec,
    /// `agentflow_authorization_outcomes_total{outcome}`: allowed, denied, failed.
    pub authz: IntCounterVec,
    /// `agentflow_plugin_failures_total{plugin, kind}`: trap, timeout,
    /// out_of_memory.
    pub plugin_failures: IntCounterVec,
    /// `agentflow_rate_limited_total{class, scope}`.
    pub rate_limited: IntCounterVec,
    /// `agentflow_login_refusals_total{reason}`: logins refused before the
    /// password was checked: `throttled` (the address's attempt budget),
    /// `locked_address` and `locked_account` (lockouts).
    pub login_refusals: IntCounterVec,
    /// `agentflow_plugin_call_duration_seconds{plugin}`: time inside the
    /// sandbox per plugin call (cache hits are not calls).
    pub plugin_seconds: HistogramVec,
    /// `agentflow_plugin_reloads_total{plugin, result}`: swapped, failed
    /// (the last good version kept serving).
    pub plugin_reloads: IntCounterVec,
    /// `agentflow_cache_lookups_total{cache, result}`: `token` (verified
    /// JWTs) and `plugin_outcome` (plugin answers with a cache hint), hit or
    /// miss.
    pub cache_lookups: IntCounterVec,
    /// `agentflow_upstream_duration_seconds{class}`: time to the agent's
    /// response head, for proxied requests.
    pub upstream_seconds: HistogramVec,
    /// `agentflow_upstream_errors_total{kind}`: unreachable, 5xx.
    pub upstream_errors: IntCounterVec,
    /// `agentflow_config_reloads_total{outcome}`: applied, refused.
    pub config_reloads: IntCounterVec,
}

/// Latency buckets from 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Plugin call buckets from 10 µs to 1 s: a warm call takes tens of µs,
/// a plugin's timeout is a few hundred ms.
const PLUGIN_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    histogram_in(registry, name, help, labels, BUCKETS)
}

fn histogram_in(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let open_connections = IntGauge::new(
            "agentflow_http_open_connections",
            "Client connections open now.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(open_connections.clone()))
            .expect("unique metric");
        Metrics {
            requests: counter(
                &registry,
                "agentflow_http_requests_total",
                "Requests answered, by route class and status code.",
                &["class", "status"],
            ),
            request_seconds: histogram(
                &registry,
                "agentflow_http_request_duration_seconds",
                "Time to the response head, by route class.",
                &["class"],
            ),
            open_connections,
            auth: counter(
                &registry,
                "agentflow_auth_outcomes_total",
                "Authentication results by how the caller was (or was not) proved.",
                &["method", "outcome"],
            ),
            authz: counter(
                &registry,
                "agentflow_authorization_outcomes_total",
                "Authorization decisions on agent requests.",
                &["outcome"],
            ),
            plugin_failures: counter(
                &registry,
                "agentflow_plugin_failures_total",
                "Plugin calls that failed (the request failed closed).",
                &["plugin", "kind"],
            ),
            rate_limited: counter(
                &registry,
                "agentflow_rate_limited_total",
                "Requests refused by a rate limit.",
                &["class", "scope"],
            ),
            login_refusals: counter(
                &registry,
                "agentflow_login_refusals_total",
                "Logins refused before the password was checked.",
                &["reason"],
            ),
            plugin_seconds: histogram_in(
                &registry,
                "agentflow_plugin_call_duration_seconds",
                "Time inside the sandbox per plugin call.",
                &["plugin"],
                PLUGIN_BUCKETS,
            ),
            plugin_reloads: counter(
                &registry,
                "agentflow_plugin_reloads_total",
                "Plugin reloads: swapped in, or failed (the last good version kept serving).",
                &["plugin", "result"],
            ),
            cache_lookups: counter(
                &registry,
                "agentflow_cache_lookups_total",
                "Lookups in the verified-token and plugin-outcome caches.",
                &["cache", "result"],
            ),
            upstream_seconds: histogram(
                &registry,
                "agentflow_upstream_duration_seconds",
                "Time the agent took to answer a proxied request (response head).",
                &["class"],
            ),
            upstream_errors: counter(
                &registry,
                "agentflow_upstream_errors_total",
                "Proxied requests the agent did not answer well.",
                &["kind"],
            ),
            config_reloads: counter(
                &registry,
                "agentflow_config_reloads_total",
                "Reloads of agentflow.json while running, applied or refused.",
                &["outcome"],
            ),
            registry,
        }
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts an authentication result; `method` is how the caller was
    /// proved (`jwt`, `api_key`, `account`, `plugin`, `anonymous`), or
    /// `chain` for a refusal.
    pub fn auth_result(&self, method: &str, result: Result<(), &ApiError>) {
        let (method, outcome) = match result {
            Ok(()) => (method, "authenticated"),
            Err(ApiError::NotAuthenticated(_)) => ("chain", "no-credentials"),
            Err(ApiError::InvalidCredentials { .. } | ApiError::TooManyRequests { .. }) => {
                ("chain", "refused")
            }
            Err(e) => {
                self.plugin_failure(e);
                ("chain", "failed")
            }
        };
        self.auth.with_label_values(&[method, outcome]).inc();
    }

    /// Counts a lookup in `cache` (`token`, `plugin_outcome`).
    pub fn cache_lookup(&self, cache: &str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups.with_label_values(&[cache, result]).inc();
    }

    /// Counts a login refused before its password was checked.
    pub fn login_refused(&self, reason: &str) {
        self.login_refusals.with_label_values(&[reason]).inc();
    }

    /// Counts an authorization decision.
    pub fn authz_result(&self, result: Result<(), &ApiError>) {
        let outcome = match result {
            Ok(()) => "allowed",
            Err(ApiError::Forbidden(_) | ApiError::InvalidCredentials { .. }) => "denied",
            Err(ApiError::NotFound(_)) => "denied",
            Err(e) => {
                self.plugin_failure(e);
                "failed"
            }
        };
        self.authz.with_label_values(&[outcome]).inc();
    }

    /// Counts a plugin failure by kind, when `e` is one.
    fn plugin_failure(&self, e: &ApiError) {
        if let ApiError::Plugin(PluginError::Call { plugin, cause, .. }) = e {
            let kind = match cause {
                CallFailure::Timeout(_) => "timeout",
                CallFailure::MemoryLimit(_) => "out_of_memory",
                _ => "trap",
            };
            self.plugin_failures
                .with_label_values(&[plugin.as_str(), kind])
                .inc();
        }
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Middleware (outermost but the request id): counts and times every
/// request by route class and status.
pub async fn track(req: Request, next: Next) -> Response {
    let class = RouteClass::of(req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    let m = global();
    m.request_seconds
        .with_label_values(&[class.name()])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[class.name(), response.status().as_str()])
        .inc();
    response
}

/// Times a proxied request's answer from the agent and counts the failures
/// (unreachable, or a 5xx from the agent).
pub fn upstream_result(started: Instant, result: &Result<Response, ApiError>) {
    let m = global();
    match result {
        Ok(r) => {
            m.upstream_seconds
                .with_label_values(&[RouteClass::Agent.name()])
                .observe(started.elapsed().as_secs_f64());
            if r.status().is_server_error() {
                m.upstream_errors.with_label_values(&["5xx"]).inc();
            }
        }
        Err(ApiError::UpstreamUnavailable) => {
            m.upstream_errors.with_label_values(&["unreachable"]).inc();
        }
        Err(_) => {}
    }
}
