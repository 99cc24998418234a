//! `python.execute` in the real sandbox on this machine (bubblewrap, CPython, the worker's own
//! binary as the shim): real results, a table of escapes that are each stopped and reported
//! while the runner stays fit for the next job, and packages installed from a local index of
//! real wheels. As root, the sandbox runs as UID 65532, as it does in a pod.

use std::time::Duration;

mod common;

use cogo_api::catalogue::python::{ExecuteResult, KillReason};
use cogo_e2e::pyindex::PackageIndex;
use cogo_worker::{
    jobs::{Job, JobRunner},
    python::PythonRunner,
};
use serde_json::{Value, json};
use tokio::sync::watch;

fn runner() -> PythonRunner {
    PythonRunner::new(common::test_config("https://pypi.org/simple"))
}

async fn exec(r: &PythonRunner, input: Value) -> Result<ExecuteResult, String> {
    let job = Job::new("t", "python.execute", input, std::time::Duration::from_secs(60));
    let (_tx, rx) = watch::channel(false);
    let v = r.run(job, rx).await.map_err(|e| e.message)?;
    Ok(serde_json::from_value(v).expect("a python.execute result"))
}

async fn healthy(r: &PythonRunner) {
    let out = exec(r, json!({"code": "print('still fine')"})).await.unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (0, "still fine\n"),
        "{out:?}"
    );
}

#[tokio::test]
async fn python_computes_real_results() {
    let r = runner();
    r.check().await.expect("the sandbox runs a trivial program");
    let code = r#"
import sys, json, os
data = sys.stdin.read()
nums = [int(x) for x in open('data/nums.txt').read().split()]
blob = open('blob.bin', 'rb').read()
os.makedirs('out', exist_ok=True)
open('out/sum.json', 'w').write(json.dumps({'sum': sum(nums), 'stdin': data, 'blob': list(blob)}))
open('out/raw.bin', 'wb').write(bytes([0, 255, 7]))
print(sum(nums))
print('to stderr', file=sys.stderr)
sys.exit(3)
"#;
    let out = exec(
        &r,
        json!({"code": code, "stdin": "hello", "files": [
            {"path": "data/nums.txt", "content": "1 2 3 4"},
            {"path": "blob.bin", "content": "AQID", "encoding": "base64"}]}),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, "10\n");
    assert_eq!(out.stderr, "to stderr\n");
    assert!(!out.truncated && out.killed.is_none());
    let paths: Vec<&str> = out.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["out/raw.bin", "out/sum.json"],
        "only what the job made; inputs stay out"
    );
    assert_eq!(out.files[0].content.as_deref(), Some("AP8H"));
    let sum: Value = serde_json::from_str(out.files[1].content.as_deref().unwrap()).unwrap();
    assert_eq!(sum, json!({"sum": 10, "stdin": "hello", "blob": [1, 2, 3]}));

    // The environment asked for, and the workspace as the working directory and home.
    let out = exec(
        &r,
        json!({"code": "import os; print(os.getcwd(), os.environ['HOME'], os.environ['GREETING'])", "env": {"GREETING": "hi"}}),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, "/work /work hi\n");
}

