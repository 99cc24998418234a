//! The Supabase mirror against a real PostgreSQL (Debian's package, started here): every
//! task's state reaches `distributed_agent_tasks` and the row equals the task's status; the
//! database going away for 30 s, and the operator restarting meanwhile, lose nothing (a large
//! result waits for the result store, a task deleted meanwhile keeps its final state); TTL
//! deletion waits for the mirror; deleted tasks keep their rows and only this cluster's rows
//! are marked; a row the database refuses holds back no other; a bad Secret is reported and
//! the operator keeps working.

use std::time::Duration;

use cogo_e2e::{
    cluster::{AgentProcess, Cluster, Namespace, Operator, free_port, kwok_agent, wait_until},
    postgres::Postgres,
};
use serde_json::{Value, json};

use super::cluster;

const SECRET: &str = "cogo-supabase-e2e";

fn secret(c: &Cluster, url: &str) {
    c.url_secret("default", SECRET, url);
}

fn agent(ns: &Namespace, name: &str) {
    ns.apply_ok(&kwok_agent(name, 1, 16).to_string());
}

fn create_tasks(c: &Cluster, ns: &Namespace, prefix: &str, n: usize, extra: Value) {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            let mut spec = json!({"agent": "mirrored", "type": "cogo.echo", "input": {"n": i},
                                  "requester": {"userId": "00000000-0000-0000-0000-00000000000a", "sessionId": "chat-1"}});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": format!("{prefix}-{i:03}")}, "spec": spec})
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    c.kubectl_ok(&["create", "-n", &ns.name, "-f", "-"], Some(&list.to_string()));
}

fn tasks(ns: &Namespace) -> Vec<Value> {
    ns.items("agenttasks")
}

fn rows(pg: &Postgres, ns: &str) -> std::collections::BTreeMap<String, Value> {
    pg.task_rows(ns)
}

/// Waits until every task of the namespace is finished and its row says the same.
fn wait_mirrored(pg: &Postgres, ns: &Namespace, n: usize, secs: u64) {
    wait_until(
        Duration::from_secs(secs),
        &format!("{n} finished tasks mirrored"),
        || {
            let ts = tasks(ns);
            let rs = rows(pg, &ns.name);
            ts.len() == n
                && ts.iter().all(|t| {
                    let phase = t["status"]["phase"].as_str().unwrap_or_default();
                    matches!(phase, "Succeeded" | "Failed" | "Cancelled")
                        && rs
                            .get(t["metadata"]["name"].as_str().unwrap())
                            .is_some_and(|r| r["phase"] == phase)
                })
        },
    );
}

