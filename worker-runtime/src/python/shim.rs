//! `cogo-worker sandbox-exec`: the first program a job runs inside its namespaces. It sets the
//! job's resource limits (from inside the job's own user namespace, where the kernel counts
//! the processes limit per namespace), installs the seccomp filters and executes the program.
//! It runs single-threaded, before any runtime starts.

use std::{ffi::CString, os::unix::ffi::OsStrExt};

use super::seccomp;

/// The limits the shim sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShimLimits {
    /// Address space, bytes.
    pub memory: u64,
    /// Processes and threads.
    pub processes: u64,
    /// Largest file, bytes.
    pub file_size: u64,
    /// CPU seconds.
    pub cpu_seconds: u64,
}

/// Open files a job may hold.
const OPEN_FILES: u64 = 256;

impl ShimLimits {
    /// The arguments that carry these limits.
    pub fn args(&self) -> Vec<String> {
        vec![
            format!("--memory={}", self.memory),
            format!("--processes={}", self.processes),
            format!("--file-size={}", self.file_size),
            format!("--cpu={}", self.cpu_seconds),
        ]
    }

    /// Reads limits from `args` (as [`ShimLimits::args`] writes them).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut l = ShimLimits::default();
        for a in args {
            let (k, v) = a
                .strip_prefix("--")
                .and_then(|a| a.split_once('='))
                .ok_or_else(|| format!("bad argument {a:?}"))?;
            let v: u64 = v.parse().map_err(|_| format!("bad value in {a:?}"))?;
            match k {
                "memory" => l.memory = v,
                "processes" => l.processes = v,
                "file-size" => l.file_size = v,
                "cpu" => l.cpu_seconds = v,
                _ => return Err(format!("unknown limit {k:?}")),
            }
        }
        Ok(l)
    }
}

fn set(resource: libc::__rlimit_resource_t, value: u64, what: &str) -> Result<(), String> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(format!(
            "cannot limit {what}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs the shim: `sandbox-exec <limits...> -- <program> <args...>`. Returns only on failure,
/// with the exit code to use (the message is on stderr).
pub fn main(args: &[String]) -> i32 {
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("cogo sandbox: usage: sandbox-exec <limits> -- <program> [args]");
        return 125;
    };
    let (limits, command) = (&args[..split], &args[split + 1..]);
    let result = ShimLimits::parse(limits).and_then(|l| {
        set(libc::RLIMIT_AS, l.memory, "memory")?;
        set(libc::RLIMIT_NPROC, l.processes, "processes")?;
        set(libc::RLIMIT_FSIZE, l.file_size, "file size")?;
        // The hard limit a little above the soft one: SIGXCPU first, SIGKILL if ignored.
        let cpu = libc::rlimit {
            rlim_cur: l.cpu_seconds,
            rlim_max: l.cpu_seconds + 1,
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_CPU, &cpu) } != 0 {
            return Err(format!(
                "cannot limit CPU time: {}",
                std::io::Error::last_os_error()
            ));
        }
        set(libc::RLIMIT_NOFILE, OPEN_FILES, "open files")?;
        set(libc::RLIMIT_CORE, 0, "core dumps")?;
        seccomp::install()
    });
    if let Err(e) = result {
        eprintln!("cogo sandbox: {e}");
        return 125;
    }
    let Some(program) = command.first() else {
        eprintln!("cogo sandbox: no program to run");
        return 125;
    };
    let argv: Vec<CString> = command
        .iter()
        .filter_map(|a| CString::new(std::ffi::OsStr::new(a).as_bytes()).ok())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let Ok(path) = CString::new(program.as_bytes()) else {
        return 125;
    };
    // SAFETY: path and argv are NUL-terminated C strings kept alive across the call; the
    // environment is the one bwrap set up.
    unsafe { libc::execv(path.as_ptr(), ptrs.as_ptr()) };
    eprintln!(
        "cogo sandbox: cannot run {program}: {}",
        std::io::Error::last_os_error()
    );
    127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_travel_as_arguments() {
        let l = ShimLimits {
            memory: 256 << 20,
            processes: 32,
            file_size: 1 << 20,
            cpu_seconds: 60,
        };
        assert_eq!(ShimLimits::parse(&l.args()), Ok(l));
        assert!(ShimLimits::parse(&["--memory=x".into()]).is_err());
        assert!(
            ShimLimits::parse(&["--swap=1".into()])
                .unwrap_err()
                .contains("unknown limit")
        );
    }
}
