//! PostgreSQL with pgvector, from pypi's `pgserver` in the test virtualenv ([`crate::pyenv`]):
//! its `pgserver/pginstall` is a relocatable PostgreSQL 16 build (it finds its `lib/postgresql`
//! and `share/postgresql`, where `vector.so` and `vector.control` are, relative to `bin/`),
//! whose programs load `libpq` from `../../../pgserver.libs` (their RPATH).
//!
//! As root the server runs as the `postgres` user, who cannot enter `/root/.cache` (mode 700).
//! So a root process runs a copy of those two directories in a world-readable place,
//! `/var/tmp/cogo-pgserver-<version>`, made once (copied beside it, then renamed into place, so
//! a half-made copy is never used and concurrent tests do not clash).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The directory of pgserver's PostgreSQL binaries (`initdb`, `postgres`, `pg_ctl`, `psql`):
/// in the test virtualenv, or as root in its world-readable copy. Panics naming `make tools`
/// when pgserver is not installed.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let site = crate::pyenv::site_packages();
        let install = site.join("pgserver/pginstall");
        assert!(
            install.join("bin/postgres").is_file(),
            "pgserver's PostgreSQL is missing from {}: run `make tools` (or `make pyenv`)",
            install.display()
        );
        if !super::is_root() {
            return install.join("bin");
        }
        let version = crate::pyenv::package_version("pgserver");
        let copy = PathBuf::from(format!("/var/tmp/cogo-pgserver-{version}"));
        if !copy.join("pgserver/pginstall/bin/postgres").is_file() {
            copy_readable(&site, &copy);
        }
        copy.join("pgserver/pginstall/bin")
    })
    .clone()
}

/// Copies `pgserver/pginstall` and `pgserver.libs` from `site` to `copy`, readable by all.
fn copy_readable(site: &Path, copy: &Path) {
    let partial = PathBuf::from(format!("{}.partial-{}", copy.display(), std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(partial.join("pgserver")).expect("the copy's directory");
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run cp or chmod");
        assert!(
            out.status.success(),
            "copying pgserver's PostgreSQL to {}: {cmd:?}: {}",
            partial.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("cp")
        .arg("-a")
        .arg(site.join("pgserver/pginstall"))
        .arg(partial.join("pgserver/pginstall")));
    run(Command::new("cp")
        .arg("-a")
        .arg(site.join("pgserver.libs"))
        .arg(partial.join("pgserver.libs")));
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&partial));
    // Another process may have put its copy in place meanwhile: it is as good as ours.
    if std::fs::rename(&partial, copy).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
        assert!(
            copy.join("pgserver/pginstall/bin/postgres").is_file(),
            "cannot put pgserver's PostgreSQL at {}",
            copy.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::Postgres;

    #[test]
    fn pgvector_computes_a_cosine_distance() {
        let pg = Postgres::start_with_pgvector("pgvector");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (version, distance) = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            client
                .batch_execute("create extension vector")
                .await
                .expect("create extension vector");
            let version: String = client
                .query_one(
                    "select extversion from pg_extension where extname = 'vector'",
                    &[],
                )
                .await
                .expect("extversion")
                .get(0);
            let distance: f64 = client
                .query_one("select '[1,2,3]'::vector <=> '[1,2,4]'::vector", &[])
                .await
                .expect("<=>")
                .get(0);
            (version, distance)
        });
        assert_eq!(version, "0.6.2", "pgserver 0.1.4 bundles pgvector 0.6.2");
        // 1 - (1 + 4 + 12) / (|[1,2,3]| |[1,2,4]|) = 1 - 17 / sqrt(14 * 21)
        let expected = 1.0 - 17.0 / (14.0_f64 * 21.0).sqrt();
        assert!(
            (distance - expected).abs() < 1e-6,
            "cosine distance {distance}, expected {expected}"
        );
        assert!(pg.query("select version()").starts_with("PostgreSQL 16."));
    }
}
