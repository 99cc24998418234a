//! Fetching a git repository for `index.repository`: a shallow (depth 1) fetch of one ref into
//! a temporary directory, then a checkout written by us so that every limit is enforced while
//! the files are written.
//!
//! The pipeline: *check the URL → fetch (gitoxide, watched by a timer and a size guard) →
//! resolve the commit → walk its tree, streaming blobs to disk → drop the object store*.
//!
//! Only `https`, `http` and `git` URLs are fetched (`file` too when [`Limits::allow_file`] is
//! set, for tests). The fetch ignores the machine's git configuration, never asks for
//! credentials, and never follows symbolic links or writes outside the working tree: symlinks
//! and submodules are skipped, and a path that could escape the tree is refused.
//!
//! Everything here blocks; run [`fetch`] on a blocking thread.

mod guard;
mod remote;
#[cfg(test)]
mod tests;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gix::bstr::ByteSlice as _;

use guard::{Guard, dir_size};
use remote::fetch_pack;
use tree::TreeWriter;

const MIB: u64 = 1024 * 1024;

/// What one fetch may cost. Exceeding `max_bytes`, `max_files` or `timeout` fails the fetch;
/// a file over `max_file_bytes` is skipped and counted in [`Checkout::skipped_large`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of the files written to the working tree; also the most the download
    /// (the pack) may weigh. Default 200 MiB.
    pub max_bytes: u64,
    /// Most files in the working tree. Default 50 000.
    pub max_files: u64,
    /// Files bigger than this are not written, only counted. Default 1 MiB.
    pub max_file_bytes: u64,
    /// Wall-clock time for the whole fetch and checkout. Default 300 s.
    pub timeout: Duration,
    /// Whether `file://` URLs are allowed. Only tests want this; default `false`.
    pub allow_file: bool,
    /// Whether a host at a loopback, private, link-local (cloud metadata) or other non-public
    /// address may be fetched from; default `false`, as for the Research agent's pages.
    pub allow_private: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 200 * MIB,
            max_files: 50_000,
            max_file_bytes: MIB,
            timeout: Duration::from_secs(300),
            allow_file: false,
            allow_private: false,
        }
    }
}

/// A checked-out commit. The temporary directory holding it is removed when this is dropped.
#[derive(Debug)]
pub struct Checkout {
    /// The working tree: the commit's regular files, without `.git`.
    pub dir: PathBuf,
    /// The checked-out commit, as 40 hex digits.
    pub commit: String,
    /// How many files were skipped because they were bigger than [`Limits::max_file_bytes`].
    pub skipped_large: u64,
    /// Owns the directory; removing it on drop.
    _root: tempfile::TempDir,
}

/// Why a repository could not be fetched. Each message is meant for the user who asked for it;
/// URLs in messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The URL is not one we fetch from.
    #[error("cannot fetch {url}: the {scheme} scheme is not allowed, use https, http or git")]
    UnsupportedScheme { url: String, scheme: String },
    /// The host is at a loopback, private, link-local or other non-public address.
    #[error(
        "cannot fetch {url}: its host is at {address}, a non-public address (set COGO_INDEX_ALLOW_PRIVATE=true on the agent to allow it)"
    )]
    PrivateAddress { url: String, address: String },
    /// The URL could not be parsed.
    #[error("{url} is not a valid repository URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The server has no such repository, or does not let us see it.
    #[error("repository {url} not found")]
    RepositoryNotFound { url: String },
    /// The server wants credentials (GitHub also answers so for a repository that does not
    /// exist); private repositories are not supported.
    #[error("repository {url} not found, or private (fetching with credentials is not supported)")]
    AuthenticationRequired { url: String },
    /// The repository has no ref by that name (or no commit with that hash the server will give).
    #[error("ref {reference} not found in {url}")]
    RefNotFound { reference: String, url: String },
    /// The repository has no commits.
    #[error("repository {url} is empty")]
    EmptyRepository { url: String },
    /// The download or the checked-out files exceed [`Limits::max_bytes`].
    #[error("repository is larger than the {} limit", human_bytes(*limit))]
    TooLarge { limit: u64 },
    /// The commit has more files than [`Limits::max_files`].
    #[error("repository has more than the limit of {limit} files")]
    TooManyFiles { limit: u64 },
    /// The fetch and checkout took longer than [`Limits::timeout`].
    #[error("fetching {url} took longer than the {}s limit", limit.as_secs())]
    Timeout { url: String, limit: Duration },
    /// The server could not be reached or the transfer failed.
    #[error("could not fetch {url}: {message}")]
    Transport { url: String, message: String },
    /// The commit's tree holds a path that could escape the working tree.
    #[error("repository {url} contains an unsafe path {path:?}")]
    UnsafePath { url: String, path: String },
    /// Writing the working tree failed (disk full, permissions, …).
    #[error("could not write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    /// Whether trying again later may succeed (the server or the disk may recover).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            GitError::Timeout { .. } | GitError::Transport { .. } | GitError::Io { .. }
        )
    }
}

