//! An agent pod put together: its role's handlers, lanes, routes and background work
//! ([`crate::roles`]), its probes and metrics ([`crate::pod`]) and its pull loop
//! ([`crate::pull`]), until SIGTERM or `stop`.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    broker,
    handler::Registry,
    pod, pull,
    roles::{self, RoleConfig},
};

/// Runs the pod on `listener` until SIGTERM, SIGINT or `stop`; then stops leasing and gives the
/// tasks held up to `grace`. With a `broker_url`, its host is resolved before the first lease
/// (so a pod whose broker is not resolvable yet says so). `/readyz` follows `ready`.
pub async fn serve(
    listener: TcpListener,
    config: RoleConfig,
    broker_url: Option<String>,
    (grace, ready): (Duration, pod::Ready),
    stop: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let parts = roles::register(config.role, &config, &mut registry);
    for work in parts.background {
        let stopped = pod::stopped(stop.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = stopped => {}
            }
        });
    }
    let puller = config.broker.clone().map(|b| {
        let (registry, lanes, rx) = (Arc::new(registry), parts.lanes, stop.subscribe());
        tokio::spawn(async move {
            if let Some(url) = broker_url {
                tokio::select! {
                    _ = broker::resolve(url) => {}
                    _ = pod::stopped(rx.clone()) => return,
                }
            }
            pull::run(b, registry, lanes, rx, grace).await
        })
    });
    let router = pod::router(config.metrics.clone(), ready, parts.routes);
    let rx = stop.subscribe();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = pod::termination() => {}
                _ = pod::stopped(rx) => {}
            }
        })
        .await
        .context("server failed");
    let _ = stop.send(true);
    if let Some(p) = puller {
        let _ = p.await;
    }
    served
}
