//! Support shared by the worker runtime's tests.

use std::{path::PathBuf, time::Duration};

use cogo_worker::python::{Limits, PythonConfig, SANDBOX_ID, normalize};

pub fn tool(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: install Debian's bubblewrap and python3 (`.ci/run` does)"
    );
    p
}

/// A configuration for this machine with small limits, installing from `index`.
pub fn test_config(index: &str) -> PythonConfig {
    let base = std::env::temp_dir().join(format!("cogo-sandbox-test-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    PythonConfig {
        python: tool("/usr/bin/python3"),
        bwrap: tool("/usr/bin/bwrap"),
        pip: Some(
            tool("/usr/share/python-wheels").join(
                std::fs::read_dir("/usr/share/python-wheels")
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|n| n.starts_with("pip-"))
                    .expect("Debian's python3-pip-whl"),
            ),
        ),
        shim: PathBuf::from(env!("CARGO_BIN_EXE_cogo-worker")),
        jobs_dir: base.join("jobs"),
        pip_cache: base.join("pip-cache"),
        limits: Limits {
            timeout: Duration::from_secs(4),
            memory: 256 << 20,
            processes: 16,
            file_size: 4 << 20,
            workspace: 16 << 20,
            output: 64 << 10,
        },
        allow_egress: false,
        allowed_packages: ["python-dateutil", "six"].iter().map(|p| normalize(p)).collect(),
        package_index: index.into(),
        run_as: root.then_some(SANDBOX_ID),
        hidden: ["/usr/lib/python3/dist-packages"]
            .into_iter()
            .filter(|d| std::path::Path::new(d).is_dir())
            .map(String::from)
            .collect(),
    }
}
