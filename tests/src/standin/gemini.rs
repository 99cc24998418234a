//! The Gemini API stand-in (v1beta): `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, the key in the `x-goog-api-key` header.
//!
//! Field names are checked like the API's JSON parser does: a field is known in its
//! lowerCamelCase or snake_case spelling (the API documents both), and an unknown one is
//! refused with `Unknown name "x" at '<path>': Cannot find field.`

use serde_json::{Map, Value, json};

use super::{Answer, Call, Incoming, Reply, Want, pieces, tokens};

const REQUEST: &str = "contents tools toolConfig safetySettings systemInstruction generationConfig \
    cachedContent";
const CONTENT: &str = "role parts";
const PART: &str = "text inlineData functionCall functionResponse fileData executableCode \
    codeExecutionResult thought thoughtSignature videoMetadata partMetadata mediaResolution";
/// The fields of a part's `data` oneof: a part has exactly one.
const PART_DATA: &str = "text inlineData functionCall functionResponse fileData executableCode \
    codeExecutionResult";
const BLOB: &str = "mimeType data";
const FILE: &str = "mimeType fileUri";
const FUNCTION_CALL: &str = "id name args";
const FUNCTION_RESPONSE: &str = "id name response parts willContinue scheduling";
const GENERATION: &str = "stopSequences responseMimeType responseSchema responseJsonSchema \
    responseModalities candidateCount maxOutputTokens temperature topP topK seed presencePenalty \
    frequencyPenalty responseLogprobs logprobs enableEnhancedCivicAnswers speechConfig \
    thinkingConfig imageConfig mediaResolution";
const THINKING: &str = "includeThoughts thinkingBudget thinkingLevel";
const TOOL: &str = "functionDeclarations googleSearchRetrieval codeExecution googleSearch urlContext \
    computerUse fileSearch googleMaps";
const DECLARATION: &str = "name description behavior parameters parametersJsonSchema response \
    responseJsonSchema";
/// Gemini's `Schema`: the OpenAPI 3.0 subset (no `$ref`, `$defs`, `additionalProperties`).
const SCHEMA: &str = "type format title description nullable enum maxItems minItems properties \
    required minProperties maxProperties minLength maxLength pattern example anyOf propertyOrdering \
    default items minimum maximum";
const TOOL_CONFIG: &str = "functionCallingConfig retrievalConfig";
const CALLING_CONFIG: &str = "mode allowedFunctionNames";
const SAFETY_SETTING: &str = "category threshold";

