//! One job's page: a browser context of its own (a fresh profile: cookies, storage and cache
//! of its own, downloads denied), one tab in it, every request checked by the [`UrlPolicy`],
//! dialogs dismissed, and a renderer crash noticed at once.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use cogo_api::catalogue::browser::{MAX_SIDE, ScreenshotResult, Viewport};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use super::{
    cdp::{Cdp, CdpError, Event},
    policy::{Resolved, UrlPolicy, short},
};

/// How long a command that does no page work may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the page has done, as its events tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    /// Load events seen.
    loads: u64,
    /// Whether the main frame is loading.
    loading: bool,
    /// Whether its renderer crashed.
    crashed: bool,
    /// The last request the policy refused.
    blocked: Option<String>,
}

/// Why a page operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The page (its content, its address, or what a step asked) is at fault.
    #[error("{0}")]
    Page(String),
    /// The browser misbehaved: it should be restarted, and the job may run again.
    #[error("{0}")]
    Browser(String),
}

impl From<CdpError> for PageError {
    fn from(e: CdpError) -> Self {
        match e {
            CdpError::Protocol { .. } => PageError::Page(e.to_string()),
            CdpError::Timeout { .. } | CdpError::Closed(_) => PageError::Browser(e.to_string()),
        }
    }
}

/// One tab in a fresh browser context.
pub struct Page {
    cdp: Cdp,
    context: String,
    session: String,
    state: watch::Receiver<State>,
    events: tokio::task::JoinHandle<()>,
    viewport: Viewport,
}

const CRASHED: &str = "the page crashed its renderer (it may have run out of memory)";

