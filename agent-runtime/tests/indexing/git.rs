//! The git source against a real `git daemon` on loopback, serving a repository made with the
//! `git` CLI: two commits on `main`, an annotated tag `v1` on the first, a branch `feature`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cogo_agent::roles::indexing::git::{Checkout, GitError, Limits, fetch};

/// Files of the first commit (also tagged `v1`).
fn first_files() -> BTreeMap<&'static str, Vec<u8>> {
    BTreeMap::from([
        ("README.md", b"# Demo\nfirst version\n".to_vec()),
        ("src/main.rs", b"fn main() {}\n".to_vec()),
        ("docs/guide/intro.md", b"Intro\n".to_vec()),
        // Deleted by the second commit: incompressible, so a full fetch would be large.
        ("old/history.bin", noise(3 * 1024 * 1024)),
    ])
}

/// Files of the second commit, the tip of `main`.
fn main_files() -> BTreeMap<&'static str, Vec<u8>> {
    let mut files = first_files();
    files.remove("old/history.bin");
    files.insert("README.md", b"# Demo\nsecond version\n".to_vec());
    files.insert("assets/big.txt", vec![b'x'; 4096]);
    files
}

/// Deterministic incompressible bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

fn write_files(dir: &Path, files: &BTreeMap<&str, Vec<u8>>) {
    for (path, data) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    }
}

/// A served repository and the commits in it.
struct Server {
    _tmp: tempfile::TempDir,
    served: PathBuf,
    daemon: Child,
    port: u16,
    first: String,
    second: String,
    feature: String,
}

impl Server {
    fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).expect("mkdir");
        git(&work, &["init", "-q"]);
        write_files(&work, &first_files());
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        let first = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["tag", "-a", "v1", "-m", "version 1"]);
        git(&work, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(work.join("feature.txt"), "feature\n").expect("write");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "feature"]);
        let feature = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["checkout", "-q", "main"]);
        git(&work, &["rm", "-q", "-r", "old"]);
        write_files(&work, &main_files());
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "second"]);
        let second = git(&work, &["rev-parse", "HEAD"]);

        let served = tmp.path().join("served");
        std::fs::create_dir(&served).expect("mkdir");
        git(
            &served,
            &["clone", "-q", "--bare", work.to_str().expect("utf-8"), "demo.git"],
        );
        git(&served, &["init", "-q", "--bare", "empty.git"]);

        let port = free_port();
        let daemon = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                &format!("--base-path={}", served.display()),
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                "--enable=upload-pack",
            ])
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let server = Server {
            _tmp: tmp,
            served,
            daemon,
            port,
            first,
            second,
            feature,
        };
        server.wait_until_listening();
        server
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Every file under `dir`, by relative path.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path: PathBuf = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn owned(files: BTreeMap<&str, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The servers of these tests are on loopback, which a fetch refuses by default.
fn limits() -> Limits {
    Limits {
        max_file_bytes: 8 * 1024 * 1024,
        allow_private: true,
        ..Limits::default()
    }
}

fn fetch_quietly(url: &str, reference: Option<&str>, limits: &Limits) -> Result<Checkout, GitError> {
    let parent = std::env::temp_dir();
    fetch(url, reference, &parent, limits, &|_| {})
}

#[test]
fn the_default_branch_is_checked_out_with_exactly_its_files() {
    let server = Server::start();
    let messages = RefCell::new(Vec::new());
    let parent = tempfile::tempdir().expect("tempdir");
    let checkout = fetch(&server.url("demo.git"), None, parent.path(), &limits(), &|m| {
        messages.borrow_mut().push(m.to_owned())
    })
    .expect("fetch");

    assert_eq!(read_tree(&checkout.dir), owned(main_files()));
    assert_eq!(checkout.commit, server.second);
    assert_eq!(checkout.skipped_large, 0);
    let messages = messages.into_inner();
    assert_eq!(messages[0], format!("fetching {}", server.url("demo.git")));
    assert!(
        messages
            .last()
            .expect("a message")
            .starts_with("checked out 4 files ("),
        "{messages:?}"
    );
    assert!(
        messages
            .last()
            .expect("a message")
            .ends_with(&format!(" at {}", &server.second[..7]))
    );

    // The temporary directory goes away with the checkout.
    let dir = checkout.dir.clone();
    drop(checkout);
    assert!(!dir.exists());
    assert_eq!(std::fs::read_dir(parent.path()).expect("read_dir").count(), 0);
}

#[test]
fn a_tag_a_branch_and_a_commit_hash_can_be_checked_out() {
    let server = Server::start();
    let url = server.url("demo.git");

    let tag = fetch_quietly(&url, Some("v1"), &limits()).expect("tag");
    assert_eq!(tag.commit, server.first);
    assert_eq!(read_tree(&tag.dir), owned(first_files()));

    let branch = fetch_quietly(&url, Some("feature"), &limits()).expect("branch");
    assert_eq!(branch.commit, server.feature);
    assert_eq!(read_tree(&branch.dir)["feature.txt"], b"feature\n");

    let full = fetch_quietly(&url, Some("refs/heads/main"), &limits()).expect("full ref name");
    assert_eq!(full.commit, server.second);

    let hash = fetch_quietly(&url, Some(&server.first), &limits()).expect("commit hash");
    assert_eq!(hash.commit, server.first);
    assert_eq!(read_tree(&hash.dir), owned(first_files()));
}

#[test]
fn an_unknown_ref_is_a_clear_error() {
    let server = Server::start();
    let url = server.url("demo.git");
    let err = fetch_quietly(&url, Some("v9"), &limits()).unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("ref v9 not found in {url}"));

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = fetch_quietly(&url, Some(missing), &limits()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("ref {missing} not found in {url}"),
        "{err:?}"
    );
}

