//! Lifecycle checks shared by the agent and worker runtime binaries (the worker's tests include
//! this file): the binary serves its probes, names itself in /metrics, exits 0 on SIGTERM, and
//! rejects an unknown role or kind with a clear message.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How to start one runtime binary.
pub struct Runtime {
    /// Path of the binary.
    pub binary: &'static str,
    /// The variable that picks the role or kind, and a valid value.
    pub selector: (&'static str, &'static str),
    /// What /metrics must contain for that value.
    pub metric: &'static str,
    /// The log line printed on a clean stop.
    pub stopped: &'static str,
    /// The error printed for the value `Janitor`.
    pub unknown: &'static str,
}

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

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the binary, checks its probes and metrics, stops it with SIGTERM.
pub fn serves_probes_and_stops_cleanly_on_sigterm(rt: &Runtime) {
    let port = free_port();
    let mut child = Command::new(rt.binary)
        .env(rt.selector.0, rt.selector.1)
        .env("COGO_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let live = wait_until("the runtime did not start listening", 20, || get(port, "/livez"));
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert!(get(port, "/readyz").unwrap().starts_with("HTTP/1.1 200"));
    assert!(get(port, "/metrics").unwrap().contains(rt.metric));

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_until("the runtime ignored SIGTERM", 10, || child.try_wait().unwrap());
    assert!(status.success(), "exit status {status:?}");
    let mut log = String::new();
    child.stdout.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains(rt.stopped), "{log}");
}

/// An unknown role or kind fails at start with a message naming it.
pub fn rejects_an_unknown_selector(rt: &Runtime) {
    let out = Command::new(rt.binary)
        .env(rt.selector.0, "Janitor")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(rt.unknown), "{err}");
}
