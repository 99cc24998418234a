//! Two tenants, each a namespace, on one operator: each namespace's queued and running tasks
//! are bounded (and sub-tasks of running tasks never wait on their own namespace), an agent of
//! one tenant can neither lease, read, report on, extend nor cancel the other's tasks through
//! the broker, and each tenant's chat gateway takes its own users' tasks to its own namespace,
//! whose rows only their owners read under row-level security.

use std::time::{Duration, Instant};

use cogo_e2e::{
    cluster::{AgentProcess, Namespace, Operator, free_port, kwok_agent, token_of, wait_until},
    gateway::{GatewayProcess, Signer, serve_jwks, token},
    postgres::Postgres,
};
use serde_json::{Value, json};

use super::{cluster, condition};

fn task(name: &str, spec: Value) -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn phases(ns: &Namespace) -> Vec<(String, String)> {
    ns.items("agenttasks")
        .iter()
        .map(|t| {
            (
                t["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                t["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn count(ns: &Namespace, phase: &str) -> usize {
    phases(ns).iter().filter(|(_, p)| p == phase).count()
}

#[test]
fn tenants_are_bounded_per_namespace_and_kept_apart() {
    let c = cluster();
    let a = Namespace::create(&c, "e2e-tenant-a");
    let b = Namespace::create(&c, "e2e-tenant-b");
    let port = free_port();
    let limits = [
        "--max-queued-tasks-per-namespace",
        "3",
        "--max-running-tasks-per-namespace",
        "2",
    ];
    let _op = Operator::start_with(&c, "tenants", port, &limits);
    for ns in [&a, &b] {
        ns.apply_ok(&kwok_agent("worker", 1, 8).to_string());
    }

    // Tenant B has no agent running: three tasks queue, the next ones are told the queue is
    // full, with a Warning Event, and wait without being lost. A task that names a parent
    // itself is no sub-task of the broker's and waits like the others.
    for i in 0..5 {
        b.apply_ok(&task(
            &format!("b-{i}"),
            json!({"agent": "worker", "type": "cogo.echo", "input": {"i": i}}),
        ));
    }
    b.apply_ok(&task(
        "b-forged",
        json!({"agent": "worker", "type": "cogo.echo", "parent": "b-0"}),
    ));
    let names: Vec<String> = (0..5)
        .map(|i| format!("b-{i}"))
        .chain(["b-forged".to_string()])
        .collect();
    let said = |status: &str, reason: &str| {
        names
            .iter()
            .filter(|n| {
                c.get_json(&b.name, &format!("agenttask/{n}"))
                    .and_then(|t| condition(&t, "Accepted"))
                    == Some((status.into(), reason.into()))
            })
            .count()
    };
    wait_until(
        Duration::from_secs(60),
        "three of B's tasks queued and three refused",
        || said("True", "Queued") == 3 && said("False", "NamespaceQueueFull") == 3,
    );
    let forged = c.get_json(&b.name, "agenttask/b-forged").unwrap();
    assert_eq!(
        condition(&forged, "Accepted").unwrap().1,
        "NamespaceQueueFull",
        "it came last"
    );
    let refused = b
        .items("agenttasks")
        .into_iter()
        .find(|t| condition(t, "Accepted").is_some_and(|(s, _)| s == "False"))
        .unwrap();
    let message = refused["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("already has 3 queued tasks")
            && message.contains("--max-queued-tasks-per-namespace"),
        "{message}"
    );
    wait_until(
        Duration::from_secs(30),
        "a Warning Event for the full queue",
        || {
            b.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "reason=NamespaceQueueFull,type=Warning",
                "-o",
                "name",
            ])
            .lines()
            .count()
                >= 1
        },
    );

    // Tenant A's queue is its own, and it runs at most two top-level tasks at once.
    let _agent_a = AgentProcess::start(&c, &a.name, "worker", "Research", "worker-a", port);
    for i in 0..4 {
        a.apply_ok(&task(
            &format!("a-{i}"),
            json!({"agent": "worker", "type": "cogo.sleep", "input": {"seconds": 2}}),
        ));
    }
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(90);
    while count(&a, "Succeeded") < 4 {
        assert!(
            Instant::now() < until,
            "tenant A's tasks did not finish: {:?}",
            phases(&a)
        );
        most = most.max(count(&a, "Running"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most, 2, "at most and at last two of A's tasks ran at once");

    // Sub-tasks are never held back: two fan-outs fill A's two slots and their four sub-tasks
    // still run, so neither waits on its own namespace.
    for i in 0..2 {
        a.apply_ok(&task(
            &format!("fan-{i}"),
            json!({"agent": "worker", "type": "cogo.fanout", "input": {"count": 2, "agent": "worker", "type": "cogo.sleep", "input": {"seconds": 1}}}),
        ));
    }
    for i in 0..2 {
        a.wait(&format!("agenttask/fan-{i}"), "condition=Succeeded", 90);
    }

    // The broker keeps the tenants apart: A's agent token opens nothing of B's.
    let token = token_of(&c, &a.name, "worker-broker-token");
    let http = cogo_e2e::http_client(Duration::from_secs(30));
    let broker = format!("http://127.0.0.1:{port}/v1/namespaces/{}", b.name);
    let calls: Vec<(&str, String, Value)> = vec![
        (
            "lease",
            format!("{broker}/agents/worker/lease"),
            json!({"pod": "worker-a", "slots": 5, "waitSeconds": 0}),
        ),
        (
            "heartbeat",
            format!("{broker}/tasks/b-0/heartbeat"),
            json!({"pod": "worker-a", "attempt": 1}),
        ),
        (
            "complete",
            format!("{broker}/tasks/b-0/complete"),
            json!({"pod": "worker-a", "attempt": 1, "outcome": "Succeeded", "result": {"forged": true}}),
        ),
        (
            "sub-task",
            format!("{broker}/tasks/b-0/subtasks"),
            json!({"pod": "worker-a", "attempt": 1, "name": "planted", "agent": "worker", "type": "cogo.echo"}),
        ),
        (
            "cancel",
            format!("{broker}/tasks/b-0/subtasks/b-1/cancel"),
            json!({"pod": "worker-a", "attempt": 1}),
        ),
    ];
    for (what, url, body) in calls {
        let r = http.post(&url).bearer_auth(&token).json(&body).send().unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().unwrap_or_default();
        assert_eq!(
            (status, answer["code"].as_str()),
            (403, Some("WrongAgent")),
            "{what}: {answer}"
        );
    }
    let r = http
        .get(format!("{broker}/tasks/b-0"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "A's agent cannot read B's task");
    assert_eq!(
        count(&b, "Running") + count(&b, "Succeeded"),
        0,
        "nothing of B's ran: {:?}",
        phases(&b)
    );
    assert!(
        b.kubectl_ok(&["get", "agenttasks", "-o", "name"])
            .lines()
            .all(|l| !l.contains("planted"))
    );

    // B's agent comes: every task of B runs, the two that waited included.
    let _agent_b = AgentProcess::start(&c, &b.name, "worker", "Research", "worker-b", port);
    for n in &names {
        b.wait(&format!("agenttask/{n}"), "condition=Succeeded", 90);
    }
    let done = c.get_json(&b.name, "agenttask/b-4").unwrap();
    assert_eq!(done["status"]["result"], json!({"i": 4}));
    assert_eq!(done["status"]["pod"], "worker-b");
}

/// Tenant A's user: `user_roles` grants every permission in domain `a.example`.
const ANA: &str = "00000000-0000-4000-8000-0000000000a1";
/// Tenant B's user, in domain `b.example`.
const BEN: &str = "00000000-0000-4000-8000-0000000000b1";

/// What `user` reads of `distributed_agent_tasks` under row-level security, as Supabase's
/// PostgREST reads for a signed-in user: `id namespace` lines.
fn rows_seen_by(pg: &Postgres, user: &str) -> Vec<String> {
    let out = pg.query(&format!(
        "begin; set local role authenticated; \
         select set_config('request.jwt.claims', '{{\"sub\": \"{user}\", \"role\": \"authenticated\"}}', true); \
         select id::text || ' ' || coalesce(namespace, '-') from public.distributed_agent_tasks order by id; commit;"
    ));
    // psql also prints what set_config returned.
    out.lines()
        .filter(|l| {
            l.split(' ')
                .next()
                .is_some_and(|id| id.len() == 36 && id.matches('-').count() == 4)
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn each_tenant_s_gateway_takes_its_users_tasks_to_its_own_namespace_only() {
    let c = cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let jwks = rt.block_on(serve_jwks());
    let pg = Postgres::start("e2e-tenant-gw");
    let secret = "cogo-supabase-tenant-gw";
    c.url_secret("default", secret, &pg.url());
    let a = Namespace::create(&c, "e2e-tenant-gw-a");
    let b = Namespace::create(&c, "e2e-tenant-gw-b");
    let port = free_port();
    let intake = format!("{},{}", a.name, b.name);
    let _op = Operator::start_with(
        &c,
        "tenant-gw",
        port,
        &["--supabase-secret", secret, "--intake-namespace", &intake],
    );
    for ns in [&a, &b] {
        ns.apply_ok(&kwok_agent("research", 1, 4).to_string());
    }
    let _agents = [
        AgentProcess::start(&c, &a.name, "research", "Research", "research-a", port),
        AgentProcess::start(&c, &b.name, "research", "Research", "research-b", port),
    ];
    wait_until(Duration::from_secs(60), "the operator's schema", || {
        pg.query("select count(*) from pg_tables where tablename = 'user_roles'") == "1"
    });
    for (user, domain) in [(ANA, "a.example"), (BEN, "b.example")] {
        pg.query(&format!(
            "insert into auth.users (id) values ('{user}') on conflict do nothing;
             insert into public.user_roles (user_id, role, permissions, domain, is_active)
             values ('{user}', 'cogo_agent', '{{agent:*,task:*,worker:*,chat:*}}', '{domain}', true)
             on conflict (user_id) do nothing"
        ));
    }
    let gw_a = GatewayProcess::start(&c, &a.name, &pg.url(), &jwks, &["--domain", "a.example"]);
    let gw_b = GatewayProcess::start(&c, &b.name, &pg.url(), &jwks, &["--domain", "b.example"]);
    let (api_a, api_b) = (gw_a.client(), gw_b.client());
    let ana = token(ANA, json!({}), Signer::Secret);
    let ben = token(BEN, json!({}), Signer::Secret);
    let echo = |tenant: &str| {
        json!({"role": "research", "type": "cogo.echo", "input": {"tenant": tenant},
               "wait": true, "waitSeconds": 60})
    };

    // Each user's task runs in their tenant's namespace, on their tenant's agent, and its
    // result comes back through their gateway.
    let mut ids = Vec::new();
    for (api, user, ns, tenant) in [(&api_a, &ana, &a, "a"), (&api_b, &ben, &b, "b")] {
        let r = api.post("/v1/tasks", user, echo(tenant));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["namespace"], ns.name.as_str(), "{}", r.json);
        assert_eq!(r.json["phase"], "Succeeded", "{}", r.json);
        assert_eq!(r.json["result"]["tenant"], tenant, "{}", r.json);
        let name = r.json["name"].as_str().unwrap();
        let task = c
            .get_json(&ns.name, &format!("agenttask/{name}"))
            .expect("the task");
        assert_eq!(
            task["status"]["pod"].as_str().map(|p| p.ends_with(tenant)),
            Some(true),
            "run by the tenant's own agent: {}",
            task["status"]
        );
        ids.push((r.json["id"].as_str().unwrap().to_string(), ns.name.clone()));
    }
    assert!(a.items("agenttasks").len() == 1 && b.items("agenttasks").len() == 1);

    // A user of one tenant gets nothing of the other's gateway: its domain's roles grant
    // them no permission, so neither status nor a task, and nothing is created there.
    for (api, user, ns) in [(&api_b, &ana, &b), (&api_a, &ben, &a)] {
        let s = api.get("/v1/status", user);
        assert_eq!(s.status, 403, "{}", s.text);
        let t = api.post("/v1/tasks", user, echo("intruder"));
        assert_eq!(t.status, 403, "{}", t.text);
        assert_eq!(ns.items("agenttasks").len(), 1, "nothing new in {}", ns.name);
    }
    let s = api_a.get("/v1/status", &ana);
    assert_eq!(
        (s.status, s.json["namespace"].as_str()),
        (200, Some(a.name.as_str())),
        "{}",
        s.text
    );

    // Under row-level security each user reads their own row, in their tenant's namespace,
    // and not the other's.
    wait_until(Duration::from_secs(30), "both rows mirrored", || {
        // The mirror holds every task of the cluster: other tests' too.
        pg.query(&format!(
            "select count(*) from public.distributed_agent_tasks \
             where phase = 'Succeeded' and namespace in ('{}', '{}')",
            a.name, b.name
        )) == "2"
    });
    for (user, (id, ns)) in [(ANA, &ids[0]), (BEN, &ids[1])] {
        assert_eq!(rows_seen_by(&pg, user), vec![format!("{id} {ns}")], "{user}");
    }

    // A row naming a namespace this operator does not serve is left for the operator that
    // does, neither taken in nor marked deleted; a row naming none, or an empty one, goes to
    // the first. The other rows are inserted after it, so the poll that takes them in has read
    // the table with it there.
    let other = "00000000-0000-4000-8000-00000000c0c0";
    let plain = "00000000-0000-4000-8000-00000000c0c1";
    let blank = "00000000-0000-4000-8000-00000000c0c2";
    pg.query(&format!(
        "insert into public.distributed_agent_tasks (id, type, agent_type, data, status, namespace)
         values ('{other}', 'cogo.echo', 'research', '{{}}', 'pending', 'e2e-tenant-gw-c')"
    ));
    pg.query(&format!(
        "insert into public.distributed_agent_tasks (id, type, agent_type, data, status, namespace)
         values ('{plain}', 'cogo.echo', 'research', '{{}}', 'pending', null),
                ('{blank}', 'cogo.echo', 'research', '{{}}', 'pending', '')"
    ));
    wait_until(
        Duration::from_secs(30),
        "the rows naming no namespace taken in by the first",
        || {
            [plain, blank]
                .iter()
                .all(|id| c.get_json(&a.name, &format!("agenttask/row-{id}")).is_some())
        },
    );
    assert_eq!(
        pg.query(&format!(
            "select status || ' ' || coalesce(name, '-') || ' ' || namespace || ' ' || (deleted_at is null) \
             from public.distributed_agent_tasks where id = '{other}'"
        )),
        "pending - e2e-tenant-gw-c true"
    );
    assert!(c.get_json(&b.name, &format!("agenttask/row-{other}")).is_none());
    assert!(c.get_json(&a.name, &format!("agenttask/row-{other}")).is_none());
}
