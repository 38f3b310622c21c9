//! `--login-flood`: does authenticated traffic keep its latency while
//! anonymous clients flood `POST /v1/login` with wrong passwords?
//!
//! For each scenario a server with accounts is started, a real login gives
//! an access token, and `wrk` drives `GET /v1/whoami` with it: once quiet,
//! then while a second `wrk` (64 connections, a new username per request)
//! floods the login. Scenarios: the default limits (one flooding address is
//! throttled), and the per-address limits lifted so that only the bounded
//! password-hashing pool stands between the flood and the CPU.

use super::*;

pub(crate) const ADMIN: &str = "bench-admin";
pub(crate) const ADMIN_PW: &str = "bench-admin-password";

const FLOOD_LUA: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"username":"flood-' .. n .. '","password":"wrong-password"}')
end
"#;

/// Runs the scenarios and prints one table.
pub fn run(fx: &Fixtures, opts: &LoadOpts) {
    let lifted = [
        ("AGENTFLOW_LOGIN_ATTEMPTS_PER_MINUTE", "1000000"),
        ("AGENTFLOW_LOGIN_IN_FLIGHT_PER_ADDRESS", "1000000"),
    ];
    let scenarios: [(&str, &[(&str, &str)]); 2] = [
        ("default limits (flood from one address)", &[]),
        ("per-address limits lifted (hashing pool only)", &lifted),
    ];
    let flood_script = fx.dir.path().join("login-flood.lua");
    std::fs::write(&flood_script, FLOOD_LUA).unwrap();
    println!(
        "## Login flood: GET /v1/whoami (JWT from a login) quiet vs during a wrong-password flood of POST /v1/login (wrk, 64 connections)"
    );
    println!();
    println!(
        "| scenario | whoami req/s quiet / flood | p50 quiet / flood | p99 quiet / flood | flood p99 / quiet p99 | logins answered/s | logins refused (429) or failed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, extra) in scenarios {
        let mut env: Vec<(&str, String)> = vec![
            ("JWT_SECRET_KEY", SECRET.to_owned()),
            ("AGENTFLOW_SUPERUSER", ADMIN.to_owned()),
            ("AGENTFLOW_SUPERUSER_PASSWORD", ADMIN_PW.to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let (server, base, _) = start_server(fx, "login-flood", &json!({"auth": "jwt"}), &env);
        let token = match admin_token(&base) {
            Ok(t) => t,
            Err(e) => {
                println!("| {label} | not run: {e} |||||");
                continue;
            }
        };
        let headers = [("Authorization", format!("Bearer {token}"))];
        let script = wrk_script(
            fx.dir.path(),
            "login-flood-whoami",
            Route::Whoami,
            INVOKE_BODY,
            &headers,
        );
        let url = format!("{base}/v1/whoami");
        run_wrk(opts, 1, &script, &url); // warm-up, discarded
        let quiet = run_wrk(opts, opts.duration_s, &script, &url);
        let flood = Command::new("wrk")
            .args([
                "-t1",
                "-c64",
                &format!("-d{}s", opts.duration_s + 2),
                "--latency",
                "-s",
            ])
            .arg(&flood_script)
            .arg(format!("{base}/v1/login"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running wrk");
        std::thread::sleep(Duration::from_secs(1));
        let loaded = run_wrk(opts, opts.duration_s, &script, &url);
        let flood_out = flood.wait_with_output().expect("waiting for the flood");
        let flood = parse_wrk(&String::from_utf8_lossy(&flood_out.stdout));
        drop(server);
        let (flood_rps, flood_refused) = match &flood {
            Some(f) => (
                format!("{:.0}", f.rps),
                format!("{} of {}", f.non_2xx + f.socket_errors, f.requests),
            ),
            None => ("?".into(), "?".into()),
        };
        println!(
            "| {label} | {:.0} / {:.0} | {} / {} | {} / {} | {:.2}× | {flood_rps} | {flood_refused} |",
            quiet.rps,
            loaded.rps,
            ms(quiet.p50),
            ms(loaded.p50),
            ms(quiet.p99),
            ms(loaded.p99),
            loaded.p99.as_secs_f64() / quiet.p99.as_secs_f64(),
        );
    }
    println!();
}

/// Logs the bench admin in; its access token.
pub(crate) fn admin_token(base: &str) -> Result<String, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client
        .post(format!("{base}/v1/login"))
        .json(&json!({"username": ADMIN, "password": ADMIN_PW}))
        .send()
        .map_err(|e| e.to_string())?;
    let body: Value = resp.json().map_err(|e| e.to_string())?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("login failed: {body}"))
}
