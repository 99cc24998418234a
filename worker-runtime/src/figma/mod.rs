//! The FigmaMCP worker's jobs: `figma.file`, `figma.components` and `figma.generate_ui`
//! through the Figma REST API ([`client`]), and `mcp.tools` and `mcp.call` on the MCP servers
//! its CogoWorker names ([`crate::mcp`]).
//!
//! The Figma logic is pure and works on JSON in the API's documented shapes:
//! - [`clean_file`] / [`clean_components`]: a compact tree of a `GET /v1/files/:key` answer
//!   for agents and people;
//! - [`generate_ui`]: HTML or React (TSX) from one frame of a `GET /v1/files/:key/nodes`
//!   answer, reproducing its geometry and reporting every approximation;
//! - [`fixture::frame_with_nodes`]: a synthetic nodes answer of about `n` nodes, for
//!   benchmarks and tests.

pub mod client;
mod error;
pub mod fixture;
mod generate;
mod read;
mod tree;

use std::time::Duration;

use cogo_api::catalogue::{
    figma::{
        self as catalogue, ComponentsInput, FileInput, GenerateUiInput, GenerateUiResult, check_key,
        normalize_node_id,
    },
    mcp::{self as mcp_catalogue, CallInput, ToolsInput},
};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::{sync::watch, time::Instant};

use self::client::{ApiError, DEFAULT_API_URL, Figma};
pub use self::{
    error::{FigmaError, Result},
    generate::{Framework, Generated, generate_ui, generate_ui_with_images, image_refs},
    tree::{clean_components, clean_file},
};
use crate::{
    jobs::{Job, JobError, JobRunner, env_or, fatal},
    mcp::{self, McpServer},
};

/// How the worker runs Figma and MCP jobs.
#[derive(Clone, Debug)]
pub struct FigmaConfig {
    /// The Figma REST API's base address.
    pub api_url: String,
    /// The Figma token, when the CogoWorker gives one.
    pub token: Option<String>,
    /// The MCP servers, by name.
    pub servers: Vec<McpServer>,
    /// How long one job may take.
    pub job_timeout: Duration,
}

impl FigmaConfig {
    /// Reads `COGO_FIGMA_API_URL`, `COGO_FIGMA_TOKEN`, `COGO_MCP_SERVERS` (with each server's
    /// token in the variable it names) and `COGO_JOB_TIMEOUT_SECONDS`.
    pub fn from_env() -> std::result::Result<Self, String> {
        let seconds = |v: &str| v.parse().ok().filter(|s: &u64| *s > 0).map(Duration::from_secs);
        let servers = match std::env::var("COGO_MCP_SERVERS") {
            Ok(json) if !json.trim().is_empty() => servers_from_json(&json, |name| std::env::var(name).ok())?,
            _ => vec![],
        };
        Ok(FigmaConfig {
            api_url: std::env::var("COGO_FIGMA_API_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| DEFAULT_API_URL.into()),
            token: std::env::var("COGO_FIGMA_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
            servers,
            job_timeout: env_or("COGO_JOB_TIMEOUT_SECONDS", seconds, Duration::from_secs(60))?,
        })
    }
}

/// The MCP servers of `COGO_MCP_SERVERS` (`[{name, url, tokenEnv?, timeoutSeconds?}]`, as the
/// operator writes it), each token read with `var` from the variable it names.
pub fn servers_from_json(
    json: &str,
    var: impl Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<McpServer>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        name: String,
        url: String,
        token_env: Option<String>,
        timeout_seconds: Option<u64>,
    }
    let entries: Vec<Entry> =
        serde_json::from_str(json).map_err(|e| format!("COGO_MCP_SERVERS is not a list of servers: {e}"))?;
    entries
        .into_iter()
        .map(|e| {
            let mut server = McpServer::new(e.name.clone(), e.url);
            if let Some(s) = e.timeout_seconds.filter(|s| *s > 0) {
                server = server.timeout(Duration::from_secs(s));
            }
            if let Some(env) = e.token_env {
                let token = var(&env)
                    .filter(|t| !t.trim().is_empty())
                    .ok_or_else(|| format!("MCP server {:?}: its token variable {env} is empty", e.name))?;
                server = server.header("Authorization", format!("Bearer {}", token.trim()));
            }
            Ok(server)
        })
        .collect()
}

/// Runs Figma and MCP jobs.
pub struct FigmaRunner {
    config: FigmaConfig,
    figma: Option<Figma>,
}

impl FigmaRunner {
    /// A runner with `config`.
    pub fn new(config: FigmaConfig) -> std::result::Result<Self, String> {
        let figma = match &config.token {
            Some(t) => Some(Figma::new(&config.api_url, t)?),
            None => None,
        };
        Ok(FigmaRunner { config, figma })
    }

    fn figma(&self) -> std::result::Result<&Figma, JobError> {
        self.figma
            .as_ref()
            .ok_or_else(|| fatal("this worker has no Figma token (spec.figmaTokenSecretRef)"))
    }

