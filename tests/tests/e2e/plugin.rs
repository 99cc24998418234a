//! `kubectl cogo` against the local control plane: kubectl finds the plugin on the PATH, and
//! every command works on tasks an agent (a local process) really runs.

use std::{process::Output, time::Duration};

use cogo_e2e::cluster::{AgentProcess, Namespace, Operator, free_port, kwok_agent};
use serde_json::{Value, json};

use super::cluster;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn kubectl_cogo_submits_follows_reads_cancels_and_retries_tasks() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-plugin");
    let port = free_port();
    let _op = Operator::start_on(&c, "plugin", port);
    ns.apply_ok(&kwok_agent("worker", 1, 4).to_string());
    let _agent = AgentProcess::start(&c, &ns.name, "worker", "Research", "worker-0", port);
    let n = ns.name.as_str();
    let cogo = |args: &[&str]| {
        let mut full = vec!["-n", n];
        full.extend_from_slice(args);
        c.kubectl_cogo(&full, None)
    };
    let ok = |args: &[&str]| {
        let out = cogo(args);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "kubectl cogo {args:?} failed:\n{stdout}{stderr}"
        );
        (stdout, stderr)
    };

    // submit --wait: the changes on standard error, the result alone on standard output.
    let input = json!({"hello": ["world", 1]});
    let (stdout, stderr) = ok(&[
        "submit",
        "cogo.echo",
        "--agent",
        "worker",
        "--name",
        "echo-1",
        "--input",
        &input.to_string(),
        "--wait",
    ]);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), input, "{stderr}");
    assert!(stderr.contains("agenttask.cogo.xyz/echo-1 created"), "{stderr}");
    assert!(stderr.contains("echo-1  Succeeded  attempt 1"), "{stderr}");

    // From a manifest on standard input, without waiting; the task carries what the file says.
    let manifest = "apiVersion: cogo.xyz/v1alpha1\nkind: AgentTask\nmetadata:\n  name: from-file\n  labels: {team: a}\nspec:\n  role: Research\n  type: cogo.sleep\n  priority: 7\n  input: {seconds: 4}\n";
    let out = c.kubectl_cogo(&["-n", n, "submit", "-f", "-"], Some(manifest));
    assert_eq!(
        text(&out).0,
        "agenttask.cogo.xyz/from-file created\n",
        "{}",
        text(&out).1
    );
    let t = c.get_json(n, "agenttask/from-file").unwrap();
    assert_eq!(
        (&t["spec"]["priority"], &t["metadata"]["labels"]["team"]),
        (&json!(7), &json!("a"))
    );

    // watch NAME follows it to its end, a line per change, and exits 0.
    let (watched, _) = ok(&["watch", "from-file", "--timeout", "60s"]);
    let phases: Vec<&str> = watched.lines().filter_map(|l| l.split("  ").nth(2)).collect();
    assert_eq!(phases.last(), Some(&"Succeeded"), "{watched}");
    assert!(
        phases.contains(&"Running"),
        "the sleep was seen running: {watched}"
    );
    assert!(watched.contains("on worker-0"), "{watched}");

    // The catalogue is checked before anything is created; bad JSON and bad flags are refused.
    let out = cogo(&[
        "submit",
        "python.execute",
        "--role",
        "Executor",
        "--input",
        r#"{"cod": "print(1)"}"#,
    ]);
    let (_, err) = text(&out);
    assert_eq!(code(&out), Some(1), "{err}");
    assert!(
        err.contains("the input does not fit python.execute") && err.contains("cod"),
        "{err}"
    );
    let out = cogo(&[
        "submit",
        "research.query",
        "--role",
        "Executor",
        "--input",
        r#"{"query": "x"}"#,
    ]);
    assert!(
        text(&out)
            .1
            .contains("research.query runs on Research agents, not on Executor agents"),
        "{}",
        text(&out).1
    );
    let out = cogo(&["submit", "cogo.echo", "--agent", "worker", "--input", "{oops"]);
    assert!(text(&out).1.contains("the input is not JSON"), "{}", text(&out).1);
    let out = cogo(&["submit", "cogo.echo", "--agent", "worker", "--role", "Research"]);
    assert_eq!(
        code(&out),
        Some(1),
        "conflicting flags are refused: {}",
        text(&out).1
    );
    assert!(text(&out).1.contains("cannot be used with"), "{}", text(&out).1);
    let out = cogo(&["submit", "cogo.echo", "--agent", "worker", "--name", "Bad_Name"]);
    assert!(
        text(&out).1.contains("cannot create the AgentTask"),
        "{}",
        text(&out).1
    );
    let names = ns.kubectl_ok(&["get", "agenttasks", "-o", "name"]);
    assert_eq!(names.lines().count(), 2, "nothing refused was created: {names}");

    // A failing task: --wait exits 2, and `result` says how it ended.
    let out = cogo(&[
        "submit",
        "cogo.fail",
        "--agent",
        "worker",
        "--name",
        "fails",
        "--input",
        r#"{"message": "no luck"}"#,
        "--wait",
    ]);
    assert_eq!(code(&out), Some(2), "{:?}", text(&out));
    let out = cogo(&["result", "fails"]);
    assert_eq!(code(&out), Some(2));
    assert!(
        text(&out).1.contains("the AgentTask fails ended Failed: ") && text(&out).1.contains("no luck"),
        "{}",
        text(&out).1
    );
    let (result, _) = ok(&["result", "echo-1", "--compact"]);
    assert_eq!(result.trim(), input.to_string());

    // get: the table, one task described, the object as JSON.
    let (table, _) = ok(&["get"]);
    let echo_row = table
        .lines()
        .find(|l| l.starts_with("echo-1 "))
        .unwrap_or_else(|| panic!("{table}"));
    for cell in ["cogo.echo", "Succeeded", "worker"] {
        assert!(echo_row.contains(cell), "{table}");
    }
    let (described, _) = ok(&["get", "fails"]);
    for want in [
        "Phase:      Failed",
        "Target:     agent worker",
        "worker-0",
        "HandlerFailed",
        "no luck",
    ] {
        assert!(described.contains(want), "{want:?} missing:\n{described}");
    }
    let (as_json, _) = ok(&["get", "echo-1", "-o", "json"]);
    let object: Value = serde_json::from_str(&as_json).unwrap();
    assert_eq!(object["status"]["result"], input);
    let (selected, _) = ok(&["get", "-l", "team=a", "-o", "name"]);
    assert_eq!(selected, "agenttask.cogo.xyz/from-file\n");

    // tree: a task and the sub-tasks it created.
    ok(&[
        "submit",
        "cogo.fanout",
        "--agent",
        "worker",
        "--name",
        "fan",
        "--input",
        r#"{"count": 3, "agent": "worker", "input": {"n": 1}}"#,
        "--wait",
    ]);
    let (tree, _) = ok(&["tree", "fan"]);
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 5, "{tree}");
    assert!(
        lines[1].starts_with("fan ") && lines[1].contains("Succeeded"),
        "{tree}"
    );
    for (i, branch) in ["├─ fan-0", "├─ fan-1", "└─ fan-2"].iter().enumerate() {
        assert!(
            lines[i + 2].starts_with(branch) && lines[i + 2].contains("cogo.echo"),
            "{tree}"
        );
    }
    let (described, _) = ok(&["get", "fan"]);
    assert!(described.contains("Sub-tasks:  3 (3 Succeeded)"), "{described}");

    // cancel: a queued task ends Cancelled; an ended one is left alone; a missing one fails.
    ok(&["submit", "cogo.echo", "--agent", "nobody", "--name", "queued"]);
    let out = cogo(&["result", "queued"]);
    assert!(
        text(&out)
            .1
            .contains("the AgentTask queued is Pending; it has no result yet"),
        "{}",
        text(&out).1
    );
    let (said, _) = ok(&["cancel", "queued", "echo-1"]);
    assert!(
        said.contains("agenttask.cogo.xyz/queued cancel requested"),
        "{said}"
    );
    assert!(
        said.contains("agenttask.cogo.xyz/echo-1 has ended (Succeeded); nothing to cancel"),
        "{said}"
    );
    ns.wait("agenttask/queued", "jsonpath={.status.phase}=Cancelled", 60);
    let out = cogo(&["cancel", "missing"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        text(&out)
            .1
            .contains("the AgentTask missing does not exist in the namespace e2e-plugin"),
        "{}",
        text(&out).1
    );

    // retry: a new task with the same spec, labelled with the old one's name.
    let out = cogo(&["retry", "fails", "--new-name", "fails-again", "--wait"]);
    assert_eq!(
        code(&out),
        Some(2),
        "the retry fails as the original did: {:?}",
        text(&out)
    );
    let again = c.get_json(n, "agenttask/fails-again").unwrap();
    assert_eq!(again["metadata"]["labels"]["cogo.xyz/retry-of"], "fails");
    assert_eq!(again["spec"]["input"], json!({"message": "no luck"}));
    ok(&["retry", "from-file", "--wait"]);
    let retried = ns.kubectl_ok(&[
        "get",
        "agenttasks",
        "-l",
        "cogo.xyz/retry-of=from-file",
        "-o",
        "name",
    ]);
    assert!(retried.starts_with("agenttask.cogo.xyz/from-file-"), "{retried}");
    let out = cogo(&["retry", "fan-1"]);
    assert!(text(&out).1.contains("is a sub-task of fan"), "{}", text(&out).1);

    // logs: the agent here is a local process, not a pod, so its "pod" is not found.
    let out = cogo(&["logs", "echo-1"]);
    assert!(
        text(&out)
            .1
            .contains("the pod worker-0 that ran attempt 1 of echo-1 is gone"),
        "{}",
        text(&out).1
    );
    let out = cogo(&["logs", "queued"]);
    assert!(text(&out).1.contains("has not started"), "{}", text(&out).1);

    // A watch of the namespace prints every task, then each change, until interrupted.
    let mut watch = c
        .kubectl_cogo_command(&["-n", n, "watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kubectl cogo watch");
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    ok(&["submit", "cogo.echo", "--agent", "worker", "--name", "watched"]);
    let mut seen = vec![];
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.contains("watched  Succeeded")) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the watch never showed `watched` succeed: {seen:#?}"),
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.iter().any(|l| l.contains("echo-1  Succeeded")),
        "the listing comes first: {seen:#?}"
    );
    let changes: Vec<&String> = seen.iter().filter(|l| l.contains("  watched  ")).collect();
    assert!(
        changes.len() >= 2,
        "the new task's changes, each once: {changes:#?}"
    );
    let mut unique: Vec<&str> = changes.iter().map(|l| &l[10..]).collect();
    unique.dedup();
    assert_eq!(unique.len(), changes.len(), "{changes:#?}");
}