/// Checks a request as the Gemini API would; a refusal is an answer in its error format.
pub(super) fn check(request: &Incoming, key: &str) -> Result<Call, Answer> {
    let not_found = || error(404, format!("The requested URL {} was not found.", request.path));
    let path = request
        .path
        .strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.rsplit_once(':'));
    let (model, stream) = match path {
        Some((model, method)) if !model.is_empty() && !model.contains('/') && request.method == "POST" => {
            match method {
                "generateContent" => (model, false),
                "streamGenerateContent" => (model, true),
                _ => return Err(not_found()),
            }
        }
        _ => return Err(not_found()),
    };
    let query = request.query.as_deref().unwrap_or_default().split('&');
    let query: Vec<_> = query
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    if query.iter().any(|(name, _)| *name == "key") {
        return bad(
            "The API key was passed in the URL (`?key=`): URLs end up in logs and traces, so \
                    Cogo must send the key only in the x-goog-api-key header.",
        );
    }
    if stream && !query.contains(&("alt", "sse")) {
        return bad(
            "streamGenerateContent needs the query alt=sse: without it the API answers one JSON \
                    array, not server-sent events.",
        );
    }
    match request.header("x-goog-api-key") {
        None => {
            let message = "The request has no API key: send it in the x-goog-api-key header (callers \
                           without an established identity are refused).";
            return Err(error(403, message));
        }
        Some(given) if given != key => return bad("API key not valid. Please pass a valid API key."),
        Some(_) => {}
    }
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(e) => return bad(format!("Invalid JSON payload received. {e}")),
    };
    let top = fields(&body, "", REQUEST)?;

    let mut chars = 0;
    if let Some(system) = get(top, "systemInstruction") {
        chars += content(system, "system_instruction", &mut Vec::new())?
            .1
            .chars()
            .count();
    }
    let contents = list(get(top, "contents"), "contents")?;
    if contents.is_empty() {
        return bad("* GenerateContentRequest.contents: contents is not specified");
    }
    let (mut called, mut last_user) = (Vec::new(), String::new());
    for (i, turn) in contents.iter().enumerate() {
        let (role, text) = content(turn, &format!("contents[{i}]"), &mut called)?;
        chars += text.chars().count();
        if role == "user" {
            last_user = text;
        }
    }
    let want = generation_config(get(top, "generationConfig"))?;
    for (i, tool) in list(get(top, "tools"), "tools")?.iter().enumerate() {
        self::tool(tool, &format!("tools[{i}]"))?;
    }
    if let Some(config) = get(top, "toolConfig") {
        let config = fields(config, "tool_config", TOOL_CONFIG)?;
        if let Some(calling) = get(config, "functionCallingConfig") {
            fields(calling, "tool_config.function_calling_config", CALLING_CONFIG)?;
        }
    }
    let settings = list(get(top, "safetySettings"), "safety_settings")?;
    for (i, setting) in settings.iter().enumerate() {
        fields(setting, &format!("safety_settings[{i}]"), SAFETY_SETTING)?;
    }
    let (model, prompt_tokens) = (model.to_owned(), tokens(chars));
    Ok(Call {
        model,
        stream,
        include_usage: true,
        choices: 1,
        last_user,
        prompt_tokens,
        want,
    })
}

/// Checks one `Content`, noting the functions a model turn calls; returns its role and text.
fn content(value: &Value, at: &str, called: &mut Vec<String>) -> Result<(String, String), Answer> {
    let turn = fields(value, at, CONTENT)?;
    let role = text(turn, "role").unwrap_or("user");
    // The system instruction's role is not checked.
    if !matches!(role, "user" | "model") && at != "system_instruction" {
        return bad(format!(
            "Please use a valid role: user, model. ('{at}.role' is {role:?})"
        ));
    }
    let parts = list(get(turn, "parts"), &format!("{at}.parts"))?;
    if parts.is_empty() {
        return bad(format!("* GenerateContentRequest.{at}.parts: must not be empty"));
    }
    let mut joined = String::new();
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.parts[{j}]");
        let part = fields(part, &at, PART)?;
        if PART_DATA
            .split_whitespace()
            .filter(|name| get(part, name).is_some())
            .count()
            != 1
        {
            return bad(format!(
                "* GenerateContentRequest.{at}.data: a part needs exactly one of {PART_DATA}"
            ));
        }
        match get(part, "text") {
            Some(Value::String(text)) => joined.push_str(text),
            Some(_) => return Err(invalid(&format!("{at}.text"), "a string")),
            None => {}
        }
        for (name, known) in [("inlineData", BLOB), ("fileData", FILE)] {
            if let Some(data) = get(part, name) {
                fields(data, &format!("{at}.{}", snake(name)), known)?;
            }
        }
        if let Some(call) = get(part, "functionCall") {
            let call = fields(call, &format!("{at}.function_call"), FUNCTION_CALL)?;
            if role == "model" {
                called.push(text(call, "name").unwrap_or_default().to_owned());
            }
        }
        if let Some(response) = get(part, "functionResponse") {
            let response = fields(response, &format!("{at}.function_response"), FUNCTION_RESPONSE)?;
            let name = text(response, "name").unwrap_or_default();
            if role != "user" || !called.iter().any(|c| c == name) {
                return bad(format!(
                    "* GenerateContentRequest.{at}.function_response: the response to {name:?} answers no \
                     function call of an earlier model turn (responses go in a user turn)"
                ));
            }
        }
    }
    Ok((role.to_owned(), joined))
}