    fn server(&self, name: &str) -> std::result::Result<&McpServer, JobError> {
        self.config
            .servers
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.config.servers.iter().map(|s| s.name.as_str()).collect();
                fatal(if known.is_empty() {
                    format!("no MCP server {name:?}: this worker's CogoWorker names none (spec.mcpServers)")
                } else {
                    format!("no MCP server {name:?}; this worker knows {}", known.join(", "))
                })
            })
    }

    async fn execute(&self, job: &Job) -> std::result::Result<Value, JobError> {
        let left = job.time_left();
        let until = Instant::now() + self.config.job_timeout.min(left);
        let api = |e: ApiError| JobError {
            retryable: e.retryable(),
            message: e.to_string(),
        };
        let design = |e: FigmaError| fatal(format!("the Figma answer cannot be read: {e}"));
        match job.task_type.as_str() {
            catalogue::FILE => {
                let input: FileInput = job.read_input()?;
                check_key("fileKey", &input.file_key).map_err(fatal)?;
                let file = self
                    .figma()?
                    .file(&input.file_key, input.depth, until)
                    .await
                    .map_err(api)?;
                clean_file(&file, input.depth).map_err(design)
            }
            catalogue::COMPONENTS => {
                let input: ComponentsInput = job.read_input()?;
                check_key("fileKey", &input.file_key).map_err(fatal)?;
                let file = self
                    .figma()?
                    .file(&input.file_key, None, until)
                    .await
                    .map_err(api)?;
                clean_components(&file).map_err(design)
            }
            catalogue::GENERATE_UI => {
                let input: GenerateUiInput = job.read_input()?;
                check_key("fileKey", &input.file_key).map_err(fatal)?;
                let id = normalize_node_id(&input.node_id);
                check_key("nodeId", &id).map_err(fatal)?;
                let nodes = self
                    .figma()?
                    .nodes(&input.file_key, &[&id], until)
                    .await
                    .map_err(api)?;
                let framework = match input.framework {
                    catalogue::Framework::Html => Framework::Html,
                    catalogue::Framework::React => Framework::React,
                };
                // Image fills show their images when Figma gives their addresses.
                let mut images = std::collections::HashMap::new();
                if !image_refs(&nodes, &id).is_empty() {
                    let fills = self
                        .figma()?
                        .image_fills(&input.file_key, until)
                        .await
                        .map_err(api)?;
                    for (r, url) in fills.as_object().into_iter().flatten() {
                        if let Some(url) = url.as_str() {
                            images.insert(r.clone(), url.to_string());
                        }
                    }
                }
                let generated = generate_ui_with_images(&nodes, &id, framework, &images)
                    .map_err(|e| fatal(e.to_string()))?;
                Ok(serde_json::to_value(GenerateUiResult {
                    code: generated.code,
                    warnings: generated.warnings,
                })
                .unwrap_or_default())
            }
            mcp_catalogue::TOOLS => {
                let input: ToolsInput = job.read_input()?;
                let server = self.server(&input.server)?;
                let tools = mcp::list_tools(server).await.map_err(mcp_error)?;
                Ok(serde_json::json!({"server": server.name, "tools": tools}))
            }
            mcp_catalogue::CALL => {
                let input: CallInput = job.read_input()?;
                let server = self.server(&input.server)?;
                let result = mcp::call_tool(server, &input.tool, input.arguments)
                    .await
                    .map_err(mcp_error)?;
                Ok(serde_json::to_value(result).unwrap_or_default())
            }
            other => Err(fatal(format!("a FigmaMCP worker does not run {other}"))),
        }
    }
}

fn mcp_error(e: mcp::McpError) -> JobError {
    JobError {
        retryable: e.retryable(),
        message: e.to_string(),
    }
}

impl JobRunner for FigmaRunner {
    fn run<'a>(
        &'a self,
        job: Job,
        mut cancel: watch::Receiver<bool>,
    ) -> BoxFuture<'a, std::result::Result<Value, JobError>> {
        Box::pin(async move {
            tokio::select! {
                r = self.execute(&job) => r,
                _ = cancel.wait_for(|c| *c) => Err(fatal("cancelled")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_come_from_the_operators_json_with_their_tokens() {
        let json = r#"[{"name": "dev", "url": "http://m/mcp", "tokenEnv": "T0", "timeoutSeconds": 5},
                       {"name": "open", "url": "http://o/mcp", "tokenEnv": null, "timeoutSeconds": null}]"#;
        let servers = servers_from_json(json, |v| (v == "T0").then(|| "s3cret\n".to_string())).unwrap();
        assert_eq!(
            servers[0].headers,
            vec![("Authorization".to_string(), "Bearer s3cret".to_string())]
        );
        assert_eq!(servers[0].timeout, Duration::from_secs(5));
        assert!(servers[1].headers.is_empty());
        let e = servers_from_json(json, |_| None).unwrap_err();
        assert!(e.contains("its token variable T0 is empty"), "{e}");
        assert!(
            servers_from_json("{}", |_| None)
                .unwrap_err()
                .contains("not a list of servers")
        );
    }
}
