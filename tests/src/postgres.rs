//! A throwaway PostgreSQL server for tests, from Debian's `postgresql` package: `initdb` into
//! a fresh directory, `postgres` listening on 127.0.0.1 on a free port, stopped and removed
//! when dropped. As root, the server runs as the `postgres` user (it refuses to run as root).
//! [`Postgres::start_with_pgvector`] runs PostgreSQL 16 with pgvector from pypi's `pgserver`
//! instead (see [`pgvector`]).

pub mod pgvector;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A running PostgreSQL server. Stopped and deleted when dropped.
pub struct Postgres {
    dir: PathBuf,
    /// The directory of its binaries (`initdb`, `postgres`, `pg_ctl`, `psql`).
    bin: PathBuf,
    child: Option<Child>,
    /// The TCP port it listens on (127.0.0.1, and the addresses of `listen`).
    pub port: u16,
    /// Where it listens: 127.0.0.1, and the real node's bridge address for pods.
    listen: String,
    /// Whether its directory is a size-limited tmpfs this handle mounted (see
    /// [`Postgres::start_for_pods_on_disk`]).
    mounted: bool,
}

/// The directory of the PostgreSQL server binaries (`initdb`, `postgres`): the newest
/// `/usr/lib/postgresql/<version>/bin`, or `$COGO_PG_BIN`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COGO_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").is_file());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is missing: install Debian's `postgresql` package (`.ci/run` and `make test` do), \
             or set COGO_PG_BIN to the directory of initdb and postgres"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command that runs as the `postgres` user when this process is root.
