//! The OpenAI Chat Completions stand-in: `POST /v1/chat/completions`, the key in
//! `Authorization: Bearer`, answers as `chat.completion` or, with `stream: true`, as
//! `chat.completion.chunk` events ending with `data: [DONE]`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value, json};

use super::{Answer, Call, Incoming, Reply, Want, pieces, tokens};

/// The documented top-level request fields.
const REQUEST: &str = "model messages audio frequency_penalty function_call functions logit_bias \
    logprobs max_completion_tokens max_tokens metadata modalities n parallel_tool_calls prediction \
    presence_penalty prompt_cache_key prompt_cache_retention reasoning_effort response_format \
    safety_identifier seed service_tier stop store stream stream_options temperature tool_choice \
    tools top_logprobs top_p user verbosity web_search_options";

/// Checks a request as the API would; a refusal is an answer in its error format.
pub(super) fn check(request: &Incoming, key: &str) -> Result<Call, Answer> {
    if request.path != "/v1/chat/completions" || request.method != "POST" {
        let message = format!("Invalid URL ({} {})", request.method, request.path);
        return Err(error(404, message, None, None));
    }
    match request.header("authorization").map(|h| h.strip_prefix("Bearer ")) {
        None | Some(None) => {
            let message =
                "You didn't provide an API key: send it in the Authorization header as `Bearer <key>`.";
            return Err(error(401, message, None, Some("invalid_api_key")));
        }
        Some(Some(given)) if given != key => {
            return Err(error(
                401,
                "Incorrect API key provided.",
                None,
                Some("invalid_api_key"),
            ));
        }
        Some(Some(_)) => {}
    }
    let body: Value = serde_json::from_slice(&request.body).map_err(|e| {
        let message = format!("We could not parse the JSON body of your request ({e}).");
        error(400, message, None, None)
    })?;
    let top = body
        .as_object()
        .ok_or_else(|| bad("The request body must be a JSON object.", None))?;
    if let Some(name) = top
        .keys()
        .find(|name| !REQUEST.split_whitespace().any(|known| known == *name))
    {
        return Err(bad(
            &format!("Unrecognized request argument supplied: {name}"),
            None,
        ));
    }
    let model = top.get("model").and_then(Value::as_str).filter(|m| !m.is_empty());
    let model = model.ok_or_else(|| bad("You must provide a model parameter.", Some("model")))?;
    let messages = top
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty());
    let messages = messages.ok_or_else(|| bad("'messages' must be a non-empty array.", Some("messages")))?;
    let (last_user, chars) = conversation(messages)?;

    let tools = top.get("tools").map(|t| {
        t.as_array()
            .ok_or_else(|| bad("'tools' must be an array.", Some("tools")))
    });
    let mut names = Vec::new();
    for (i, tool) in tools.transpose()?.into_iter().flatten().enumerate() {
        let at = format!("tools[{i}]");
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("Invalid value for '{at}.type': supported values are 'function'."),
                Some(&at),
            ));
        }
        let name = tool
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !function_name(name) {
            let message = format!(
                "Invalid '{at}.function.name': {name:?} does not match the pattern '^[a-zA-Z0-9_-]{{1,64}}$' \
                 (letters, digits, underscores and dashes only: no dots)."
            );
            return Err(bad(&message, Some(&format!("{at}.function.name"))));
        }
        names.push(name);
    }
    match top.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(choice)) if ["none", "auto", "required"].contains(&choice.as_str()) => {}
        Some(choice)
            if choice["type"] == "function"
                && choice["function"]["name"]
                    .as_str()
                    .is_some_and(|n| names.contains(&n)) => {}
        Some(_) => {
            let message = "Invalid 'tool_choice': use 'none', 'auto', 'required' or a function from 'tools'.";
            return Err(bad(message, Some("tool_choice")));
        }
    }

    let want = match top.get("response_format") {
        None | Some(Value::Null) => Want::Text,
        Some(format) => match format["type"].as_str() {
            Some("text") => Want::Text,
            Some("json_object") => {
                if !messages
                    .iter()
                    .any(|m| text_of(&m["content"]).is_some_and(|t| t.to_lowercase().contains("json")))
                {
                    let message = "'messages' must contain the word 'json' in some form, to use 'response_format' \
                                   of type 'json_object'.";
                    return Err(bad(message, Some("messages")));
                }
                Want::Json
            }
            Some("json_schema") => {
                let spec = &format["json_schema"];
                if !spec["name"].as_str().is_some_and(function_name) {
                    let message =
                        "Missing or invalid 'response_format.json_schema.name' (^[a-zA-Z0-9_-]{1,64}$).";
                    return Err(bad(message, Some("response_format.json_schema.name")));
                }
                let schema = spec.get("schema").filter(|s| s.is_object());
                let message = "Missing required parameter: 'response_format.json_schema.schema'.";
                Want::Schema(
                    schema
                        .ok_or_else(|| bad(message, Some("response_format.json_schema.schema")))?
                        .clone(),
                )
            }
            _ => {
                let message = "Invalid 'response_format.type': supported values are 'text', 'json_object' and \
                               'json_schema'.";
                return Err(bad(message, Some("response_format.type")));
            }
        },
    };
    let stream = match top.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => {
            return Err(bad(
                "Invalid type for 'stream': expected a boolean.",
                Some("stream"),
            ));
        }
    };
    let options = top.get("stream_options").filter(|o| !o.is_null());
    if options.is_some() && !stream {
        let message = "The 'stream_options' parameter is only allowed when 'stream' is enabled.";
        return Err(bad(message, Some("stream_options")));
    }
    let choices = top
        .get("n")
        .map_or(Some(1), Value::as_u64)
        .filter(|n| (1..=128).contains(n));
    let choices = choices.ok_or_else(|| bad("Invalid 'n': expected an integer from 1 to 128.", Some("n")))?;
    Ok(Call {
        model: model.to_owned(),
        stream,
        include_usage: options.is_some_and(|o| o["include_usage"] == true),
        choices: choices as usize,
        last_user,
        prompt_tokens: tokens(chars),
        want,
    })
}

