//! The model-backed roles in a process of their own: Research (`research.query`,
//! `research.summarize`), `llm.generate` and the Orchestrator's `workflow.plan` and
//! `chat.message`, pulling from an in-memory broker, their models being the real clients
//! against local stand-ins of the Gemini and OpenAI APIs, and pages served on loopback.

use std::{sync::Arc, time::Duration};

use axum::{Router, response::Html, routing::get};
use cogo_agent::{
    broker::{SharedBroker, memory::MemoryBroker},
    handler::Registry,
    llm::{Backoff, Model, ModelConfig, ModelMetrics, SharedModel},
    pod, pull,
    roles::{self, RoleConfig, research::fetch::FetchPolicy},
};
use cogo_api::{
    AgentRole,
    agent::ModelProvider,
    broker::{CompleteRequest, Outcome},
};
use cogo_e2e::standin::{Reply, StandIn};
use serde_json::{Value, json};
use tokio::sync::watch;

const KEY: &str = "k-123";

/// Pods of `roles` sharing one registry and one in-memory broker (so sub-tasks of any of
/// those roles run), until dropped.
struct Pods {
    broker: Arc<MemoryBroker>,
    _stop: watch::Sender<bool>,
}

fn start(roles_run: &[AgentRole], model: Option<SharedModel>, fetch: FetchPolicy) -> Pods {
    let broker = Arc::new(MemoryBroker::new("pod-0", 1));
    let mut registry = Registry::default();
    let mut lanes = Vec::new();
    for role in roles_run {
        let config = RoleConfig {
            role: *role,
            agent: "agent".into(),
            namespace: "memory".into(),
            pod: "pod-0".into(),
            concurrency: 8,
            broker: Some(broker.clone() as SharedBroker),
            metrics: pod::Metrics::new("agent", "role", role.slug()),
            worker_ping: Duration::from_secs(5),
            no_worker_for: Duration::from_secs(2),
            model: model.clone(),
            fetch: fetch.clone(),
            storage: Default::default(),
            index: Default::default(),
        };
        let parts = roles::register(*role, &config, &mut registry);
        if lanes.is_empty() {
            lanes = parts.lanes;
        }
    }
    let (stop, rx) = watch::channel(false);
    tokio::spawn(pull::run(
        broker.clone(),
        Arc::new(registry),
        lanes,
        rx,
        Duration::from_secs(1),
    ));
    Pods { broker, _stop: stop }
}

fn model(provider: ModelProvider, s: &StandIn) -> SharedModel {
    let config = ModelConfig {
        provider,
        name: "test-model".into(),
        endpoint: Some(s.endpoint()),
        api_key: KEY.into(),
        timeout: Duration::from_secs(10),
        attempts: 2,
    };
    let m = Model::new(config.client().unwrap(), 2, ModelMetrics::default()).with_backoff(Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    });
    Arc::new(m)
}

fn loopback() -> FetchPolicy {
    FetchPolicy {
        allow_private: true,
        ..FetchPolicy::default()
    }
}

