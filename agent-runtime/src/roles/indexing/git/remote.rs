//! The fetch itself: a shallow gitoxide fetch of one ref over an isolated configuration, and
//! the mapping of what can go wrong to a [`GitError`] the user can act on.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::bstr::ByteSlice as _;

use super::GitError;

/// The shallow fetch into a bare repository at `git_dir`.
///
/// `interrupt` stops the fetch when set; `request_timeout` bounds each HTTP request.
pub(super) fn fetch_pack(
    url: &str,
    reference: Option<&str>,
    git_dir: &Path,
    interrupt: &AtomicBool,
    request_timeout: Duration,
) -> Result<gix::Repository, FetchFailure> {
    let is_http = url.starts_with("http://") || url.starts_with("https://");
    let mut prepare = gix::clone::PrepareFetch::new(
        url,
        git_dir,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )
    .map_err(FetchFailure::Gix)?
    .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN))
    .configure_connection(move |connection| {
        // Never prompt or ask a credential helper: private repositories are not supported.
        connection.set_credentials(|_| Ok(None));
        if is_http {
            let options = http_options(connection, request_timeout)?;
            connection.set_transport_options(options);
        }
        Ok(())
    });
    prepare = match reference {
        None => Ok(prepare),
        Some(hash) if is_full_hash(hash) => prepare.with_revision(Some(hash)),
        Some(name) => prepare.with_ref_name(Some(name)),
    }
    .map_err(|_| FetchFailure::BadRef)?;
    let (repo, _outcome) = prepare
        .fetch_only(gix::progress::Discard, interrupt)
        .map_err(FetchFailure::Gix)?;
    Ok(repo)
}

/// HTTP transport options: the repository's defaults, with a reqwest client that uses rustls
/// with the ring provider and a whole-request timeout.
fn http_options(
    connection: &mut gix::remote::Connection<
        '_,
        '_,
        '_,
        Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
    >,
    timeout: Duration,
) -> gix::Result<Box<dyn std::any::Any>> {
    use gix::protocol::transport::client::blocking_io::http;
    let remote = connection.remote();
    let url = remote
        .url(gix::remote::Direction::Fetch)
        .map(|u| u.to_bstring())
        .unwrap_or_default();
    let mut options = remote
        .repo()
        .transport_options(url.as_bstr(), None)?
        .unwrap_or_else(|| Box::new(http::Options::default()));
    if let Some(http_options) = options.downcast_mut::<http::Options>() {
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                let tls =
                    crate::tls::client_config().map_err(|e| gix::error::message!("TLS setup failed: {e}"))?;
                Ok(builder.tls_backend_preconfigured(tls.clone()).timeout(timeout))
            })),
            configure_request: None,
        };
        http_options.backend = Some(Arc::new(Mutex::new(backend)));
    }
    Ok(options)
}

/// A fetch failure before it is turned into a [`GitError`], which needs the guard's verdict.
#[derive(Debug)]
pub(super) enum FetchFailure {
    /// The reference is not a valid ref name or hash.
    BadRef,
    /// gitoxide failed.
    Gix(gix::Error),
}

/// Whether `s` is a full 40-digit commit hash.
fn is_full_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Maps a gitoxide error to what the user did wrong, if we can tell; otherwise a transport
/// error carrying the whole chain of causes.
pub(super) fn classify(err: &gix::Error, url: &str, ref_not_found: impl FnOnce() -> GitError) -> GitError {
    let mut chain: Vec<String> = Vec::new();
    for cause in err.iter_errors().map(|e| e.to_string()) {
        if !chain.contains(&cause) {
            chain.push(cause);
        }
    }
    let text = chain.join(": ").to_ascii_lowercase();
    let says = |phrases: &[&str]| phrases.iter().any(|p| text.contains(p));
    if says(&REPOSITORY_NOT_FOUND) {
        GitError::RepositoryNotFound { url: url.to_owned() }
    } else if err.classify().is_unauthenticated() || err.classify().is_permission_denied() {
        GitError::AuthenticationRequired { url: url.to_owned() }
    } else if err.classify().is_not_found() || says(&["not our ref"]) {
        ref_not_found()
    } else {
        GitError::Transport {
            url: url.to_owned(),
            message: chain.join(": "),
        }
    }
}

/// How servers say that a repository does not exist: `git daemon`, HTTP, and git-over-ssh
/// style messages that some servers relay.
const REPOSITORY_NOT_FOUND: [&str; 4] = [
    "repository not exported",
    "received http status 404",
    "repository not found",
    "does not appear to be a git repository",
];
