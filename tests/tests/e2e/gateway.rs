//! The chat gateway (`cogo-operator gateway`, a local process) against the local control plane,
//! a real PostgreSQL, the operator's intake, and Orchestrator and Research agents as local
//! processes whose model is a stand-in of the Gemini API: every action with its answer's shape,
//! every way a token or a user is refused with its status and code, permissions from the token
//! and from `user_roles`, rate limits, the audit, and the tasks it creates owned by the caller
//! under row-level security.

use std::time::Duration;

use cogo_e2e::{
    cluster::{AgentProcess, Cluster, Namespace, Operator, free_port, kwok_pod_template, wait_until},
    gateway::{GatewayProcess, Signer, serve_jwks, tampered, token, unsigned_token},
    postgres::Postgres,
    standin::StandIn,
};
use serde_json::{Value, json};

use super::cluster;

const NS: &str = "e2e-gateway";
const SECRET: &str = "cogo-supabase-gateway";
const KEY: &str = "gateway-model-key";
/// Every permission of the seed's `cogo_agent` role, granted by `user_roles`.
const ALICE: &str = "00000000-0000-4000-8000-00000000a11c";
/// Only what the token grants: `agent:read` and `chat:read`.
const BOB: &str = "00000000-0000-4000-8000-000000000b0b";
/// An inactive `user_roles` row.
const CAROL: &str = "00000000-0000-4000-8000-0000000ca401";
/// A row of another domain, which grants nothing here.
const DAVE: &str = "00000000-0000-4000-8000-00000000da7e";

fn users(pg: &Postgres) {
    for u in [ALICE, BOB, CAROL, DAVE] {
        pg.query(&format!(
            "insert into auth.users (id) values ('{u}') on conflict do nothing"
        ));
    }
    pg.query(&format!(
        "insert into public.user_roles (user_id, role, permissions, domain, is_active) values
         ('{ALICE}', 'cogo_agent', '{{agent:*,task:*,worker:*,chat:*}}', 'cogo.xyz', true),
         ('{CAROL}', 'cogo_agent', '{{agent:*,task:*,worker:*,chat:*}}', 'cogo.xyz', false),
         ('{DAVE}', 'cogo_agent', '{{agent:*,task:*,worker:*,chat:*}}', 'other.xyz', true)
         on conflict (user_id) do nothing"
    ));
}

fn agent(name: &str, role: &str, endpoint: &str) -> String {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": name},
           "spec": {"role": role, "concurrency": 8, "podTemplate": kwok_pod_template(),
                    "model": {"provider": "Gemini", "name": "gemini-2.5-flash-lite", "endpoint": endpoint,
                              "apiKeySecretRef": {"name": "gemini", "key": "api-key"}}}})
    .to_string()
}

/// What a gateway test runs: the database, the operator with its intake, an Orchestrator and a
/// Research agent (local processes whose model is the stand-in), the gateway, and a JWKS.
struct Setup {
    pg: Postgres,
    model: StandIn,
    gw: GatewayProcess,
    _agents: Vec<AgentProcess>,
    _operator: Operator,
    _ns: Namespace<'static>,
    _rt: tokio::runtime::Runtime,
}

