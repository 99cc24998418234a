//! The agent binary starts, answers its probes, and exits 0 on SIGTERM.

mod common;

use common::Runtime;

const AGENT: Runtime = Runtime {
    binary: env!("CARGO_BIN_EXE_cogo-agent"),
    selector: ("COGO_ROLE", "Research"),
    metric: "role=\"research\"",
    stopped: "agent stopped",
    unknown: "unknown role \"Janitor\"",
};

#[test]
fn serves_probes_and_stops_cleanly_on_sigterm() {
    common::serves_probes_and_stops_cleanly_on_sigterm(&AGENT);
}

#[test]
fn rejects_an_unknown_role_with_a_clear_message() {
    common::rejects_an_unknown_selector(&AGENT);
}
