//! Support for Cogo's end-to-end tests: finding the tools they need (failing loudly when one
//! is missing), running them, and building JSON schemas for kubeconform without a network.

#[cfg(feature = "bench")]
pub mod bench_browser;
#[cfg(feature = "bench")]
pub mod bench_gateway;
#[cfg(feature = "bench")]
pub mod bench_index;
pub mod cluster;
pub mod embeddings;
pub mod gateway;
pub mod otlp;
pub mod picture;
pub mod postgres;
pub mod profile;
pub mod pyenv;
pub mod pyindex;
pub mod schemas;
pub mod skew;
pub mod slow;
pub mod standin;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The repository's root directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Finds a tool in `$COGO_TOOLS_DIR` (where `make tools` installs them), then on `PATH`.
/// Panics with instructions when it is missing: a test never skips for a missing tool.
pub fn tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("COGO_TOOLS_DIR")
        .into_iter()
        .chain(std::env::var_os("PATH"))
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the tool {name:?} is missing: run `make tools` (or `make test`, which builds every tool into \
         ~/.cache/cogo), or set COGO_TOOLS_DIR to a directory that has it"
    );
}

/// A blocking HTTP client for servers on loopback (rustls with ring; no proxy), whose requests
/// give up after `timeout`.
pub fn http_client(timeout: std::time::Duration) -> reqwest::blocking::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("HTTP client")
}

/// Runs `tool` with `args`, feeding `stdin`, and returns its output.
pub fn run(tool_path: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(tool_path);
    cmd.args(args);
    run_command(cmd, stdin)
}

/// Runs `cmd`, feeding `stdin`, and returns its output.
pub fn run_command(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for tool")
}

/// Like [`run`], but panics with the tool's output unless it succeeds; returns stdout.
pub fn run_ok(tool_path: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run(tool_path, args, stdin);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{}\n{}",
        tool_path.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The Kubernetes version the project targets (k8s-openapi feature, local control plane).
pub const KUBERNETES_VERSION: &str = "1.36.3";

/// The `p`-th quantile (0 to 1) of `sorted` values, by nearest rank: the smallest value with at
/// least `p` of them at or below it. The benchmarks' p50 and p99.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}
