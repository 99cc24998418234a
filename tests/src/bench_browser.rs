//! `COGO_BENCH_ONLY=browser`: the Browser and FigmaMCP workers' job runners, in this process,
//! with no cluster (the worker's job path without the Executor hop).
//!
//! It measures:
//! 1. browser start: Debian's Chromium launched and answering its first command, 5 times;
//! 2. `browser.screenshot` of a local page (served on loopback), 200 jobs, one worker with 2
//!    slots (the default capacity) and with 1: screenshots/s and the latency's p50 and p99;
//! 3. `figma.generate_ui` (the generator alone, no HTTP) for a frame of 500 nodes, HTML and
//!    React, 200 runs each: mean and p99.

use std::{sync::Arc, time::Instant};

use crate::pct;
use axum::{Router, response::Html, routing::get};
use cogo_worker::{
    browser::{
        BrowserConfig, BrowserRunner,
        policy::UrlPolicy,
        process::{Browser, find_chromium},
    },
    figma::{Framework, fixture, generate_ui},
    jobs::{Job, JobRunner},
};
use serde_json::json;
use tokio::sync::watch;

type Error = Box<dyn std::error::Error + Send + Sync>;

const PAGE: &str = r#"<!doctype html><title>Bench</title><body style="margin:0;font:16px sans-serif">
<header style="background:#234;color:#fff;padding:16px">Cogo</header>
<main style="display:grid;grid-template-columns:repeat(3,1fr);gap:12px;padding:16px">
<div style="background:#eef;height:120px">one</div><div style="background:#efe;height:120px">two</div>
<div style="background:#fee;height:120px">three</div></main></body>"#;

/// Screenshots per run.
const SHOTS: usize = 200;
/// Generator runs per framework.
const GENERATIONS: usize = 200;

/// Runs the section; returns the report's lines.
pub async fn run() -> Result<Vec<String>, Error> {
    let binary = find_chromium().ok_or("Chromium is missing: install Debian's chromium package")?;
    let mut config = BrowserConfig::from_env()?;
    config.launch.binary = binary;
    config.launch.profiles_dir =
        std::env::temp_dir().join(format!("cogo-bench-browser-{}", std::process::id()));
    config.policy = UrlPolicy {
        allow_pod_addresses: true,
        ..Default::default()
    };
    let mut report = vec![];

    eprintln!("[bench] browser start, 5 times");
    let mut starts = vec![];
    for _ in 0..5 {
        let b = Browser::launch(&config.launch).await?;
        starts.push(b.started_in.as_secs_f64() * 1000.0);
        b.kill().await;
    }
    starts.sort_by(f64::total_cmp);
    report.push("| Browser worker | value |".into());
    report.push("|---|---|".into());
    report.push(format!(
        "| Chromium start to its first answer (5 starts) | median {:.0} ms, max {:.0} ms |",
        pct(&starts, 0.5),
        starts[starts.len() - 1]
    ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().route("/", get(|| async { Html(PAGE) }))).await;
    });
    for slots in [1usize, 2] {
        let runner = Arc::new(BrowserRunner::new(config.clone()));
        // The first job starts the browser; it is not counted.
        shot(&runner, &url).await?;
        eprintln!("[bench] browser.screenshot x{SHOTS}, {slots} slot(s)");
        let started = Instant::now();
        let mut tasks = vec![];
        for lane in 0..slots {
            let (runner, url) = (runner.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut times = vec![];
                for _ in (lane..SHOTS).step_by(slots) {
                    let t = Instant::now();
                    shot(&runner, &url).await?;
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, Error>(times)
            }));
        }
        let mut times = vec![];
        for t in tasks {
            times.extend(t.await??);
        }
        let secs = started.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        report.push(format!(
            "| browser.screenshot 1280x800 of a local page, {slots} slot(s), {SHOTS} jobs | {:.1} screenshots/s, p50 {:.0} ms, p99 {:.0} ms |",
            SHOTS as f64 / secs,
            pct(&times, 0.5),
            pct(&times, 0.99)
        ));
    }

    let frame = fixture::frame_with_nodes(500);
    let nodes = fixture::node_count(500);
    for (name, framework) in [("html", Framework::Html), ("react", Framework::React)] {
        eprintln!("[bench] figma.generate_ui x{GENERATIONS}, {name}");
        let mut times = vec![];
        let mut size = 0;
        for _ in 0..GENERATIONS {
            let t = Instant::now();
            let generated = generate_ui(&frame, fixture::BENCH_FRAME_ID, framework)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            size = generated.code.len();
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        report.push(format!(
            "| figma.generate_ui, {nodes}-node frame, {name} ({} KiB of code) | mean {mean:.2} ms, p99 {:.2} ms |",
            size / 1024,
            pct(&times, 0.99)
        ));
    }
    Ok(report)
}

async fn shot(runner: &BrowserRunner, url: &str) -> Result<(), Error> {
    let (_tx, cancel) = watch::channel(false);
    let job = Job::new(
        "bench",
        "browser.screenshot",
        json!({"url": url}),
        std::time::Duration::from_secs(60),
    );
    runner
        .run(job, cancel)
        .await
        .map(drop)
        .map_err(|e| e.message.into())
}
