//! The Browser worker's jobs in Debian's Chromium, against a local site: a page whose text
//! JavaScript renders late, a form that changes the page when clicked, a page with a known
//! coloured block, a page that never loads, one that eats memory without end, and the
//! addresses the worker must not load.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    response::{Html, Redirect},
    routing::get,
};
use cogo_e2e::picture::Picture;
use cogo_worker::{
    browser::{BrowserConfig, BrowserRunner, policy::UrlPolicy, process},
    jobs::{Job, JobRunner},
};
use serde_json::{Value, json};
use tokio::sync::watch;

const LATE: &str = r#"<!doctype html><title>Late</title><body><script>
setTimeout(() => { const p = document.createElement('p'); p.id = 'late'; p.textContent = 'rendered late'; document.body.append(p); }, 400);
</script></body>"#;

const FORM: &str = r#"<!doctype html><title>Form</title><body>
<input id="name" value=""><button id="go" onclick="document.querySelector('#out').textContent = 'Hello, ' + document.querySelector('#name').value + '!'">Go</button>
<p id="out"></p><a id="next" href="/block">next</a>
<form id="f" action="/block"><input id="q" name="q"></form>
<ul><li class="i" data-n="1">one</li><li class="i" data-n="2">two</li></ul>
<script>document.querySelector('#name').addEventListener('keydown', e => { if (e.key === 'Enter') document.querySelector('#out').textContent = 'entered'; });
alert('dialogs do not block');</script>
</body>"#;

const BLOCK: &str = r#"<!doctype html><title>Block</title><body style="margin:0;background:#fff">
<div style="position:absolute;left:100px;top:50px;width:200px;height:100px;background:rgb(255,0,0)"></div>
<div style="position:absolute;left:0;top:2900px;width:50px;height:50px;background:rgb(0,0,255)"></div>
</body>"#;

const OOM: &str = r#"<!doctype html><title>Greedy</title><body><script>
const keep = []; while (true) { keep.push(new Array(1e6).fill(Math.random())); }
</script></body>"#;

