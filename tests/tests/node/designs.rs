//! The Browser and FigmaMCP workers as pods on the real node, from the images built here:
//! Chromium in the worker image takes screenshots and runs steps on a site served on the
//! node's address, fails clearly on pages that cannot load and survives one that eats its
//! memory; the FigmaMCP worker reads a design file from a strict Figma stand-in (waiting out
//! its 429), turns a frame into HTML that the Browser worker renders at the frame's geometry,
//! and calls the tools of an MCP server written with rmcp.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use base64::Engine;
use cogo_e2e::{
    cluster::{Cluster, NODE_ADDRESS, Namespace, Operator, wait_until},
    picture::Picture,
    standin::{Pages, figma::Figma, mcp},
};
use serde_json::{Value, json};

use super::cluster;

const FIGMA_TOKEN: &str = "figd_node-test-token";
const FILE_KEY: &str = "CogoMobile42";

const FORM: &str = r#"<!doctype html><title>Form</title><body>
<input id="name"><button id="go" onclick="document.querySelector('#out').textContent = 'Hello, ' + document.querySelector('#name').value + '!'">Go</button>
<p id="out"></p><script>setTimeout(() => { const p = document.createElement('p'); p.id = 'late'; p.textContent = 'rendered late'; document.body.append(p); }, 400);</script></body>"#;

const BLOCK: &str = r#"<!doctype html><title>Block</title><body style="margin:0;background:#fff">
<div style="position:absolute;left:100px;top:50px;width:200px;height:100px;background:rgb(0,128,255)"></div></body>"#;

const GREEDY: &str = r#"<!doctype html><title>Greedy</title><body><script>
const keep = []; while (true) { keep.push(new Array(1e6).fill(Math.random())); }</script></body>"#;

fn executor() -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "executor"},
           "spec": {"role": "Executor", "resources": {"cpuRequest": "50m", "memory": "256Mi"}}})
    .to_string()
}

fn task(name: &str, task_type: &str, input: Value) -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
           "spec": {"role": "Executor", "type": task_type, "input": input, "timeoutSeconds": 120,
                    "retry": {"limit": 0}}})
    .to_string()
}