impl Setup {
    fn start(c: &'static Cluster, ns: &str, gateway_args: &[&str]) -> Setup {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let model = rt.block_on(StandIn::gemini(KEY));
        let jwks_url = rt.block_on(serve_jwks());
        let pg = Postgres::start(ns);
        let secret = format!("{SECRET}-{ns}");
        c.url_secret("default", &secret, &pg.url());
        let namespace = Namespace::create(c, ns);
        namespace.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "gemini",
            &format!("--from-literal=api-key={KEY}"),
        ]);
        let broker = free_port();
        let operator = Operator::start_with(
            c,
            &format!("{ns}-operator"),
            broker,
            &["--supabase-secret", &secret, "--intake-namespace", ns],
        );
        let endpoint = model.endpoint();
        namespace.apply_ok(&agent("orchestrator", "Orchestrator", &endpoint));
        namespace.apply_ok(&agent("research", "Research", &endpoint));
        let env = [
            ("COGO_MODEL_PROVIDER", "Gemini"),
            ("COGO_MODEL_NAME", "gemini-2.5-flash-lite"),
            ("COGO_MODEL_ENDPOINT", endpoint.as_str()),
            ("COGO_MODEL_API_KEY", KEY),
        ];
        let agents = vec![
            AgentProcess::start_env(
                c,
                ns,
                ("orchestrator", "Orchestrator", "orchestrator-0"),
                broker,
                8,
                &env,
            ),
            AgentProcess::start_env(c, ns, ("research", "Research", "research-0"), broker, 8, &env),
        ];
        // The schema is there once the operator's mirror connected.
        wait_until(Duration::from_secs(60), "the operator's schema", || {
            pg.query("select count(*) from pg_tables where tablename = 'user_roles'") == "1"
        });
        users(&pg);
        let gw = GatewayProcess::start(c, ns, &pg.url(), &jwks_url, gateway_args);
        Setup {
            pg,
            model,
            gw,
            _agents: agents,
            _operator: operator,
            _ns: namespace,
            _rt: rt,
        }
    }
}