/// Checks the messages: roles, tool calls and the tool messages answering them. Returns
/// the text of the last user message and the number of characters of text.
fn conversation(messages: &[Value]) -> Result<(String, usize), Answer> {
    let (mut last_user, mut chars) = (String::new(), 0);
    // The calls of the last assistant message that no tool message has answered yet.
    let mut pending: Vec<&str> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = message["role"].as_str().unwrap_or_default();
        if role != "tool" && !pending.is_empty() {
            let message = format!(
                "An assistant message with 'tool_calls' must be followed by one tool message per \
                 'tool_call_id'; unanswered before {at}: {}.",
                pending.join(", ")
            );
            return Err(bad(&message, Some("messages")));
        }
        let text = text_of(&message["content"]);
        chars += text.as_ref().map_or(0, |t| t.chars().count());
        match role {
            "system" | "developer" | "user" if text.is_none() => {
                let message =
                    format!("Missing or invalid '{at}.content': expected a string or an array of parts.");
                return Err(bad(&message, Some(&format!("{at}.content"))));
            }
            "user" => last_user = text.unwrap_or_default(),
            "system" | "developer" | "function" => {}
            "assistant" => {
                let calls = message.get("tool_calls").filter(|c| !c.is_null());
                let calls = calls.map(|c| {
                    c.as_array()
                        .ok_or_else(|| bad("'tool_calls' must be an array.", Some(&at)))
                });
                for (j, call) in calls.transpose()?.into_iter().flatten().enumerate() {
                    let at = format!("{at}.tool_calls[{j}]");
                    let id = call["id"].as_str().filter(|id| !id.is_empty());
                    let id =
                        id.ok_or_else(|| bad(&format!("Missing required parameter: '{at}.id'."), Some(&at)))?;
                    if call["type"] != "function" || !call["function"]["name"].is_string() {
                        let message = format!("'{at}' needs \"type\": \"function\" and a 'function.name'.");
                        return Err(bad(&message, Some(&at)));
                    }
                    if !call["function"]["arguments"].is_string() {
                        let message = format!(
                            "Invalid type for '{at}.function.arguments': expected a string (the arguments \
                             serialised as JSON), but got {}.",
                            kind(&call["function"]["arguments"])
                        );
                        return Err(bad(&message, Some(&format!("{at}.function.arguments"))));
                    }
                    pending.push(id);
                }
                if pending.is_empty() && text.is_none() {
                    let message = format!("'{at}' needs 'content' or 'tool_calls'.");
                    return Err(bad(&message, Some(&at)));
                }
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                let Some(answered) = pending.iter().position(|p| *p == id) else {
                    let message = format!(
                        "Invalid parameter: '{at}' (role 'tool') must answer a tool call of the assistant \
                         message before it; its tool_call_id {id:?} does not."
                    );
                    return Err(bad(&message, Some(&format!("{at}.tool_call_id"))));
                };
                pending.remove(answered);
                if text.is_none() {
                    return Err(bad(
                        &format!("Missing required parameter: '{at}.content'."),
                        Some(&at),
                    ));
                }
            }
            other => {
                let message = format!(
                    "Invalid value: {other:?}. Supported values are: 'system', 'developer', 'user', 'assistant', \
                     'tool' and 'function'."
                );
                return Err(bad(&message, Some(&format!("{at}.role"))));
            }
        }
    }
    if !pending.is_empty() {
        let message = format!(
            "Tool calls without a tool message answering them: {}.",
            pending.join(", ")
        );
        return Err(bad(&message, Some("messages")));
    }
    Ok((last_user, chars))
}