impl Pods {
    async fn run(&self, name: &str, task_type: &str, input: Value) -> CompleteRequest {
        self.broker.submit(name, task_type, input);
        self.broker
            .outcome(name, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{name} did not finish"))
    }

    async fn result(&self, name: &str, task_type: &str, input: Value) -> Value {
        let done = self.run(name, task_type, input).await;
        assert_eq!(done.outcome, Outcome::Succeeded, "{name}: {:?}", done.error);
        done.result.unwrap()
    }
}

/// Two pages on loopback, and a redirect to the second.
async fn pages() -> String {
    let app = Router::new()
        .route(
            "/rust",
            get(|| async {
                Html("<html><head><title>Rust ownership</title></head><body><nav>menu</nav><main>\
                      <p>Each value in Rust has an owner: the borrow checker enforces it.</p></main></body></html>")
            }),
        )
        .route(
            "/go",
            get(|| async {
                Html("<html><head><title>Go scheduling</title></head><body><p>Goroutines are multiplexed onto threads.</p></body></html>")
            }),
        )
        .route(
            "/moved",
            get(|| async { axum::response::Redirect::permanent("/go") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn research_answers_from_the_pages_it_reads_with_their_sources() {
    let s = StandIn::gemini(KEY).await;
    let pods = start(
        &[AgentRole::Research],
        Some(model(ModelProvider::Gemini, &s)),
        loopback(),
    );
    let base = pages().await;
    let r = pods
        .result(
            "q",
            "research.query",
            json!({"question": "How do Rust and Go manage memory and threads?",
                   "urls": [format!("{base}/rust"), format!("{base}/moved")]}),
        )
        .await;
    // The stand-in answers with the prompt it was given: the pages' text reached the model.
    let answer = r["answer"].as_str().unwrap();
    assert!(answer.contains("the borrow checker enforces it"), "{answer}");
    assert!(answer.contains("Goroutines are multiplexed"), "{answer}");
    assert!(!answer.contains("menu"), "navigation is left out: {answer}");
    assert_eq!(r["sources"][0]["title"], "Rust ownership");
    assert_eq!(
        r["sources"][1]["url"],
        format!("{base}/go"),
        "the URL after the redirect"
    );
    assert!(
        r["sources"][1]["excerpt"]
            .as_str()
            .unwrap()
            .starts_with("Goroutines")
    );
    assert_eq!(r["usage"]["model"], "test-model");
    assert!(r["usage"]["inputTokens"].as_u64().unwrap() > 10);
    let sent = &s.requests()[0].body;
    assert!(
        sent["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("cite")
    );

    // maxSources bounds the sources.
    let r = pods
        .result(
            "one",
            "research.query",
            json!({"question": "q", "urls": [format!("{base}/rust"), format!("{base}/go")], "maxSources": 1}),
        )
        .await;
    assert_eq!(r["sources"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn research_refuses_private_addresses_unless_allowed_and_bad_input_at_once() {
    let s = StandIn::gemini(KEY).await;
    let pods = start(
        &[AgentRole::Research],
        Some(model(ModelProvider::Gemini, &s)),
        FetchPolicy::default(),
    );
    let base = pages().await;
    let done = pods
        .run(
            "private",
            "research.query",
            json!({"question": "q", "urls": [format!("{base}/rust")]}),
        )
        .await;
    assert_eq!((done.outcome, done.retryable), (Outcome::Failed, false));
    let error = done.error.unwrap();
    assert!(
        error.contains("127.0.0.1") && error.contains("COGO_RESEARCH_ALLOW_PRIVATE"),
        "{error}"
    );
    for (input, why) in [
        (json!({"question": "q", "url": "x"}), "unknown field `url`"),
        (json!({"question": ""}), "question is empty"),
        (json!({"question": "q", "urls": ["ftp://example.org/a"]}), "ftp"),
        (
            json!({"question": "q", "maxSources": 0}),
            "maxSources must be 1 to 20",
        ),
    ] {
        let done = pods
            .run(&format!("bad-{}", why.len()), "research.query", input.clone())
            .await;
        assert_eq!(done.outcome, Outcome::Failed, "{input}");
        assert!(
            done.error.as_deref().unwrap().contains(why),
            "{input}: {:?}",
            done.error
        );
        assert!(!done.retryable);
    }
    assert!(
        s.requests().is_empty(),
        "the model is not asked when the input is bad"
    );
}

#[tokio::test]
async fn research_searches_with_gemini_grounding_only() {
    let s = StandIn::gemini(KEY).await;
    s.script([Reply::Grounded {
        text: "It is Seoul [1].".into(),
        sources: vec![("https://example.org/korea".into(), "Korea".into())],
    }]);
    let pods = start(
        &[AgentRole::Research],
        Some(model(ModelProvider::Gemini, &s)),
        loopback(),
    );
    let r = pods
        .result(
            "s",
            "research.query",
            json!({"question": "capital of Korea?", "search": true}),
        )
        .await;
    assert_eq!(r["answer"], "It is Seoul [1].");
    assert_eq!(
        r["sources"],
        json!([{"url": "https://example.org/korea", "title": "Korea", "excerpt": ""}])
    );
    assert_eq!(s.requests()[0].body["tools"], json!([{"googleSearch": {}}]));

    let o = StandIn::openai(KEY).await;
    let pods = start(
        &[AgentRole::Research],
        Some(model(ModelProvider::OpenAICompatible, &o)),
        loopback(),
    );
    let done = pods
        .run("s2", "research.query", json!({"question": "q", "search": true}))
        .await;
    assert!(done.error.unwrap().contains("needs a Gemini model"));
    assert!(o.requests().is_empty());
}

#[tokio::test]
async fn summaries_of_texts_and_pages_and_generation_as_text_or_json() {
    let s = StandIn::openai(KEY).await;
    let pods = start(
        &[AgentRole::Research],
        Some(model(ModelProvider::OpenAICompatible, &s)),
        loopback(),
    );
    let base = pages().await;
    s.script([Reply::Text(" Rust values have one owner. ".into())]);
    let r = pods
        .result(
            "sum",
            "research.summarize",
            json!({"url": format!("{base}/rust"), "maxWords": 20, "language": "ko"}),
        )
        .await;
    assert_eq!(r["summary"], "Rust values have one owner.");
    let sent = &s.requests()[0].body;
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("at most 20 words") && system.contains("ko"),
        "{system}"
    );
    assert!(
        sent["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("borrow checker")
    );
    let both = pods
        .run(
            "both",
            "research.summarize",
            json!({"text": "a", "url": format!("{base}/rust")}),
        )
        .await;
    assert!(both.error.unwrap().contains("exactly one of text and url"));

    let r = pods
        .result(
            "gen",
            "llm.generate",
            json!({"prompt": "say hi", "system": "be brief"}),
        )
        .await;
    assert_eq!(r["text"], "stand-in answer: say hi");
    let r = pods
        .result(
            "json",
            "llm.generate",
            json!({"prompt": "rate", "responseSchema": {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}}),
        )
        .await;
    assert!(r["json"]["score"].is_number() && r.get("text").is_none(), "{r}");
}

#[tokio::test]
async fn model_failures_fail_tasks_saying_which_and_whether_to_retry() {
    let s = StandIn::gemini(KEY).await;
    let pods = start(
        &[AgentRole::Research],
        Some(model(ModelProvider::Gemini, &s)),
        loopback(),
    );
    s.script([Reply::Status {
        code: 400,
        retry_after: None,
    }]);
    let done = pods.run("bad", "llm.generate", json!({"prompt": "x"})).await;
    assert_eq!((done.outcome, done.retryable), (Outcome::Failed, false));
    assert!(done.error.unwrap().contains("refused the request as invalid"));
    s.script([Reply::SafetyBlock]);
    let done = pods.run("unsafe", "llm.generate", json!({"prompt": "x"})).await;
    assert!(!done.retryable && done.error.unwrap().contains("safety"));
    s.script((0..2).map(|_| Reply::Status {
        code: 503,
        retry_after: None,
    }));
    let done = pods.run("down", "llm.generate", json!({"prompt": "x"})).await;
    assert!(
        done.retryable,
        "the task's retry policy may try a provider that is down again"
    );
    assert!(done.error.unwrap().contains("unavailable (503)"));

    let none = start(&[AgentRole::Research], None, loopback());
    let done = none
        .run("nomodel", "research.query", json!({"question": "q"}))
        .await;
    assert!(done.error.unwrap().contains("set spec.model on its CogoAgent"));
}

#[tokio::test]
async fn a_planned_workflow_runs_as_planned_and_once() {
    let s = StandIn::openai(KEY).await;
    let pods = start(
        &[AgentRole::Orchestrator, AgentRole::Research],
        Some(model(ModelProvider::OpenAICompatible, &s)),
        loopback(),
    );
    // A first plan with a misspelt field: the model is told and plans again.
    s.script([
        Reply::Calls(vec![(
            "llm_generate".into(),
            json!({"id": "draft", "input": {"promt": "write a haiku"}}),
        )]),
        Reply::Calls(vec![
            ("llm_generate".into(), json!({"id": "draft", "input": {"prompt": "write a haiku"}})),
            (
                "research_summarize".into(),
                json!({"id": "short", "dependsOn": ["draft"], "input": {"text": "{{steps.draft.result.text}}", "maxWords": 5}}),
            ),
        ]),
    ]);
    let r = pods
        .result(
            "wp",
            "workflow.plan",
            json!({"goal": "a short haiku", "maxSteps": 3}),
        )
        .await;
    assert_eq!(r["phase"], "Succeeded", "{r}");
    assert_eq!(r["plan"].as_array().unwrap().len(), 2);
    assert_eq!(
        r["steps"]["draft"]["result"]["text"],
        "stand-in answer: write a haiku"
    );
    assert_eq!(r["steps"]["short"]["task"], "wp-short");
    // The summary was asked of the draft's text.
    assert_eq!(
        r["steps"]["short"]["result"]["summary"],
        "stand-in answer: stand-in answer: write a haiku"
    );
    let second = &s.requests()[1].body;
    let error = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(
        error["content"]
            .as_str()
            .unwrap()
            .contains("unknown field `promt`"),
        "{error}"
    );
    let tools: Vec<&str> = second["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"research_query") && tools.contains(&"python_execute"),
        "{tools:?}"
    );
    assert_eq!(
        pods.broker.subtasks_of("wp"),
        ["wp--plan", "wp-draft", "wp-short"],
        "the plan is recorded, then each step runs once"
    );
    let calls = s.requests().len();

    // Another attempt of the same task runs the recorded plan without asking the model.
    let again = pods
        .result("wp", "workflow.plan", json!({"goal": "a short haiku"}))
        .await;
    assert_eq!(again["steps"], r["steps"]);
    assert_eq!(s.requests().len(), calls, "no new model call: the steps had run");
}

#[tokio::test]
async fn a_plan_that_never_passes_the_checks_fails_naming_the_problem() {
    let s = StandIn::gemini(KEY).await;
    let pods = start(
        &[AgentRole::Orchestrator],
        Some(model(ModelProvider::Gemini, &s)),
        loopback(),
    );
    let cyclic = Reply::Calls(vec![
        (
            "llm_generate".into(),
            json!({"id": "a", "dependsOn": ["b"], "input": {"prompt": "x"}}),
        ),
        (
            "llm_generate".into(),
            json!({"id": "b", "dependsOn": ["a"], "input": {"prompt": "y"}}),
        ),
    ]);
    s.script([cyclic.clone(), cyclic.clone(), cyclic]);
    let done = pods.run("loop", "workflow.plan", json!({"goal": "g"})).await;
    assert_eq!(done.outcome, Outcome::Failed);
    let error = done.error.unwrap();
    assert!(error.contains("form a cycle"), "{error}");
    assert!(pods.broker.subtasks_of("loop").is_empty(), "nothing ran");
    s.script([Reply::Text("I would rather not".into())]);
    let done = pods.run("none", "workflow.plan", json!({"goal": "g"})).await;
    assert!(
        done.error
            .unwrap()
            .contains("planned no steps; it said: I would rather not")
    );
}

#[tokio::test]
async fn chat_answers_calling_catalogue_types_as_sub_tasks() {
    let s = StandIn::gemini(KEY).await;
    let pods = start(
        &[AgentRole::Orchestrator, AgentRole::Research],
        Some(model(ModelProvider::Gemini, &s)),
        loopback(),
    );
    s.script([
        Reply::Calls(vec![(
            "research_summarize".into(),
            json!({"text": "Cogo runs agents on Kubernetes.", "maxWords": 10}),
        )]),
        // The sub-task's own model call (the summary), then the reply.
        Reply::Text("Agents on Kubernetes.".into()),
        Reply::Text("Cogo runs AI agents on Kubernetes.".into()),
    ]);
    let r = pods
        .result(
            "chat",
            "chat.message",
            json!({"sessionId": "s1", "message": "What is Cogo?", "language": "en"}),
        )
        .await;
    assert_eq!(r["reply"], "Cogo runs AI agents on Kubernetes.");
    assert_eq!(r["tasks"], json!(["chat-c1"]));
    assert!(r["usage"]["inputTokens"].as_u64().unwrap() > 0);
    // The sub-task's result went back to the model as the function's response.
    let requests = s.requests();
    let last = &requests.last().unwrap().body;
    let response = &last["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(response["name"], "research_summarize");
    assert_eq!(
        response["response"]["summary"], "Agents on Kubernetes.",
        "{response}"
    );

    // Tools past the limit are refused, and the model must answer.
    s.script(
        (0..10).map(|i| Reply::Calls(vec![("llm_generate".into(), json!({"prompt": format!("p{i}")}))])),
    );
    let done = pods
        .run(
            "greedy",
            "chat.message",
            json!({"sessionId": "s1", "message": "loop"}),
        )
        .await;
    assert_eq!(done.outcome, Outcome::Succeeded, "{:?}", done.error);
    assert!(done.result.unwrap()["tasks"].as_array().unwrap().len() <= 8);
}

#[tokio::test]
async fn a_greeting_is_the_model_s_answer_in_the_asked_language() {
    let s = StandIn::gemini(KEY).await;
    let pods = start(
        &[AgentRole::Orchestrator],
        Some(model(ModelProvider::Gemini, &s)),
        loopback(),
    );
    s.script([Reply::Text("  안녕하세요, 민수님!  ".into())]);
    let r = pods
        .result(
            "hello",
            "chat.greeting",
            json!({"language": "ko", "name": "민수"}),
        )
        .await;
    assert_eq!(r["greeting"], "안녕하세요, 민수님!");
    assert_eq!(r["language"], "ko");
    let requests = s.requests();
    let asked = requests.last().unwrap().body.to_string();
    assert!(asked.contains("code ko") && asked.contains("민수"), "{asked}");

    // No model: the task fails at once, saying what to set.
    let bare = start(&[AgentRole::Orchestrator], None, loopback());
    let done = bare.run("bare", "chat.greeting", json!({"language": "en"})).await;
    assert_eq!(done.outcome, Outcome::Failed);
    assert!(done.error.unwrap().contains("set spec.model"));
}

/// A chat retried after its first attempt started a tool call: the same call is taken again,
/// another call (the model chose differently) never gets the first one's result.
#[tokio::test]
async fn a_retried_chat_never_takes_another_call_s_result() {
    use cogo_agent::{
        handler::{TaskContext, TaskHandler, local_task},
        roles::orchestrator::chat::Chat,
    };
    let s = StandIn::gemini(KEY).await;
    let model = model(ModelProvider::Gemini, &s);
    let pods = start(&[AgentRole::Research], Some(model.clone()), loopback());
    let attempt = || {
        let (_tx, mut ctx) = TaskContext::detached(local_task("talk", "chat.message", Value::Null));
        ctx.broker = Some(pods.broker.clone() as SharedBroker);
        (_tx, ctx)
    };
    let chat = Chat { model: Some(model) };
    let input = json!({"sessionId": "s", "message": "hi"});
    s.script([
        Reply::Calls(vec![("research_summarize".into(), json!({"text": "first"}))]),
        Reply::Text("summary of first".into()),
        Reply::Text("reply one".into()),
    ]);
    let (_keep, ctx) = attempt();
    let one = chat.run(&input, ctx).await.unwrap();
    assert_eq!(one["tasks"], json!(["talk-c1"]));
    s.script([
        Reply::Calls(vec![("llm_generate".into(), json!({"prompt": "second"}))]),
        Reply::Text("generated".into()),
        Reply::Text("reply two".into()),
    ]);
    let (_keep, ctx) = attempt();
    let two = chat.run(&input, ctx).await.unwrap();
    assert_eq!(two["tasks"], json!(["talk-c2"]), "c1 is another call's");
    let requests = s.requests();
    let response = &requests.last().unwrap().body["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(response["response"]["text"], "generated", "{response}");
}