impl Page {
    /// Opens a tab of `viewport` size in a new browser context.
    pub async fn open(cdp: &Cdp, policy: Arc<UrlPolicy>, viewport: Viewport) -> Result<Page, PageError> {
        let context = cdp
            .call(
                None,
                "Target.createBrowserContext",
                json!({"disposeOnDetach": true}),
                COMMAND_TIMEOUT,
            )
            .await?["browserContextId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let opened = async {
            cdp.call(
                None,
                "Browser.setDownloadBehavior",
                json!({"behavior": "deny", "browserContextId": context}),
                COMMAND_TIMEOUT,
            )
            .await?;
            let target = cdp
                .call(
                    None,
                    "Target.createTarget",
                    json!({"url": "about:blank", "browserContextId": context}),
                    COMMAND_TIMEOUT,
                )
                .await?["targetId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let session = cdp
                .call(
                    None,
                    "Target.attachToTarget",
                    json!({"targetId": target, "flatten": true}),
                    COMMAND_TIMEOUT,
                )
                .await?["sessionId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let events = cdp.subscribe(&session);
            let (state_tx, state) = watch::channel(State::default());
            let events = tokio::spawn(follow(
                cdp.clone(),
                session.clone(),
                target,
                events,
                state_tx,
                policy,
            ));
            let page = Page {
                cdp: cdp.clone(),
                context: context.clone(),
                session,
                state,
                events,
                viewport,
            };
            for (method, params) in [
                ("Page.enable", json!({})),
                ("Inspector.enable", json!({})),
                (
                    "Fetch.enable",
                    json!({"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}),
                ),
            ] {
                page.call(method, params, COMMAND_TIMEOUT).await?;
            }
            page.set_size(viewport.width, viewport.height).await?;
            Ok::<Page, PageError>(page)
        }
        .await;
        if opened.is_err() {
            let _ = cdp
                .call(
                    None,
                    "Target.disposeBrowserContext",
                    json!({"browserContextId": context}),
                    COMMAND_TIMEOUT,
                )
                .await;
        }
        opened
    }

    /// Closes the tab and throws its context away.
    pub async fn close(self) -> Result<(), PageError> {
        self.events.abort();
        self.cdp.unsubscribe(&self.session);
        self.cdp
            .call(
                None,
                "Target.disposeBrowserContext",
                json!({"browserContextId": self.context}),
                COMMAND_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    async fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, PageError> {
        let mut state = self.state.clone();
        if state.borrow().crashed {
            return Err(PageError::Page(CRASHED.into()));
        }
        tokio::select! {
            answer = self.cdp.call(Some(&self.session), method, params, timeout) => Ok(answer?),
            _ = state.wait_for(|s| s.crashed) => Err(PageError::Page(CRASHED.into())),
        }
    }

    async fn set_size(&self, width: u32, height: u32) -> Result<(), PageError> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            COMMAND_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Loads `url` and waits for its load event, all within `timeout`.
    pub async fn navigate(&self, url: &str, timeout: Duration) -> Result<(), PageError> {
        let until = Instant::now() + timeout;
        let loads = self.state.borrow().loads;
        let answer = match self.call("Page.navigate", json!({"url": url}), timeout).await {
            Err(PageError::Browser(_)) if self.cdp.closed().is_none() => {
                return Err(PageError::Page(format!(
                    "{} did not answer within {} s",
                    short(url),
                    timeout.as_secs()
                )));
            }
            other => other?,
        };
        if let Some(error) = answer["errorText"].as_str() {
            if let Some(blocked) = self.state.borrow().blocked.clone() {
                return Err(PageError::Page(blocked));
            }
            return Err(PageError::Page(format!("cannot load {}: {error}", short(url))));
        }
        if answer.get("loaderId").is_none() {
            return Ok(());
        }
        self.wait_load(loads, until, url).await
    }

    async fn wait_load(&self, after: u64, until: Instant, url: &str) -> Result<(), PageError> {
        let mut state = self.state.clone();
        match tokio::time::timeout_at(until, state.wait_for(|s| s.loads > after || s.crashed)).await {
            Ok(Ok(s)) if s.crashed => Err(PageError::Page(CRASHED.into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(PageError::Browser("the page's events stopped".into())),
            Err(_) => Err(PageError::Page(format!(
                "{} did not finish loading within the page timeout",
                short(url)
            ))),
        }
    }

    /// After an input that may navigate: waits for a navigation it started to load.
    pub async fn settle(&self, timeout: Duration) -> Result<(), PageError> {
        let loads = self.state.borrow().loads;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if self.state.borrow().loading {
            let until = Instant::now() + timeout;
            let url = self.location().await.map(|(_, u)| u).unwrap_or_default();
            self.wait_load(loads, until, &url).await?;
        }
        Ok(())
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value as JSON.
    pub async fn evaluate(&self, expression: &str, timeout: Duration) -> Result<Value, PageError> {
        let started = Instant::now();
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": expression,
                    "returnByValue": true,
                    "awaitPromise": true,
                    "userGesture": true,
                    "timeout": timeout.as_millis() as u64,
                }),
                timeout + Duration::from_secs(1),
            )
            .await
            .map_err(|e| match e {
                // The browser stops a script at its timeout and calls that an internal error.
                _ if self.cdp.closed().is_none() && started.elapsed() >= timeout => PageError::Page(format!(
                    "the script did not finish within {} ms",
                    timeout.as_millis()
                )),
                e => e,
            })?;
        if let Some(details) = answer.get("exceptionDetails") {
            let what = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("an exception");
            let first = what.lines().next().unwrap_or(what);
            return Err(PageError::Page(format!("the script threw: {first}")));
        }
        let result = &answer["result"];
        Ok(match result.get("value") {
            Some(v) => v.clone(),
            None => result.get("unserializableValue").cloned().unwrap_or(Value::Null),
        })
    }

    /// Waits until `selector` matches an element, polling, within `timeout`.
    pub async fn wait_for(&self, selector: &str, timeout: Duration) -> Result<(), PageError> {
        let until = Instant::now() + timeout;
        let probe = format!("document.querySelector({}) !== null", js_string(selector));
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.evaluate(&probe, left.max(Duration::from_millis(100))).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(_) => {}
                Err(PageError::Page(e)) if e.starts_with("the script threw") => {
                    return Err(PageError::Page(format!(
                        "{selector:?} is not a valid CSS selector"
                    )));
                }
                // A navigation in between destroys the context: ask again.
                Err(PageError::Page(e)) if e.contains("context") => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= until {
                return Err(PageError::Page(format!(
                    "no element matches {selector:?} after {} ms",
                    timeout.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the middle of the first element `selector` matches, as a mouse would.
    pub async fn click(&self, selector: &str, timeout: Duration) -> Result<(), PageError> {
        self.wait_for(selector, timeout).await?;
        let at = self
            .evaluate(
                &format!(
                    "(() => {{ const e = document.querySelector({}); e.scrollIntoView({{block: 'center', inline: 'center'}}); \
                     const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height]; }})()",
                    js_string(selector)
                ),
                timeout,
            )
            .await?;
        let n = |i: usize| at[i].as_f64().unwrap_or(0.0);
        if n(2) <= 0.0 || n(3) <= 0.0 {
            return Err(PageError::Page(format!(
                "{selector:?} matches an element with no size"
            )));
        }
        let (x, y) = (n(0), n(1));
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
                timeout,
            )
            .await?;
        }
        Ok(())
    }

    /// Focuses the first element `selector` matches.
    pub async fn focus(&self, selector: &str, timeout: Duration) -> Result<(), PageError> {
        self.wait_for(selector, timeout).await?;
        self.evaluate(
            &format!("document.querySelector({}).focus()", js_string(selector)),
            timeout,
        )
        .await
        .map(drop)
    }

    /// Types `text` into the focused element.
    pub async fn insert_text(&self, text: &str, timeout: Duration) -> Result<(), PageError> {
        self.call("Input.insertText", json!({"text": text}), timeout)
            .await
            .map(drop)
    }

    /// Presses and releases `key`.
    pub async fn press(&self, key: &str, timeout: Duration) -> Result<(), PageError> {
        let (key, code, vk, text) = key_of(key)?;
        let mut down = json!({"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk});
        if let Some(text) = &text {
            down["text"] = Value::from(text.clone());
        }
        self.call("Input.dispatchKeyEvent", down, timeout).await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk}),
            timeout,
        )
        .await
        .map(drop)
    }

    /// Reads the first element `selector` matches (or every one, with `all`): its text, its
    /// `attribute`, or its outer HTML.
    pub async fn extract(
        &self,
        selector: &str,
        attribute: Option<&str>,
        html: bool,
        all: bool,
        timeout: Duration,
    ) -> Result<Value, PageError> {
        self.wait_for(selector, timeout).await?;
        let read = match (attribute, html) {
            (Some(a), _) => format!("e.getAttribute({})", js_string(a)),
            (None, true) => "e.outerHTML".to_string(),
            (None, false) => "e.innerText".to_string(),
        };
        let expression = if all {
            format!(
                "Array.from(document.querySelectorAll({})).map(e => {read})",
                js_string(selector)
            )
        } else {
            format!("(e => {read})(document.querySelector({}))", js_string(selector))
        };
        self.evaluate(&expression, timeout).await
    }

    /// The page's title and address.
    pub async fn location(&self) -> Result<(String, String), PageError> {
        let v = self
            .evaluate("[document.title, location.href]", COMMAND_TIMEOUT)
            .await?;
        Ok((
            v[0].as_str().unwrap_or_default().to_string(),
            v[1].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// A PNG of the viewport, or of the whole page (at most [`MAX_SIDE`] pixels high).
    pub async fn screenshot(
        &self,
        full_page: bool,
        timeout: Duration,
    ) -> Result<ScreenshotResult, PageError> {
        if full_page {
            let metrics = self
                .call("Page.getLayoutMetrics", json!({}), COMMAND_TIMEOUT)
                .await?;
            let size = &metrics["cssContentSize"];
            let height = size["height"]
                .as_f64()
                .unwrap_or(0.0)
                .ceil()
                .clamp(1.0, MAX_SIDE as f64) as u32;
            self.set_size(self.viewport.width, height.max(self.viewport.height))
                .await?;
        }
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "fromSurface": true}),
                timeout,
            )
            .await;
        if full_page {
            self.set_size(self.viewport.width, self.viewport.height).await?;
        }
        let png = shot?["data"].as_str().unwrap_or_default().to_string();
        let (width, height) = png_size(&png)
            .ok_or_else(|| PageError::Browser("the browser's screenshot is not a PNG".into()))?;
        let (title, final_url) = self.location().await?;
        Ok(ScreenshotResult {
            png,
            width,
            height,
            title,
            final_url,
        })
    }
}

/// Follows a page's events: decides every paused request, dismisses dialogs, and keeps
/// [`State`].
async fn follow(
    cdp: Cdp,
    session: String,
    target: String,
    mut events: mpsc::UnboundedReceiver<Event>,
    state: watch::Sender<State>,
    policy: Arc<UrlPolicy>,
) {
    let resolved = Arc::new(Resolved::default());
    while let Some(Event { method, params }) = events.recv().await {
        match method.as_str() {
            "Fetch.requestPaused" => {
                let (cdp, session, policy, resolved, state) = (
                    cdp.clone(),
                    session.clone(),
                    policy.clone(),
                    resolved.clone(),
                    state.clone(),
                );
                tokio::spawn(async move {
                    let id = params["requestId"].clone();
                    let url = params["request"]["url"].as_str().unwrap_or_default();
                    let verdict = policy
                        .check_request(url, |h| async move { resolved.lookup(h).await })
                        .await;
                    let (method, params) = match verdict {
                        Ok(()) => ("Fetch.continueRequest", json!({"requestId": id})),
                        Err(why) => {
                            debug!(why, "a request of the page was blocked");
                            state.send_modify(|s| s.blocked = Some(why));
                            (
                                "Fetch.failRequest",
                                json!({"requestId": id, "errorReason": "AccessDenied"}),
                            )
                        }
                    };
                    let _ = cdp.call(Some(&session), method, params, COMMAND_TIMEOUT).await;
                });
            }
            "Page.javascriptDialogOpening" => {
                let (cdp, session) = (cdp.clone(), session.clone());
                tokio::spawn(async move {
                    let _ = cdp
                        .call(
                            Some(&session),
                            "Page.handleJavaScriptDialog",
                            json!({"accept": false}),
                            COMMAND_TIMEOUT,
                        )
                        .await;
                });
            }
            "Page.loadEventFired" => state.send_modify(|s| s.loads += 1),
            "Page.frameStartedLoading" if params["frameId"] == target.as_str() => {
                state.send_modify(|s| s.loading = true)
            }
            "Page.frameStoppedLoading" if params["frameId"] == target.as_str() => {
                state.send_modify(|s| s.loading = false)
            }
            "Inspector.targetCrashed" => state.send_modify(|s| s.crashed = true),
            _ => {}
        }
    }
}

/// `s` as a JavaScript string literal.
fn js_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// The key event fields of a key name: (key, code, virtual key code, text).
fn key_of(name: &str) -> Result<(String, String, u32, Option<String>), PageError> {
    let named = [
        ("Enter", 13, Some("\r")),
        ("Tab", 9, None),
        ("Escape", 27, None),
        ("Backspace", 8, None),
        ("Delete", 46, None),
        ("ArrowUp", 38, None),
        ("ArrowDown", 40, None),
        ("ArrowLeft", 37, None),
        ("ArrowRight", 39, None),
        ("Home", 36, None),
        ("End", 35, None),
        ("PageUp", 33, None),
        ("PageDown", 34, None),
        ("Space", 32, Some(" ")),
    ];
    if let Some((key, vk, text)) = named.iter().find(|(k, _, _)| k.eq_ignore_ascii_case(name)) {
        let key = if *key == "Space" { " " } else { key };
        let code = if key == " " { "Space" } else { key };
        return Ok((key.into(), code.into(), *vk, text.map(String::from)));
    }
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => {
            let upper = c.to_ascii_uppercase();
            let code = if c.is_ascii_alphabetic() {
                format!("Key{upper}")
            } else if c.is_ascii_digit() {
                format!("Digit{c}")
            } else {
                String::new()
            };
            let vk = if c.is_ascii_alphanumeric() {
                upper as u32
            } else {
                0
            };
            Ok((c.to_string(), code, vk, Some(c.to_string())))
        }
        _ => Err(PageError::Page(format!(
            "unknown key {name:?}: press takes Enter, Tab, Escape, Backspace, Delete, Arrow keys, Home, End, PageUp, PageDown, Space or one character"
        ))),
    }
}

/// The width and height a base64 PNG says it has.
fn png_size(png: &str) -> Option<(u32, u32)> {
    let head: String = png.chars().take(32).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(head).ok()?;
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let n = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Some((n(16), n(20)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_or_single_characters() {
        assert_eq!(
            key_of("enter").unwrap(),
            ("Enter".into(), "Enter".into(), 13, Some("\r".into()))
        );
        assert_eq!(
            key_of("a").unwrap(),
            ("a".into(), "KeyA".into(), 65, Some("a".into()))
        );
        assert_eq!(key_of("7").unwrap().1, "Digit7");
        assert_eq!(key_of("Space").unwrap().0, " ");
        let e = key_of("Hyper").unwrap_err().to_string();
        assert!(e.contains("unknown key \"Hyper\""), "{e}");
    }

    #[test]
    fn a_png_says_its_size() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&480u32.to_be_bytes());
        png.extend_from_slice(&[8, 6, 0, 0, 0]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        assert_eq!(png_size(&b64), Some((640, 480)));
        assert_eq!(png_size("aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8="), None);
    }

    #[test]
    fn selectors_become_string_literals() {
        assert_eq!(
            js_string("a[href=\"x\"]</script>"),
            "\"a[href=\\\"x\\\"]</script>\""
        );
    }
}