/// Checks `generationConfig` and returns the output format it asks for.
fn generation_config(config: Option<&Value>) -> Result<Want, Answer> {
    let Some(config) = config else {
        return Ok(Want::Text);
    };
    let config = fields(config, "generation_config", GENERATION)?;
    if let Some(thinking) = get(config, "thinkingConfig") {
        fields(thinking, "generation_config.thinking_config", THINKING)?;
    }
    let json = text(config, "responseMimeType") == Some("application/json");
    let (schema, json_schema) = (get(config, "responseSchema"), get(config, "responseJsonSchema"));
    if let Some(schema) = schema {
        openapi_schema(schema, "generation_config.response_schema")?;
    }
    if schema.is_some() && json_schema.is_some() {
        return bad("response_schema and response_json_schema are mutually exclusive: set one.");
    }
    match schema.or(json_schema) {
        Some(_) if !json => bad("A response schema needs response_mime_type application/json."),
        Some(schema) => Ok(Want::Schema(schema.clone())),
        None if json => Ok(Want::Json),
        None => Ok(Want::Text),
    }
}

fn tool(value: &Value, at: &str) -> Result<(), Answer> {
    let tool = fields(value, at, TOOL)?;
    let declarations = list(
        get(tool, "functionDeclarations"),
        &format!("{at}.function_declarations"),
    )?;
    for (j, declaration) in declarations.iter().enumerate() {
        let at = format!("{at}.function_declarations[{j}]");
        let declaration = fields(declaration, &at, DECLARATION)?;
        let name = text(declaration, "name").unwrap_or_default();
        if !function_name(name) {
            return bad(format!(
                "* GenerateContentRequest.{at}.name: invalid function name {name:?}: it must start with a \
                 letter or an underscore and hold only a-z, A-Z, 0-9, underscores, dots, colons and dashes, \
                 at most 64 characters"
            ));
        }
        for (openapi, json_schema) in [
            ("parameters", "parametersJsonSchema"),
            ("response", "responseJsonSchema"),
        ] {
            if let Some(schema) = get(declaration, openapi) {
                openapi_schema(schema, &format!("{at}.{openapi}"))?;
                if get(declaration, json_schema).is_some() {
                    return bad(format!(
                        "* {at}: {openapi} and {} are mutually exclusive",
                        snake(json_schema)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A function name as the API documents it: `[A-Za-z_][A-Za-z0-9_.:-]*`, at most 64 long.
fn function_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        && name.len() <= 64
}

/// Checks a `Schema` (the OpenAPI subset), down through its properties, items and anyOf.
fn openapi_schema(value: &Value, at: &str) -> Result<(), Answer> {
    let json_schema_only = ["$ref", "$defs", "additionalProperties", "$schema"];
    if let Some(name) = json_schema_only.iter().find(|name| value.get(name).is_some()) {
        return bad(format!(
            "Invalid JSON payload received. Unknown name {name:?} at '{at}': Cannot find field. (This field \
             takes the OpenAPI subset; send JSON Schema as response_json_schema or parameters_json_schema.)"
        ));
    }
    let schema = fields(value, at, SCHEMA)?;
    let properties = get(schema, "properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten();
    for (name, property) in properties {
        openapi_schema(property, &format!("{at}.properties[{name:?}].value"))?;
    }
    if let Some(items) = get(schema, "items") {
        openapi_schema(items, &format!("{at}.items"))?;
    }
    for (i, option) in list(get(schema, "anyOf"), &format!("{at}.any_of"))?
        .iter()
        .enumerate()
    {
        openapi_schema(option, &format!("{at}.any_of[{i}]"))?;
    }
    Ok(())
}

/// The object at `at`, refusing any field not in `known` (lowerCamelCase names).
fn fields<'v>(value: &'v Value, at: &str, known: &str) -> Result<&'v Map<String, Value>, Answer> {
    let object = value.as_object().ok_or_else(|| invalid(at, "an object"))?;
    let unknown = object
        .keys()
        .find(|name| !known.split_whitespace().any(|k| k == camel(name)));
    match unknown {
        Some(name) if at.is_empty() => bad(format!(
            "Invalid JSON payload received. Unknown name {name:?}: Cannot find field."
        )),
        Some(name) => bad(format!(
            "Invalid JSON payload received. Unknown name {name:?} at '{at}': Cannot find field."
        )),
        None => Ok(object),
    }
}

/// The list at `at`, empty when absent.
fn list<'v>(value: Option<&'v Value>, at: &str) -> Result<&'v [Value], Answer> {
    match value {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(at, "a list")),
    }
}

/// A field by its lowerCamelCase name, or by its snake_case one.
fn get<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).or_else(|| object.get(&snake(name)))
}