/// The task once it ended in `phase`.
fn ended(c: &Cluster, ns: &Namespace, name: &str, phase: &str) -> Value {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(180), &format!("task {name} to end"), || {
        last = c
            .get_json(&ns.name, &format!("agenttask/{name}"))
            .unwrap_or_default();
        ["Succeeded", "Failed", "Cancelled"].contains(&last["status"]["phase"].as_str().unwrap_or_default())
    });
    if last["status"]["phase"] != phase {
        let logs = |d: &str| {
            let out = c.kubectl(
                &["logs", "-n", &ns.name, &format!("deployment/{d}"), "--tail=40"],
                None,
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        panic!(
            "{name} ended {}, not {phase}: {}\nbrowser worker:\n{}\nfigma worker:\n{}",
            last["status"]["phase"],
            last["status"],
            logs("browser"),
            logs("figma")
        );
    }
    last["status"].clone()
}

/// Every visible node of the subtree with a box, by id: (x, y, width, height) from `origin`.
fn boxes(node: &Value, origin: (f64, f64), out: &mut HashMap<String, [f64; 4]>) {
    if node["visible"] == false {
        return;
    }
    let b = &node["absoluteBoundingBox"];
    if let (Some(x), Some(y), Some(w), Some(h)) = (
        b["x"].as_f64(),
        b["y"].as_f64(),
        b["width"].as_f64(),
        b["height"].as_f64(),
    ) {
        out.insert(
            node["id"].as_str().unwrap().to_string(),
            [x - origin.0, y - origin.1, w, h],
        );
    }
    for c in node["children"].as_array().into_iter().flatten() {
        boxes(c, origin, out);
    }
}

#[test]
fn browsers_and_designs_work_on_worker_pods() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-designs");
    let _op = Operator::start_for_pods(&c, "designs");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = |port| SocketAddr::new(NODE_ADDRESS.parse().unwrap(), port);
    let site = rt
        .block_on(Pages::serve(
            node(0),
            &[("/form", FORM), ("/block", BLOCK), ("/greedy", GREEDY)],
        ))
        .unwrap();
    // A server that accepts and never answers, and a port nothing listens on.
    let silent = TcpListener::bind(node(0)).unwrap();
    let silent_url = format!("http://{}/", silent.local_addr().unwrap());
    let closed = TcpListener::bind(node(0)).unwrap().local_addr().unwrap();
    let design: Value = serde_json::from_str(include_str!("../../data/figma/design.json")).unwrap();
    let figma = rt
        .block_on(Figma::serve(node(0), FIGMA_TOKEN, FILE_KEY, design))
        .unwrap();
    let tools = rt.block_on(mcp::serve_on(node(0), Some(mcp::TOKEN))).unwrap();

    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "figma",
        &format!("--from-literal=token={FIGMA_TOKEN}"),
    ]);
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "tools",
        &format!("--from-literal=token={}", mcp::TOKEN),
    ]);
    ns.apply_ok(&executor());
    ns.apply_ok(
        &json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "browser"},
                "spec": {"kind": "Browser", "capacity": 2, "resources": {"cpuRequest": "50m"},
                         "browser": {"pageTimeoutSeconds": 8, "stepTimeoutSeconds": 5}}})
        .to_string(),
    );
    ns.apply_ok(
        &json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "figma"},
                "spec": {"kind": "FigmaMCP", "resources": {"cpuRequest": "50m"},
                         "figmaTokenSecretRef": {"name": "figma", "key": "token"}, "figmaApiUrl": figma.url(),
                         "mcpServers": [{"name": "tools", "url": tools.url("/mcp"),
                                         "tokenSecretRef": {"name": "tools", "key": "token"}}]}})
        .to_string(),
    );
    ns.wait("cogoagent/executor", "condition=Ready", 180);
    ns.wait("cogoworker/browser", "condition=Ready", 240);
    ns.wait("cogoworker/figma", "condition=Ready", 180);

    // Screenshots decode to the asked size and show the block's colour at its place.
    ns.apply_ok(&task(
        "shot",
        "browser.screenshot",
        json!({"url": site.url("/block"), "viewport": {"width": 400, "height": 300}}),
    ));
    // Steps change and read the page.
    ns.apply_ok(&task(
        "steps",
        "browser.run",
        json!({"url": site.url("/form"), "steps": [
            {"action": "waitFor", "selector": "#late"},
            {"action": "type", "selector": "#name", "text": "node"},
            {"action": "click", "selector": "#go"},
            {"action": "extract", "selector": "#out"},
            {"action": "evaluate", "script": "document.querySelectorAll('p').length"}]}),
    ));
    ns.apply_ok(&task(
        "refused",
        "browser.screenshot",
        json!({"url": format!("http://{closed}/")}),
    ));
    ns.apply_ok(&task("silent", "browser.screenshot", json!({"url": silent_url})));
    ns.apply_ok(&task(
        "own",
        "browser.screenshot",
        json!({"url": "http://127.0.0.1:3003/metrics"}),
    ));
    ns.apply_ok(&task(
        "greedy",
        "browser.screenshot",
        json!({"url": site.url("/greedy")}),
    ));

    let shot = ended(&c, &ns, "shot", "Succeeded")["result"].clone();
    let image = Picture::from_base64(shot["png"].as_str().unwrap());
    assert_eq!((image.width, image.height), (400, 300));
    assert_eq!(
        image.at(200, 100),
        [0, 128, 255],
        "the block's colour at its place"
    );
    assert_eq!(image.at(350, 250), [255, 255, 255], "white outside it");
    let steps = ended(&c, &ns, "steps", "Succeeded")["result"].clone();
    assert_eq!(steps["results"][3], "Hello, node!", "{steps}");
    assert_eq!(steps["results"][4], 2);
    let m = |s: &Value| s["message"].as_str().unwrap_or_default().to_string();
    let refused = ended(&c, &ns, "refused", "Failed");
    assert!(m(&refused).contains("net::ERR_CONNECTION_REFUSED"), "{refused}");
    let silent_status = ended(&c, &ns, "silent", "Failed");
    assert!(
        m(&silent_status).contains("did not answer within 8 s"),
        "{silent_status}"
    );
    let own = ended(&c, &ns, "own", "Failed");
    assert!(m(&own).contains("is the pod's own address 127.0.0.1"), "{own}");
    let greedy = ended(&c, &ns, "greedy", "Failed");
    assert!(
        m(&greedy).contains("crashed its renderer") || m(&greedy).contains("did not finish loading"),
        "{greedy}"
    );
    ns.apply_ok(&task(
        "after",
        "browser.screenshot",
        json!({"url": site.url("/block")}),
    ));
    assert_eq!(
        ended(&c, &ns, "after", "Succeeded")["result"]["title"],
        "Block",
        "the worker survived"
    );

    // Figma: the file's tree, its components after a 429, and the frame as HTML.
    ns.apply_ok(&task(
        "file",
        "figma.file",
        json!({"fileKey": FILE_KEY, "depth": 2}),
    ));
    let file = ended(&c, &ns, "file", "Succeeded")["result"].clone();
    let pages: Vec<&str> = file["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pages, ["Screens", "Components"], "{file}");
    figma.limit_next(1, 1);
    ns.apply_ok(&task(
        "components",
        "figma.components",
        json!({"fileKey": FILE_KEY}),
    ));
    let components = ended(&c, &ns, "components", "Succeeded")["result"].clone();
    assert!(
        components["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "Input"),
        "{components}"
    );
    let statuses: Vec<u16> = figma.requests().iter().map(|r| r.2).collect();
    assert!(
        statuses.windows(2).any(|w| w == [429, 200]),
        "the 429 was waited out: {statuses:?}"
    );
    ns.apply_ok(&task("nofile", "figma.file", json!({"fileKey": "Missing1"})));
    assert!(m(&ended(&c, &ns, "nofile", "Failed")).contains("Figma has no file \"Missing1\""));

    ns.apply_ok(&task(
        "ui",
        "figma.generate_ui",
        json!({"fileKey": FILE_KEY, "nodeId": "1-2"}),
    ));
    let ui = ended(&c, &ns, "ui", "Succeeded")["result"].clone();
    let html = ui["code"].as_str().unwrap();
    assert!(
        ui["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("IMAGE fill")),
        "{}",
        ui["warnings"]
    );
    let nodes: Value = serde_json::from_str(include_str!("../../data/figma/nodes.json")).unwrap();
    let frame = &nodes["nodes"]["1:2"]["document"];
    let b = &frame["absoluteBoundingBox"];
    let (fw, fh) = (b["width"].as_f64().unwrap(), b["height"].as_f64().unwrap());
    let mut expected = HashMap::new();
    boxes(
        frame,
        (b["x"].as_f64().unwrap(), b["y"].as_f64().unwrap()),
        &mut expected,
    );
    let page = format!(
        "data:text/html;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(html)
    );
    ns.apply_ok(&task(
        "render",
        "browser.run",
        json!({"url": page, "viewport": {"width": fw as u32, "height": fh as u32}, "steps": [{"action": "evaluate",
               "script": "Array.from(document.querySelectorAll('[data-node-id]')).map(e => { const r = e.getBoundingClientRect(); return [e.dataset.nodeId, r.x, r.y, r.width, r.height]; })"}]}),
    ));
    let rendered = ended(&c, &ns, "render", "Succeeded")["result"]["results"][0].clone();
    let mut compared = 0;
    for r in rendered.as_array().unwrap() {
        let id = r[0].as_str().unwrap();
        let Some(want) = expected.get(id) else { continue };
        let got: Vec<f64> = (1..5).map(|i| r[i].as_f64().unwrap()).collect();
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1.0,
                "node {id}: rendered at {got:?}, the frame has {want:?}"
            );
        }
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} nodes compared: {rendered}");

    // MCP: list the tools and call one; bad arguments never reach the server.
    ns.apply_ok(&task("tools", "mcp.tools", json!({"server": "tools"})));
    let listed = ended(&c, &ns, "tools", "Succeeded")["result"].clone();
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"add") && names.contains(&"greet"), "{listed}");
    ns.apply_ok(&task(
        "add",
        "mcp.call",
        json!({"server": "tools", "tool": "add", "arguments": {"a": 20, "b": 22}}),
    ));
    assert_eq!(
        ended(&c, &ns, "add", "Succeeded")["result"]["structuredContent"],
        json!({"sum": 42})
    );
    ns.apply_ok(&task(
        "badargs",
        "mcp.call",
        json!({"server": "tools", "tool": "greet", "arguments": {"name": ""}}),
    ));
    let bad = ended(&c, &ns, "badargs", "Failed");
    assert!(m(&bad).contains("arguments.name"), "{bad}");
    assert_eq!(
        tools.seen.calls(),
        ["add"],
        "the bad call never reached the server"
    );
    drop(silent);
}