#[test]
fn an_unknown_repository_is_a_clear_error() {
    let server = Server::start();
    let url = server.url("nope.git");
    let err = fetch_quietly(&url, None, &limits()).unwrap_err();
    assert_eq!(err.to_string(), format!("repository {url} not found"), "{err:?}");
}

#[test]
fn an_empty_repository_is_a_clear_error() {
    let server = Server::start();
    let url = server.url("empty.git");
    let err = fetch_quietly(&url, None, &limits()).unwrap_err();
    assert_eq!(err.to_string(), format!("repository {url} is empty"), "{err:?}");
}

#[test]
fn a_file_over_the_size_limit_is_skipped_and_counted() {
    let server = Server::start();
    let small = Limits {
        max_file_bytes: 1024,
        ..limits()
    };
    let checkout = fetch_quietly(&server.url("demo.git"), None, &small).expect("fetch");
    assert_eq!(checkout.skipped_large, 1);
    let mut expected = owned(main_files());
    expected.remove("assets/big.txt");
    assert_eq!(read_tree(&checkout.dir), expected);
}

#[test]
fn a_repository_over_the_limits_is_refused() {
    let server = Server::start();
    let url = server.url("demo.git");
    let tiny = Limits {
        max_bytes: 1024,
        ..limits()
    };
    let err = fetch_quietly(&url, None, &tiny).unwrap_err();
    assert!(matches!(err, GitError::TooLarge { limit: 1024 }), "{err:?}");
    assert_eq!(err.to_string(), "repository is larger than the 1.0 KiB limit");

    let few = Limits {
        max_files: 2,
        ..limits()
    };
    let err = fetch_quietly(&url, None, &few).unwrap_err();
    assert_eq!(err.to_string(), "repository has more than the limit of 2 files");
}

#[test]
fn only_the_tip_is_downloaded() {
    // The first commit holds 3 MiB of incompressible bytes that the tip deleted; a fetch of the
    // whole history could not stay under a 1 MiB limit on the download.
    let server = Server::start();
    let one_mib = Limits {
        max_bytes: 1024 * 1024,
        ..limits()
    };
    let checkout = fetch_quietly(&server.url("demo.git"), None, &one_mib).expect("shallow fetch");
    assert_eq!(checkout.commit, server.second);
}

#[test]
fn urls_other_than_https_http_and_git_are_refused() {
    for (url, scheme) in [
        ("ssh://git@127.0.0.1/demo.git", "ssh"),
        ("git@127.0.0.1:demo.git", "ssh"),
        ("ext::sh -c touch% /tmp/pwned", "ext"),
        ("file:///tmp/demo.git", "file"),
    ] {
        let err = fetch_quietly(url, None, &limits()).unwrap_err();
        assert!(
            matches!(err, GitError::UnsupportedScheme { .. }),
            "{url}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("the {scheme} scheme is not allowed")),
            "{url}: {err}"
        );
    }
}

