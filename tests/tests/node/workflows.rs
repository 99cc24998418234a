//! The Orchestrator and the Research agent as pods on the real node, their model a stand-in of
//! the Gemini API on the node's address and their pages served there too: a research query
//! answers from the pages; a diamond workflow runs across roles with results flowing between
//! steps, its sub-tasks labelled and owned by it; a failing step stops the others or lets the
//! independent ones finish; a cycle is refused before anything runs; the Orchestrator killed
//! mid-workflow loses nothing and runs no step twice; a hundred workflows run at once; another
//! model rolls out and shows in the agent's status.

use std::{net::SocketAddr, time::Duration};

use cogo_e2e::{
    cluster::{Cluster, NODE_ADDRESS, Namespace, Operator, wait_until},
    standin::{Pages, StandIn},
};
use serde_json::{Value, json};

use super::cluster;

const KEY: &str = "node-test-key";

/// A CogoAgent of `role` whose model is the stand-in at `endpoint`.
pub(crate) fn agent(name: &str, role: &str, concurrency: i32, endpoint: &str) -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": name},
           "spec": {"role": role, "concurrency": concurrency,
                    "resources": {"cpuRequest": "50m", "memory": "256Mi"},
                    "model": {"provider": "Gemini", "name": "gemini-2.5-flash-lite", "endpoint": endpoint,
                              "apiKeySecretRef": {"name": "gemini", "key": "api-key"}},
                    // The pages are on the node's (private) address.
                    "podTemplate": {"env": [{"name": "COGO_RESEARCH_ALLOW_PRIVATE", "value": "true"}]}}})
    .to_string()
}

/// An AgentTask for any agent of `role`, with more of its spec in `extra`.
fn task(name: &str, role: &str, task_type: &str, input: Value, extra: Value) -> String {
    let mut spec = json!({"role": role, "type": task_type, "input": input});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn get(c: &Cluster, ns: &Namespace, name: &str) -> Value {
    c.get_json(&ns.name, &format!("agenttask/{name}"))
        .unwrap_or(Value::Null)
}

/// The task once it ended (within three minutes), which must be in `phase`.
pub(crate) fn ended(c: &Cluster, ns: &Namespace, name: &str, phase: &str) -> Value {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(180), &format!("{name} to end"), || {
        last = get(c, ns, name);
        last["status"]["phase"]
            .as_str()
            .is_some_and(|p| ["Succeeded", "Failed", "Cancelled"].contains(&p))
    });
    assert_eq!(last["status"]["phase"], phase, "{name}: {}", last["status"]);
    last
}