/// A message's text: a string, or the text parts of an array joined.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(parts.iter().filter_map(|p| p["text"].as_str()).collect()),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A function (or schema) name as the API documents it: `^[a-zA-Z0-9_-]{1,64}$`.
fn function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn bad(message: &str, param: Option<&str>) -> Answer {
    error(400, message, param, None)
}

/// An error in the API's format: `{"error": {"message", "type", "param", "code"}}`.
fn error(status: u16, message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> Answer {
    let (kind, code) = match status {
        429 => ("requests", code.or(Some("rate_limit_exceeded"))),
        500.. => ("server_error", code),
        _ => ("invalid_request_error", code),
    };
    let body = json!({"error": {"message": message.into(), "type": kind, "param": param, "code": code}});
    Answer::json(status, body)
}

/// Renders a reply as a `chat.completion` or, streaming, as `chat.completion.chunk` events.
pub(super) fn render(reply: &Reply, call: &Call, id: u64, ids: &AtomicU64) -> Answer {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let usage = |out: usize| {
        let out = tokens(out);
        json!({"prompt_tokens": call.prompt_tokens, "completion_tokens": out, "total_tokens": call.prompt_tokens + out})
    };
    let head = |object: &str| {
        let head = json!({"id": format!("chatcmpl-standin{id}"), "object": object, "created": created, "model": call.model});
        head.as_object().cloned().unwrap_or_default()
    };
    let completion = |message: Value, finish: &str, out: usize| {
        let choice = |index: usize| json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish});
        let mut body = head("chat.completion");
        body.insert("choices".into(), (0..call.choices).map(choice).collect());
        body.insert("usage".into(), usage(out));
        Answer::json(200, Value::Object(body))
    };
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut body = head("chat.completion.chunk");
        body.insert(
            "choices".into(),
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        );
        if call.include_usage {
            body.insert("usage".into(), Value::Null);
        }
        event(body)
    };
    let end = |mut events: Vec<String>, out: usize| {
        if call.include_usage {
            let mut body = head("chat.completion.chunk");
            body.insert("choices".into(), json!([]));
            body.insert("usage".into(), usage(out));
            events.push(event(body));
        }
        events.push("data: [DONE]\n\n".into());
        Answer::events(events, false)
    };
    let opening = || chunk(json!({"role": "assistant", "content": ""}), None);
    match reply {
        Reply::Text(text) | Reply::Grounded { text, .. } => {
            let out = text.chars().count();
            if !call.stream {
                return completion(
                    json!({"role": "assistant", "content": text, "refusal": null}),
                    "stop",
                    out,
                );
            }
            let mut events = vec![opening()];
            events.extend(
                pieces(text, 3)
                    .into_iter()
                    .map(|piece| chunk(json!({"content": piece}), None)),
            );
            events.push(chunk(json!({}), Some("stop")));
            end(events, out)
        }
        Reply::Calls(calls) => {
            let calls: Vec<(String, &str, String)> = calls
                .iter()
                .map(|(name, args)| {
                    (
                        format!("call_{}", ids.fetch_add(1, Ordering::Relaxed)),
                        name.as_str(),
                        args.to_string(),
                    )
                })
                .collect();
            let out = calls.iter().map(|(_, name, args)| name.len() + args.len()).sum();
            if !call.stream {
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                    .collect();
                let message =
                    json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": tool_calls});
                return completion(message, "tool_calls", out);
            }
            let mut events = vec![chunk(json!({"role": "assistant", "content": null}), None)];
            for (index, (id, name, args)) in calls.iter().enumerate() {
                let start = json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
                events.push(chunk(json!({"tool_calls": [start]}), None));
                for piece in pieces(args, 2) {
                    let more = json!({"index": index, "function": {"arguments": piece}});
                    events.push(chunk(json!({"tool_calls": [more]}), None));
                }
            }
            events.push(chunk(json!({}), Some("tool_calls")));
            end(events, out)
        }
        Reply::Status { code, retry_after } => {
            let message = format!("The stand-in was scripted to answer {code}.");
            error(*code, message, None, None).retry_after(*retry_after)
        }
        Reply::SafetyBlock if call.stream => {
            end(vec![opening(), chunk(json!({}), Some("content_filter"))], 0)
        }
        Reply::SafetyBlock => completion(
            json!({"role": "assistant", "content": null, "refusal": null}),
            "content_filter",
            0,
        ),
        Reply::CutStream(text) => {
            let half: String = text.chars().take(text.chars().count().div_ceil(2)).collect();
            let mut events = vec![opening()];
            events.extend(
                pieces(&half, 2)
                    .into_iter()
                    .map(|piece| chunk(json!({"content": piece}), None)),
            );
            Answer::events(events, true)
        }
        Reply::Slow(_, inner) => render(inner, call, id, ids),
        Reply::Unscripted => render(&super::default_reply(call), call, id, ids),
        Reply::Malformed => Answer::not_json(),
    }
}

