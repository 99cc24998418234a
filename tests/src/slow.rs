//! A slow API server for pods: a TCP proxy on 127.0.0.1 that delays every byte by a fixed
//! time in each direction, and a DNAT rule that sends the real node's pods to it instead of
//! the API server when they dial the `kubernetes` Service. TLS passes through untouched, so
//! clients see the API server's own certificate. Processes on the host (kubectl, the kubelet)
//! still reach the API server directly.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::cluster::Cluster;

/// The bridge of the real node, as `tests/cluster/node.sh` names it.
const BRIDGE: &str = "cogo0";

/// The `kubernetes` Service's address.
const SERVICE: &str = "10.96.0.1";

/// A TCP proxy adding `delay` to everything it forwards. Stops (cutting its connections)
/// when dropped; [`LatencyProxy::freeze`] makes it a black hole.
pub struct LatencyProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    stop: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    accept: Option<thread::JoinHandle<()>>,
}

impl LatencyProxy {
    /// Forwards connections to 127.0.0.1:`upstream`, each byte `delay` late each way.
    pub fn start(upstream: u16, delay: Duration) -> LatencyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let accept = {
            let (stop, open, accepted) = (stop.clone(), open.clone(), accepted.clone());
            let frozen = frozen.clone();
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if frozen.load(Ordering::SeqCst) {
                        // Held open, never answered.
                        if let Ok(mut o) = open.lock() {
                            o.push(client);
                        }
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    if let Ok(mut o) = open.lock() {
                        o.extend([client.try_clone(), server.try_clone()].into_iter().flatten());
                    }
                    for (from, to) in [(client.try_clone(), server.try_clone()), (Ok(server), Ok(client))] {
                        if let (Ok(from), Ok(to)) = (from, to) {
                            pump(from, to, delay, frozen.clone());
                        }
                    }
                }
            })
        };
        LatencyProxy {
            port,
            stop,
            frozen,
            open,
            accepted,
            accept: Some(accept),
        }
    }

    /// From now on forwards nothing, and answers no new connection, but closes none: to its
    /// clients the server went silent, as behind a network partition.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// How many connections it has forwarded.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order; drops what it reads
/// once `frozen`.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, frozen: Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if frozen.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl LatencyProxy {
    /// Stops accepting and closes every connection (idempotent).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Ok(o) = self.open.lock() {
            for s in o.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real node's pods reach the API server only through a [`LatencyProxy`] while this
/// lives; their open connections are cut when it starts and when it ends, so they reconnect
/// through it, and then directly again.
pub struct SlowApiServer {
    proxy: LatencyProxy,
}

impl SlowApiServer {
    /// Slows the API server down by `delay` each way for the pods of the real node.
    pub fn start(cluster: &Cluster, delay: Duration) -> SlowApiServer {
        let proxy = LatencyProxy::start(cluster.api_server_port(), delay);
        iptables(&["-I", "PREROUTING", "1"], proxy.port);
        forget_connections();
        SlowApiServer { proxy }
    }

    /// How many connections the pods made through the proxy.
    pub fn connections(&self) -> usize {
        self.proxy.connections()
    }
}

impl Drop for SlowApiServer {
    fn drop(&mut self) {
        // New connections go straight to the API server; the proxied ones are closed while
        // their translation is still known, so the pods see them end (and reconnect) instead
        // of waiting on connections that went silent.
        iptables(&["-D", "PREROUTING"], self.proxy.port);
        self.proxy.stop();
        std::thread::sleep(Duration::from_millis(500));
        forget_connections();
    }
}

fn iptables(how: &[&str], port: u16) {
    let to = format!("127.0.0.1:{port}");
    let ok = Command::new("iptables")
        .args(["-t", "nat"])
        .args(how)
        .args(["-i", BRIDGE, "-d", SERVICE, "-p", "tcp", "--dport", "443"])
        .args(["-m", "comment", "--comment", "cogo-slow-api-server", "-j", "DNAT"])
        .args(["--to-destination", &to])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "iptables {how:?} failed (the real-node tests run as root with iptables)"
    );
}

/// Drops the connection tracking of the pods' connections to the API server: their next
/// packet is translated anew (and refused), so clients reconnect.
fn forget_connections() {
    let out = Command::new("conntrack")
        .args(["-D", "-p", "tcp", "--orig-dst", SERVICE, "--orig-port-dst", "443"])
        .output()
        .expect("conntrack (Debian's conntrack package) is required");
    // Exit status 1 with "0 flow entries" when there was nothing to drop.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || said.contains("0 flow entries"),
        "conntrack -D failed: {said}"
    );
}
