//! CPU profiles of a running process for `make bench`: `perf record` samples its stacks (DWARF
//! call graphs, so release builds without frame pointers unwind) while a benchmark runs; the
//! samples are folded into a flame graph (SVG) and summed by function and by crate.

use std::{collections::HashMap, path::PathBuf};
#[cfg(feature = "bench")]
use std::{
    io::BufReader,
    path::Path,
    process::{Child, Command, Stdio},
};

/// Samples per second.
#[cfg(feature = "bench")]
const FREQUENCY: &str = "99";

/// `perf record` attached to one process, until [`Recording::finish`] (or until dropped, when
/// the benchmark failed before: then perf is stopped and its file removed).
#[cfg(feature = "bench")]
pub struct Recording {
    child: Child,
    data: PathBuf,
}

#[cfg(feature = "bench")]
impl Drop for Recording {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        std::fs::remove_file(&self.data).ok();
    }
}

#[cfg(feature = "bench")]
impl Recording {
    /// Starts sampling the process `pid` into `data` (perf's file). Fails when `perf` (Debian's
    /// `linux-perf`) is missing or cannot attach.
    pub fn start(pid: u32, data: &Path) -> Result<Recording, String> {
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "-F",
                FREQUENCY,
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "perf is required for the operator's profile (Debian: apt-get install linux-perf): {e}"
                )
            })?;
        // perf opens its events before sampling; a process it cannot attach to ends it at once.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut recording = Recording {
            child,
            data: data.to_path_buf(),
        };
        if let Ok(Some(status)) = recording.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = recording.child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).ok();
            }
            return Err(format!("perf record ended at once ({status}): {err}"));
        }
        Ok(recording)
    }

    /// Stops sampling, and writes the folded stacks (`<name>.folded`) and the flame graph
    /// (`<name>.svg`) into `dir`.
    pub fn finish(mut self, dir: &Path, name: &str) -> Result<Profile, String> {
        // perf writes its file on SIGINT.
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .map_err(|e| e.to_string())?;
        self.child.wait().map_err(|e| e.to_string())?;
        let mut script = Command::new("perf")
            .args(["script", "-i"])
            .arg(&self.data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("perf script: {e}"))?;
        let mut folded = Vec::new();
        let mut options = inferno::collapse::perf::Options::default();
        options.annotate_kernel = true;
        inferno::collapse::Collapse::collapse(
            &mut inferno::collapse::perf::Folder::from(options),
            BufReader::new(script.stdout.take().expect("piped")),
            &mut folded,
        )
        .map_err(|e| format!("folding perf's stacks: {e}"))?;
        let out = script.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() || folded.is_empty() {
            return Err(format!(
                "perf script ({}) gave no stacks: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let folded = String::from_utf8_lossy(&folded).into_owned();
        let folded_path = dir.join(format!("{name}.folded"));
        std::fs::write(&folded_path, &folded).map_err(|e| e.to_string())?;
        let svg = dir.join(format!("{name}.svg"));
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = format!("{name}: CPU ({FREQUENCY} Hz samples)");
        let out = std::fs::File::create(&svg).map_err(|e| e.to_string())?;
        inferno::flamegraph::from_lines(&mut opts, folded.lines(), out)
            .map_err(|e| format!("flame graph: {e}"))?;
        Ok(Profile::from_folded(&folded, svg))
    }
}

/// What a profile says: samples by leaf function (self), by function anywhere on the stack
/// (total, each counted once per sample), and self samples by crate.
#[derive(Debug, Default)]
pub struct Profile {
    /// The samples' total weight (perf's periods: nanoseconds of CPU with `cpu-clock`).
    pub samples: u64,
    /// Self samples by function, most first.
    pub by_self: Vec<(String, u64)>,
    /// Total samples by function of the operator's own crates, most first.
    pub by_total: Vec<(String, u64)>,
    /// Self samples by crate (or `kernel`, `libc and other native code`), most first.
    pub by_crate: Vec<(String, u64)>,
    /// The flame graph.
    pub svg: PathBuf,
}

impl Profile {
    /// Sums folded stacks (`root;...;leaf weight` lines; the first frame is the thread).
    pub fn from_folded(folded: &str, svg: PathBuf) -> Profile {
        let mut samples = 0;
        let (mut by_self, mut by_total, mut by_crate) =
            (HashMap::<String, u64>::new(), HashMap::new(), HashMap::new());
        for line in folded.lines() {
            let Some((stack, count)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            samples += count;
            let frames: Vec<&str> = stack.split(';').skip(1).collect();
            if let Some(leaf) = frames.last() {
                *by_self.entry(short(leaf)).or_default() += count;
                *by_crate.entry(crate_of(leaf)).or_default() += count;
            }
            let mut seen = std::collections::HashSet::new();
            for f in &frames {
                let name = short(f);
                if name.starts_with("cogo_") && seen.insert(name.clone()) {
                    *by_total.entry(name).or_default() += count;
                }
            }
        }
        let sorted = |m: HashMap<String, u64>| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        };
        Profile {
            samples,
            by_self: sorted(by_self),
            by_total: sorted(by_total),
            by_crate: sorted(by_crate),
            svg,
        }
    }

    /// Markdown: the crates' shares, then the top `n` functions by self and by total samples.
    pub fn report(&self, what: &str, n: usize) -> Vec<String> {
        let pct = |c: u64| 100.0 * c as f64 / self.samples.max(1) as f64;
        let mut out = vec![format!(
            "{what}: flame graph `{}`; shares of the samples' weight (perf's periods: CPU time with the `cpu-clock` event)",
            self.svg.file_name().unwrap_or_default().to_string_lossy()
        )];
        for (header, rows, code) in [
            ("crate (self time)", &self.by_crate, ""),
            ("function (self time)", &self.by_self, "`"),
            (
                "the operator's function (total time, callees included)",
                &self.by_total,
                "`",
            ),
        ] {
            out.push(String::new());
            out.push(format!("| {header} | share |"));
            out.push("|---|---|".into());
            out.extend(
                rows.iter()
                    .take(n)
                    .map(|(k, c)| format!("| {code}{k}{code} | {:.1}% |", pct(*c))),
            );
        }
        out
    }
}

/// A frame's function without its generic arguments and closure suffixes, at most 120
/// characters.
fn short(frame: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for ch in frame.chars() {
        match ch {
            '<' if !out.is_empty() && !out.ends_with("::") && !out.ends_with(' ') => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(ch),
        }
    }
    let out = out.replace("::{{closure}}", "");
    out.chars().take(120).collect()
}

/// The crate a frame's code belongs to: the first path segment of its function (the type's
/// for a trait method, `<T as Trait>::f`), `kernel` for the kernel's frames, and `libc and
/// other native code` for the rest.
fn crate_of(frame: &str) -> String {
    if frame.ends_with("_[k]") {
        return "kernel".into();
    }
    let path = frame.strip_prefix('<').unwrap_or(frame);
    let path = path.trim_start_matches("&mut ").trim_start_matches('&');
    match path.split_once("::") {
        Some((first, _)) if !first.is_empty() && first.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            first.to_string()
        }
        _ => "libc and other native code".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_stacks_sum_by_leaf_by_crate_and_by_the_operator_s_functions() {
        let folded = "\
cogo-operator;tokio::runtime::task::harness::poll;cogo_operator::broker::lease;serde_json::ser::to_vec 30
cogo-operator;tokio::runtime::task::harness::poll;cogo_operator::broker::lease;<kube_client::Client as tower::Service<T>>::call 10
cogo-operator;cogo_operator::controller::reconcile::{{closure}};cogo_operator::controller::reconcile::{{closure}};__memmove_avx 5
cogo-operator;entry_SYSCALL_64_[k];do_syscall_64_[k] 5";
        let p = Profile::from_folded(folded, PathBuf::from("op.svg"));
        assert_eq!(p.samples, 50);
        assert_eq!(p.by_self[0], ("serde_json::ser::to_vec".into(), 30));
        assert_eq!(
            p.by_crate,
            vec![
                ("serde_json".into(), 30),
                ("kube_client".into(), 10),
                ("kernel".into(), 5),
                ("libc and other native code".into(), 5),
            ]
        );
        assert_eq!(
            p.by_total,
            vec![
                ("cogo_operator::broker::lease".into(), 40),
                ("cogo_operator::controller::reconcile".into(), 5),
            ],
            "a function recursing in one sample counts once"
        );
        let report = p.report("operator", 3).join("\n");
        assert!(report.contains("| serde_json | 60.0% |"), "{report}");
    }
}