/// Fetches `reference` of the repository at `url` (its default branch when `None`) with depth 1
/// and writes the commit's files into a new temporary directory under `parent_dir`.
///
/// `reference` is a branch name, a tag name, a full ref name (`refs/heads/x`), or a full
/// 40-digit commit hash (which the server must be willing to serve). `progress` receives short
/// messages for the user. Blocks until done, and returns [`GitError::Timeout`] at the latest a
/// few seconds after [`Limits::timeout`], even if the server stalls.
pub fn fetch(
    url: &str,
    reference: Option<&str>,
    parent_dir: &Path,
    limits: &Limits,
    progress: &dyn Fn(&str),
) -> Result<Checkout, GitError> {
    let shown = redact(url);
    check_scheme(url, &shown, limits)?;
    if !limits.allow_private {
        check_address(url, &shown)?;
    }
    let root = tempfile::Builder::new()
        .prefix("cogo-git-")
        .tempdir_in(parent_dir)
        .map_err(|source| GitError::Io {
            path: parent_dir.to_owned(),
            source,
        })?;
    progress(&format!("fetching {shown}"));

    // The work runs on its own thread so that a server that stalls mid-read (where gitoxide
    // cannot look at the interrupt flag) cannot hold the caller past the timeout.
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let job = Job {
        url: url.to_owned(),
        shown: shown.clone(),
        reference: reference.map(str::to_owned),
        root: root.path().to_owned(),
        limits: limits.clone(),
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    let worker_interrupt = interrupt.clone();
    let spawned = std::thread::Builder::new()
        .name("git-fetch".into())
        .spawn(move || {
            let outcome = job.run(worker_interrupt);
            // Keep the directory alive until the worker is done with it, even if abandoned.
            let _ = done_tx.send((outcome, root));
        });
    if let Err(source) = spawned {
        return Err(GitError::Io {
            path: parent_dir.to_owned(),
            source,
        });
    }
    let (outcome, root) = match done_rx.recv_timeout(limits.timeout + ABANDON_GRACE) {
        Ok(done) => done,
        Err(_) => {
            interrupt.store(true, Ordering::SeqCst);
            return Err(GitError::Timeout {
                url: shown,
                limit: limits.timeout,
            });
        }
    };
    let done = outcome?;
    let mut message = format!(
        "checked out {} files ({}) at {}",
        done.files,
        human_bytes(done.bytes),
        &done.commit[..7]
    );
    if done.skipped_large > 0 {
        message.push_str(&format!(
            ", skipped {} files over {}",
            done.skipped_large,
            human_bytes(limits.max_file_bytes)
        ));
    }
    progress(&message);
    Ok(Checkout {
        dir: root.path().join(TREE_DIR),
        commit: done.commit,
        skipped_large: done.skipped_large,
        _root: root,
    })
}

const TREE_DIR: &str = "tree";
const GIT_DIR: &str = "repo.git";
/// How long past the timeout we wait for the worker to notice the interrupt before giving up on it.
const ABANDON_GRACE: Duration = Duration::from_secs(5);

/// One fetch, owned by the worker thread.
struct Job {
    url: String,
    shown: String,
    reference: Option<String>,
    root: PathBuf,
    limits: Limits,
}

/// What the worker reports on success.
struct Done {
    commit: String,
    files: u64,
    bytes: u64,
    skipped_large: u64,
}

impl Job {
    fn run(self, interrupt: Arc<AtomicBool>) -> Result<Done, GitError> {
        let (url, limits) = (self.shown.as_str(), &self.limits);
        let git_dir = self.root.join(GIT_DIR);
        let pack_dir = git_dir.join("objects").join("pack");
        let guard = Guard::start(limits, pack_dir.clone(), interrupt);
        let fetched = fetch_pack(
            &self.url,
            self.reference.as_deref(),
            &git_dir,
            &guard.interrupt,
            limits.timeout,
        );
        let repo = fetched.map_err(|e| guard.explain(e, url, self.reference.as_deref(), limits))?;
        // The guard polls; make sure a pack that grew past the limit is caught deterministically.
        if dir_size(&pack_dir) > limits.max_bytes {
            return Err(GitError::TooLarge {
                limit: limits.max_bytes,
            });
        }

        let (commit_id, tree_id) = {
            let commit = repo
                .head_commit()
                .map_err(|_| GitError::EmptyRepository { url: url.to_owned() })?;
            let tree_id = commit.tree_id().map_err(|e| transport_error(url, &e))?.detach();
            (commit.id, tree_id)
        };
        let mut tree = TreeWriter::new(&repo, limits, &guard, url);
        tree.write(tree_id, &self.root.join(TREE_DIR))?;
        let (files, bytes, skipped_large) = (tree.files, tree.bytes, tree.skipped_large);
        drop(repo);
        // The objects are no longer needed; free the disk while the caller reads the tree.
        let _ = std::fs::remove_dir_all(&git_dir);
        Ok(Done {
            commit: commit_id.to_hex().to_string(),
            files,
            bytes,
            skipped_large,
        })
    }
}

/// Refuses every scheme but https, http, git (and file when allowed).
fn check_scheme(url: &str, shown: &str, limits: &Limits) -> Result<(), GitError> {
    let parsed = gix::url::parse(url.as_bytes().as_bstr()).map_err(|e| GitError::InvalidUrl {
        url: shown.to_owned(),
        reason: e.to_string(),
    })?;
    // scp-like `host:path` parses as ssh; `ext::` and other transports parse as something else.
    // Require the scheme to be spelled out so that what is fetched is what the user wrote.
    let spelled = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let scheme = parsed.scheme.as_str().to_owned();
    let allowed = match parsed.scheme {
        gix::url::Scheme::Https | gix::url::Scheme::Http | gix::url::Scheme::Git => true,
        gix::url::Scheme::File => limits.allow_file,
        _ => false,
    };
    if !allowed || spelled.as_deref() != Some(scheme.as_str()) {
        return Err(GitError::UnsupportedScheme {
            url: shown.to_owned(),
            scheme,
        });
    }
    if parsed.scheme != gix::url::Scheme::File && parsed.host().is_none() {
        return Err(GitError::InvalidUrl {
            url: shown.to_owned(),
            reason: "it has no host".into(),
        });
    }
    Ok(())
}

/// Refuses a host that resolves to a non-public address (checked before connecting; the
/// connection resolves the name again).
fn check_address(url: &str, shown: &str) -> Result<(), GitError> {
    use std::net::ToSocketAddrs as _;
    let parsed = gix::url::parse(url.as_bytes().as_bstr()).map_err(|e| GitError::InvalidUrl {
        url: shown.to_owned(),
        reason: e.to_string(),
    })?;
    let Some(host) = parsed.host() else {
        return Ok(());
    };
    let port = parsed.port_or_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, port).to_socket_addrs().map_err(|e| GitError::Transport {
        url: shown.to_owned(),
        message: format!("cannot resolve {host}: {e}"),
    })?;
    for addr in addrs {
        if !crate::roles::research::fetch::address_allowed(addr.ip()) {
            return Err(GitError::PrivateAddress {
                url: shown.to_owned(),
                address: addr.ip().to_string(),
            });
        }
    }
    Ok(())
}

/// A failure reading the fetched objects, reported like a transfer failure.
fn transport_error(url: &str, err: &dyn std::fmt::Display) -> GitError {
    GitError::Transport {
        url: url.to_owned(),
        message: err.to_string(),
    }
}

/// `url` without a password or user name, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `bytes` for people: `200 MiB`, `12.3 MiB`, `1.5 KiB`, `12 B`.
fn human_bytes(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