fn event(body: Map<String, Value>) -> String {
    format!("data: {}\n\n", Value::Object(body))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::{
        Reply, StandIn,
        testing::{Raw, send, with},
    };

    const KEY: &str = "sk-test";
    const PATH: &str = "/v1/chat/completions";

    fn ask(text: &str) -> Value {
        let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]);
        json!({"model": "gpt-4o-mini", "messages": messages})
    }

    async fn post(standin: &StandIn, body: &Value) -> Raw {
        let headers = [
            ("authorization", "Bearer sk-test"),
            ("content-type", "application/json"),
        ];
        send(standin.addr(), "POST", PATH, &headers, &body.to_string()).await
    }

    /// A conversation where the assistant called `lookup` as `call_1` with `arguments`, then `next`.
    fn after_call(arguments: Value, next: Value) -> Value {
        let call = json!({"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}});
        let assistant = json!({"role": "assistant", "content": null, "tool_calls": [call]});
        with(
            ask(""),
            "/messages",
            json!([{"role": "user", "content": "q"}, assistant, next]),
        )
    }

    /// The text of the first choice, parsed as JSON.
    fn content_json(completion: &Value) -> Value {
        let text = completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        serde_json::from_str(text).expect("JSON content")
    }

    #[tokio::test]
    async fn refuses_wrong_addresses_and_keys() {
        let standin = StandIn::openai(KEY).await;
        let ok = ask("hello").to_string();
        let bearer = [("authorization", "Bearer sk-test")];
        #[rustfmt::skip]
        let cases = [
            ("wrong path", "POST", "/chat/completions", &bearer[..], ok.as_str(), 404, "Invalid URL"),
            ("GET", "GET", PATH, &bearer, "", 404, "Invalid URL"),
            ("no key", "POST", PATH, &[], &ok, 401, "invalid_api_key"),
            ("wrong key", "POST", PATH, &[("authorization", "Bearer sk-other")], &ok, 401, "invalid_api_key"),
            ("not a bearer", "POST", PATH, &[("authorization", "sk-test")], &ok, 401, "invalid_api_key"),
            ("not JSON", "POST", PATH, &bearer, "{\"model\":", 400, "invalid_request_error"),
        ];
        for (name, method, path, headers, body, status, fragment) in cases {
            let answer = send(standin.addr(), method, path, headers, body).await;
            assert_eq!(answer.status, status, "{name}: {}", answer.body);
            let error = answer.json()["error"].to_string();
            assert!(error.contains(fragment), "{name}: {fragment:?} not in {error}");
        }
        let recorded = standin.requests();
        assert_eq!(recorded.len(), cases.len(), "every refusal is recorded");
        assert!(recorded.iter().all(|r| r.status >= 400));
        assert_eq!(recorded[0].path, "/chat/completions");
    }

    #[tokio::test]
    async fn refuses_bad_bodies() {
        let standin = StandIn::openai(KEY).await;
        let ok = ask("hello");
        let tools = |name: &str| {
            with(
                ask("hi"),
                "/tools",
                json!([{"type": "function", "function": {"name": name}}]),
            )
        };
        let format = |format: Value| with(ask("hi"), "/response_format", format);
        let answer = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "r"});
        let choice = json!({"type": "function", "function": {"name": "b"}});
        #[rustfmt::skip]
        let cases = [
            ("unknown field", with(ok.clone(), "/max_output_tokens", json!(5)),
             "Unrecognized request argument supplied: max_output_tokens"),
            ("no model", with(ok.clone(), "/model", json!("")), "model"),
            ("no messages", with(ok.clone(), "/messages", json!([])), "non-empty"),
            ("bad role", with(ok.clone(), "/messages/1/role", json!("model")), "Invalid value: \"model\""),
            ("arguments as an object", after_call(json!({"q": 1}), answer("call_1")), "expected a string"),
            ("a tool message answering nothing", with(ok.clone(), "/messages/1", answer("call_9")),
             "must answer a tool call"),
            ("a tool message with the wrong id", after_call(json!("{}"), answer("call_2")), "must answer a tool call"),
            ("a call left unanswered", after_call(json!("{}"), json!({"role": "user", "content": "and?"})), "call_1"),
            ("a tool call without an id",
             with(after_call(json!("{}"), answer("call_1")), "/messages/1/tool_calls/0/id", json!(null)),
             "Missing required parameter"),
            ("a tool that is not a function", with(ok.clone(), "/tools", json!([{"type": "web_search"}])),
             "supported values are 'function'"),
            ("a dot in a function name", tools("ns.lookup"), "no dots"),
            ("a function name of 65", tools(&"f".repeat(65)), "does not match"),
            ("a tool choice naming no tool", with(tools("a"), "/tool_choice", choice), "tool_choice"),
            ("json_schema without a name", format(json!({"type": "json_schema", "json_schema": {"schema": {}}})),
             "json_schema.name"),
            ("json_schema without a schema", format(json!({"type": "json_schema", "json_schema": {"name": "out"}})),
             "json_schema.schema"),
            ("json_object without 'json' in the messages", format(json!({"type": "json_object"})),
             "must contain the word 'json'"),
            ("stream_options without stream", with(ok.clone(), "/stream_options", json!({"include_usage": true})),
             "only allowed when 'stream' is enabled"),
        ];
        for (name, body, fragment) in &cases {
            let answer = post(&standin, body).await;
            assert_eq!(answer.status, 400, "{name}: {}", answer.body);
            let error = &answer.json()["error"];
            assert_eq!(error["type"], "invalid_request_error", "{name}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(fragment),
                "{name}: {fragment:?} not in {message}"
            );
        }
        assert_eq!(standin.requests().len(), cases.len(), "every refusal is recorded");
    }

    #[tokio::test]
    async fn answers_a_documented_conversation() {
        let standin = StandIn::openai(KEY).await;
        let parameters = json!({"type": "object", "properties": {}});
        let function =
            json!({"name": "look-up_2", "description": "d", "parameters": parameters, "strict": true});
        let call =
            json!({"id": "call_a", "type": "function", "function": {"name": "look-up_2", "arguments": "{}"}});
        let parts = json!([{"type": "text", "text": "second "}, {"type": "text", "text": "turn"}]);
        let body = json!({
            "model": "gpt-4o-mini", "temperature": 0.1, "max_completion_tokens": 50, "seed": 3, "top_p": 1,
            "stop": ["x"], "n": 2, "tools": [{"type": "function", "function": function}], "tool_choice": "auto",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_a", "content": "result"},
                {"role": "user", "content": parts}
            ]
        });
        let answer = post(&standin, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let completion = answer.json();
        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["choices"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            completion["choices"][0]["message"]["content"],
            "stand-in answer: second turn"
        );
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
        let count = |name: &str| completion["usage"][name].as_u64().unwrap_or_default();
        assert!(count("prompt_tokens") > 0 && count("completion_tokens") > 0);
        assert_eq!(
            count("total_tokens"),
            count("prompt_tokens") + count("completion_tokens")
        );
    }

    #[tokio::test]
    async fn json_defaults_follow_the_schema() {
        let standin = StandIn::openai(KEY).await;
        let object = with(
            ask("answer in json"),
            "/response_format",
            json!({"type": "json_object"}),
        );
        let completion = post(&standin, &object).await.json();
        assert_eq!(
            content_json(&completion),
            json!({"answer": "stand-in answer: answer in json"})
        );

        let plan = json!({"type": "object", "required": ["steps", "done"],
                          "properties": {"steps": {"type": "array", "items": {"type": "string"}},
                                         "done": {"type": "boolean"}}});
        let schema = json!({"type": "object", "additionalProperties": false, "required": ["plan"],
                            "properties": {"plan": {"$ref": "#/$defs/Plan"}}, "$defs": {"Plan": plan}});
        let format =
            json!({"type": "json_schema", "json_schema": {"name": "plan", "schema": schema, "strict": true}});
        let completion = post(&standin, &with(ask("plan"), "/response_format", format))
            .await
            .json();
        assert_eq!(
            content_json(&completion),
            json!({"plan": {"steps": [], "done": false}})
        );
    }

    #[tokio::test]
    async fn scripted_replies_come_in_order() {
        let standin = StandIn::openai(KEY).await;
        standin.script([
            Reply::Status {
                code: 429,
                retry_after: Some(3),
            },
            Reply::Calls(vec![
                ("lookup".into(), json!({"q": "rust"})),
                ("other".into(), json!({})),
            ]),
            Reply::SafetyBlock,
            Reply::Status {
                code: 503,
                retry_after: None,
            },
        ]);
        let limited = post(&standin, &ask("q")).await;
        assert_eq!((limited.status, limited.header("retry-after")), (429, Some("3")));
        let error = json!({"message": "The stand-in was scripted to answer 429.", "type": "requests",
                           "param": null, "code": "rate_limit_exceeded"});
        assert_eq!(limited.json()["error"], error);

        let calls = post(&standin, &ask("q")).await.json();
        let choice = &calls["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let tool_calls = choice["message"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            tool_calls
                .iter()
                .all(|c| c["id"].as_str().is_some_and(|id| id.starts_with("call_")))
        );
        assert_eq!(
            tool_calls[0]["function"],
            json!({"name": "lookup", "arguments": "{\"q\":\"rust\"}"})
        );

        // The next turn answers the calls with the ids the stand-in gave them.
        let mut messages = ask("q")["messages"].as_array().cloned().unwrap_or_default();
        messages.push(choice["message"].clone());
        messages.extend(
            tool_calls
                .iter()
                .map(|c| json!({"role": "tool", "tool_call_id": c["id"], "content": "r"})),
        );
        let blocked = post(&standin, &with(ask(""), "/messages", Value::Array(messages)))
            .await
            .json();
        assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(blocked["choices"][0]["message"]["content"], Value::Null);

        let unavailable = post(&standin, &ask("q")).await;
        assert_eq!(
            (unavailable.status, &unavailable.json()["error"]["type"]),
            (503, &json!("server_error"))
        );
    }

    /// The chunks of a stream that ended with `data: [DONE]`.
    fn chunks_of(answer: &Raw) -> Vec<Value> {
        let events = answer.events();
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            answer.body
        );
        events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
            .collect()
    }

    #[tokio::test]
    async fn streams_chunks_then_usage_then_done() {
        let standin = StandIn::openai(KEY).await;
        let streaming = with(ask("stream this"), "/stream", json!(true));
        let answer = post(
            &standin,
            &with(streaming, "/stream_options", json!({"include_usage": true})),
        )
        .await;
        assert_eq!(
            (answer.status, answer.header("content-type")),
            (200, Some("text/event-stream"))
        );
        let chunks = chunks_of(&answer);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "stand-in answer: stream this");
        let (usage, last) = (&chunks[chunks.len() - 1], &chunks[chunks.len() - 2]);
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(usage["choices"], json!([]));
        assert!(usage["usage"]["total_tokens"].as_u64() > Some(0));

        standin.script([Reply::Calls(vec![(
            "lookup".into(),
            json!({"query": "rust streams"}),
        )])]);
        let chunks = chunks_of(&post(&standin, &with(ask("q"), "/stream", json!(true))).await);
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert!(deltas.len() >= 3, "the arguments come in pieces");
        assert!(deltas.iter().all(|d| d["index"] == 0));
        assert!(deltas[0]["id"].as_str().is_some_and(|id| id.starts_with("call_")));
        let arguments: String = deltas
            .iter()
            .filter_map(|d| d["function"]["arguments"].as_str())
            .collect();
        assert_eq!(arguments, "{\"query\":\"rust streams\"}");
        assert_eq!(
            chunks[chunks.len() - 1]["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert!(
            chunks.iter().all(|c| c.get("usage").is_none()),
            "no usage unless asked"
        );
    }

    #[tokio::test]
    async fn a_cut_stream_has_no_done() {
        let standin = StandIn::openai(KEY).await;
        standin.script([
            Reply::CutStream("a long answer that never ends".into()),
            Reply::CutStream("whole".into()),
        ]);
        let answer = post(&standin, &with(ask("q"), "/stream", json!(true))).await;
        assert!(!answer.complete);
        let events = answer.events();
        assert!(
            !events
                .iter()
                .any(|e| e == "[DONE]" || e.contains("finish_reason\":\""))
        );
        assert!((2..=3).contains(&events.len()), "{events:?}");

        let answer = post(&standin, &ask("q")).await;
        assert!(!answer.complete && serde_json::from_str::<Value>(&answer.body).is_err());
    }
}
