//! `COGO_BENCH_ONLY=gateway`: the chat gateway under load from `wrk` on loopback, next to a
//! minimal axum route on the same machine as the ceiling. The gateway (release build) serves
//! a namespace of the local control plane, with a real PostgreSQL and the operator's intake;
//! `status` reads the agents from Kubernetes, `agent_task` (without `wait`) inserts a row and
//! answers once the intake made the AgentTask.

use std::{process::Command, time::Duration};

use serde_json::json;

use crate::{
    cluster::{Cluster, Namespace, Operator, free_port, kwok_agent, wait_until},
    gateway::{GatewayProcess, Signer, token},
    postgres::Postgres,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

const USER: &str = "00000000-0000-4000-8000-0000000be1c4";

/// One `wrk` run's figures.
struct Load {
    rps: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
}

/// Runs `wrk` for 10 s with `connections` connections on one thread, with `extra` arguments
/// (headers, a script), against `url`.
fn wrk(url: &str, connections: u32, extra: &[&str]) -> Result<Load, Error> {
    let out = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            "10s",
            "--latency",
        ])
        .args(extra)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk ({e}): install it (Debian: apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    Ok(Load {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
        non_2xx: field("Non-2xx or 3xx responses:").parse().unwrap_or(0),
    })
}

fn row(what: &str, load: &Load) -> String {
    format!(
        "| {what} | {:.0} | {} | {} | {} |",
        load.rps, load.p50, load.p99, load.non_2xx
    )
}

/// The gateway's figures, as Markdown lines.
pub async fn run(c: &Cluster) -> Result<Vec<String>, Error> {
    // The ceiling: the smallest axum answer, served by this process.
    let hello = free_port();
    tokio::spawn(async move {
        let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", hello)).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    let kubeconfig = c.kubeconfig.clone();
    tokio::task::spawn_blocking(move || measure(&Cluster { kubeconfig }, hello)).await?
}

fn measure(c: &Cluster, hello: u16) -> Result<Vec<String>, Error> {
    let ns_name = "bench-gateway";
    let pg = Postgres::start(ns_name);
    let secret = "cogo-supabase-bench-gateway";
    c.url_secret("default", secret, &pg.url());
    let ns = Namespace::create(c, ns_name);
    let _op = Operator::start_with(
        c,
        "bench-gateway-operator",
        free_port(),
        &["--supabase-secret", secret, "--intake-namespace", ns_name],
    );
    ns.apply_ok(&kwok_agent("research", 1, 8).to_string());
    wait_until(Duration::from_secs(60), "the operator's schema", || {
        pg.query("select count(*) from pg_tables where tablename = 'user_roles'") == "1"
    });
    pg.query(&format!("insert into auth.users (id) values ('{USER}')"));
    pg.query(&format!(
        "insert into public.user_roles (user_id, role, permissions) values ('{USER}', 'cogo_agent', '{{agent:*,task:*,worker:*,chat:*}}')"
    ));
    let gw = GatewayProcess::start(
        c,
        ns_name,
        &pg.url(),
        "http://127.0.0.1:9/auth/v1/.well-known/jwks.json",
        &[
            "--user-rate",
            "1000000/1000000",
            "--address-rate",
            "1000000/1000000",
        ],
    );
    let auth = format!("Authorization: Bearer {}", token(USER, json!({}), Signer::Secret));
    let base = format!("http://127.0.0.1:{}", gw.port);
    eprintln!("[bench] gateway: axum hello, status and agent_task, 10 s each");
    let ceiling = wrk(&format!("http://127.0.0.1:{hello}/hello"), 32, &[])?;
    let status = wrk(&format!("{base}/v1/status"), 32, &["-H", &auth])?;
    let script = std::env::temp_dir().join(format!("cogo-bench-gateway-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"role": "research", "type": "cogo.echo", "input": {"n": 1}}'
"#,
    )?;
    let tasks = wrk(
        &format!("{base}/v1/tasks"),
        16,
        &["-H", &auth, "-s", script.to_str().unwrap_or_default()],
    )?;
    let _ = std::fs::remove_file(&script);
    let made = pg.query("select count(*) from distributed_agent_tasks where name is not null");
    Ok(vec![
        String::new(),
        "Chat gateway (wrk, 1 thread, 10 s each, on loopback; the gateway a release build with 4 database connections):".into(),
        String::new(),
        "| route | requests/s | p50 | p99 | non-2xx |".into(),
        "|---|---|---|---|---|".into(),
        row("axum hello (the ceiling), 32 connections", &ceiling),
        row("`GET /v1/status`, 32 connections", &status),
        row("`POST /v1/tasks` (`agent_task`, no wait), 16 connections", &tasks),
        String::new(),
        format!("AgentTasks the intake made for `agent_task`: {made}."),
    ])
}