#[test]
fn the_gateway_serves_the_seed_s_actions_to_permitted_users_only() {
    let c: &'static Cluster = Box::leak(Box::new(cluster()));
    let Setup { pg, model, gw, .. } = &Setup::start(
        c,
        NS,
        &[
            "--domain",
            "cogo.xyz",
            "--user-rate",
            "10/30",
            "--max-body-bytes",
            "4096",
        ],
    );
    let api = gw.client();
    let alice = token(ALICE, json!({}), Signer::Secret);
    let bob = token(
        BOB,
        json!({"app_metadata": {"permissions": ["agent:read", "chat:read"]},
                                "user_metadata": {"permissions": ["*"]}}),
        Signer::Secret,
    );

    // status: what each may see.
    let s = api.get("/v1/status", &alice);
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.json["namespace"], NS);
    let names: Vec<&str> = s.json["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        s.json["workers"].is_array() && s.json["queue"]["pending"].is_i64(),
        "{}",
        s.json
    );
    let s = api.get("/v1/status", &bob);
    assert_eq!(s.status, 200, "{}", s.text);
    assert!(s.json["agents"].is_array());
    assert!(
        s.json.get("workers").is_none() && s.json.get("queue").is_none(),
        "user_metadata grants nothing: {}",
        s.json
    );
    let l = api.get("/v1/languages", &bob);
    assert_eq!(l.status, 200);
    assert_eq!(l.json["default"], "en");
    assert!(
        l.json["languages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["code"] == "ko")
    );
    // The same through the seed's one route.
    let edge = api.post("/functions/v1/chat-gateway", &alice, json!({"action": "status"}));
    assert_eq!(edge.status, 200, "{}", edge.text);
    assert_eq!(edge.json["namespace"], NS);
    // RS256 and ES256 tokens with the JWKS's keys.
    for signer in [Signer::Rsa, Signer::Ec] {
        let r = api.get("/v1/languages", &token(ALICE, json!({}), signer));
        assert_eq!(r.status, 200, "{signer:?}: {}", r.text);
    }

    // Every refused token, with its status and code.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let refused = [
        ("no token", String::new(), 401, "MissingToken"),
        ("alg none", unsigned_token(ALICE), 401, "AlgorithmNotAllowed"),
        (
            "HS/RS confusion",
            token(ALICE, json!({}), Signer::Confused),
            401,
            "InvalidSignature",
        ),
        (
            "wrong secret",
            token(ALICE, json!({}), Signer::WrongSecret),
            401,
            "InvalidSignature",
        ),
        (
            "expired",
            token(ALICE, json!({"exp": now - 600}), Signer::Secret),
            401,
            "TokenExpired",
        ),
        (
            "not yet valid",
            token(ALICE, json!({"nbf": now + 600}), Signer::Secret),
            401,
            "TokenNotYetValid",
        ),
        (
            "wrong audience",
            token(ALICE, json!({"aud": "anon"}), Signer::Secret),
            401,
            "WrongAudience",
        ),
        (
            "wrong issuer",
            token(
                ALICE,
                json!({"iss": "https://evil.example/auth/v1"}),
                Signer::Secret,
            ),
            401,
            "WrongIssuer",
        ),
        ("tampered payload", tampered(&bob, ALICE), 401, "InvalidSignature"),
        (
            "unknown kid",
            token(ALICE, json!({}), Signer::UnknownKid),
            401,
            "UnknownKey",
        ),
        (
            "oversized",
            token(ALICE, json!({"pad": "x".repeat(9000)}), Signer::Secret),
            401,
            "TokenTooLarge",
        ),
        (
            "not a UUID",
            token("alice", json!({}), Signer::Secret),
            401,
            "InvalidSubject",
        ),
        (
            "inactive user",
            token(CAROL, json!({}), Signer::Secret),
            403,
            "InactiveUser",
        ),
        (
            "another domain's row",
            token(DAVE, json!({}), Signer::Secret),
            403,
            "PermissionDenied",
        ),
    ];
    for (what, t, status, code) in &refused {
        let r = api.get("/v1/status", t);
        assert_eq!((r.status, r.code()), (*status, *code), "{what}: {}", r.text);
        assert!(!r.json["message"].as_str().unwrap_or("").is_empty(), "{what}");
    }
    let denied = api.post(
        "/v1/tasks",
        &bob,
        json!({"role": "research", "type": "cogo.echo"}),
    );
    assert_eq!(
        (denied.status, denied.code()),
        (403, "PermissionDenied"),
        "{}",
        denied.text
    );
    assert!(denied.json["message"].as_str().unwrap().contains("task:create"));
    let unknown = api.get(
        "/v1/status",
        &token(
            "00000000-0000-4000-8000-0000000000ff",
            json!({"app_metadata": {"permissions": ["*"]}}),
            Signer::Secret,
        ),
    );
    assert_eq!(
        unknown.status, 200,
        "a user without a row has what the token grants"
    );
    let ghost = api.post(
        "/v1/messages",
        &token(
            "00000000-0000-4000-8000-0000000000ff",
            json!({"app_metadata": {"permissions": ["*"]}}),
            Signer::Secret,
        ),
        json!({"sessionId": "s", "message": "hi"}),
    );
    assert_eq!(
        (ghost.status, ghost.code()),
        (403, "UnknownUser"),
        "{}",
        ghost.text
    );

    // Malformed requests.
    let bad = [
        (
            api.post(
                "/functions/v1/chat-gateway",
                &alice,
                json!({"action": "astrology"}),
            ),
            400,
            "InvalidRequest",
        ),
        (
            api.post("/functions/v1/chat-gateway", &alice, json!([1, 2])),
            400,
            "MalformedRequest",
        ),
        (
            api.post_raw("/v1/tasks", &alice, "application/json", b"{not json".to_vec()),
            400,
            "MalformedRequest",
        ),
        (
            api.post_raw("/v1/tasks", &alice, "text/plain", b"{}".to_vec()),
            415,
            "UnsupportedMediaType",
        ),
        (
            api.post_raw("/v1/tasks", &alice, "application/json", vec![b' '; 8192]),
            413,
            "RequestTooLarge",
        ),
        (
            api.post(
                "/v1/tasks",
                &alice,
                json!({"role": "research", "type": "cogo.echo", "colour": 1}),
            ),
            400,
            "InvalidRequest",
        ),
        (
            api.post(
                "/v1/tasks",
                &alice,
                json!({"role": "astrologer", "type": "cogo.echo"}),
            ),
            400,
            "InvalidRequest",
        ),
        (
            api.post(
                "/v1/tasks",
                &alice,
                json!({"role": "research", "type": "research.horoscope"}),
            ),
            400,
            "UnknownTaskType",
        ),
        (
            api.post(
                "/v1/tasks",
                &alice,
                json!({"role": "research", "type": "python.execute", "input": {"code": "1"}}),
            ),
            400,
            "UnknownTaskType",
        ),
        (
            api.post(
                "/v1/tasks",
                &alice,
                json!({"role": "research", "type": "research.query", "input": {"q": "x"}}),
            ),
            400,
            "InvalidInput",
        ),
        (
            api.post("/v1/greeting", &alice, json!({"language": "tlh"})),
            400,
            "InvalidRequest",
        ),
        (
            api.post("/v1/messages", &alice, json!({"sessionId": "", "message": "hi"})),
            400,
            "InvalidRequest",
        ),
        (api.get("/v1/nothing", &alice), 404, "NotFound"),
        (api.get("/v1/tasks", &alice), 405, "MethodNotAllowed"),
    ];
    for (i, (r, status, code)) in bad.iter().enumerate() {
        assert_eq!((r.status, r.code()), (*status, *code), "case {i}: {}", r.text);
    }

    // agent_task: created at once as the caller, through the intake.
    let created = api.post(
        "/v1/tasks",
        &alice,
        json!({"agentType": "research", "type": "cogo.echo", "data": {"hello": "gateway"}, "sessionId": "s-1"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let name = created.json["name"].as_str().unwrap().to_string();
    let id = created.json["id"].as_str().unwrap().to_string();
    assert_eq!(name, format!("row-{id}"));
    let task = c
        .get_json(NS, &format!("agenttask/{name}"))
        .expect("the task exists");
    assert_eq!(
        task["spec"]["requester"],
        json!({"userId": ALICE, "sessionId": "s-1"})
    );
    assert!(
        task["metadata"]["annotations"]["cogo.xyz/requester-seal"].is_string(),
        "sealed by the intake"
    );
    wait_until(Duration::from_secs(30), "the Requested Event", || {
        let events = c.kubectl_ok(&["get", "events.events.k8s.io", "-n", NS, "-o", "json"], None);
        let events: Value = serde_json::from_str(&events).unwrap();
        events["items"].as_array().unwrap().iter().any(|e| {
            e["reason"] == "Requested"
                && e["regarding"]["name"] == name.as_str()
                && e["note"].as_str().unwrap_or("").contains(ALICE)
        })
    });
    // With wait: the result.
    let waited = api.post(
        "/functions/v1/chat-gateway",
        &alice,
        json!({"action": "agent_task", "role": "Research", "type": "cogo.echo", "input": {"n": 7}, "wait": true}),
    );
    assert_eq!(waited.status, 200, "{}", waited.text);
    assert_eq!(waited.json["phase"], "Succeeded", "{}", waited.json);
    assert_eq!(waited.json["result"], json!({"n": 7}));
    // Streamed: status events, then the result.
    let streamed = api.stream(
        "/v1/tasks",
        &alice,
        json!({"role": "research", "type": "cogo.echo", "input": {"n": 8}, "wait": true}),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    assert!(
        streamed.content_type.starts_with("text/event-stream"),
        "{}",
        streamed.content_type
    );
    let events = streamed.events();
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "status" && (d["phase"] == "Pending" || d["phase"] == "Running")),
        "{events:?}"
    );
    let (last, body) = events.last().unwrap();
    assert_eq!(last, "result");
    assert_eq!(
        (body["phase"].clone(), body["result"].clone()),
        (json!("Succeeded"), json!({"n": 8}))
    );
    // A failing task says why.
    let failed = api.post("/v1/tasks", &alice, json!({"role": "research", "type": "cogo.fail", "input": {"message": "no luck", "retryable": false}, "wait": true}));
    assert_eq!(failed.status, 200, "{}", failed.text);
    assert_eq!(failed.json["phase"], "Failed");
    assert!(
        failed.json["error"].as_str().unwrap().contains("no luck"),
        "{}",
        failed.json
    );

    // ai_greeting: the Orchestrator's model, in the asked language.
    let g = api.post("/v1/greeting", &alice, json!({"language": "ko", "name": "Alice"}));
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.json["language"], "ko");
    assert!(
        g.json["greeting"]
            .as_str()
            .unwrap()
            .starts_with("stand-in answer"),
        "{}",
        g.json
    );
    assert!(g.json["task"].as_str().unwrap().starts_with("row-"));
    let asked = model.requests().last().unwrap().body.to_string();
    assert!(asked.contains("code ko") && asked.contains("Alice"), "{asked}");

    // send_message: stored, answered by chat.message, the reply stored and streamed.
    let m = api.post(
        "/v1/messages",
        &alice,
        json!({"sessionId": "chat-7", "message": "What runs here?"}),
    );
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(m.json["sessionId"], "chat-7");
    assert_eq!(m.json["reply"], "stand-in answer: What runs here?");
    let stored = pg.query(&format!(
        "select string_agg(sender || ':' || content, '|' order by timestamp) from chat_messages_realtime where session_id = 'chat-7' and user_id = '{ALICE}'"
    ));
    assert_eq!(
        stored,
        "user:What runs here?|assistant:stand-in answer: What runs here?"
    );
    let s = api.stream(
        "/functions/v1/chat-gateway",
        &alice,
        json!({"action": "send_message", "session_id": "chat-8", "content": "Hello?"}),
    );
    assert_eq!(s.status, 200, "{}", s.text);
    let events = s.events();
    assert!(events.iter().any(|(e, _)| e == "status"), "{events:?}");
    let (last, body) = events.last().unwrap();
    assert_eq!(last, "result", "{events:?}");
    assert_eq!(body["reply"], "stand-in answer: Hello?");

    // Text the API server's YAML reader would refuse raw (DEL, C1 controls) is answered and
    // stored, and so is what PostgreSQL cannot store refused with a 400.
    let odd = "bell\u{7f} csi\u{9b} end";
    let m = api.post(
        "/v1/messages",
        &alice,
        json!({"sessionId": "chat-odd", "message": odd}),
    );
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(m.json["reply"], format!("stand-in answer: {odd}"));
    let nul = api.post(
        "/v1/messages",
        &alice,
        json!({"sessionId": "chat-nul", "message": "a\u{0}b"}),
    );
    assert_eq!((nul.status, nul.code()), (400, "InvalidRequest"), "{}", nul.text);

    // The rows are the caller's under row-level security, and no one else's.
    let rls = |user: &str| {
        pg.query(&format!(
            "begin; set local role authenticated; \
             select set_config('request.jwt.claims', '{{\"sub\": \"{user}\", \"role\": \"authenticated\"}}', true); \
             select count(*) from public.distributed_agent_tasks where session_id in ('s-1', 'chat-7'); commit;"
        ))
    };
    wait_until(Duration::from_secs(30), "alice to see her tasks' rows", || {
        rls(ALICE).lines().any(|l| l.trim() == "2")
    });
    assert!(
        rls(BOB).lines().any(|l| l.trim() == "0"),
        "bob sees none of alice's rows"
    );

    // Per address, before any token is read: a flood from one address is refused, whoever
    // it claims to be, and is not audited row by row.
    let strict = GatewayProcess::start(
        c,
        NS,
        &pg.url(),
        "http://127.0.0.1:9/auth/v1/.well-known/jwks.json",
        &["--address-rate", "1/3"],
    );
    let strict_api = strict.client();
    let answers: Vec<u16> = [&alice, &bob, &alice, &bob, &alice]
        .iter()
        .map(|t| strict_api.get("/v1/languages", t).status)
        .collect();
    assert_eq!(&answers[..3], &[200, 200, 200], "{answers:?}");
    assert!(answers[3..].contains(&429), "{answers:?}");
    drop(strict);

    // Rate limits: past the burst, 429 with Retry-After; other users are not held back.
    let flood: Vec<_> = (0..40).map(|_| api.get("/v1/languages", &alice)).collect();
    let limited = flood
        .iter()
        .find(|r| r.status == 429)
        .expect("a request over the user's rate");
    assert_eq!(limited.code(), "RateLimited");
    assert!(
        limited
            .retry_after
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1))
    );
    assert_eq!(api.get("/v1/languages", &bob).status, 200);

    // The audit: who did what, and what was refused.
    wait_until(Duration::from_secs(10), "the audit", || {
        pg.query(&format!(
            "select count(*) from cogo_gateway_audit where user_id = '{ALICE}' and action = 'agent_task' and task = '{name}' and status = 201"
        )) == "1"
    });
    assert_ne!(
        pg.query("select count(*) from cogo_gateway_audit where code = 'MissingToken' and user_id is null"),
        "0"
    );
    assert_ne!(
        pg.query(&format!("select count(*) from cogo_gateway_audit where user_id = '{BOB}' and code = 'PermissionDenied' and action = 'agent_task'")),
        "0"
    );
    assert_ne!(
        pg.query(&format!(
            "select count(*) from cogo_gateway_audit where user_id = '{ALICE}' and status = 429"
        )),
        "0"
    );

    // Without a model, or without an Orchestrator, the model's actions say so and store nothing.
    let greet = |t: &str| api.post("/v1/greeting", t, json!({"language": "en"}));
    let before = pg.query("select count(*) from chat_messages_realtime");
    c.kubectl_ok(
        &[
            "patch",
            "cogoagent",
            "orchestrator",
            "-n",
            NS,
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/spec/model"}]"#,
        ],
        None,
    );
    let g = greet(&bob);
    assert_eq!((g.status, g.code()), (503, "NoModel"), "{}", g.text);
    assert!(g.json["message"].as_str().unwrap().contains("spec.model"));
    c.kubectl_ok(&["delete", "cogoagent", "orchestrator", "-n", NS], None);
    // Dave's row is of another domain; a top-level `permissions` claim grants what it names.
    let dave = token(DAVE, json!({"permissions": ["chat:send"]}), Signer::Ec);
    let m = api.post(
        "/v1/messages",
        &dave,
        json!({"sessionId": "none", "message": "anyone?"}),
    );
    assert_eq!((m.status, m.code()), (503, "NoAgent"), "{}", m.text);
    assert_eq!(
        pg.query("select count(*) from chat_messages_realtime"),
        before,
        "nothing stored"
    );
}