/// The row says what the task's status says.
fn assert_row_matches(task: &Value, row: &Value) {
    let name = &task["metadata"]["name"];
    let s = &task["status"];
    assert_eq!(row["id"], task["metadata"]["uid"], "{name}");
    assert_eq!(row["phase"], s["phase"], "{name}");
    assert_eq!(
        row["status"].as_str().unwrap(),
        s["phase"].as_str().unwrap().to_lowercase(),
        "{name}"
    );
    assert_eq!(row["attempts"], s["attempt"], "{name}");
    assert_eq!(row["agent"], s["agent"], "{name}");
    assert_eq!(row["type"], task["spec"]["type"], "{name}");
    // What PostgreSQL cannot store, the NUL character, is written as U+FFFD.
    let stored = |v: &Value| v.to_string().replace("\\u0000", "\u{FFFD}");
    assert_eq!(stored(&row["data"]), stored(&task["spec"]["input"]), "{name}");
    // Created with kubectl, not by the intake: the requester anyone could write names no owner.
    assert_eq!(
        (&row["user_id"], &row["session_id"]),
        (&Value::Null, &Value::Null),
        "{name}: an unsealed requester"
    );
    if s["result"].is_null() {
        assert!(!s["resultRef"].is_null() || s["phase"] != "Succeeded", "{name}");
    } else {
        assert_eq!(stored(&row["result_data"]), stored(&s["result"]), "{name}");
    }
    assert!(row["finished_at"].is_string(), "{name}: {row}");
    assert!(
        row["version"].as_i64().unwrap()
            >= task["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap(),
        "{name}"
    );
}

#[test]
fn every_task_reaches_the_table_and_nothing_is_lost_while_the_database_is_away() {
    let c = cluster();
    let mut pg = Postgres::start("mirror");
    secret(&c, &pg.url());
    let ns = Namespace::create(&c, "e2e-mirror");
    let port = free_port();
    let args = ["--supabase-secret", SECRET];
    let watches_before = c.cluster_watches("agenttasks");
    let mut op = Operator::start_with(&c, "mirror", port, &args);
    agent(&ns, "mirrored");
    let _agent = AgentProcess::start_with(&c, &ns.name, ("mirrored", "Research", "mirrored-0"), port, 16);

    // Every state reaches the table, and the row equals the status.
    create_tasks(&c, &ns, "echo", 60, json!({}));
    create_tasks(
        &c,
        &ns,
        "fails",
        2,
        json!({"type": "cogo.fail", "input": {"message": "no luck"}}),
    );
    let big = json!({"blob": "x".repeat(100 * 1024)});
    create_tasks(&c, &ns, "big", 1, json!({"input": big}));
    // PostgreSQL stores no NUL character: it is replaced, and the row written.
    create_tasks(&c, &ns, "nul", 1, json!({"input": {"text": "a\0b"}}));
    wait_mirrored(&pg, &ns, 64, 120);
    // The controller, the broker and the mirror share one watch of AgentTasks.
    let most = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            c.cluster_watches("agenttasks").saturating_sub(watches_before)
        })
        .max();
    assert_eq!(most, Some(1), "the operator keeps one watch of AgentTasks");
    let rs = rows(&pg, &ns.name);
    for t in tasks(&ns) {
        assert_row_matches(&t, &rs[t["metadata"]["name"].as_str().unwrap()]);
    }
    let failed = &rs["fails-000"];
    assert!(
        failed["error_message"].as_str().unwrap().contains("no luck"),
        "{failed}"
    );
    let large = &rs["big-000"];
    assert_eq!(large["result_data"], big, "the full result is in the row");
    assert!(large["result_digest"].as_str().unwrap().starts_with("sha256:"));
    // `kubectl cogo result` reads it from the database, and says how when not told where.
    let out = c.kubectl_cogo(
        &[
            "-n",
            &ns.name,
            "result",
            "big-000",
            "--compact",
            "--database-url",
            &pg.url(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), big);
    let out = c.kubectl_cogo(&["-n", &ns.name, "result", "big-000"], None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is kept in the database (supabase:distributed_agent_tasks)")
            && said.contains("--database-url"),
        "{said}"
    );
    assert_eq!(rs["nul-000"]["data"], json!({"text": "a\u{FFFD}b"}));
    assert!(op.counter("cogo_operator_mirror_rows_total") >= 64);
    assert_eq!(
        pg.query("select count(*) from cogo_task_results").trim(),
        "0",
        "a stored result is removed once its row holds it"
    );
    // A removal the database refuses for a while is made with a later write.
    pg.query(
        "create function cogo_test_refuse() returns trigger language plpgsql as $$ begin raise exception 'not now'; end $$;
         create trigger cogo_test_refuse before delete on cogo_task_results for each statement execute function cogo_test_refuse()",
    );
    create_tasks(&c, &ns, "later", 1, json!({"input": big}));
    wait_until(
        Duration::from_secs(60),
        "the second large result in its row",
        || {
            rows(&pg, &ns.name)
                .get("later-000")
                .is_some_and(|r| r["result_data"] == big)
        },
    );
    assert_eq!(
        pg.query("select count(*) from cogo_task_results"),
        "1",
        "the removal was refused"
    );
    pg.query("drop trigger cogo_test_refuse on cogo_task_results; drop function cogo_test_refuse()");
    create_tasks(&c, &ns, "nudge", 1, json!({}));
    wait_until(
        Duration::from_secs(60),
        "the stored result removed with the next write",
        || pg.query("select count(*) from cogo_task_results") == "0",
    );
    // A row of another cluster sharing the database, a pending row a gateway wrote for a
    // namespace's intake (not yet a task), and a live task's row marked deleted by mistake:
    // the resync after the restart below leaves the first two and clears the third.
    let theirs = "00000000-0000-4000-8000-0000000000ff";
    let pending = "00000000-0000-4000-8000-0000000000fe";
    pg.query(&format!(
        "insert into distributed_agent_tasks (id, type, agent_type, namespace, name, phase, cluster, version)
         values ('{theirs}', 'cogo.echo', 'research', '{}', 'theirs', 'Running', 'another-cluster', 1);
         insert into distributed_agent_tasks (id, type, agent_type, status, namespace)
         values ('{pending}', 'cogo.echo', 'research', 'pending', 'a-tenant')",
        ns.name
    ));
    pg.query(&format!(
        "update distributed_agent_tasks set deleted_at = now() where namespace = '{}' and name = 'echo-003'",
        ns.name
    ));

    // The database goes away for 30 s while tasks run and finish, and the operator restarts
    // meanwhile; a task with a TTL is not deleted before its final state is in the table.
    pg.stop();
    create_tasks(&c, &ns, "outage", 30, json!({}));
    create_tasks(&c, &ns, "short", 1, json!({"ttlSecondsAfterFinished": 1}));
    // Its result must be stored before the outcome is recorded: it waits for the database.
    create_tasks(&c, &ns, "big-outage", 1, json!({"input": big}));
    wait_until(
        Duration::from_secs(60),
        "the tasks to finish while the database is away",
        || {
            tasks(&ns)
                .iter()
                .filter(|t| t["status"]["phase"] == "Succeeded")
                .count()
                == 60 + 2 + 2 + 30 + 1
        },
    );
    let waiting = c.get_json(&ns.name, "agenttask/big-outage-000").unwrap();
    assert_eq!(
        waiting["status"]["phase"], "Running",
        "a large result is not recorded while the result store is away"
    );
    std::thread::sleep(Duration::from_secs(10));
    op.kill();
    // Deleted while no operator watches: the restarted one finds its row and marks it.
    ns.kubectl_ok(&["delete", "agenttask/echo-002"]);
    op = Operator::start_with(&c, "mirror", port, &args);
    std::thread::sleep(Duration::from_secs(10));
    // Deleted before its final state reached the table: the row ends with that state.
    ns.kubectl_ok(&["delete", "agenttask/outage-000"]);
    assert!(
        c.get_json(&ns.name, "agenttask/short-000").is_some(),
        "the TTL deleted a task whose final state the database does not hold"
    );
    assert!(
        op.counter("cogo_operator_mirror_failures_total") > 0,
        "the outage is counted"
    );
    pg.resume();
    wait_until(
        Duration::from_secs(60),
        "the TTL deletion once the row is written",
        || c.get_json(&ns.name, "agenttask/short-000").is_none(),
    );
    wait_mirrored(&pg, &ns, 95, 90);
    let rs = rows(&pg, &ns.name);
    assert_eq!(
        rs["big-outage-000"]["result_data"], big,
        "stored once the database is back"
    );
    assert_eq!(
        (
            &rs["outage-000"]["phase"],
            rs["outage-000"]["deleted_at"].is_string()
        ),
        (&json!("Succeeded"), true),
        "a task deleted before its final row was written: {}",
        rs["outage-000"]
    );
    assert!(
        rs["theirs"]["deleted_at"].is_null(),
        "another cluster's row is not marked"
    );
    assert_eq!(
        pg.query(&format!(
            "select status || ' ' || (deleted_at is null) from distributed_agent_tasks where id = '{pending}'"
        )),
        "pending true",
        "a row not yet taken in is no task the resync could miss"
    );
    assert!(
        rs["echo-003"]["deleted_at"].is_null(),
        "the resync clears a live task's deletion mark"
    );
    for t in tasks(&ns) {
        assert_row_matches(&t, &rs[t["metadata"]["name"].as_str().unwrap()]);
    }
    assert_eq!(rs["short-000"]["phase"], "Succeeded");
    assert!(
        rs["echo-002"]["deleted_at"].is_string(),
        "the row of a task deleted while the operator was away is marked on resync"
    );
    assert!(
        rs["short-000"]["deleted_at"].is_string(),
        "deleted tasks keep their rows"
    );

    // Deleting a task keeps its row, marked deleted.
    ns.kubectl_ok(&["delete", "agenttask/echo-000"]);
    wait_until(
        Duration::from_secs(30),
        "the row of a deleted task to be marked",
        || rows(&pg, &ns.name)["echo-000"]["deleted_at"].is_string(),
    );

    // An older state never overwrites a newer one.
    let uid = rs["echo-001"]["id"].as_str().unwrap().to_string();
    pg.query(&format!(
        "update distributed_agent_tasks set version = version + 1000000, phase = 'Newer' where id = '{uid}'"
    ));
    ns.kubectl_ok(&["annotate", "agenttask/echo-001", "touched=yes"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rows(&pg, &ns.name)["echo-001"]["phase"], "Newer");

    // A row the database refuses (here a constraint of the user's) is set aside and counted;
    // the rows written with it in one batch are not held back.
    pg.query("alter table distributed_agent_tasks add constraint no_poison check (name is distinct from 'poison-000')");
    create_tasks(&c, &ns, "poison", 1, json!({}));
    create_tasks(&c, &ns, "after", 10, json!({}));
    wait_until(Duration::from_secs(60), "the rows after the refused one", || {
        let rs = rows(&pg, &ns.name);
        (0..10).all(|i| {
            rs.get(&format!("after-{i:03}"))
                .is_some_and(|r| r["phase"] == "Succeeded")
        })
    });
    assert!(!rows(&pg, &ns.name).contains_key("poison-000"));
    assert!(op.counter("cogo_operator_mirror_refused_rows_total") >= 1);
    assert!(op.log_text().contains("the database refused this task's row"));
    pg.query("alter table distributed_agent_tasks drop constraint no_poison");
}

#[test]
fn a_bad_database_configuration_is_reported_and_tasks_still_run() {
    let c = cluster();
    let pg = Postgres::start("mirror-bad");
    let ns = Namespace::create(&c, "e2e-mirror-bad");
    c.kubectl(
        &["delete", "secret", SECRET, "-n", "default", "--ignore-not-found"],
        None,
    );
    let port = free_port();
    let op = Operator::start_with(&c, "mirror-bad", port, &["--supabase-secret", SECRET]);
    agent(&ns, "mirrored");
    let _agent = AgentProcess::start_with(&c, &ns.name, ("mirrored", "Research", "mirrored-0"), port, 16);
    create_tasks(&c, &ns, "echo", 5, json!({}));
    wait_until(
        Duration::from_secs(60),
        "the tasks to succeed without the mirror",
        || {
            tasks(&ns)
                .iter()
                .filter(|t| t["status"]["phase"] == "Succeeded")
                .count()
                == 5
        },
    );
    let closed = free_port();
    pg.password_role("cogo_pw", "right");
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no Secret", None, "does not exist"),
        ("no url key", Some(String::new()), "has no key `url`"),
        (
            "not a connection string",
            Some("url=not a url".into()),
            "is not a connection string",
        ),
        (
            "unreachable host",
            Some(format!("url=postgres://postgres@127.0.0.1:{closed}/postgres")),
            "Connection refused",
        ),
        (
            "wrong password",
            Some(format!(
                "url=postgres://cogo_pw:wrong@127.0.0.1:{}/postgres",
                pg.port
            )),
            "password authentication failed for user \"cogo_pw\"",
        ),
        (
            "a role that may not create the tables",
            Some(format!(
                "url=postgres://cogo_pw:right@127.0.0.1:{}/postgres",
                pg.port
            )),
            "permission denied",
        ),
        (
            "no such database",
            Some(format!("url=postgres://postgres@127.0.0.1:{}/nosuchdb", pg.port)),
            "database \"nosuchdb\" does not exist",
        ),
    ];
    for (what, data, expected) in cases {
        c.kubectl(
            &["delete", "secret", SECRET, "-n", "default", "--ignore-not-found"],
            None,
        );
        if let Some(data) = data {
            let mut args = vec!["create", "secret", "generic", SECRET, "-n", "default"];
            let literal = format!("--from-literal={data}");
            if !data.is_empty() {
                args.push(&literal);
            } else {
                args.push("--from-literal=other=x");
            }
            c.kubectl_ok(&args, None);
        }
        let failures = op.counter("cogo_operator_mirror_failures_total");
        wait_until(
            Duration::from_secs(60),
            &format!("{what}: the failure logged and counted"),
            || {
                op.log_text().contains(expected)
                    && op.counter("cogo_operator_mirror_failures_total") > failures
            },
        );
        assert!(
            op.metrics().contains("cogo_operator_supabase_connected 0"),
            "{what}"
        );
    }
    // Still reconciling: a new task runs.
    create_tasks(&c, &ns, "later", 1, json!({}));
    ns.wait("agenttask/later-000", "condition=Succeeded", 60);
    // Fixed, the mirror catches up without a restart.
    secret(&c, &pg.url());
    wait_mirrored(&pg, &ns, 6, 90);
    assert!(op.metrics().contains("cogo_operator_supabase_connected 1"));
    c.kubectl(&["delete", "secret", SECRET, "-n", "default"], None);
}

