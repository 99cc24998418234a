//! The Supabase migrations on a real PostgreSQL (Debian's package, started by the test): they
//! apply to a plain Postgres (creating the Supabase objects they need), apply again without
//! change, extend a table created with the seed's DDL, keep each user to their own rows, and
//! join the `supabase_realtime` publication when it exists.

use std::path::PathBuf;

use cogo_e2e::{postgres::Postgres, repo};

fn migrations() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("supabase/migrations"))
        .expect("supabase/migrations")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migrations");
    files
}

fn migrate(pg: &Postgres) {
    for file in migrations() {
        let out = pg.psql_file(&file);
        assert!(
            out.status.success(),
            "{} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const USER_A: &str = "00000000-0000-0000-0000-00000000000a";
const USER_B: &str = "00000000-0000-0000-0000-00000000000b";

#[test]
fn migrations_apply_twice_on_plain_postgres_and_extend_the_seed_table() {
    let pg = Postgres::start("migrate");
    // The seed's own table, as a database that followed the seed would have it.
    pg.query(
        "create schema auth; create table auth.users (id uuid primary key);
         create table distributed_agent_tasks (id uuid primary key, type varchar(255) not null,
           agent_type varchar(255) not null, data jsonb, status varchar(50) default 'pending',
           result_data jsonb, created_at timestamptz default now(), user_id uuid references auth.users(id));
         insert into distributed_agent_tasks (id, type, agent_type) values (gen_random_uuid(), 'research.query', 'research');",
    );
    migrate(&pg);
    migrate(&pg);
    let columns = pg.query(
        "select string_agg(column_name, ',' order by column_name) from information_schema.columns
         where table_name = 'distributed_agent_tasks'",
    );
    for c in [
        "namespace",
        "name",
        "agent",
        "phase",
        "attempts",
        "started_at",
        "finished_at",
        "updated_at",
        "error_message",
        "version",
        "deleted_at",
        "result_digest",
    ] {
        assert!(columns.split(',').any(|x| x == c), "{c} missing from {columns}");
    }
    assert_eq!(
        pg.query("select count(*) from distributed_agent_tasks"),
        "1",
        "the existing row is kept"
    );
    assert_eq!(
        pg.query("select string_agg(rolname, ',' order by rolname) from pg_roles where rolname in ('anon', 'authenticated', 'service_role')"),
        "anon,authenticated,service_role"
    );
    assert_eq!(
        pg.query("select relpersistence from pg_class where relname = 'chat_messages_realtime'"),
        "u",
        "the chat table stays unlogged"
    );
    assert_eq!(
        pg.query("select count(*) from pg_policies where policyname = 'cogo_own_rows'"),
        "3",
        "one policy per table, not one per run"
    );
}

#[test]
fn a_user_reads_only_their_own_rows() {
    let pg = Postgres::start("rls");
    migrate(&pg);
    pg.query(&format!(
        "insert into auth.users values ('{USER_A}'), ('{USER_B}');
         insert into distributed_agent_tasks (id, type, agent_type, user_id) values
           (gen_random_uuid(), 'cogo.echo', 'research', '{USER_A}'),
           (gen_random_uuid(), 'cogo.echo', 'research', '{USER_A}'),
           (gen_random_uuid(), 'cogo.echo', 'research', '{USER_B}');
         insert into chat_messages_realtime (id, session_id, user_id, content) values
           (gen_random_uuid(), 's', '{USER_B}', 'hi');"
    ));
    let as_user = |user: &str, sql: &str| {
        pg.psql(&format!(
            "begin; set local role authenticated;
             select set_config('request.jwt.claims', '{{\"sub\": \"{user}\", \"role\": \"authenticated\"}}', true);
             {sql}; commit;"
        ))
    };
    let count = |user: &str, table: &str| {
        let out = as_user(user, &format!("select count(*) from {table}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(count(USER_A, "distributed_agent_tasks"), "2");
    assert_eq!(count(USER_B, "distributed_agent_tasks"), "1");
    assert_eq!(
        count(USER_A, "chat_messages_realtime"),
        "0",
        "another user's chat"
    );
    assert_eq!(
        count("00000000-0000-0000-0000-0000000000ff", "distributed_agent_tasks"),
        "0",
        "a user with no rows sees none"
    );
    // The results of an indexed task's items are their task's owner's alone.
    pg.query(&format!(
        "insert into cogo_task_item_results (id, item, attempt, result)
           select id, i, 1, '{{}}'::jsonb from distributed_agent_tasks, generate_series(0, 2) as i
           where user_id = '{USER_B}'"
    ));
    assert_eq!(count(USER_B, "cogo_task_item_results"), "3");
    assert_eq!(
        count(USER_A, "cogo_task_item_results"),
        "0",
        "another user's items"
    );
    // A signed-in user cannot write the mirror's rows.
    let write = as_user(USER_A, "update distributed_agent_tasks set status = 'completed'");
    assert!(!write.status.success(), "an authenticated user updated rows");
    // Anonymous clients read nothing at all.
    let anon = pg.psql("set role anon; select count(*) from distributed_agent_tasks");
    assert!(
        String::from_utf8_lossy(&anon.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&anon.stderr)
    );
    // The service role (the operator) sees every row.
    assert_eq!(
        pg.query("set role service_role; select count(*) from distributed_agent_tasks"),
        "3"
    );
}

#[test]
fn tables_join_the_realtime_publication_when_it_exists() {
    let pg = Postgres::start("publication");
    pg.query("create publication supabase_realtime");
    migrate(&pg);
    migrate(&pg);
    assert_eq!(
        pg.query(
            "select string_agg(tablename, ',' order by tablename) from pg_publication_tables
             where pubname = 'supabase_realtime'"
        ),
        "distributed_agent_tasks,user_roles"
    );
}

/// The test pooler runs in transaction mode, as Supabase's does, and the migrations apply
/// through it (the mirror's end-to-end test writes through it too).
#[test]
fn pgbouncer_runs_in_transaction_mode() {
    let pg = Postgres::start("bouncer");
    let bouncer = cogo_e2e::postgres::PgBouncer::start(&pg, "bouncer");
    for file in migrations() {
        let out = std::process::Command::new(cogo_e2e::postgres::bin_dir().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &bouncer.url(), "-f"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(
        pg.query("select count(*) from pg_tables where tablename = 'distributed_agent_tasks'"),
        "1"
    );
    let show = std::process::Command::new(cogo_e2e::postgres::bin_dir().join("psql"))
        .args([
            "-X",
            "-At",
            "-d",
            &format!("postgres://postgres@127.0.0.1:{}/pgbouncer", bouncer.port),
            "-c",
            "show config",
        ])
        .output()
        .unwrap();
    let config = String::from_utf8_lossy(&show.stdout);
    assert!(
        config.lines().any(|l| l.starts_with("pool_mode|transaction")),
        "{config}{}",
        String::from_utf8_lossy(&show.stderr)
    );
}

/// Where Supabase's `realtime.send()` exists, row changes are broadcast on the seed's channel
/// names for the task's role; where it does not, no trigger is made.
#[test]
fn task_changes_are_broadcast_on_private_channels_where_realtime_exists() {
    let pg = Postgres::start("broadcast");
    // Supabase's Realtime objects, as far as the migrations use them: send() records what it
    // is asked to send, and topic() names the channel a client asks to join.
    pg.query(
        "create schema realtime;
         create table realtime.sent (topic text, event text, payload jsonb, private boolean);
         create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
           returns void language sql as $$ insert into realtime.sent values (topic, event, payload, private) $$;
         create table realtime.messages (topic text not null, extension text not null, payload jsonb,
           event text, private boolean default false);
         create function realtime.topic() returns text language sql stable as
           $$ select nullif(current_setting('realtime.topic', true), '')::text $$;",
    );
    migrate(&pg);
    pg.query(
        "grant usage on schema realtime to authenticated, anon;
         grant select on realtime.messages to authenticated, anon;",
    );
    pg.query(&format!(
        "insert into auth.users (id) values ('{USER_A}');
         insert into distributed_agent_tasks (id, type, agent_type, status, user_id) values
           ('00000000-0000-0000-0000-0000000000c1', 'research.query', 'research', 'pending', '{USER_A}');
         update distributed_agent_tasks set status = 'running', phase = 'Running'
           where id = '00000000-0000-0000-0000-0000000000c1';"
    ));
    assert_eq!(
        pg.query("select string_agg(topic || ' ' || event || ' ' || (payload->>'status'), ',' order by event, topic) from realtime.sent"),
        format!(
            "agent_tasks_research task_INSERT pending,distributed-research-6003 task_INSERT pending,\
             user_tasks_{USER_A} task_INSERT pending,\
             agent_tasks_research task_UPDATE running,distributed-research-6003 task_UPDATE running,\
             user_tasks_{USER_A} task_UPDATE running"
        )
    );
    assert_eq!(
        pg.query("select bool_and(private) from realtime.sent"),
        "t",
        "no channel is public"
    );

    // Joining a channel, as Realtime checks it: the caller's claims and the topic set, then a
    // read of realtime.messages under the caller's role.
    for topic in [format!("user_tasks_{USER_A}"), "agent_tasks_research".to_string()] {
        pg.query(&format!(
            "insert into realtime.messages (topic, extension, private) values ('{topic}', 'broadcast', true)"
        ));
    }
    let may_join = |role: &str, user: &str, topic: &str| {
        pg.query(&format!(
            "set role {role};
             select set_config('request.jwt.claims', '{{\"sub\": \"{user}\", \"role\": \"{role}\"}}', false);
             select set_config('realtime.topic', '{topic}', false);
             select count(*) from realtime.messages where topic = '{topic}';"
        ))
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| l != "0")
        .unwrap_or(false)
    };
    let own = format!("user_tasks_{USER_A}");
    assert!(
        may_join("authenticated", USER_A, &own),
        "a user joins their own channel"
    );
    assert!(!may_join("authenticated", USER_B, &own), "not another user's");
    assert!(!may_join("anon", USER_A, &own), "anonymous clients join none");
    assert!(
        !may_join("authenticated", USER_A, "agent_tasks_research"),
        "the role channels carry every user's tasks: service role only"
    );

    let plain = Postgres::start("no-broadcast");
    migrate(&plain);
    assert_eq!(
        plain.query("select count(*) from pg_trigger where tgname = 'cogo_broadcast'"),
        "0"
    );
}

/// The operator's connection to the database honours every `sslmode`, with the CA from the
/// Secret's `ca.crt` (or `sslrootcert`), against a PostgreSQL that takes only TLS.
#[test]
fn the_operator_connects_over_tls_as_sslmode_says() {
    use cogo_operator::supabase::connect_url;
    let pg = Postgres::start("tls");
    let ca_file = pg.enable_tls(true);
    let ca = std::fs::read(&ca_file).unwrap();
    let other_ca = {
        let other = Postgres::start("tls-other");
        std::fs::read(other.enable_tls(false)).unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url =
        |host: &str, mode: &str| format!("postgres://postgres@{host}:{}/postgres?sslmode={mode}", pg.port);
    // Connects, and says whether the session is encrypted.
    let try_connect = |url: String, ca: Option<&[u8]>| -> Result<bool, String> {
        rt.block_on(async {
            let (client, connection) = connect_url(&url, ca).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let row = client
                .query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get::<_, bool>(0))
        })
    };

    assert_eq!(try_connect(url("localhost", "verify-full"), Some(&ca)), Ok(true));
    let sslrootcert = format!(
        "{}&sslrootcert={}",
        url("localhost", "verify-full"),
        ca_file.display()
    );
    assert_eq!(try_connect(sslrootcert, None), Ok(true), "the CA from a file");
    // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca does not.
    let e = try_connect(url("127.0.0.1", "verify-full"), Some(&ca)).unwrap_err();
    assert!(e.to_lowercase().contains("not valid for name"), "{e}");
    assert_eq!(try_connect(url("127.0.0.1", "verify-ca"), Some(&ca)), Ok(true));
    // Another CA of the same name: the chain does not verify.
    let e = try_connect(url("localhost", "verify-ca"), Some(&other_ca)).unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");
    // require and prefer encrypt without verifying (as libpq); require verifies with a CA.
    assert_eq!(try_connect(url("127.0.0.1", "require"), None), Ok(true));
    assert_eq!(try_connect(url("127.0.0.1", "prefer"), None), Ok(true));
    assert!(try_connect(url("localhost", "require"), Some(&other_ca)).is_err());
    // disable: this server takes only TLS.
    let e = try_connect(url("127.0.0.1", "disable"), None).unwrap_err();
    assert!(e.contains("no encryption") || e.contains("pg_hba.conf"), "{e}");
}