/// A string field by its lowerCamelCase name, or by its snake_case one.
fn text<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v str> {
    get(object, name).and_then(Value::as_str)
}

fn camel(name: &str) -> String {
    let mut words = name.split('_');
    let first = words.next().unwrap_or_default().to_owned();
    words.fold(first, |mut out, word| {
        let mut chars = word.chars();
        out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        out + chars.as_str()
    })
}

fn snake(name: &str) -> String {
    let words = name.chars().map(|c| {
        if c.is_ascii_uppercase() {
            format!("_{}", c.to_ascii_lowercase())
        } else {
            c.into()
        }
    });
    words.collect()
}

fn invalid(at: &str, expected: &str) -> Answer {
    error(
        400,
        format!("Invalid JSON payload received. Invalid value at '{at}': expected {expected}."),
    )
}

fn bad<T>(message: impl Into<String>) -> Result<T, Answer> {
    Err(error(400, message))
}

/// An error in the API's format: `{"error": {"code", "message", "status"}}`.
fn error(code: u16, message: impl Into<String>) -> Answer {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    };
    let body = json!({"error": {"code": code, "message": message.into(), "status": status}});
    Answer::json(code, body)
}

/// Renders a reply as a `GenerateContentResponse` (or, streaming, a series of them).
pub(super) fn render(reply: &Reply, call: &Call, id: u64) -> Answer {
    let usage = |out: usize| {
        let (prompt, out) = (call.prompt_tokens, tokens(out));
        json!({"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out})
    };
    // A response with one candidate; `last` adds the finish reason (and more) and the usage.
    let response = |parts: Vec<Value>, last: Option<(&Value, Value)>| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        let mut response = json!({"modelVersion": call.model, "responseId": format!("stand-in-{id}")});
        if let (Some((Value::Object(finish), usage)), Some(fields)) = (last, candidate.as_object_mut()) {
            fields.extend(finish.clone());
            response["usageMetadata"] = usage;
        }
        response["candidates"] = json!([candidate]);
        response
    };
    let event = |response: Value| format!("data: {response}\r\n\r\n");
    let whole = |body: Value| {
        if call.stream {
            Answer::events(vec![event(body)], false)
        } else {
            Answer::json(200, body)
        }
    };
    let stop = json!({"finishReason": "STOP"});
    match reply {
        Reply::Text(text) | Reply::Grounded { text, .. } => {
            let mut finish = stop;
            if let Reply::Grounded { sources, .. } = reply {
                finish["groundingMetadata"] = grounding(text, sources, call);
            }
            let usage = usage(text.chars().count());
            if !call.stream {
                return Answer::json(200, response(vec![json!({"text": text})], Some((&finish, usage))));
            }
            let pieces = pieces(text, 3);
            let last = pieces.len() - 1;
            let events = pieces.into_iter().enumerate().map(|(i, piece)| {
                let end = (i == last).then(|| (&finish, usage.clone()));
                event(response(vec![json!({"text": piece})], end))
            });
            Answer::events(events.collect(), false)
        }
        Reply::Calls(calls) => {
            let parts = calls
                .iter()
                .map(|(name, args)| json!({"functionCall": {"name": name, "args": args}}));
            let out = calls
                .iter()
                .map(|(name, args)| name.len() + args.to_string().len())
                .sum();
            whole(response(parts.collect(), Some((&stop, usage(out)))))
        }
        Reply::Status { code, retry_after } => {
            error(*code, format!("The stand-in was scripted to answer {code}.")).retry_after(*retry_after)
        }
        Reply::SafetyBlock => {
            let rating = json!({"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true});
            let prompt = call.prompt_tokens;
            whole(json!({
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [rating]},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                "modelVersion": call.model,
            }))
        }
        Reply::CutStream(text) => {
            let half: String = text.chars().take(text.chars().count().div_ceil(2)).collect();
            let pieces = pieces(&half, 2).into_iter();
            Answer::events(
                pieces
                    .map(|p| event(response(vec![json!({"text": p})], None)))
                    .collect(),
                true,
            )
        }
        Reply::Slow(_, inner) => render(inner, call, id),
        Reply::Unscripted => render(&super::default_reply(call), call, id),
        Reply::Malformed => Answer::not_json(),
    }
}

/// `groundingMetadata` for `text` supported by every source.
fn grounding(text: &str, sources: &[(String, String)], call: &Call) -> Value {
    let chunks: Vec<Value> = sources
        .iter()
        .map(|(uri, title)| json!({"web": {"uri": uri, "title": title}}))
        .collect();
    let segment = json!({"startIndex": 0, "endIndex": text.len(), "text": text});
    let indices: Vec<usize> = (0..chunks.len()).collect();
    let supports = if chunks.is_empty() {
        vec![]
    } else {
        vec![json!({"segment": segment, "groundingChunkIndices": indices})]
    };
    json!({"webSearchQueries": [call.last_user], "groundingChunks": chunks, "groundingSupports": supports})
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::super::{
        Reply, StandIn,
        testing::{Raw, send, with},
    };

    const KEY: &str = "gemini-test-key";
    const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
    const STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

    fn ask(text: &str) -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
    }

    async fn post(standin: &StandIn, target: &str, body: &Value) -> Raw {
        let headers = [("x-goog-api-key", KEY), ("content-type", "application/json")];
        send(standin.addr(), "POST", target, &headers, &body.to_string()).await
    }

    /// The status name and message of an error answer.
    fn said(answer: &Raw) -> String {
        let error = &answer.json()["error"];
        assert_eq!(error["code"], answer.status);
        let text = |name: &str| error[name].as_str().unwrap_or_default().to_owned();
        format!("{} {}", text("status"), text("message"))
    }

    #[tokio::test]
    async fn refuses_wrong_addresses_keys_and_bodies() {
        let standin = StandIn::gemini(KEY).await;
        let ok = ask("hello").to_string();
        let key = [("x-goog-api-key", KEY)];
        #[rustfmt::skip]
        let cases = [
            ("wrong path", "POST", "/v1/models/m:generateContent", &key[..], ok.as_str(), 404, "NOT_FOUND"),
            ("GET", "GET", GENERATE, &key, "", 404, "NOT_FOUND"),
            ("stream without alt=sse", "POST", "/v1beta/models/m:streamGenerateContent", &key, &ok, 400, "alt=sse"),
            ("key in the URL", "POST", "/v1beta/models/m:generateContent?key=gemini-test-key", &key, &ok, 400,
             "only in the x-goog-api-key header"),
            ("no key", "POST", GENERATE, &[], &ok, 403, "PERMISSION_DENIED"),
            ("wrong key", "POST", GENERATE, &[("x-goog-api-key", "nope")], &ok, 400,
             "INVALID_ARGUMENT API key not valid. Please pass a valid API key."),
            ("not JSON", "POST", GENERATE, &key, "{contents", 400, "Invalid JSON payload"),
            ("no contents", "POST", GENERATE, &key, r#"{"contents": []}"#, 400, "contents is not specified"),
        ];
        for (name, method, target, headers, body, status, fragment) in cases {
            let answer = send(standin.addr(), method, target, headers, body).await;
            assert_eq!(answer.status, status, "{name}: {}", answer.body);
            assert!(
                said(&answer).contains(fragment),
                "{name}: {fragment:?} not in {}",
                said(&answer)
            );
        }
        let recorded = standin.requests();
        assert_eq!(recorded.len(), cases.len(), "every refusal is recorded");
        assert!(recorded.iter().all(|r| r.status >= 400));
        let wrong_key = recorded[5].headers.iter().find(|(n, _)| n == "x-goog-api-key");
        assert_eq!(wrong_key.map(|(_, v)| v.as_str()), Some("nope"));
    }

    #[tokio::test]
    async fn refuses_unknown_fields_and_misplaced_schemas() {
        let standin = StandIn::gemini(KEY).await;
        let ok = ask("hi");
        let tool = |declaration: Value| {
            with(
                ask("hi"),
                "/tools",
                json!([{"functionDeclarations": [declaration]}]),
            )
        };
        let config = |config: Value| with(ask("hi"), "/generationConfig", config);
        let schema =
            |schema: Value| config(json!({"responseMimeType": "application/json", "responseSchema": schema}));
        let call_response = json!({"contents": [{"role": "user", "parts": [
            {"functionResponse": {"name": "lookup", "response": {"r": 1}}}]}]});
        #[rustfmt::skip]
        let cases = [
            ("unknown top-level field", with(ok.clone(), "/prompt", json!("x")),
             "Unknown name \"prompt\": Cannot find field."),
            ("unknown content field", with(ok.clone(), "/contents/0/author", json!("me")),
             "Unknown name \"author\" at 'contents[0]': Cannot find field."),
            ("unknown part field", with(ok.clone(), "/contents/0/parts/0/kind", json!("t")),
             "Unknown name \"kind\" at 'contents[0].parts[0]'"),
            ("unknown generationConfig field", config(json!({"maxTokens": 5})),
             "Unknown name \"maxTokens\" at 'generation_config'"),
            ("unknown tool field", with(ok.clone(), "/tools", json!([{"functions": []}])),
             "Unknown name \"functions\" at 'tools[0]'"),
            ("unknown declaration field", tool(json!({"name": "f", "strict": true})),
             "Unknown name \"strict\" at 'tools[0].function_declarations[0]'"),
            ("role assistant", with(ok.clone(), "/contents/0/role", json!("assistant")), "valid role"),
            ("two data fields in a part",
             with(ok.clone(), "/contents/0/parts/0/inlineData", json!({"mimeType": "image/png", "data": ""})),
             "exactly one of"),
            ("$ref in responseSchema", schema(json!({"$ref": "#/$defs/A"})),
             "Unknown name \"$ref\" at 'generation_config.response_schema'"),
            ("$defs in responseSchema", schema(json!({"type": "OBJECT", "$defs": {}})), "\"$defs\""),
            ("$schema in responseSchema", schema(json!({"$schema": "x"})), "\"$schema\""),
            ("additionalProperties deep in responseSchema",
             schema(json!({"type": "OBJECT", "properties": {"a": {"type": "OBJECT", "additionalProperties": false}}})),
             "\"additionalProperties\" at 'generation_config.response_schema.properties[\"a\"].value'"),
            ("a schema without the JSON mime type", config(json!({"responseJsonSchema": {"type": "object"}})),
             "application/json"),
            ("additionalProperties in parameters",
             tool(json!({"name": "f", "parameters": {"type": "OBJECT", "additionalProperties": false}})),
             "\"additionalProperties\""),
            ("a space in a function name", tool(json!({"name": "get weather"})), "invalid function name"),
            ("a function name of 65", tool(json!({"name": "f".repeat(65)})), "invalid function name"),
            ("a function name starting with a digit", tool(json!({"name": "1f"})), "invalid function name"),
            ("a response to no call", call_response, "answers no function call"),
        ];
        for (name, body, fragment) in &cases {
            let answer = post(&standin, GENERATE, body).await;
            assert_eq!(answer.status, 400, "{name}: {}", answer.body);
            assert!(
                said(&answer).contains(fragment),
                "{name}: {fragment:?} not in {}",
                said(&answer)
            );
        }
        assert_eq!(standin.requests().len(), cases.len(), "every refusal is recorded");
    }

    #[tokio::test]
    async fn accepts_what_the_docs_allow() {
        let standin = StandIn::gemini(KEY).await;
        let names = ["a", "_x", "ns.tool:v1-2_b", &"f".repeat(64)];
        let declarations: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        let json_schema = json!({"type": "object", "additionalProperties": false, "$defs": {}});
        let body = json!({
            "system_instruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {"city": "Oslo"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {"t": 3}}}]},
                {"parts": [{"text": "and "}, {"text": "tomorrow?"}]}
            ],
            "tools": [{"functionDeclarations": declarations}, {"googleSearch": {}},
                      {"function_declarations": [{"name": "j", "parametersJsonSchema": json_schema}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 100, "topP": 0.9, "topK": 4,
                                 "candidateCount": 1, "stopSequences": ["x"],
                                 "thinkingConfig": {"thinkingBudget": 0}}
        });
        let answer = post(&standin, GENERATE, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let response = answer.json();
        let candidate = &response["candidates"][0];
        assert_eq!(
            candidate["content"],
            json!({"parts": [{"text": "stand-in answer: and tomorrow?"}], "role": "model"})
        );
        assert_eq!(candidate["finishReason"], "STOP");
        let usage = &response["usageMetadata"];
        let count = |name: &str| usage[name].as_u64().unwrap_or_default();
        assert!(count("promptTokenCount") > 0 && count("candidatesTokenCount") > 0);
        assert_eq!(
            count("totalTokenCount"),
            count("promptTokenCount") + count("candidatesTokenCount")
        );
        assert_eq!(response["modelVersion"], "gemini-2.5-flash");
    }

    #[tokio::test]
    async fn json_defaults_follow_the_schema() {
        let standin = StandIn::gemini(KEY).await;
        let text = |response: Value| {
            let text = response["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(str::to_owned);
            serde_json::from_str::<Value>(&text.unwrap_or_default()).expect("JSON text")
        };
        let plain = with(
            ask("say \"hi\""),
            "/generationConfig",
            json!({"responseMimeType": "application/json"}),
        );
        let answer = post(&standin, GENERATE, &plain).await.json();
        assert_eq!(text(answer), json!({"answer": "stand-in answer: say \"hi\""}));

        let schema = json!({"type": "OBJECT", "required": ["verdict", "score", "notes"], "properties": {
            "verdict": {"type": "STRING", "format": "enum", "enum": ["pass", "fail"]},
            "score": {"type": "NUMBER"}, "notes": {"type": "ARRAY", "items": {"type": "STRING"}}}});
        let config = json!({"responseMimeType": "application/json", "responseSchema": schema});
        let answer = post(
            &standin,
            GENERATE,
            &with(ask("judge"), "/generationConfig", config),
        )
        .await
        .json();
        assert_eq!(
            text(answer),
            json!({"verdict": "pass", "score": 0.0, "notes": []})
        );
    }

    #[tokio::test]
    async fn scripted_replies_come_in_order() {
        let standin = StandIn::gemini(KEY).await;
        let sources = vec![("https://example.org/r".to_owned(), "Rust".to_owned())];
        standin.script([
            Reply::Status {
                code: 429,
                retry_after: Some(7),
            },
            Reply::Calls(vec![("lookup".into(), json!({"q": "rust"}))]),
            Reply::Grounded {
                text: "Rust 1.0 shipped in 2015.".into(),
                sources,
            },
            Reply::SafetyBlock,
            Reply::Slow(Duration::from_millis(200), Box::new(Reply::Malformed)),
        ]);
        let limited = post(&standin, GENERATE, &ask("q")).await;
        assert_eq!((limited.status, limited.header("retry-after")), (429, Some("7")));
        assert_eq!(limited.json()["error"]["status"], "RESOURCE_EXHAUSTED");

        let calls = post(&standin, GENERATE, &ask("q")).await.json();
        let call = json!({"functionCall": {"name": "lookup", "args": {"q": "rust"}}});
        assert_eq!(calls["candidates"][0]["content"]["parts"], json!([call]));
        assert_eq!(calls["candidates"][0]["finishReason"], "STOP");

        let grounded = post(&standin, GENERATE, &ask("when?")).await.json();
        let metadata = &grounded["candidates"][0]["groundingMetadata"];
        let web = json!({"uri": "https://example.org/r", "title": "Rust"});
        assert_eq!(metadata["groundingChunks"][0]["web"], web);
        assert_eq!(metadata["webSearchQueries"], json!(["when?"]));
        assert_eq!(
            metadata["groundingSupports"][0]["groundingChunkIndices"],
            json!([0])
        );

        let blocked = post(&standin, GENERATE, &ask("q")).await.json();
        assert_eq!(blocked["promptFeedback"]["blockReason"], "SAFETY");
        assert!(blocked.get("candidates").is_none());

        let started = Instant::now();
        let malformed = post(&standin, GENERATE, &ask("q")).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(malformed.status, 200);
        assert!(serde_json::from_str::<Value>(&malformed.body).is_err());
        let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 200, 200, 200, 200]);
    }

    #[tokio::test]
    async fn streams_server_sent_events() {
        let standin = StandIn::gemini(KEY).await;
        let answer = post(&standin, STREAM, &ask("stream this")).await;
        assert_eq!(
            (answer.status, answer.header("content-type")),
            (200, Some("text/event-stream"))
        );
        assert!(answer.complete && answer.body.ends_with("}\r\n\r\n"));
        let events: Vec<Value> = answer
            .events()
            .iter()
            .map(|e| serde_json::from_str(e).expect("JSON"))
            .collect();
        assert_eq!(events.len(), 3);
        let candidates: Vec<&Value> = events.iter().map(|e| &e["candidates"][0]).collect();
        let text: String = candidates
            .iter()
            .filter_map(|c| c["content"]["parts"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "stand-in answer: stream this");
        assert!(events[..2].iter().all(|e| e.get("usageMetadata").is_none()));
        assert!(candidates[..2].iter().all(|c| c.get("finishReason").is_none()));
        assert_eq!(candidates[2]["finishReason"], "STOP");
        assert!(events[2]["usageMetadata"]["totalTokenCount"].as_u64() > Some(0));
        assert_eq!(standin.requests()[0].query.as_deref(), Some("alt=sse"));
    }

    #[tokio::test]
    async fn a_cut_stream_ends_without_a_finish() {
        let standin = StandIn::gemini(KEY).await;
        standin.script([
            Reply::CutStream("a long answer that never ends".into()),
            Reply::CutStream("whole".into()),
        ]);
        let answer = post(&standin, STREAM, &ask("q")).await;
        assert!(!answer.complete, "the chunked body has no end");
        assert!((1..=2).contains(&answer.events().len()));
        assert!(!answer.body.contains("finishReason"));

        let answer = post(&standin, GENERATE, &ask("q")).await;
        assert!(!answer.complete, "half the announced body: {}", answer.body);
        assert!(serde_json::from_str::<Value>(&answer.body).is_err());
    }
}
