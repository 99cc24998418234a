//! The worker binary starts, answers its probes, and exits 0 on SIGTERM.

#[path = "../../agent-runtime/tests/common/mod.rs"]
mod common;

use common::Runtime;

const WORKER: Runtime = Runtime {
    binary: env!("CARGO_BIN_EXE_cogo-worker"),
    selector: ("COGO_WORKER_KIND", "FigmaMCP"),
    metric: "kind=\"figma-mcp\"",
    stopped: "worker stopped",
    unknown: "unknown worker kind \"Janitor\"",
};

#[test]
fn serves_probes_and_stops_cleanly_on_sigterm() {
    common::serves_probes_and_stops_cleanly_on_sigterm(&WORKER);
}

#[test]
fn rejects_an_unknown_kind_with_a_clear_message() {
    common::rejects_an_unknown_selector(&WORKER);
}