#[test]
fn workflows_run_across_roles_and_survive_the_orchestrator() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-workflows");
    let _op = Operator::start_for_pods(&c, "workflows");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = |port| SocketAddr::new(NODE_ADDRESS.parse().unwrap(), port);
    let gemini = rt
        .block_on(StandIn::gemini_on(node(0), KEY))
        .expect("the stand-in on the node address");
    let pages = rt
        .block_on(Pages::serve(
            node(0),
            &[(
                "/ownership",
                "<html><head><title>Ownership</title></head><body><nav>home | docs</nav>\
                 <main><h1>Ownership</h1><p>Every value has exactly one owner, checked at compile time.</p></main></body></html>",
            )],
        ))
        .unwrap();
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "gemini",
        &format!("--from-literal=api-key={KEY}"),
    ]);
    ns.apply_ok(&agent("orchestrator", "Orchestrator", 120, &gemini.endpoint()));
    ns.apply_ok(&agent("research", "Research", 8, &gemini.endpoint()));
    ns.wait("cogoagent/orchestrator", "condition=Ready", 180);
    ns.wait("cogoagent/research", "condition=Ready", 180);
    let status = c.get_json(&ns.name, "cogoagent/research").unwrap()["status"].clone();
    assert_eq!(
        status["model"],
        json!({"provider": "Gemini", "name": "gemini-2.5-flash-lite"}),
        "{status}"
    );

    // A research query over a page served on the node.
    ns.apply_ok(&task(
        "query",
        "Research",
        "research.query",
        json!({"question": "Who owns a value?", "urls": [pages.url("/ownership")]}),
        json!({}),
    ));
    let r = &ended(&c, &ns, "query", "Succeeded")["status"]["result"];
    assert!(r["answer"].as_str().unwrap().contains("exactly one owner"), "{r}");
    assert_eq!(
        r["sources"][0],
        json!({"url": pages.url("/ownership"), "title": "Ownership",
        "excerpt": "Ownership Every value has exactly one owner, checked at compile time."})
    );
    let sent = gemini.requests();
    let header = sent[0].headers.iter().find(|(k, _)| k == "x-goog-api-key");
    assert_eq!(
        header.map(|(_, v)| v.as_str()),
        Some(KEY),
        "the key from the Secret, in its header"
    );

    // A diamond across roles: a (Research) feeds b (Research) and c (Orchestrator); d joins them.
    let diamond = json!({"steps": [
        {"id": "a", "type": "research.query", "input": {"question": "Who owns a value?", "urls": [pages.url("/ownership")]}},
        {"id": "b", "type": "llm.generate", "dependsOn": ["a"], "input": {"prompt": "{{steps.a.result.sources.0.title}}"}},
        {"id": "c", "type": "cogo.echo", "role": "Orchestrator", "dependsOn": ["a"], "input": {"model": "{{steps.a.result.usage.model}}"}},
        {"id": "d", "type": "cogo.echo", "role": "Research", "dependsOn": ["b", "c"],
         "input": {"text": "{{steps.b.result.text}}", "model": "{{steps.c.result.model}}"}}]});
    ns.apply_ok(&task(
        "diamond",
        "Orchestrator",
        "workflow.run",
        diamond,
        json!({}),
    ));
    let wf = ended(&c, &ns, "diamond", "Succeeded");
    let steps = &wf["status"]["result"]["steps"];
    assert_eq!(
        steps["d"]["result"],
        json!({"text": "stand-in answer: Ownership", "model": "gemini-2.5-flash-lite"}),
        "{steps}"
    );
    assert_eq!(steps["a"]["task"], "diamond-a");
    let children = ns.kubectl_ok(&["get", "agenttasks", "-l", "cogo.xyz/parent=diamond", "-o", "name"]);
    assert_eq!(children.lines().count(), 4, "{children}");
    let d = get(&c, &ns, "diamond-d");
    assert_eq!(d["metadata"]["ownerReferences"][0]["name"], "diamond");
    assert_eq!(d["status"]["agent"], "research");
    assert_eq!(get(&c, &ns, "diamond-c")["status"]["agent"], "orchestrator");

    // A cycle is refused before anything runs, naming it.
    let cycle = json!({"steps": [
        {"id": "x", "type": "cogo.echo", "role": "Research", "dependsOn": ["y"]},
        {"id": "y", "type": "cogo.echo", "role": "Research", "dependsOn": ["x"]}]});
    ns.apply_ok(&task("cycle", "Orchestrator", "workflow.run", cycle, json!({})));
    let wf = ended(&c, &ns, "cycle", "Failed");
    assert!(
        wf["status"]["message"].as_str().unwrap().contains("form a cycle"),
        "{}",
        wf["status"]
    );
    assert_eq!(wf["status"]["attempt"], 1, "not retried");
    let none = ns.kubectl_ok(&["get", "agenttasks", "-l", "cogo.xyz/parent=cycle", "-o", "name"]);
    assert!(none.trim().is_empty(), "{none}");

    // A failing step: with failFast its running sibling is cancelled; without, it finishes.
    let failing = |fail_fast: bool| {
        json!({"failFast": fail_fast, "steps": [
            {"id": "bad", "type": "cogo.fail", "role": "Research", "input": {"message": "no luck"}},
            {"id": "slow", "type": "cogo.sleep", "role": "Research", "input": {"seconds": if fail_fast { 120 } else { 3 }}},
            {"id": "after", "type": "cogo.echo", "role": "Research", "dependsOn": ["bad"]}]})
    };
    ns.apply_ok(&task(
        "fast",
        "Orchestrator",
        "workflow.run",
        failing(true),
        json!({}),
    ));
    ns.apply_ok(&task(
        "patient",
        "Orchestrator",
        "workflow.run",
        failing(false),
        json!({}),
    ));
    let fast = ended(&c, &ns, "fast", "Failed");
    let message = fast["status"]["message"].as_str().unwrap();
    assert!(message.contains("step bad failed: no luck"), "{message}");
    ended(&c, &ns, "fast-slow", "Cancelled");
    assert!(
        get(&c, &ns, "fast-after").is_null(),
        "a step after a failed one never starts"
    );
    let patient = ended(&c, &ns, "patient", "Failed");
    assert!(
        patient["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not started: after"),
        "{}",
        patient["status"]
    );
    ended(&c, &ns, "patient-slow", "Succeeded");

    // The Orchestrator killed mid-workflow: the workflow is retried, resumes from its
    // sub-tasks, and every step runs once.
    let long = json!({"steps": [
        {"id": "first", "type": "cogo.sleep", "role": "Research", "input": {"seconds": 10}},
        {"id": "second", "type": "cogo.echo", "role": "Research", "dependsOn": ["first"], "input": {"after": "{{steps.first.result.slept}}"}}]});
    ns.apply_ok(&task(
        "survivor",
        "Orchestrator",
        "workflow.run",
        long,
        json!({"retry": {"limit": 3, "backoff": {"initialSeconds": 1, "maxSeconds": 2}}}),
    ));
    wait_until(Duration::from_secs(60), "the first step to run", || {
        get(&c, &ns, "survivor-first")["status"]["phase"] == "Running"
    });
    wait_until(
        Duration::from_secs(30),
        "the workflow to show its progress",
        || {
            get(&c, &ns, "survivor")["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("0/2 steps done") && m.contains("running: first"))
        },
    );
    let pod = get(&c, &ns, "survivor")["status"]["pod"]
        .as_str()
        .unwrap()
        .to_string();
    ns.kubectl_ok(&["delete", "pod", &pod, "--grace-period=0", "--force"]);
    let wf = ended(&c, &ns, "survivor", "Succeeded");
    assert!(wf["status"]["attempt"].as_i64().unwrap() >= 2, "{}", wf["status"]);
    let after = &wf["status"]["result"]["steps"]["second"]["result"]["after"];
    assert_eq!(after.as_f64(), Some(10.0), "{after}");
    for step in ["survivor-first", "survivor-second"] {
        assert_eq!(get(&c, &ns, step)["status"]["attempt"], 1, "{step} ran once");
    }
    ns.wait("cogoagent/orchestrator", "condition=Ready", 120);

    // A hundred workflows at once.
    let many: Vec<String> = (0..100)
        .map(|i| {
            let steps = json!({"steps": [
                {"id": "one", "type": "cogo.echo", "role": "Research", "input": {"i": i}},
                {"id": "two", "type": "cogo.echo", "role": "Orchestrator", "dependsOn": ["one"], "input": {"i": "{{steps.one.result.i}}"}}]});
            task(&format!("many-{i}"), "Orchestrator", "workflow.run", steps, json!({}))
        })
        .collect();
    let started = std::time::Instant::now();
    ns.apply_ok(&many.join("\n---\n"));
    for i in 0..100 {
        let wf = ended(&c, &ns, &format!("many-{i}"), "Succeeded");
        assert_eq!(wf["status"]["result"]["steps"]["two"]["result"], json!({"i": i}));
    }
    eprintln!("100 workflows of 2 steps each ran in {:?}", started.elapsed());

    // Another model rolls out like any change of spec; status shows it once every pod runs it.
    ns.kubectl_ok(&[
        "patch",
        "cogoagent",
        "research",
        "--type=merge",
        "-p",
        r#"{"spec": {"model": {"name": "gemini-2.5-flash"}}}"#,
    ]);
    wait_until(
        Duration::from_secs(120),
        "the new model in the agent's status",
        || {
            c.get_json(&ns.name, "cogoagent/research")
                .is_some_and(|a| a["status"]["model"]["name"] == "gemini-2.5-flash")
        },
    );
    ns.wait("cogoagent/research", "condition=Ready", 120);
    ns.apply_ok(&task(
        "renamed",
        "Research",
        "llm.generate",
        json!({"prompt": "hi"}),
        json!({}),
    ));
    let r = &ended(&c, &ns, "renamed", "Succeeded")["status"]["result"];
    assert_eq!(r["usage"]["model"], "gemini-2.5-flash", "{r}");
    let last = gemini.requests().into_iter().last().unwrap();
    assert_eq!(last.path, "/v1beta/models/gemini-2.5-flash:generateContent");

    // Deleting a workflow deletes its sub-tasks.
    ns.kubectl_ok(&["delete", "agenttask", "diamond", "--wait=true"]);
    wait_until(
        Duration::from_secs(60),
        "the diamond's sub-tasks to be deleted",
        || {
            ns.kubectl_ok(&["get", "agenttasks", "-l", "cogo.xyz/parent=diamond", "-o", "name"])
                .trim()
                .is_empty()
        },
    );
    drop(rt);
}