/// Each escape is stopped and reported, and the next job runs normally.
#[tokio::test]
async fn escapes_are_stopped_and_reported() {
    let r = runner();
    type Check = fn(&ExecuteResult) -> bool;
    let cases: Vec<(&str, &str, Check)> = vec![
        ("an endless loop", "while True: pass", |o| {
            o.killed == Some(KillReason::Timeout)
        }),
        ("a huge allocation", "x = bytearray(8 * 1024**3)", |o| {
            o.killed == Some(KillReason::Memory) && o.stderr.contains("MemoryError")
        }),
        (
            "a fork bomb",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            |o| o.killed == Some(KillReason::Processes),
        ),
        (
            "a huge file",
            "open('big', 'wb').write(b'x' * (64 * 1024 * 1024))",
            |o| o.exit_code == 1 && o.stderr.contains("File too large"),
        ),
        (
            "a full workspace",
            "for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * (3 * 1024 * 1024))",
            |o| o.killed == Some(KillReason::Output),
        ),
        (
            "50 MB of output",
            "import sys\nfor _ in range(50):\n    sys.stdout.write('y' * 1024 * 1024)",
            |o| o.killed == Some(KillReason::Output) && o.truncated && o.stdout.len() <= 64 * 1024,
        ),
        (
            "a socket to any address",
            "import socket\nfor host in ['10.88.0.1', '1.1.1.1', '127.0.0.1']:\n    try:\n        socket.create_connection((host, 80), timeout=2)\n        print('reached', host)\n    except OSError as e:\n        print('refused', host, e.errno)",
            |o| !o.stdout.contains("reached") && o.stdout.matches("refused").count() == 3,
        ),
        (
            "reading the pod's processes and files",
            "import os\nfor p in ['/proc/1/environ', '/proc/self/environ', '/var/run/cogo/executor-token/token', '/etc/shadow', '/root']:\n    try:\n        open(p).read(); print('read', p)\n    except OSError as e:\n        print('no', p)\nprint(sorted(k for k in os.environ if k.startswith('COGO')))",
            |o| {
                !o.stdout.contains("read ")
                    && o.stdout.contains("no /proc/1/environ")
                    && o.stdout.ends_with("[]\n")
            },
        ),
        (
            "killing PID 1",
            "import os, signal\ntry:\n    os.kill(1, signal.SIGKILL)\nexcept OSError as e:\n    print('refused', e.errno)\nprint('alive')",
            |o| o.exit_code == 0 && o.stdout.ends_with("alive\n"),
        ),
        (
            "mounting, new namespaces and tracing",
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.unshare(0x10000000), ctypes.get_errno())\nprint(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\nprint(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())",
            |o| o.stdout == "-1 1\n-1 1\n-1 1\n",
        ),
        (
            "writing the system",
            "try:\n    open('/usr/bin/python3', 'ab')\nexcept OSError as e:\n    print('refused', e.errno)",
            // EACCES or EROFS: the system is the image's, and read-only besides.
            |o| o.stdout == "refused 13\n" || o.stdout == "refused 30\n",
        ),
    ];
    for (what, code, ok) in cases {
        let started = std::time::Instant::now();
        let out = exec(&r, json!({"code": code}))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(ok(&out), "{what}: {out:#?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what} was stopped in time"
        );
        healthy(&r).await;
    }
}

#[tokio::test]
async fn inputs_that_cannot_run_are_refused_by_name() {
    let r = runner();
    for (input, fragment) in [
        (json!({"code": "x", "timeout": 3}), "unknown field `timeout`"),
        (
            json!({"code": "x", "files": [{"path": "../escape", "content": ""}]}),
            "without `..`",
        ),
        (
            json!({"code": "x", "files": [{"path": "b", "content": "!!", "encoding": "base64"}]}),
            "not valid base64",
        ),
        (
            json!({"code": "x", "packages": ["numpy"]}),
            "not in this worker's sandbox.allowedPackages",
        ),
        (
            json!({"code": "x", "timeoutSeconds": 3600}),
            "timeoutSeconds must be 1 to 4",
        ),
    ] {
        let err = exec(&r, input.clone()).await.unwrap_err();
        assert!(err.contains(fragment), "{input}: {err}");
    }
}

#[tokio::test]
async fn packages_install_from_the_index_into_the_job_only() {
    let index = PackageIndex::serve("127.0.0.1");
    let r = PythonRunner::new(common::test_config(&index.url));
    let code = "import dateutil.parser, six\nprint(dateutil.parser.parse('2026-11-29T10:00:00').year, six.__version__)";
    let out = exec(&r, json!({"code": code, "packages": ["python-dateutil"]}))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (0, "2026 1.16.0\n"),
        "{out:#?}"
    );
    assert!(out.files.is_empty(), "packages are not in the workspace");
    // The next job did not ask: it does not have them.
    let out = exec(&r, json!({"code": "import dateutil"})).await.unwrap();
    assert!(out.stderr.contains("No module named 'dateutil'"), "{out:#?}");
    // A version the index does not have fails with pip's word.
    let err = exec(&r, json!({"code": "x", "packages": ["six==0.0.1"]}))
        .await
        .unwrap_err();
    assert!(
        err.contains("pip could not install six==0.0.1") && err.contains("No matching distribution"),
        "{err}"
    );
}

#[tokio::test]
async fn a_cancelled_job_stops_at_once() {
    let r = runner();
    let job = Job::new(
        "c",
        "python.execute",
        json!({"code": "import time\ntime.sleep(30)"}),
        std::time::Duration::from_secs(60),
    );
    let (tx, rx) = watch::channel(false);
    let started = std::time::Instant::now();
    let run = tokio::spawn(async move { r.run(job, rx).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(true).unwrap();
    let err = run.await.unwrap().unwrap_err();
    assert_eq!(err.message, "cancelled");
    assert!(started.elapsed() < Duration::from_secs(3));
}