/// Through PgBouncer in transaction mode (Supabase's pooler) the mirror works the same (it
/// sends no named prepared statements): 1,000 tasks and three large results, each row equal to
/// its task's status, with the pooler restarted while the rows are written.
#[test]
fn the_mirror_works_through_pgbouncer_in_transaction_mode() {
    let c = cluster();
    let pg = Postgres::start("mirror-pooled");
    let mut bouncer = cogo_e2e::postgres::PgBouncer::start(&pg, "mirror-pooled");
    secret(&c, &bouncer.url());
    let ns = Namespace::create(&c, "e2e-mirror-pooled");
    let port = free_port();
    let _op = Operator::start_with(&c, "mirror-pooled", port, &["--supabase-secret", SECRET]);
    agent(&ns, "mirrored");
    let _agent = AgentProcess::start_with(&c, &ns.name, ("mirrored", "Research", "mirrored-0"), port, 16);
    create_tasks(&c, &ns, "pooled", 1000, json!({}));
    // Results too large for status go to the result store through the pooler too.
    let big = json!({"blob": "y".repeat(100 * 1024)});
    create_tasks(&c, &ns, "pooled-big", 3, json!({"input": big}));
    // The pooler restarts while rows are being written: every connection through it is cut.
    std::thread::sleep(Duration::from_millis(1500));
    bouncer.restart();
    wait_mirrored(&pg, &ns, 1003, 300);
    let rs = rows(&pg, &ns.name);
    for t in tasks(&ns) {
        assert_row_matches(&t, &rs[t["metadata"]["name"].as_str().unwrap()]);
    }
    for i in 0..3 {
        assert_eq!(rs[&format!("pooled-big-{i:03}")]["result_data"], big);
    }
    c.kubectl(&["delete", "secret", SECRET, "-n", "default"], None);
}

