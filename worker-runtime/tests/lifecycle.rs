//! The worker binary starts, answers its probes, and exits 0 on SIGTERM.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serves_probes_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cogo-worker"))
        .env("COGO_WORKER_KIND", "Browser")
        .env("COGO_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let live = loop {
        if let Some(r) = get(port, "/livez") {
            break r;
        }
        assert!(Instant::now() < deadline, "worker did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert!(get(port, "/metrics").unwrap().contains("kind=\"browser\""));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let mut log = String::new();
    child.stdout.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("worker stopped"), "{log}");
}

#[test]
fn rejects_an_unknown_kind_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_cogo-worker"))
        .env("COGO_WORKER_KIND", "Janitor")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown worker kind \"Janitor\""), "{err}");
}
