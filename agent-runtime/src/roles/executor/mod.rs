//! The Executor: runs the jobs of `python.*`, `browser.*`, `figma.*` and `mcp.*` tasks on worker
//! pods. Workers dial its WebSocket endpoint ([`endpoint`]) with tokens it verifies against the
//! operator's published keys ([`tokens`]); the [`registry`] knows who is connected and picks the
//! least loaded worker for each job; [`dispatch`] runs a leased task on a worker. It leases
//! worker task types in one lane per kind, only as many as that kind has free slots, so tasks
//! wait in the operator's queue while every worker is busy; its own lane takes every other type.
//! Every few seconds it reports its workers to the operator (CogoWorker status) and refreshes
//! its metrics.

pub mod dispatch;
pub mod endpoint;
pub mod registry;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use axum::{Router, routing::get};
use cogo_api::{WorkerKind, broker::WorkerReport, worker::message::WORKERS_PATH};
use prometheus_client::metrics::{family::Family, gauge::Gauge};
use tracing::warn;

use self::{
    endpoint::Endpoint,
    registry::{KindSlots, WorkerRegistry},
    tokens::WorkerTokens,
};
use super::{RoleConfig, RoleParts};
use crate::{handler::Registry, pull::Lane};

/// How long a worker lane's lease request waits: its slots shrink when a worker leaves, and a
/// request out for more slots than remain would lease a job no worker can take.
pub const WORKER_LANE_WAIT_SECONDS: u32 = 3;

/// How often the Executor reports its workers to the operator and refreshes its metrics.
pub const REPORT_EVERY: Duration = Duration::from_secs(3);

/// Registers the Executor's handlers, its worker endpoint, one lane per worker kind, and its
/// reporting.
pub fn register(config: &RoleConfig, handlers: &mut Registry) -> RoleParts {
    let registry = Arc::new(WorkerRegistry::default());
    let tokens = Arc::new(WorkerTokens::new(
        config.broker.clone(),
        &config.namespace,
        &config.agent,
    ));
    let endpoint = Arc::new(Endpoint::new(
        registry.clone(),
        tokens.clone(),
        config.worker_ping,
        &config.pod,
    ));
    let mut lanes = Vec::new();
    for kind in WorkerKind::ALL {
        for prefix in kind.task_prefixes() {
            handlers.register_prefix(
                prefix,
                dispatch::Dispatch {
                    kind,
                    endpoint: endpoint.clone(),
                    no_worker_for: config.no_worker_for,
                },
            );
        }
        lanes.push(Lane {
            name: kind.slug().into(),
            type_prefixes: kind.task_prefixes().iter().map(|p| p.to_string()).collect(),
            exclude_type_prefixes: vec![],
            slots: Arc::new(KindSlots {
                registry: registry.clone(),
                kind,
            }),
            wait_seconds: WORKER_LANE_WAIT_SECONDS,
        });
    }
    let routes = Router::new()
        .route(WORKERS_PATH, get(endpoint::upgrade))
        .with_state(endpoint);
    let gauges = Gauges::register(config);
    let mut background: Vec<futures::future::BoxFuture<'static, ()>> =
        vec![Box::pin(async move { tokens.keep_fresh().await })];
    background.push(Box::pin(report(config.clone(), registry, gauges)));
    RoleParts {
        routes,
        lanes,
        own_lane_excludes: WorkerKind::ALL
            .iter()
            .flat_map(|k| k.task_prefixes())
            .map(|p| p.to_string())
            .collect(),
        background,
    }
}

/// The system's worker metrics, by kind: `cogo_active_workers`, `cogo_total_workers`,
/// `cogo_queue_length` and `cogo_success_rate`.
#[derive(Clone, Default)]
struct Gauges {
    active: Family<Vec<(String, String)>, Gauge>,
    total: Family<Vec<(String, String)>, Gauge>,
    queue: Family<Vec<(String, String)>, Gauge>,
    success: Family<Vec<(String, String)>, Gauge>,
}

impl Gauges {
    fn register(config: &RoleConfig) -> Self {
        let g = Gauges::default();
        let m = &config.metrics;
        m.register(
            "active_workers",
            "Connected workers running at least one job",
            g.active.clone(),
        );
        m.register("total_workers", "Connected workers", g.total.clone());
        m.register(
            "queue_length",
            "Leased jobs waiting for a free worker",
            g.queue.clone(),
        );
        m.register(
            "success_rate",
            "Percentage of finished jobs that succeeded, since the Executor started",
            g.success.clone(),
        );
        g
    }

    fn refresh(&self, registry: &WorkerRegistry) {
        for kind in WorkerKind::ALL {
            let f = registry.figures(kind);
            let label = vec![("kind".to_string(), kind.as_str().to_string())];
            self.active.get_or_create(&label).set(f.active.into());
            self.total.get_or_create(&label).set(f.total.into());
            self.queue.get_or_create(&label).set(f.queued.into());
            self.success.get_or_create(&label).set(f.success_rate.into());
        }
    }
}

/// Every [`REPORT_EVERY`], and at once after a change of workers: refreshes the metrics and
/// reports the workers to the operator.
async fn report(config: RoleConfig, registry: Arc<WorkerRegistry>, gauges: Gauges) {
    let mut failing = false;
    loop {
        let changed = registry.on_change();
        gauges.refresh(&registry);
        if let Some(broker) = &config.broker {
            let (workers, jobs) = registry.snapshot();
            let report = WorkerReport {
                pod: config.pod.clone(),
                workers,
                jobs,
            };
            match broker.report_workers(&report).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    warn!(error = %e, "cannot report the workers to the operator");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = changed => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