#[test]
fn hosts_at_non_public_addresses_are_refused_by_default() {
    let server = Server::start();
    let url = server.url("demo.git");
    for (url, address) in [
        (url.as_str(), "127.0.0.1"),
        ("http://169.254.169.254/latest.git", "169.254.169.254"),
    ] {
        let err = fetch_quietly(url, None, &Limits::default()).unwrap_err();
        assert!(matches!(err, GitError::PrivateAddress { .. }), "{url}: {err:?}");
        assert!(
            err.to_string()
                .contains(&format!("its host is at {address}, a non-public address")),
            "{err}"
        );
        assert!(!err.retryable());
    }
    // Credentials in a URL never show in a message.
    let err = fetch_quietly("https://user:s3cret@127.0.0.1/x.git", None, &Limits::default()).unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and then say nothing.
    let _silent = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let url = format!("git://127.0.0.1:{port}/demo.git");
    let quick = Limits {
        timeout: Duration::from_secs(1),
        ..limits()
    };
    let started = Instant::now();
    // The abandoned worker still owns its directory; keep it under one this test removes.
    let parent = tempfile::tempdir().expect("tempdir");
    let err = fetch(&url, None, parent.path(), &quick, &|_| {}).unwrap_err();
    assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("fetching {url} took longer than the 1s limit")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Smart HTTP: `git http-backend` (a CGI program) behind a minimal HTTP/1.1 server on loopback,
/// one connection at a time, each closed after its response.
fn serve_http(project_root: PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let target = parts.next().unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).expect("header");
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let mut body = Vec::new();
            if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                loop {
                    let mut size = String::new();
                    reader.read_line(&mut size).expect("chunk size");
                    let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
                    let mut chunk = vec![0; size + 2];
                    reader.read_exact(&mut chunk).expect("chunk");
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..size]);
                }
            } else if let Some(len) = header("content-length") {
                body.resize(len.parse().expect("length"), 0);
                reader.read_exact(&mut body).expect("body");
            }
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let mut cgi = Command::new("git")
                .arg("http-backend")
                .env("GIT_PROJECT_ROOT", &project_root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REQUEST_METHOD", &method)
                .env("PATH_INFO", path)
                .env("QUERY_STRING", query)
                .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("HTTP_GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
                .env("REMOTE_ADDR", "127.0.0.1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("git http-backend");
            cgi.stdin
                .take()
                .expect("stdin")
                .write_all(&body)
                .expect("cgi stdin");
            let out = cgi.wait_with_output().expect("cgi output").stdout;
            let split = out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
                .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
                .expect("cgi headers");
            let (cgi_headers, cgi_body) = (&out[..split.0], &out[split.0 + split.1..]);
            let cgi_headers = String::from_utf8_lossy(cgi_headers);
            let mut status = "200 OK".to_owned();
            let mut response = Vec::new();
            for h in cgi_headers.lines() {
                match h.split_once(':') {
                    Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                        status = value.trim().to_owned()
                    }
                    _ => response.extend_from_slice(format!("{h}\r\n").as_bytes()),
                }
            }
            let mut stream = stream;
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                cgi_body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&response);
            let _ = stream.write_all(b"\r\n");
            let _ = stream.write_all(cgi_body);
        }
    });
    port
}

#[test]
fn smart_http_serves_the_same_checkouts() {
    let server = Server::start();
    let port = serve_http(server.served.clone());
    let url = format!("http://127.0.0.1:{port}/demo.git");

    let main = fetch_quietly(&url, None, &limits()).expect("default branch over http");
    assert_eq!(main.commit, server.second);
    assert_eq!(read_tree(&main.dir), owned(main_files()));

    let tag = fetch_quietly(&url, Some("v1"), &limits()).expect("tag over http");
    assert_eq!(tag.commit, server.first);

    let missing = format!("http://127.0.0.1:{port}/nope.git");
    let err = fetch_quietly(&missing, None, &limits()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("repository {missing} not found"),
        "{err:?}"
    );
}

#[test]
fn an_unreachable_https_server_is_a_transport_error() {
    // Builds the rustls (ring) client and fails to connect: an error, not a panic.
    let url = format!("https://127.0.0.1:{}/demo.git", free_port());
    let err = fetch_quietly(&url, None, &limits()).unwrap_err();
    assert!(matches!(err, GitError::Transport { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!("could not fetch {url}: ")),
        "{err}"
    );
}
