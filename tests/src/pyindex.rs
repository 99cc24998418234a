//! A Python package index for tests: a PEP 503 "simple" index built from real wheels (the ones
//! `make wheels` downloads into `$COGO_WHEELS`, by default `~/.cache/cogo/wheels`), served by
//! `python3 -m http.server` on the address a test asks for. Stopped when dropped.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The wheels tests install: `python-dateutil`, which needs `six`.
pub const WHEELS: [&str; 2] = [
    "python_dateutil-2.9.0.post0-py2.py3-none-any.whl",
    "six-1.16.0-py2.py3-none-any.whl",
];

/// The directory of the downloaded wheels; panics with instructions when one is missing.
pub fn wheels_dir() -> PathBuf {
    let dir = std::env::var_os("COGO_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/cogo/wheels")
        });
    for w in WHEELS {
        assert!(
            dir.join(w).is_file(),
            "the wheel {w} is missing from {}: run `make wheels` (`make test` does), or set COGO_WHEELS",
            dir.display()
        );
    }
    dir
}

/// A running index. The server stops when dropped.
pub struct PackageIndex {
    child: Child,
    root: PathBuf,
    /// The index's URL, `http://<host>:<port>/simple`.
    pub url: String,
}

fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

impl PackageIndex {
    /// Serves the wheels on `host` (an address of this machine) at a free port.
    pub fn serve(host: &str) -> PackageIndex {
        let wheels = wheels_dir();
        let root = std::env::temp_dir().join(format!(
            "cogo-index-{}-{}",
            std::process::id(),
            host.replace('.', "-")
        ));
        let _ = std::fs::remove_dir_all(&root);
        let mut projects: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in WHEELS {
            std::fs::create_dir_all(root.join("files")).expect("index dir");
            std::fs::copy(wheels.join(w), root.join("files").join(w)).expect("copy a wheel");
            let project = normalize(w.split('-').next().unwrap_or(w));
            projects.entry(project).or_default().push(w.to_string());
        }
        let mut top = String::from("<!DOCTYPE html><html><body>\n");
        for (project, files) in &projects {
            let dir = root.join("simple").join(project);
            std::fs::create_dir_all(&dir).expect("project dir");
            let links: String = files
                .iter()
                .map(|f| format!("<a href=\"../../files/{f}\">{f}</a><br/>\n"))
                .collect();
            std::fs::write(
                dir.join("index.html"),
                format!("<!DOCTYPE html><html><body>\n{links}</body></html>\n"),
            )
            .expect("project page");
            top.push_str(&format!("<a href=\"{project}/\">{project}</a><br/>\n"));
        }
        top.push_str("</body></html>\n");
        std::fs::write(root.join("simple/index.html"), top).expect("index page");
        let port = TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                host,
                &port.to_string(),
                "--directory",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server (python3 is required)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((host, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the package index did not start on {host}:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PackageIndex {
            child,
            root,
            url: format!("http://{host}:{port}/simple"),
        }
    }
}

impl Drop for PackageIndex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