/// Serves the site on loopback; returns its base address.
async fn site() -> String {
    let app = Router::new()
        .route("/late", get(|| async { Html(LATE) }))
        .route("/form", get(|| async { Html(FORM) }))
        .route("/block", get(|| async { Html(BLOCK) }))
        .route("/oom", get(|| async { Html(OOM) }))
        .route("/moved", get(|| async { Redirect::temporary("/block") }))
        .route(
            "/never",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Html("too late")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(allow_pod_addresses: bool) -> BrowserConfig {
    let binary = process::find_chromium()
        .expect("Chromium is missing: install Debian's chromium package (`.ci/run` does)");
    let mut config = BrowserConfig::from_env().unwrap();
    config.launch.binary = binary;
    config.launch.profiles_dir =
        std::env::temp_dir().join(format!("cogo-browser-test-{}", std::process::id()));
    config.launch.js_heap_mib = 128;
    config.policy = UrlPolicy {
        allow_pod_addresses,
        ..Default::default()
    };
    config.page_timeout = Duration::from_secs(5);
    config.step_timeout = Duration::from_secs(4);
    config.job_timeout = Duration::from_secs(30);
    config
}

async fn run(
    runner: &BrowserRunner,
    task_type: &str,
    input: Value,
) -> Result<Value, cogo_worker::jobs::JobError> {
    let (_tx, cancel) = watch::channel(false);
    let job = Job::new("t", task_type, input, std::time::Duration::from_secs(60));
    runner.run(job, cancel).await
}

/// Runs a job that must fail for good, with `fragment` in its message.
async fn fails(runner: &BrowserRunner, task_type: &str, input: Value, fragment: &str) {
    let e = run(runner, task_type, input.clone()).await.unwrap_err();
    assert!(e.message.contains(fragment), "{input}: {}", e.message);
    assert!(!e.retryable, "{input}: {}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_show_the_page_at_the_asked_size() {
    let base = site().await;
    let runner = BrowserRunner::new(config(true));
    let shot = run(
        &runner,
        "browser.screenshot",
        json!({"url": format!("{base}/moved"), "viewport": {"width": 640, "height": 400}}),
    )
    .await
    .unwrap();
    assert_eq!(
        (shot["width"].as_u64(), shot["height"].as_u64()),
        (Some(640), Some(400))
    );
    assert_eq!(shot["title"], "Block");
    assert_eq!(
        shot["finalUrl"],
        format!("{base}/block"),
        "the redirect is followed"
    );
    let image = Picture::from_base64(shot["png"].as_str().unwrap());
    assert_eq!(
        (image.width, image.height),
        (640, 400),
        "the PNG has the asked size"
    );
    assert_eq!(image.at(200, 100), [255, 0, 0], "the block is red at its place");
    assert_eq!(image.at(101, 51), [255, 0, 0]);
    assert_eq!(image.at(99, 100), [255, 255, 255], "left of the block is white");
    assert_eq!(image.at(301, 100), [255, 255, 255], "right of the block is white");
    assert_eq!(image.at(200, 151), [255, 255, 255], "below the block is white");

    let full = run(
        &runner,
        "browser.screenshot",
        json!({"url": format!("{base}/block"), "fullPage": true, "viewport": {"width": 400, "height": 300}}),
    )
    .await
    .unwrap();
    let image = Picture::from_base64(full["png"].as_str().unwrap());
    assert_eq!(image.width, 400);
    assert!(
        image.height >= 2950,
        "the whole page is captured: {} high",
        image.height
    );
    assert_eq!(
        image.at(25, 2925),
        [0, 0, 255],
        "the block at the bottom of the page shows"
    );

    let late = run(
        &runner,
        "browser.screenshot",
        json!({"url": format!("{base}/late"), "waitFor": "#late"}),
    )
    .await
    .unwrap();
    assert_eq!(late["title"], "Late");
    assert_eq!(runner.starts(), 1, "one browser serves every job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_change_and_read_the_page() {
    let base = site().await;
    let runner = BrowserRunner::new(config(true));
    let out = run(
        &runner,
        "browser.run",
        json!({"url": format!("{base}/form"), "steps": [
            {"action": "type", "selector": "#name", "text": "Cogo"},
            {"action": "click", "selector": "#go"},
            {"action": "extract", "selector": "#out"},
            {"action": "press", "selector": "#name", "text": "Enter"},
            {"action": "extract", "selector": "#out"},
            {"action": "extract", "selector": "li.i", "attribute": "data-n", "all": true},
            {"action": "extract", "selector": "li.i", "html": true},
            {"action": "evaluate", "script": "new Promise(r => setTimeout(() => r({sum: 1 + 2, where: location.pathname}), 50))"},
            {"action": "screenshot"},
            {"action": "click", "selector": "#next"},
            {"action": "waitFor", "selector": "div"},
        ]}),
    )
    .await
    .unwrap();
    let results = out["results"].as_array().unwrap();
    assert_eq!(results[0], Value::Null);
    assert_eq!(
        results[2], "Hello, Cogo!",
        "the click ran the page's handler with the typed text"
    );
    assert_eq!(results[4], "entered", "Enter reached the page's key handler");
    assert_eq!(results[5], json!(["1", "2"]));
    assert_eq!(results[6], "<li class=\"i\" data-n=\"1\">one</li>");
    assert_eq!(results[7], json!({"sum": 3, "where": "/form"}));
    assert_eq!(results[8]["width"], 1280);
    assert_eq!(out["title"], "Block", "the link click navigated");
    assert_eq!(out["finalUrl"], format!("{base}/block"));

    let late = run(
        &runner,
        "browser.run",
        json!({"url": format!("{base}/late"), "steps": [{"action": "waitFor", "selector": "#late"}, {"action": "extract", "selector": "#late"}]}),
    )
    .await
    .unwrap();
    assert_eq!(late["results"][1], "rendered late");

    for (steps, fragment) in [
        (
            json!([{"action": "click", "selector": "#missing", "timeoutMs": 300}]),
            "steps[0] (click): no element matches \"#missing\" after 300 ms",
        ),
        (
            json!([{"action": "evaluate", "script": "null.x"}]),
            "steps[0] (evaluate): the script threw: TypeError",
        ),
        (
            json!([{"action": "extract", "selector": "[[["}]),
            "is not a valid CSS selector",
        ),
        (
            json!([{"action": "press", "text": "Hyper"}]),
            "unknown key \"Hyper\"",
        ),
        (
            json!([{"action": "evaluate", "script": "while (true) {}", "timeoutMs": 500}]),
            "did not finish within 500 ms",
        ),
        (
            json!([{"action": "type", "selector": "#name"}]),
            "steps[0]: type needs `text`",
        ),
    ] {
        fails(
            &runner,
            "browser.run",
            json!({"url": format!("{base}/form"), "steps": steps}),
            fragment,
        )
        .await;
    }
    let after = run(
        &runner,
        "browser.run",
        json!({"url": format!("{base}/form"), "steps": [{"action": "evaluate", "script": "6 * 7"}]}),
    )
    .await
    .unwrap();
    assert_eq!(after["results"][0], 42, "the worker goes on after failed steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pages_fail_clearly_and_the_worker_survives_them() {
    let base = site().await;
    let runner = BrowserRunner::new(config(true));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let shot = |url: String| json!({"url": url});
    for (url, fragment) in [
        (
            format!("http://{closed}/"),
            format!("cannot load http://{closed}/: net::ERR_CONNECTION_REFUSED"),
        ),
        (
            "http://no-such-host.invalid/".into(),
            "net::ERR_NAME_NOT_RESOLVED".into(),
        ),
        (format!("{base}/never"), "/never did not answer within 5 s".into()),
    ] {
        fails(&runner, "browser.screenshot", shot(url), &fragment).await;
    }
    let e = run(&runner, "browser.screenshot", shot(format!("{base}/oom")))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("crashed its renderer") || e.message.contains("did not finish loading"),
        "{}",
        e.message
    );
    let ok = run(&runner, "browser.screenshot", shot(format!("{base}/block")))
        .await
        .unwrap();
    assert_eq!(
        ok["title"], "Block",
        "the worker goes on after a page that ate its memory"
    );
    assert_eq!(runner.starts(), 1, "a crashed renderer does not cost the browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_own_addresses_and_files_stay_closed_by_default() {
    let base = site().await;
    let runner = BrowserRunner::new(config(false));
    for (input, fragment) in [
        (
            json!({"url": format!("{base}/block")}),
            "is the pod's own address 127.0.0.1",
        ),
        (
            json!({"url": "file:///etc/passwd"}),
            "does not load (spec.browser.allowFileUrls)",
        ),
        (
            json!({"url": "https://a", "viewport": {"width": 0, "height": 10}}),
            "viewport.width must be 1 to 16384",
        ),
        (
            json!({"url": "https://a", "fullpage": true}),
            "unknown field `fullpage`",
        ),
    ] {
        fails(&runner, "browser.screenshot", input, fragment).await;
    }
    // An inline page may not reach the pod's addresses either: its request is refused.
    let html = format!(
        "<title>Inline</title><img id=i src='{base}/block'><script>document.querySelector('#i').onerror = () => document.title = 'refused';</script>"
    );
    let out = run(
        &runner,
        "browser.run",
        json!({"url": format!("data:text/html,{}", urlencode(&html)), "steps": [{"action": "waitFor", "timeoutMs": 300}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["title"], "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_browser_is_started_again() {
    let base = site().await;
    let runner = Arc::new(BrowserRunner::new(config(true)));
    run(
        &runner,
        "browser.screenshot",
        json!({"url": format!("{base}/block")}),
    )
    .await
    .unwrap();
    // The browser's main process dies, as on a crash.
    let pid = runner.browser_pid().await.expect("a browser runs");
    // SAFETY: signals one process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = run(
        &runner,
        "browser.screenshot",
        json!({"url": format!("{base}/block")}),
    )
    .await
    .unwrap();
    assert_eq!(ok["title"], "Block");
    assert_eq!(runner.starts(), 2);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
