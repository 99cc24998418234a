//! `browser.screenshot` and `browser.run`: headless Chromium on a Browser worker, a fresh
//! browser context (its own cookies, storage and cache) per job.

use serde::{Deserialize, Serialize};

/// The task type taking a screenshot of a page.
pub const SCREENSHOT: &str = "browser.screenshot";
/// The task type running steps on a page.
pub const RUN: &str = "browser.run";

/// The most pixels a screenshot may have on either side.
pub const MAX_SIDE: u32 = 16_384;

/// Input of `browser.screenshot`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScreenshotInput {
    /// The page to load (http, https, or file when the CogoWorker allows it).
    pub url: String,
    /// The window's size in CSS pixels (default 1280x800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewport: Option<Viewport>,
    /// Capture the whole page, not only the viewport (at most 16384 pixels high).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_page: bool,
    /// A CSS selector to wait for after the page loaded, before the capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<String>,
}

/// A window size in CSS pixels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Viewport {
    /// Width, 1 to 16384.
    #[schemars(range(min = 1, max = 16384))]
    pub width: u32,
    /// Height, 1 to 16384.
    #[schemars(range(min = 1, max = 16384))]
    pub height: u32,
}

impl Default for Viewport {
    fn default() -> Self {
        Viewport {
            width: 1280,
            height: 800,
        }
    }
}

impl Viewport {
    /// Why the viewport cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        for (side, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v > MAX_SIDE {
                return Err(format!("viewport.{side} must be 1 to {MAX_SIDE}, not {v}"));
            }
        }
        Ok(())
    }
}

/// Result of `browser.screenshot`, and of a `screenshot` step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScreenshotResult {
    /// The picture, a PNG in standard base64.
    pub png: String,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
    /// The page's title.
    pub title: String,
    /// The page's address after redirects.
    pub final_url: String,
}

/// Input of `browser.run`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunInput {
    /// The page to load first.
    pub url: String,
    /// What to do on it, in order (at most 100 steps).
    #[schemars(length(max = 100))]
    pub steps: Vec<Step>,
    /// The window's size in CSS pixels (default 1280x800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewport: Option<Viewport>,
}

/// The most steps one `browser.run` takes.
pub const MAX_STEPS: usize = 100;

/// One step of `browser.run`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// The element it is done to (a CSS selector): required by click, type and extract;
    /// for waitFor, the element to wait for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The text to type, or the key to press (`Enter`, `Tab`, `Escape`, `Backspace`,
    /// `ArrowUp`/`Down`/`Left`/`Right`, or one character).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// JavaScript for evaluate: an expression, awaited when it is a promise; its value,
    /// as JSON, is the step's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// For extract: the attribute to read instead of the element's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// For extract: read the element's outer HTML instead of its text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub html: bool,
    /// For extract: every matching element, as a list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// For screenshot: the whole page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_page: bool,
    /// Milliseconds the step may take (default and most: the worker's step timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What a step does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Click the middle of the element, as a mouse would.
    Click,
    /// Focus the element and type `text` into it.
    Type,
    /// Press the key `text` (on the focused element, or `selector` focused first).
    Press,
    /// Wait for `selector` to be on the page, or for `timeoutMs` without one.
    WaitFor,
    /// Run `script` in the page.
    Evaluate,
    /// Read the text, an attribute or the HTML of `selector`.
    Extract,
    /// Take a screenshot of the page as it is now.
    Screenshot,
}

impl Action {
    /// The name used in inputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Click => "click",
            Action::Type => "type",
            Action::Press => "press",
            Action::WaitFor => "waitFor",
            Action::Evaluate => "evaluate",
            Action::Extract => "extract",
            Action::Screenshot => "screenshot",
        }
    }
}

impl Step {
    /// Why the step cannot run as written, naming the field (`steps[i]` is prefixed by the
    /// caller).
    pub fn check(&self) -> Result<(), String> {
        let needs = |field: &str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(format!("{} needs `{field}`", self.action.as_str()))
            }
        };
        match self.action {
            Action::Click | Action::Extract => needs("selector", self.selector.is_some())?,
            Action::Type => {
                needs("selector", self.selector.is_some())?;
                needs("text", self.text.is_some())?;
            }
            Action::Press => needs("text", self.text.is_some())?,
            Action::Evaluate => needs("script", self.script.is_some())?,
            Action::WaitFor => needs(
                "selector or timeoutMs",
                self.selector.is_some() || self.timeout_ms.is_some(),
            )?,
            Action::Screenshot => {}
        }
        if self.action != Action::Extract && (self.attribute.is_some() || self.html || self.all) {
            return Err(format!(
                "attribute, html and all belong to extract, not {}",
                self.action.as_str()
            ));
        }
        if self.attribute.is_some() && self.html {
            return Err("extract reads an attribute or the HTML, not both".into());
        }
        if self.full_page && self.action != Action::Screenshot {
            return Err(format!(
                "fullPage belongs to screenshot, not {}",
                self.action.as_str()
            ));
        }
        Ok(())
    }
}

/// Result of `browser.run`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// One entry per step: `null` for click, type, press and waitFor; the value for evaluate
    /// and extract; the screenshot (as `browser.screenshot` gives it) for screenshot.
    pub results: Vec<serde_json::Value>,
    /// The page's title after the last step.
    pub title: String,
    /// The page's address after the last step.
    pub final_url: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn steps_say_what_they_miss() {
        for (step, fragment) in [
            (json!({"action": "click"}), "click needs `selector`"),
            (json!({"action": "type", "selector": "#a"}), "type needs `text`"),
            (json!({"action": "press"}), "press needs `text`"),
            (json!({"action": "evaluate"}), "evaluate needs `script`"),
            (
                json!({"action": "waitFor"}),
                "waitFor needs `selector or timeoutMs`",
            ),
            (
                json!({"action": "click", "selector": "a", "attribute": "href"}),
                "belong to extract",
            ),
            (
                json!({"action": "extract", "selector": "a", "attribute": "href", "html": true}),
                "not both",
            ),
            (
                json!({"action": "click", "selector": "a", "fullPage": true}),
                "fullPage belongs",
            ),
        ] {
            let s: Step = serde_json::from_value(step.clone()).unwrap();
            let e = s.check().unwrap_err();
            assert!(e.contains(fragment), "{step}: {e}");
        }
        let ok: Step = serde_json::from_value(json!({"action": "waitFor", "timeoutMs": 10})).unwrap();
        assert!(ok.check().is_ok());
    }

    #[test]
    fn inputs_refuse_unknown_fields_and_actions() {
        for (input, fragment) in [
            (
                json!({"url": "https://a", "fullpage": true}),
                "unknown field `fullpage`",
            ),
            (
                json!({"url": "https://a", "viewport": {"width": 1}}),
                "missing field `height`",
            ),
        ] {
            let e = serde_json::from_value::<ScreenshotInput>(input.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains(fragment), "{input}: {e}");
        }
        let e =
            serde_json::from_value::<RunInput>(json!({"url": "https://a", "steps": [{"action": "hover"}]}))
                .unwrap_err()
                .to_string();
        assert!(e.contains("unknown variant `hover`"), "{e}");
        assert!(
            Viewport { width: 0, height: 1 }
                .check()
                .unwrap_err()
                .contains("viewport.width")
        );
        assert!(
            Viewport {
                width: 1,
                height: 20_000
            }
            .check()
            .unwrap_err()
            .contains("viewport.height")
        );
    }
}