fn as_server_user(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    /// Initializes and starts a server; waits until it accepts connections.
    pub fn start(name: &str) -> Postgres {
        Postgres::start_listening(name, &[])
    }

    /// [`Postgres::start`], also listening on the real node's bridge address
    /// ([`crate::cluster::NODE_ADDRESS`]) and trusting connections from pods.
    pub fn start_for_pods(name: &str) -> Postgres {
        Postgres::start_listening(name, &[crate::cluster::NODE_ADDRESS])
    }

    /// [`Postgres::start_for_pods`], with its directory on a tmpfs of `mib` MiB (mounted as
    /// root), so [`Postgres::fill_disk`] can run it out of space.
    pub fn start_for_pods_on_disk(name: &str, mib: u32) -> Postgres {
        assert!(
            is_root(),
            "a database on a size-limited disk needs root (to mount a tmpfs); run the real-node tests as root"
        );
        let dir = Postgres::dir_of(name);
        let _ = Command::new("umount").arg(&dir).output();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "cannot mount a tmpfs at {}", dir.display());
        Postgres::start_in(dir, &[crate::cluster::NODE_ADDRESS], true, bin_dir())
    }

    /// Fills the disk of a server started with [`Postgres::start_for_pods_on_disk`] with a
    /// ballast file until no byte is left, and checks that a write needing room fails with
    /// `No space left on device` (the server may also stop when it cannot write its WAL).
    pub fn fill_disk(&self) {
        assert!(self.mounted, "only a server on its own disk can be filled");
        let mut ballast = std::fs::File::create(self.dir.join("ballast")).expect("ballast");
        let chunk = vec![0u8; 1 << 20];
        loop {
            match std::io::Write::write(&mut ballast, &chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // What is left of the last page, too.
        while std::io::Write::write(&mut ballast, &[0u8]).is_ok_and(|n| n == 1) {}
        // Writes that need room now fail (those that fit in pages the files have already may
        // still pass, as on any full disk).
        let probe = self.psql(
            "create table cogo_disk_probe as select repeat(md5(g::text), 4000) as x from generate_series(1, 200) g",
        );
        let said = String::from_utf8_lossy(&probe.stderr);
        assert!(
            !probe.status.success() && said.contains("No space left on device"),
            "a write that needs room fails once the disk is full; psql said: {said}"
        );
    }

    /// Frees what [`Postgres::fill_disk`] took and, when the server stopped meanwhile, starts
    /// it again as a supervisor would (it recovers from its WAL).
    pub fn free_disk(&mut self) {
        std::fs::remove_file(self.dir.join("ballast")).expect("remove the ballast");
        let stopped = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_some()));
        if stopped {
            eprintln!("postgres: stopped while its disk was full; starting it again");
            self.child = None;
            self.resume();
        }
    }

    /// The URL pods use to reach a server started with [`Postgres::start_for_pods`].
    pub fn pod_url(&self) -> String {
        format!(
            "postgres://postgres@{}:{}/postgres",
            crate::cluster::NODE_ADDRESS,
            self.port
        )
    }

    fn dir_of(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cogo-pg-{name}-{}", std::process::id()))
    }

    fn start_listening(name: &str, also: &[&str]) -> Postgres {
        Postgres::start_in(Postgres::fresh_dir(name), also, false, bin_dir())
    }

    /// [`Postgres::start`] with pgserver's PostgreSQL 16, which has the pgvector extension
    /// (`create extension vector`), from the test virtualenv ([`crate::pyenv`]).
    pub fn start_with_pgvector(name: &str) -> Postgres {
        Postgres::start_in(Postgres::fresh_dir(name), &[], false, pgvector::bin_dir())
    }

    fn fresh_dir(name: &str) -> PathBuf {
        let dir = Postgres::dir_of(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data directory");
        dir
    }

    fn start_in(dir: PathBuf, also: &[&str], mounted: bool, bin: PathBuf) -> Postgres {
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the postgres user", dir.display());
        }
        let data = dir.join("data");
        let init = as_server_user(bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        if !also.is_empty() {
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            text.push_str("host all all 10.88.0.0/16 trust\n");
            std::fs::write(&hba, text).expect("pg_hba.conf");
        }
        let mut pg = Postgres {
            dir,
            bin,
            child: None,
            port: free_port(),
            listen: std::iter::once("127.0.0.1")
                .chain(also.iter().copied())
                .collect::<Vec<_>>()
                .join(","),
            mounted,
        };
        pg.resume();
        pg
    }

    /// Starts the server again after [`Postgres::stop`], on the same port with the same data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("log");
        let child = as_server_user(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-h", &self.listen, "-k"])
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "wal_level=logical"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let pg = &*self;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pg.psql("select 1").status.success() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start; its log: {}",
                std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Turns TLS on with a fresh CA (written to `<dir>/ca.crt`, returned) and a server
    /// certificate for `localhost` only (no IP address), made with the `openssl` tool; with
    /// `only_tls`, connections without TLS are refused.
    pub fn enable_tls(&self, only_tls: bool) -> PathBuf {
        let data = self.dir.join("data");
        let tls = self.dir.join("tls");
        std::fs::create_dir_all(&tls).expect("tls directory");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&tls)
                .output()
                .expect("the openssl tool (Debian's openssl package)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cogo test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(tls.join("ext"), "subjectAltName=DNS:localhost\n").expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        for f in ["server.crt", "server.key"] {
            std::fs::copy(tls.join(f), data.join(f)).expect("copy into the data directory");
        }
        if is_root() {
            let chowned = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status();
            assert!(chowned.is_ok_and(|s| s.success()), "chown the key");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        if only_tls {
            let hba = data.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            let text: String = text
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, text).expect("pg_hba.conf");
        }
        self.query("alter system set ssl = on");
        self.query("select pg_reload_conf()");
        std::thread::sleep(Duration::from_millis(500));
        tls.join("ca.crt")
    }

    /// Stops the server (fast shutdown: connections are cut), keeping its data.
    pub fn stop(&mut self) {
        let out = as_server_user(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.dir.join("data"))
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Creates the login role `role` with `password`, which must present it (SCRAM) over TCP,
    /// while every other role keeps trust authentication.
    pub fn password_role(&self, role: &str, password: &str) {
        self.query(&format!("create role {role} login password '{password}'"));
        let hba = self.dir.join("data/pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all {role} 127.0.0.1/32 scram-sha-256\n{rules}"),
        )
        .expect("pg_hba.conf");
        self.query("select pg_reload_conf()");
    }

    /// A connection string for the superuser `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The rows of `distributed_agent_tasks` of Kubernetes namespace `ns`, by task name, as
    /// JSON (none before the mirror created the table).
    pub fn task_rows(&self, ns: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
        let out = self.psql(&format!(
            "select coalesce(json_agg(t), '[]') from distributed_agent_tasks t where namespace = '{ns}'"
        ));
        serde_json::from_str::<Vec<serde_json::Value>>(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r["name"].as_str().unwrap_or_default().to_string(), r))
            .collect()
    }

    /// Runs SQL with psql as the superuser, stopping at the first error.
    pub fn psql(&self, sql: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .expect("run psql")
    }

    /// Runs a SQL file with psql as the superuser, stopping at the first error.
    pub fn psql_file(&self, file: &std::path::Path) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-f"])
            .arg(file)
            .output()
            .expect("run psql")
    }

    /// Runs SQL and returns its output (unaligned, tuples only); panics with psql's error.
    pub fn query(&self, sql: &str) -> String {
        let out = self.psql(sql);
        assert!(
            out.status.success(),
            "{sql}\nfailed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // As root the child is runuser, which a kill would not pass on: ask the server itself.
        let _ = as_server_user(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.dir.join("data"))
            .output();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PgBouncer in transaction mode in front of a [`Postgres`], as Supabase's pooler runs:
/// server connections are shared between transactions, so named prepared statements break.
/// Stopped when dropped.
pub struct PgBouncer {
    dir: PathBuf,
    binary: PathBuf,
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer for `pg`'s database `postgres`.
    pub fn start(pg: &Postgres, name: &str) -> PgBouncer {
        PgBouncer::start_listening(pg, name, &[])
    }

    /// [`PgBouncer::start`], also listening on the real node's bridge address for pods.
    pub fn start_for_pods(pg: &Postgres, name: &str) -> PgBouncer {
        PgBouncer::start_listening(pg, name, &[crate::cluster::NODE_ADDRESS])
    }

    /// The URL pods use to reach a pooler started with [`PgBouncer::start_for_pods`].
    pub fn pod_url(&self) -> String {
        format!(
            "postgres://postgres@{}:{}/postgres",
            crate::cluster::NODE_ADDRESS,
            self.port
        )
    }

    fn start_listening(pg: &Postgres, name: &str, also: &[&str]) -> PgBouncer {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!("PgBouncer is missing: install Debian's `pgbouncer` package (`.ci/run` does)")
            });
        let dir = std::env::temp_dir().join(format!("cogo-pgbouncer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let port = free_port();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("users");
        let ini = format!(
            "[databases]\npostgres = host=127.0.0.1 port={} dbname=postgres user=postgres\n\n\
             [pgbouncer]\nlisten_addr = {listen}\nlisten_port = {port}\nunix_socket_dir = {dir}\n\
             auth_type = trust\nadmin_users = postgres\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
             default_pool_size = 4\nmax_client_conn = 100\nlogfile = {dir}/pgbouncer.log\n",
            pg.port,
            dir = dir.display(),
            listen = std::iter::once("127.0.0.1")
                .chain(also.iter().copied())
                .collect::<Vec<_>>()
                .join(","),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("pgbouncer.ini");
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status();
        }
        let child = spawn_bouncer(&binary, &dir);
        let bouncer = PgBouncer {
            dir,
            binary,
            child,
            port,
        };
        bouncer.wait_ready();
        bouncer
    }

    /// Stops PgBouncer (every connection through it is cut) and starts it again on the same
    /// port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_bouncer(&self.binary, &self.dir);
        self.wait_ready();
    }

    fn stop(&mut self) {
        // As root the child is runuser: stop PgBouncer itself.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.dir.join("pgbouncer.ini"))
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new(bin_dir().join("psql"))
                .args(["-X", "-At", "-d", &self.url(), "-c", "select 1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not start; its log: {}",
                std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A connection string through the pooler.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

fn spawn_bouncer(binary: &std::path::Path, dir: &std::path::Path) -> Child {
    as_server_user(binary.to_path_buf())
        .arg(dir.join("pgbouncer.ini"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("start pgbouncer")
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
