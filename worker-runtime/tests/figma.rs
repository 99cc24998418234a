//! The FigmaMCP worker's Figma jobs against a strict stand-in of the Figma REST API serving a
//! real-looking design file: the clean tree, the components, a frame as HTML and React, the
//! rate limit waited out, and every way the API refuses, each with the error a task reports.

use std::time::Duration;

use cogo_e2e::standin::figma::Figma;
use cogo_worker::{
    figma::{FigmaConfig, FigmaRunner},
    jobs::{Job, JobError, JobRunner},
};
use serde_json::{Value, json};
use tokio::sync::watch;

const TOKEN: &str = "figd_worker-test";
const KEY: &str = "CogoMobile42";

async fn standin() -> Figma {
    let design: Value = serde_json::from_str(include_str!("../../tests/data/figma/design.json")).unwrap();
    Figma::serve("127.0.0.1:0".parse().unwrap(), TOKEN, KEY, design)
        .await
        .unwrap()
}

fn runner(figma: &Figma, token: Option<&str>) -> FigmaRunner {
    FigmaRunner::new(FigmaConfig {
        api_url: figma.url(),
        token: token.map(String::from),
        servers: vec![],
        job_timeout: Duration::from_secs(20),
    })
    .unwrap()
}

async fn run(runner: &FigmaRunner, task_type: &str, input: Value) -> Result<Value, JobError> {
    let (_tx, cancel) = watch::channel(false);
    let job = Job::new("t", task_type, input, std::time::Duration::from_secs(60));
    runner.run(job, cancel).await
}

#[tokio::test]
async fn files_components_and_frames_come_from_the_api() {
    let figma = standin().await;
    let r = runner(&figma, Some(TOKEN));
    let file = run(&r, "figma.file", json!({"fileKey": KEY, "depth": 2}))
        .await
        .unwrap();
    assert_eq!(file["name"], "Cogo Mobile");
    assert_eq!(file["pages"][0]["name"], "Screens");
    assert_eq!(file["pages"][0]["children"][0]["name"], "Sign in");
    let components = run(&r, "figma.components", json!({"fileKey": KEY}))
        .await
        .unwrap();
    let names: Vec<&str> = components["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Input"), "{components}");
    assert_eq!(components["componentSets"][0]["name"], "Button");

    let html = run(&r, "figma.generate_ui", json!({"fileKey": KEY, "nodeId": "1-2"}))
        .await
        .unwrap();
    let code = html["code"].as_str().unwrap();
    assert!(
        code.starts_with("<!DOCTYPE html>") || code.starts_with("<!doctype html>"),
        "{code}"
    );
    assert!(code.contains("data-node-id=\"1:2\""));
    assert!(code.contains("display: flex"), "auto layout becomes flexbox");
    let warnings: Vec<&str> = html["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let image = warnings
        .iter()
        .find(|w| w.contains("IMAGE fill"))
        .expect("the image fill is named");
    assert!(image.contains("loaded from Figma's image address"), "{image}");
    assert!(
        code.contains("url(\"https://images.example/"),
        "the image fill shows its image"
    );
    let react = run(
        &r,
        "figma.generate_ui",
        json!({"fileKey": KEY, "nodeId": "1:2", "framework": "react"}),
    )
    .await
    .unwrap();
    assert!(
        react["code"]
            .as_str()
            .unwrap()
            .contains("export default function"),
        "{}",
        react["code"]
    );

    let asked: Vec<String> = figma.requests().into_iter().map(|r| r.1).collect();
    assert_eq!(
        asked,
        [
            format!("/v1/files/{KEY}?depth=2"),
            format!("/v1/files/{KEY}"),
            format!("/v1/files/{KEY}/nodes?ids=1%3A2"),
            format!("/v1/files/{KEY}/images"),
            format!("/v1/files/{KEY}/nodes?ids=1%3A2"),
            format!("/v1/files/{KEY}/images"),
        ]
    );
}

#[tokio::test]
async fn a_rate_limit_is_waited_out_as_asked() {
    let figma = standin().await;
    let r = runner(&figma, Some(TOKEN));
    figma.limit_next(2, 1);
    let started = std::time::Instant::now();
    let file = run(&r, "figma.file", json!({"fileKey": KEY, "depth": 1}))
        .await
        .unwrap();
    assert_eq!(file["name"], "Cogo Mobile");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two Retry-After: 1 waited"
    );
    let statuses: Vec<u16> = figma.requests().iter().map(|r| r.2).collect();
    assert_eq!(statuses, [429, 429, 200]);

    // A wait longer than a minute is not waited: the task fails, to be retried later.
    figma.limit_next(1, 3600);
    let e = run(&r, "figma.file", json!({"fileKey": KEY})).await.unwrap_err();
    assert!(e.retryable, "{}", e.message);
    assert!(e.message.contains("asked to wait 3600 s"), "{}", e.message);
}

#[tokio::test]
async fn refusals_are_clear_and_final() {
    let figma = standin().await;
    let r = runner(&figma, Some("figd_wrong"));
    let e = run(&r, "figma.file", json!({"fileKey": KEY})).await.unwrap_err();
    assert_eq!(
        e.message,
        "Figma refused the token: Invalid token (spec.figmaTokenSecretRef)"
    );
    assert!(!e.retryable);
    assert!(!e.message.contains("figd_wrong"));

    let r = runner(&figma, Some(TOKEN));
    for (task_type, input, fragment) in [
        (
            "figma.file",
            json!({"fileKey": "Nope1"}),
            "Figma has no file \"Nope1\"",
        ),
        (
            "figma.generate_ui",
            json!({"fileKey": KEY, "nodeId": "9:99"}),
            "Figma has no node \"9:99\"",
        ),
        (
            "figma.generate_ui",
            json!({"fileKey": KEY, "nodeId": "0:1"}),
            "0:1",
        ),
        ("figma.file", json!({"fileKey": "../admin"}), "is not a Figma key"),
        (
            "figma.file",
            json!({"fileKey": KEY, "deep": 1}),
            "unknown field `deep`",
        ),
        (
            "figma.generate_ui",
            json!({"fileKey": KEY, "nodeId": "1:2", "framework": "vue"}),
            "unknown variant `vue`",
        ),
        (
            "mcp.tools",
            json!({"server": "dev"}),
            "this worker's CogoWorker names none (spec.mcpServers)",
        ),
        (
            "browser.run",
            json!({}),
            "a FigmaMCP worker does not run browser.run",
        ),
    ] {
        let e = run(&r, task_type, input.clone()).await.unwrap_err();
        assert!(e.message.contains(fragment), "{input}: {}", e.message);
        assert!(!e.retryable, "{input}");
    }

    let r = runner(&figma, None);
    let e = run(&r, "figma.file", json!({"fileKey": KEY})).await.unwrap_err();
    assert!(e.message.contains("no Figma token"), "{}", e.message);

    drop(figma);
    let gone = standin().await;
    let url = gone.url();
    drop(gone);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = FigmaRunner::new(FigmaConfig {
        api_url: url,
        token: Some(TOKEN.into()),
        servers: vec![],
        job_timeout: Duration::from_secs(3),
    })
    .unwrap();
    let e = run(&r, "figma.file", json!({"fileKey": KEY})).await.unwrap_err();
    assert!(e.retryable, "{}", e.message);
    assert!(
        e.message.starts_with("Figma is unavailable: cannot reach"),
        "{}",
        e.message
    );
}
