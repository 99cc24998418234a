//! Clocks that disagree: the pods of a Deployment on the real node get Debian's libfaketime
//! (`LD_PRELOAD`) from a host directory, each reading its wall-clock offset from a file named
//! after its pod, re-read every second. Monotonic clocks stay true; only what the process
//! believes the time of day is moves.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};

use crate::cluster::Cluster;

/// Where Debian's `libfaketime` package puts the library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Where the pods see the host directory.
const MOUNT: &str = "/opt/cogo-clock";

/// A Deployment whose pods' wall clocks the test sets one by one. The host directory is
/// removed when dropped (the Deployment is the test's to remove).
pub struct SkewedClocks {
    dir: PathBuf,
}

impl SkewedClocks {
    /// Gives the pods of Deployment `name` in `ns` (container 0, which must define
    /// `COGO_POD_NAME`) a settable clock, and waits until its pods roll over to it.
    pub fn install(cluster: &Cluster, ns: &str, name: &str) -> SkewedClocks {
        assert!(
            std::path::Path::new(LIBFAKETIME).is_file(),
            "{LIBFAKETIME} is missing: install Debian's libfaketime package (`.ci/run` does)"
        );
        let dir = std::env::temp_dir().join(format!("cogo-clock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("offsets")).expect("clock directory");
        std::fs::copy(LIBFAKETIME, dir.join("libfaketime.so.1")).expect("copy libfaketime");
        let readable = std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(readable, "chmod {}", dir.display());

        let deployment = cluster
            .get_json(ns, &format!("deployment/{name}"))
            .unwrap_or_else(|| panic!("no deployment {ns}/{name}"));
        let pod = &deployment["spec"]["template"]["spec"];
        let volume = json!({"name": "cogo-clock", "hostPath": {"path": dir, "type": "Directory"}});
        let mount = json!({"name": "cogo-clock", "mountPath": MOUNT, "readOnly": true});
        let append = |path: &str, exists: bool, item: Value| {
            if exists {
                json!({"op": "add", "path": format!("{path}/-"), "value": item})
            } else {
                json!({"op": "add", "path": path, "value": [item]})
            }
        };
        let mut ops = vec![
            append("/spec/template/spec/volumes", pod["volumes"].is_array(), volume),
            append(
                "/spec/template/spec/containers/0/volumeMounts",
                pod["containers"][0]["volumeMounts"].is_array(),
                mount,
            ),
        ];
        for (k, v) in [
            ("LD_PRELOAD", format!("{MOUNT}/libfaketime.so.1")),
            (
                "FAKETIME_TIMESTAMP_FILE",
                format!("{MOUNT}/offsets/$(COGO_POD_NAME)"),
            ),
            ("FAKETIME_CACHE_DURATION", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
        ] {
            ops.push(
                json!({"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                            "value": {"name": k, "value": v}}),
            );
        }
        cluster.kubectl_ok(
            &[
                "patch",
                "deployment",
                name,
                "-n",
                ns,
                "--type=json",
                "-p",
                &Value::Array(ops).to_string(),
            ],
            None,
        );
        cluster.kubectl_ok(
            &[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "-n",
                ns,
                "--timeout=240s",
            ],
            None,
        );
        SkewedClocks { dir }
    }

    /// Sets pod `pod`'s wall clock `offset` ahead of the true time (negative: behind); it
    /// takes effect within a second or two.
    pub fn set(&self, pod: &str, offset: Duration, ahead: bool) {
        let secs = offset.as_secs() as i64 * if ahead { 1 } else { -1 };
        std::fs::write(self.dir.join("offsets").join(pod), format!("{secs:+}\n")).expect("offset file");
    }

    /// Sets every pod's wall clock true again.
    pub fn reset(&self) {
        for entry in std::fs::read_dir(self.dir.join("offsets"))
            .expect("offsets")
            .flatten()
        {
            std::fs::write(entry.path(), "+0\n").expect("offset file");
        }
    }
}

impl Drop for SkewedClocks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
