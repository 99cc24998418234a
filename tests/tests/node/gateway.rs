//! The chat gateway as the chart runs it on the real node: the operator and the gateway as pods
//! (the gateway with its own read-only ServiceAccount), the database a real PostgreSQL on the
//! node's address, the Orchestrator a pod whose model is a stand-in of the Gemini API. A user's
//! streamed `send_message` stores the message, runs `chat.message`, streams the reply and stores
//! it; the task's mirror row is that user's under row-level security and no one else's.

use std::{net::SocketAddr, time::Duration};

use cogo_e2e::{
    cluster::{NODE_ADDRESS, Namespace, wait_until},
    gateway::{GatewayClient, ISSUER, JWT_SECRET, Signer, token},
    postgres::Postgres,
    standin::{Reply, StandIn},
};
use serde_json::{Value, json};

use super::cluster;

const RELEASE_NS: &str = "e2e-gateway-release";
const AGENTS_NS: &str = "e2e-gateway-agents";
const KEY: &str = "gateway-node-key";
const ALICE: &str = "00000000-0000-4000-8000-0000000a11ce";
const BOB: &str = "00000000-0000-4000-8000-000000000b0b";

#[test]
fn a_message_through_the_gateway_pod_is_answered_and_owned_by_its_sender() {
    let c = cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gemini = rt
        .block_on(StandIn::gemini_on(
            SocketAddr::new(NODE_ADDRESS.parse().unwrap(), 0),
            KEY,
        ))
        .expect("the stand-in on the node address");
    let pg = Postgres::start_for_pods("gateway-node");
    // The Role the chart gives the gateway lives in the namespace it serves.
    let ns = Namespace::create(&c, AGENTS_NS);
    let secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: gateway-db}}\nstringData: {{url: '{}'}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: gateway-jwt}}\nstringData: {{jwt-secret: '{JWT_SECRET}'}}\n",
        pg.pod_url()
    );
    c.helm_install_with(
        RELEASE_NS,
        &[
            "image.pullPolicy=Never",
            "runtimeImages.pullPolicy=Never",
            "supabase.secretName=gateway-db",
            &format!("supabase.intakeNamespace={AGENTS_NS}"),
            "gateway.enabled=true",
            "gateway.replicaCount=1",
            "gateway.jwtSecretName=gateway-jwt",
            &format!("gateway.issuer={ISSUER}"),
        ],
        &secrets,
    );
    let _release = Namespace::adopt(&c, RELEASE_NS);
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "gemini",
        &format!("--from-literal=api-key={KEY}"),
    ]);
    ns.apply_ok(&super::workflows::agent(
        "orchestrator",
        "Orchestrator",
        8,
        &gemini.endpoint(),
    ));
    ns.wait("cogoagent/orchestrator", "condition=Ready", 180);
    for u in [ALICE, BOB] {
        pg.query(&format!(
            "insert into auth.users (id) values ('{u}') on conflict do nothing"
        ));
    }
    pg.query(&format!(
        "insert into public.user_roles (user_id, role, permissions) values ('{ALICE}', 'cogo_agent', '{{chat:*,task:*,agent:*}}')"
    ));
    let pod: Value = serde_json::from_str(&c.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            RELEASE_NS,
            "-l",
            "app.kubernetes.io/name=cogo-operator-gateway",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let pod = &pod["items"][0];
    assert_eq!(pod["spec"]["nodeName"], "cogo-node");
    assert_eq!(pod["spec"]["serviceAccountName"], "cogo-cogo-operator-gateway");
    let ip = pod["status"]["podIP"]
        .as_str()
        .expect("the gateway pod's address");
    let api = GatewayClient::new(&format!("http://{ip}:8090"));
    let alice = token(ALICE, json!({}), Signer::Secret);

    let status = api.get("/v1/status", &alice);
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(
        status.json["agents"][0]["name"], "orchestrator",
        "{}",
        status.json
    );

    // The answer takes a second, so the task is seen running (a task done within the broker's
    // coalescing window goes from Pending to its outcome in one status write).
    gemini.script([Reply::Slow(Duration::from_secs(1), Box::new(Reply::Unscripted))]);
    let answer = api.stream(
        "/functions/v1/chat-gateway",
        &alice,
        json!({"action": "send_message", "sessionId": "node-chat", "message": "Which agents run?", "language": "en"}),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    let events = answer.events();
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "status" && d["phase"] == "Running"),
        "the task's progress is streamed: {events:?}"
    );
    let (last, reply) = events.last().unwrap();
    assert_eq!(last, "result", "{events:?}");
    assert_eq!(reply["reply"], "stand-in answer: Which agents run?");
    let task = reply["task"].as_str().unwrap().to_string();
    assert!(
        gemini
            .requests()
            .iter()
            .any(|r| r.body.to_string().contains("Which agents run?")),
        "the Orchestrator pod asked the model"
    );

    // The message and the reply are stored, as the user's.
    assert_eq!(
        pg.query(&format!(
            "select string_agg(sender || ':' || content, '|' order by timestamp) from chat_messages_realtime \
             where session_id = 'node-chat' and user_id = '{ALICE}'"
        )),
        "user:Which agents run?|assistant:stand-in answer: Which agents run?"
    );
    // The task ran in the namespace the gateway serves, as the user's, sealed by the intake.
    let t = c
        .get_json(AGENTS_NS, &format!("agenttask/{task}"))
        .expect("the task");
    assert_eq!(t["spec"]["requester"]["userId"], ALICE);
    assert_eq!(t["spec"]["requester"]["sessionId"], "node-chat");
    assert_eq!(t["status"]["phase"], "Succeeded");

    // Read as PostgREST reads for a signed-in user: role `authenticated`, the JWT's claims.
    let as_user = |user: &str, sql: &str| {
        pg.query(&format!(
            "begin; set local role authenticated; \
             set local request.jwt.claims = '{{\"sub\": \"{user}\", \"role\": \"authenticated\"}}'; {sql}; commit;"
        ))
    };
    let own = "select count(*) from public.distributed_agent_tasks where session_id = 'node-chat' and status = 'succeeded'";
    wait_until(Duration::from_secs(30), "the mirror row, final", || {
        as_user(ALICE, own) == "1"
    });
    assert_eq!(as_user(BOB, own), "0", "another user sees no row of it");
    assert_eq!(
        as_user(
            BOB,
            "select count(*) from public.chat_messages_realtime where session_id = 'node-chat'"
        ),
        "0"
    );
    assert_eq!(
        as_user(
            ALICE,
            "select result_data->>'reply' from public.distributed_agent_tasks where session_id = 'node-chat'"
        ),
        "stand-in answer: Which agents run?"
    );
}