/// Schemathesis (from PyPI, in the test virtualenv) generates requests from the gateway's
/// OpenAPI document, valid and invalid, and checks every answer: no 5xx, a status the document
/// names, the content type and body schema it names, and invalid data refused.
#[test]
fn the_openapi_document_holds_against_the_running_gateway() {
    let c: &'static Cluster = Box::leak(Box::new(cluster()));
    let setup = Setup::start(
        c,
        "e2e-gateway-schema",
        &[
            "--user-rate",
            "1000/2000",
            "--address-rate",
            "1000/2000",
            "--answer-timeout-seconds",
            "20",
        ],
    );
    let schemathesis = cogo_e2e::pyenv::dir().join("bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run `make tools` (or `make pyenv`), which installs schemathesis into the test virtualenv",
        schemathesis.display()
    );
    let base = format!("http://127.0.0.1:{}", setup.gw.port);
    let alice = token(ALICE, json!({}), Signer::Secret);
    let report = std::env::temp_dir().join(format!("cogo-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&report).unwrap();
    let out = std::process::Command::new(&schemathesis)
        // Its cache goes where it runs: not into the repository.
        .current_dir(&report)
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["--header", &format!("Authorization: Bearer {alice}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
        ])
        .args(["--max-examples", "15", "--seed", "20261130", "--request-timeout", "60", "--workers", "2"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&report);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\ngateway log: {}",
        setup.gw.log.display()
    );
    // It did test every operation, with many cases.
    assert!(
        text.contains("Tested: 6"),
        "not every operation was tested:\n{text}"
    );
    let cases: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" generated,")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no count of test cases:\n{text}"));
    assert!(cases >= 100, "only {cases} cases:\n{text}");
    assert!(
        setup.pg.query("select count(*) from cogo_gateway_audit") != "0",
        "the generated requests reached the gateway"
    );
}

/// A gateway that could be fooled refuses to start, saying why.
#[test]
fn the_gateway_refuses_to_start_with_a_short_secret_or_no_key() {
    let c = cluster();
    for (args, expected) in [
        (vec!["--jwt-secret", "short"], "shorter than 32 bytes"),
        (vec![], "set --jwt-secret"),
    ] {
        let out = std::process::Command::new(cogo_e2e::cluster::operator_binary())
            .args(["gateway", "--addr", "127.0.0.1:0", "--namespace", NS])
            .args([
                "--database-url",
                "postgres://postgres@127.0.0.1:9/postgres",
                "--jwt-issuer",
                "x",
            ])
            .args(&args)
            .env("KUBECONFIG", &c.kubeconfig)
            .env_remove("COGO_GATEWAY_JWT_SECRET")
            .output()
            .expect("run the gateway");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
