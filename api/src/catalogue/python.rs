//! `python.execute`: run Python code in a sandbox on a PythonSandbox worker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Encoding;

/// The task type.
pub const EXECUTE: &str = "python.execute";

/// Input of `python.execute`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecuteInput {
    /// The program, run as the main module in a fresh workspace (the working directory).
    pub code: String,
    /// Text fed to the program's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Files written into the workspace before the program starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFile>,
    /// Packages to install into the job's own environment first; each must be in the
    /// CogoWorker's `sandbox.allowedPackages`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Seconds the program may run; at most the CogoWorker's `sandbox.timeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Environment variables of the program.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A file of the workspace given as input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputFile {
    /// Path relative to the workspace, such as `data/input.csv`.
    pub path: String,
    /// The file's content.
    pub content: String,
    /// How `content` is written (default `utf8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// Result of `python.execute`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResult {
    /// The program's exit code; 128 + N when a signal N ended it.
    pub exit_code: i32,
    /// What it printed on standard output.
    pub stdout: String,
    /// What it printed on standard error.
    pub stderr: String,
    /// Whether output was cut at the CogoWorker's `sandbox.maxOutputSize`.
    pub truncated: bool,
    /// Files the program created or changed in the workspace.
    pub files: Vec<OutputFile>,
    /// How long the program ran, in milliseconds (package installation excluded).
    pub duration_ms: u64,
    /// Why the worker stopped the program, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed: Option<KillReason>,
}

/// A file the program left in its workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputFile {
    /// Path relative to the workspace.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The content, when the file is small enough to return (256 KiB, and 1 MiB for all files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// How `content` is written: `utf8` for text, `base64` for anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// Why the worker stopped a program.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KillReason {
    /// It ran past its wall-time or CPU-time limit.
    Timeout,
    /// It ran out of its memory limit.
    Memory,
    /// It printed more than the output limit, or filled its workspace.
    Output,
    /// It started more processes than allowed.
    Processes,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inputs_refuse_unknown_and_ill_typed_fields_by_name() {
        let ok: ExecuteInput = serde_json::from_value(json!({"code": "print(1)"})).unwrap();
        assert!(ok.files.is_empty() && ok.packages.is_empty());
        for (input, fragment) in [
            (json!({"code": "x", "timeout": 3}), "unknown field `timeout`"),
            (json!({"code": 3}), "invalid type: integer `3`, expected a string"),
            (json!({"stdin": "x"}), "missing field `code`"),
            (
                json!({"code": "x", "files": [{"path": "a", "content": "b", "encoding": "hex"}]}),
                "unknown variant `hex`",
            ),
        ] {
            let err = serde_json::from_value::<ExecuteInput>(input.clone())
                .unwrap_err()
                .to_string();
            assert!(err.contains(fragment), "{input}: {err}");
        }
    }

    #[test]
    fn results_use_the_catalogue_names() {
        let r = ExecuteResult {
            exit_code: 0,
            stdout: "1\n".into(),
            stderr: String::new(),
            truncated: false,
            files: vec![],
            duration_ms: 12,
            killed: Some(KillReason::Processes),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["exitCode"], 0);
        assert_eq!(v["durationMs"], 12);
        assert_eq!(v["killed"], "processes");
    }
}