/// Rows inserted as `pending` (as the chat gateway's Edge Function does) become AgentTasks in
/// the intake namespace, one per row even with two operators taking them in, and are then
/// mirrored into the same row; rows that cannot become tasks are marked failed with the reason.
#[test]
fn pending_rows_become_one_task_each_and_are_mirrored_back() {
    let c = cluster();
    let pg = Postgres::start("intake");
    secret(&c, &pg.url());
    let ns = Namespace::create(&c, "e2e-intake");
    let args = ["--supabase-secret", SECRET, "--intake-namespace", "e2e-intake"];
    let port = free_port();
    let first = Operator::start_with(&c, "intake-1", port, &args);
    let mut second = Operator::start_with(&c, "intake-2", free_port(), &args);
    wait_until(Duration::from_secs(30), "the schema", || {
        pg.psql("select 1 from distributed_agent_tasks limit 1")
            .status
            .success()
    });
    let mut sql = String::from("insert into distributed_agent_tasks (id, type, agent_type, data) values ");
    let values: Vec<String> = (0..20)
        .map(|i| format!("(gen_random_uuid(), 'cogo.echo', 'research', '{{\"n\": {i}}}')"))
        .collect();
    sql.push_str(&values.join(", "));
    sql.push_str(
        ", ('00000000-0000-0000-0000-0000000000b1', 'cogo.echo', 'astrology', null)\
         , ('00000000-0000-0000-0000-0000000000b2', 'Not A Type', 'research', null)",
    );
    pg.query(&sql);
    wait_until(
        Duration::from_secs(60),
        "20 rows taken in and the bad ones refused",
        || {
            pg.query("select count(*) from distributed_agent_tasks where namespace = 'e2e-intake'") == "20"
                && pg.query(
                    "select count(*) from distributed_agent_tasks where name is null and status = 'failed'",
                ) == "2"
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    second.kill();
    let names = ns.kubectl_ok(&["get", "agenttasks", "-o", "name"]);
    assert_eq!(names.lines().count(), 20, "one AgentTask per row: {names}");
    let astrology = pg.query(
        "select error_message from distributed_agent_tasks where id = '00000000-0000-0000-0000-0000000000b1'",
    );
    assert!(astrology.contains("astrology"), "{astrology}");
    let bad_type = pg.query(
        "select error_message from distributed_agent_tasks where id = '00000000-0000-0000-0000-0000000000b2'",
    );
    assert!(bad_type.contains("spec.type"), "{bad_type}");

    // An agent runs them; the rows they came from show the outcome.
    agent(&ns, "intake-research");
    let _agent = AgentProcess::start_with(
        &c,
        &ns.name,
        ("intake-research", "Research", "intake-research-0"),
        port,
        16,
    );
    wait_until(
        Duration::from_secs(90),
        "the taken-in rows to show success",
        || {
            pg.query("select count(*) from distributed_agent_tasks where namespace = 'e2e-intake' and status = 'succeeded'")
            == "20"
        },
    );
    // The seed's `supabaseConnected` and `realtimeConnected`.
    let metrics = first.metrics();
    for line in [
        "cogo_operator_supabase_connected 1",
        "cogo_operator_realtime_connected 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert_eq!(
        pg.query(
            "select count(*) from distributed_agent_tasks where namespace = 'e2e-intake' or name is null"
        ),
        "22",
        "the mirror wrote into the rows the tasks came from, adding none"
    );
    assert_eq!(
        pg.query("select count(*) from distributed_agent_tasks where namespace = 'e2e-intake' and result_data = data"),
        "20",
        "each echo's result is its row's data"
    );

    // Only the intake binds a task to a row, and a row's owner is the user who inserted it: a
    // task anyone may create, naming that row and that owner, gets neither.
    let (owned, user) = (
        "00000000-0000-4000-8000-0000000000c0",
        "00000000-0000-0000-0000-00000000000a",
    );
    pg.query(&format!(
        "insert into auth.users (id) values ('{user}') on conflict do nothing"
    ));
    pg.query(&format!(
        "insert into distributed_agent_tasks (id, type, agent_type, data, user_id)
         values ('{owned}', 'cogo.echo', 'research', '{{\"mine\": 1}}', '{user}')"
    ));
    let status_of = |id: &str| {
        pg.query(&format!(
            "select status from distributed_agent_tasks where id = '{id}'"
        ))
    };
    wait_until(Duration::from_secs(60), "the owned row to succeed", || {
        status_of(owned) == "succeeded"
    });
    let forged = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "forged", "annotations": {"cogo.xyz/supabase-row": owned}},
        "spec": {"role": "Research", "type": "cogo.echo", "input": {"stolen": 1}, "requester": {"userId": user}}});
    ns.apply_ok(&forged.to_string());
    ns.wait("agenttask/forged", "jsonpath={.status.phase}=Succeeded", 60);
    let uid = ns.kubectl_ok(&["get", "agenttask/forged", "-o", "jsonpath={.metadata.uid}"]);
    wait_until(Duration::from_secs(30), "the forged task's own row", || {
        status_of(&uid) == "succeeded"
    });
    assert_eq!(
        pg.query(&format!(
            "select data::text || ' ' || result_data::text || ' ' || name from distributed_agent_tasks where id = '{owned}'"
        )),
        format!("{{\"mine\": 1}} {{\"mine\": 1}} row-{owned}"),
        "the owned row is untouched"
    );
    assert_eq!(
        pg.query(&format!(
            "select coalesce(user_id::text, 'nobody') from distributed_agent_tasks where id = '{uid}'"
        )),
        "nobody",
        "a requester anyone could write owns no row"
    );
    // A task that takes a row's name before the intake does is not bound to the row.
    let early = "00000000-0000-4000-8000-0000000000c1";
    let squatter = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": format!("row-{early}"), "annotations": {"cogo.xyz/supabase-row": early}},
        "spec": {"role": "Research", "type": "cogo.echo"}});
    ns.apply_ok(&squatter.to_string());
    pg.query(&format!(
        "insert into distributed_agent_tasks (id, type, agent_type, user_id) values ('{early}', 'cogo.echo', 'research', '{user}')"
    ));
    wait_until(Duration::from_secs(60), "the squatted row to be refused", || {
        status_of(early) == "failed"
    });
    let why = pg.query(&format!(
        "select error_message from distributed_agent_tasks where id = '{early}'"
    ));
    assert!(why.contains("was not made from this row"), "{why}");
    c.kubectl(&["delete", "secret", SECRET, "-n", "default"], None);
}
