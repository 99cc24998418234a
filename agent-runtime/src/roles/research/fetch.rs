//! Reads one web page for the Research agent, safely.
//!
//! Every hop goes: *parse → check scheme → resolve → check every address → connect to the
//! checked addresses only → follow a redirect (back to the start) or read the body*. The
//! client is built per hop with a resolver that can only return the checked addresses, no
//! proxy and no automatic redirects, so neither DNS rebinding nor a redirect can reach an
//! address the policy refuses. The whole fetch, redirects included, runs under one timeout,
//! and the body is read in chunks up to a byte limit.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{ACCEPT, CONTENT_TYPE, LOCATION},
};

use super::html;

/// The `User-Agent` of every fetch.
pub const USER_AGENT: &str = concat!("cogo-research/", env!("CARGO_PKG_VERSION"));

const ACCEPT_VALUE: &str = "text/html, text/plain;q=0.9, */*;q=0.1";

/// Limits of one fetch.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Bytes of body read at most; the rest is cut off (default 2 MiB).
    pub max_bytes: usize,
    /// Time for the whole fetch, redirects included (default 15 s).
    pub timeout: Duration,
    /// Redirects followed at most (default 5).
    pub max_redirects: u8,
    /// Whether private, loopback, link-local and other non-public addresses may be fetched
    /// (default false; the CogoAgent's config sets it through `COGO_RESEARCH_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            max_bytes: 2 * 1024 * 1024,
            timeout: Duration::from_secs(15),
            max_redirects: 5,
            allow_private: false,
        }
    }
}

/// A page read.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The URL as asked.
    pub url: String,
    /// The URL the page was read from, after redirects.
    pub final_url: String,
    /// The HTML title, if the page is HTML and has one.
    pub title: Option<String>,
    /// The readable text.
    pub text: String,
    /// Whether the body was cut at `max_bytes`.
    pub truncated: bool,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL does not parse or has no host.
    #[error("{url:?} is not a valid URL: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme is not http or https.
    #[error("{url}: scheme {scheme:?} is not fetched, only http and https are")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The host resolves to an address the policy refuses.
    #[error(
        "{url}: address {addr} is {kind} and not fetched; the CogoAgent's config can allow \
         it (env COGO_RESEARCH_ALLOW_PRIVATE=true)"
    )]
    AddressNotAllowed {
        /// The URL.
        url: String,
        /// The refused address.
        addr: IpAddr,
        /// What kind of address it is (loopback, private ...).
        kind: &'static str,
    },
    /// The host does not resolve.
    #[error("{url}: cannot resolve {host}: {reason}")]
    Dns {
        /// The URL.
        url: String,
        /// Its host.
        host: String,
        /// Why.
        reason: String,
    },
    /// More redirects than the policy allows.
    #[error("{url}: more than {max} redirects")]
    TooManyRedirects {
        /// The URL asked.
        url: String,
        /// The policy's limit.
        max: u8,
    },
    /// The fetch took longer than the policy allows.
    #[error("{url}: no complete answer within {after:?}")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The policy's timeout.
        after: Duration,
    },
    /// The server answered with an error status (or a redirect without a location).
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The page is not text.
    #[error("{url}: content type {content_type:?} is not text or HTML")]
    UnsupportedContentType {
        /// The URL.
        url: String,
        /// The `Content-Type` received.
        content_type: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("{url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

impl FetchError {
    /// Whether trying again later may succeed: timeouts, transport and DNS failures, 429 and
    /// 5xx statuses. Refusals by policy and other statuses are final.
    pub fn retryable(&self) -> bool {
        match self {
            FetchError::Timeout { .. } | FetchError::Transport { .. } | FetchError::Dns { .. } => true,
            FetchError::Status { status, .. } => *status == 429 || *status >= 500,
            FetchError::BadUrl { .. }
            | FetchError::Scheme { .. }
            | FetchError::AddressNotAllowed { .. }
            | FetchError::TooManyRedirects { .. }
            | FetchError::UnsupportedContentType { .. } => false,
        }
    }
}

/// Reads one page.
pub async fn fetch(url: &str, policy: &FetchPolicy) -> Result<Page, FetchError> {
    match tokio::time::timeout(policy.timeout, fetch_hops(url, policy)).await {
        Ok(page) => page,
        Err(_) => Err(FetchError::Timeout {
            url: url.to_owned(),
            after: policy.timeout,
        }),
    }
}

async fn fetch_hops(asked: &str, policy: &FetchPolicy) -> Result<Page, FetchError> {
    let mut url = Url::parse(asked).map_err(|e| FetchError::BadUrl {
        url: asked.to_owned(),
        reason: e.to_string(),
    })?;
    let mut redirects = 0u8;
    loop {
        let response = send(&url, policy).await?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .filter(|_| status.is_redirection());
        if let Some(location) = location {
            if redirects >= policy.max_redirects {
                return Err(FetchError::TooManyRedirects {
                    url: asked.to_owned(),
                    max: policy.max_redirects,
                });
            }
            redirects += 1;
            let bad = |reason: String| FetchError::BadUrl {
                url: url.to_string(),
                reason,
            };
            let location = location
                .to_str()
                .map_err(|_| bad("Location is not ASCII".into()))?;
            url = url
                .join(location)
                .map_err(|e| bad(format!("Location {location:?}: {e}")))?;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let (title, text, truncated) = read(response, &url, policy).await?;
        return Ok(Page {
            url: asked.to_owned(),
            final_url: url.to_string(),
            title,
            text,
            truncated,
        });
    }
}

/// Reads a successful response's body up to the byte limit and turns it into a title and
/// text; also says whether the body was cut.
async fn read(
    mut response: reqwest::Response,
    url: &Url,
    policy: &FetchPolicy,
) -> Result<(Option<String>, String, bool), FetchError> {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default();
    let Some(kind) = body_kind(&content_type) else {
        return Err(FetchError::UnsupportedContentType {
            url: url.to_string(),
            content_type,
        });
    };
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, &e))? {
        let room = policy.max_bytes - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let text = decode(&body, &content_type, truncated);
    let html = match kind {
        BodyKind::Html => true,
        BodyKind::Text => false,
        BodyKind::Unknown => text.trim_start().starts_with('<'),
    };
    let (title, text) = if html { html::to_text(&text) } else { (None, text) };
    Ok((title, text, truncated))
}

/// Checks `url` against the policy and sends a GET to its checked addresses.
async fn send(url: &Url, policy: &FetchPolicy) -> Result<reqwest::Response, FetchError> {
    let addrs = checked_addrs(url, policy).await?;
    let tls = crate::tls::client_config().map_err(|e| FetchError::Transport {
        url: url.to_string(),
        reason: format!("cannot set up TLS: {e}"),
    })?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .dns_resolver(Pinned(addrs))
        .tls_backend_preconfigured(tls.clone())
        .build()
        .map_err(|e| transport(url, &e))?;
    client
        .get(url.clone())
        .header(ACCEPT, ACCEPT_VALUE)
        .send()
        .await
        .map_err(|e| transport(url, &e))
}

/// The addresses `url` may be fetched from: its scheme is http(s) and every address its host
/// resolves to is allowed.
async fn checked_addrs(url: &Url, policy: &FetchPolicy) -> Result<Vec<SocketAddr>, FetchError> {
    let name = url.to_string();
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Scheme {
            url: name,
            scheme: url.scheme().to_owned(),
        });
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let Some(host) = url.host_str() else {
        return Err(FetchError::BadUrl {
            url: name,
            reason: "no host".into(),
        });
    };
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs: Vec<SocketAddr> = if let Ok(ip) = literal.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        let dns = |reason: String| FetchError::Dns {
            url: name.clone(),
            host: host.into(),
            reason,
        };
        let found = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| dns(e.to_string()))?;
        let found: Vec<_> = found.collect();
        if found.is_empty() {
            return Err(dns("no addresses".into()));
        }
        found
    };
    if !policy.allow_private {
        for addr in &addrs {
            if let Some(kind) = refused_kind(addr.ip()) {
                return Err(FetchError::AddressNotAllowed {
                    url: name,
                    addr: addr.ip(),
                    kind,
                });
            }
        }
    }
    Ok(addrs)
}

/// A resolver that answers every name with the addresses already checked.
struct Pinned(Vec<SocketAddr>);

impl Resolve for Pinned {
    fn resolve(&self, _: Name) -> Resolving {
        let addrs: Addrs = Box::new(self.0.clone().into_iter());
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

fn transport(url: &Url, error: &reqwest::Error) -> FetchError {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Transport {
        url: url.to_string(),
        reason,
    }
}

/// How a body is turned into text.
enum BodyKind {
    Html,
    Text,
    /// No content type: HTML if it looks like markup.
    Unknown,
}

fn body_kind(content_type: &str) -> Option<BodyKind> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence {
        "text/html" | "application/xhtml+xml" => Some(BodyKind::Html),
        "" => Some(BodyKind::Unknown),
        "application/json" | "application/xml" => Some(BodyKind::Text),
        _ if essence.starts_with("text/") || essence.ends_with("+json") => Some(BodyKind::Text),
        _ => None,
    }
}

/// Decodes a body: Latin-1 when the charset says so, else UTF-8 (lossy; a character cut by
/// truncation is dropped).
fn decode(body: &[u8], content_type: &str, truncated: bool) -> String {
    let charset = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("charset="))
        .map(|c| c.trim_matches(['"', '\'']))
        .next();
    if let Some("iso-8859-1" | "latin1" | "iso_8859-1" | "iso8859-1" | "l1" | "us-ascii") = charset {
        return body.iter().map(|b| char::from(*b)).collect();
    }
    let mut body = body;
    if truncated
        && let Err(e) = std::str::from_utf8(body)
        && e.error_len().is_none()
    {
        body = &body[..e.valid_up_to()];
    }
    String::from_utf8_lossy(body).into_owned()
}

/// Whether a page at `ip` may be fetched without `allow_private`: false for loopback, private,
/// link-local, shared, unspecified, broadcast, multicast, documentation, benchmarking and
/// reserved addresses, and for IPv6 forms that embed one of those IPv4 addresses.
pub fn address_allowed(ip: IpAddr) -> bool {
    refused_kind(ip).is_none()
}

/// What kind of non-public address `ip` is, or `None` for a public one.
fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => v4_kind(ip),
        IpAddr::V6(ip) => v6_kind(ip),
    }
}

const V4_REFUSED: &[([u8; 4], u32, &str)] = &[
    ([255, 255, 255, 255], 32, "broadcast"),
    ([0, 0, 0, 0], 8, "unspecified (0.0.0.0/8)"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared (carrier-grade NAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "reserved for protocol assignments"),
    ([192, 0, 2, 0], 24, "for documentation"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "for benchmarking"),
    ([198, 51, 100, 0], 24, "for documentation"),
    ([203, 0, 113, 0], 24, "for documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

const V6_REFUSED: &[(u128, u32, &str)] = &[
    (0x0064_ff9b_0001 << 80, 48, "local-use NAT64"),
    (0x0100 << 112, 64, "discard-only"),
    (0x2001 << 112, 23, "reserved for protocol assignments"),
    (0x2001_0db8 << 96, 32, "for documentation"),
    (0xfc00 << 112, 7, "unique local (private)"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local"),
    (0xff00 << 112, 8, "multicast"),
];

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let ip = u32::from(ip);
    V4_REFUSED
        .iter()
        .find(|(net, bits, _)| (ip ^ u32::from_be_bytes(*net)) >> (32 - bits) == 0)
        .map(|(_, _, kind)| *kind)
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let bits = u128::from(ip);
    let low_v4 = Ipv4Addr::from(bits as u32);
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d, SIIT),
    // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses reach the embedded
    // IPv4 address; so does 6to4 (2002:aabb:ccdd::).
    if bits >> 32 == 0xffff || bits >> 32 == 0xffff_0000 || bits >> 32 == 0 || bits >> 32 == 0x0064_ff9b << 64
    {
        return v4_kind(low_v4);
    }
    if bits >> 112 == 0x2002 {
        return v4_kind(Ipv4Addr::from((bits >> 80) as u32));
    }
    V6_REFUSED
        .iter()
        .find(|(net, len, _)| (bits ^ net) >> (128 - len) == 0)
        .map(|(_, _, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{
        Router,
        extract::{Path, Request},
        http::{HeaderMap, StatusCode, header},
        middleware::{self, Next},
        response::{Html, IntoResponse, Redirect},
        routing::get,
    };

    use super::*;

    /// Serves the test site on a free loopback port; returns its base URL and a request count.
    async fn serve() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let absolute = format!("{base}/plain");
        let counter = seen.clone();
        let router =
            Router::new()
                .route(
                    "/page",
                    get(|| async {
                        Html("<html><head><title>Hi</title></head><p>Some <b>text</b>.</p></html>")
                    }),
                )
                .route("/plain", get(|| async { "just text\n" }))
                .route(
                    "/latin1",
                    get(|| async {
                        (
                            [(header::CONTENT_TYPE, "text/plain; charset=ISO-8859-1")],
                            b"caf\xe9",
                        )
                    }),
                )
                .route(
                    "/headers",
                    get(|h: HeaderMap| async move {
                        format!("{:?} {:?}", h[header::USER_AGENT], h[header::ACCEPT])
                    }),
                )
                .route("/relative", get(|| async { Redirect::to("page") }))
                .route(
                    "/absolute",
                    get(move || async move { Redirect::permanent(&absolute) }),
                )
                .route(
                    "/hops/{n}",
                    get(|Path(n): Path<u32>| async move {
                        let next = if n == 0 {
                            "/plain".into()
                        } else {
                            format!("/hops/{}", n - 1)
                        };
                        Redirect::temporary(&next)
                    }),
                )
                .route(
                    "/to-ftp",
                    get(|| async { Redirect::to("ftp://example.com/file") }),
                )
                .route("/to-file", get(|| async { Redirect::to("file:///etc/passwd") }))
                .route("/big", get(|| async { "é".repeat(10_000) }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        "late"
                    }),
                )
                .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
                .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
                .route(
                    "/image",
                    get(|| async { ([(header::CONTENT_TYPE, "image/png")], b"\x89PNG") }),
                )
                .layer(middleware::from_fn(move |req: Request, next: Next| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { next.run(req).await.into_response() }
                }));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (base, seen)
    }

    fn local() -> FetchPolicy {
        FetchPolicy {
            allow_private: true,
            ..FetchPolicy::default()
        }
    }

    #[tokio::test]
    async fn an_html_page_reads_as_title_and_text() {
        let (base, _) = serve().await;
        let page = fetch(&format!("{base}/page"), &local()).await.unwrap();
        assert_eq!(page.title.as_deref(), Some("Hi"));
        assert_eq!(page.text, "Some text.");
        assert_eq!(page.final_url, format!("{base}/page"));
        assert!(!page.truncated);
    }

    #[tokio::test]
    async fn text_is_read_as_it_is_in_its_charset() {
        let (base, _) = serve().await;
        let page = fetch(&format!("{base}/plain"), &local()).await.unwrap();
        assert_eq!((page.title, page.text.as_str()), (None, "just text\n"));
        let page = fetch(&format!("{base}/latin1"), &local()).await.unwrap();
        assert_eq!(page.text, "café");
        let page = fetch(&format!("{base}/headers"), &local()).await.unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            page.text,
            format!("\"cogo-research/{version}\" \"{ACCEPT_VALUE}\"")
        );
    }

    #[tokio::test]
    async fn redirects_are_followed_up_to_the_limit() {
        let (base, _) = serve().await;
        let page = fetch(&format!("{base}/relative"), &local()).await.unwrap();
        assert_eq!(
            (page.url, page.final_url),
            (format!("{base}/relative"), format!("{base}/page"))
        );
        let page = fetch(&format!("{base}/absolute"), &local()).await.unwrap();
        assert_eq!(page.final_url, format!("{base}/plain"));
        let three = FetchPolicy {
            max_redirects: 3,
            ..local()
        };
        // /hops/2 → /hops/1 → /hops/0 → /plain: three redirects.
        assert_eq!(
            fetch(&format!("{base}/hops/2"), &three).await.unwrap().text,
            "just text\n"
        );
        let err = fetch(&format!("{base}/hops/3"), &three).await.unwrap_err();
        assert!(
            matches!(err, FetchError::TooManyRedirects { max: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("more than 3 redirects"), "{err}");
        assert!(!err.retryable());
    }

    #[tokio::test]
    async fn a_redirect_is_checked_like_the_first_url() {
        let (base, _) = serve().await;
        for (path, scheme) in [("/to-ftp", "ftp"), ("/to-file", "file")] {
            let err = fetch(&format!("{base}{path}"), &local()).await.unwrap_err();
            assert!(
                matches!(&err, FetchError::Scheme { scheme: s, .. } if s == scheme),
                "{err}"
            );
            assert!(!err.retryable());
        }
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_cut() {
        let (base, _) = serve().await;
        // 10 000 two-byte characters; 1001 bytes cut the 501st in half, which is dropped.
        let policy = FetchPolicy {
            max_bytes: 1001,
            ..local()
        };
        let page = fetch(&format!("{base}/big"), &policy).await.unwrap();
        assert!(page.truncated);
        assert_eq!(page.text, "é".repeat(500));
    }

    #[tokio::test]
    async fn a_slow_server_times_out() {
        let (base, _) = serve().await;
        let policy = FetchPolicy {
            timeout: Duration::from_millis(300),
            ..local()
        };
        let err = fetch(&format!("{base}/slow"), &policy).await.unwrap_err();
        assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("/slow"), "{err}");
        assert!(err.retryable());
    }

    #[tokio::test]
    async fn error_statuses_and_other_content_fail() {
        let (base, _) = serve().await;
        let err = fetch(&format!("{base}/missing"), &local()).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status: 404, .. }) && !err.retryable(),
            "{err}"
        );
        assert!(err.to_string().ends_with("/missing: HTTP status 404"), "{err}");
        let err = fetch(&format!("{base}/busy"), &local()).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status: 503, .. }) && err.retryable(),
            "{err}"
        );
        let err = fetch(&format!("{base}/image"), &local()).await.unwrap_err();
        assert!(matches!(err, FetchError::UnsupportedContentType { .. }) && !err.retryable());
        assert!(err.to_string().contains("\"image/png\""), "{err}");
    }

    #[tokio::test]
    async fn only_http_urls_are_fetched() {
        for url in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "gopher://example.com/",
        ] {
            let err = fetch(url, &local()).await.unwrap_err();
            assert!(matches!(err, FetchError::Scheme { .. }), "{url}: {err}");
            assert!(err.to_string().contains("only http and https"), "{err}");
        }
        let err = fetch("not a url", &local()).await.unwrap_err();
        assert!(
            matches!(err, FetchError::BadUrl { .. }) && !err.retryable(),
            "{err}"
        );
    }

    #[tokio::test]
    async fn private_addresses_are_refused_before_any_connection() {
        // A listener nobody accepts from: a connection would wait in its backlog.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (base, seen) = serve().await;
        let server_port = base.rsplit(':').next().unwrap();
        let cases = [
            (format!("http://127.0.0.1:{port}/"), "127.0.0.1", "loopback"),
            (
                format!("http://localhost:{server_port}/page"),
                "127.0.0.1",
                "loopback",
            ),
            ("http://[::1]/".into(), "::1", "loopback"),
            (
                "http://169.254.169.254/latest/meta-data".into(),
                "169.254.169.254",
                "link-local",
            ),
            ("http://10.1.2.3/".into(), "10.1.2.3", "private"),
            (
                "http://[::ffff:127.0.0.1]/".into(),
                "::ffff:127.0.0.1",
                "loopback",
            ),
            ("http://0.0.0.0/".into(), "0.0.0.0", "unspecified"),
            ("http://2130706433/".into(), "127.0.0.1", "loopback"),
        ];
        for (url, addr, kind) in cases {
            let err = fetch(&url, &FetchPolicy::default()).await.unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, FetchError::AddressNotAllowed { .. }),
                "{url}: {message}"
            );
            // localhost may resolve to ::1 first.
            if !url.contains("localhost") {
                assert!(
                    message.contains(&format!("address {addr} is {kind}")),
                    "{message}"
                );
            }
            assert!(message.contains("COGO_RESEARCH_ALLOW_PRIVATE"), "{message}");
            assert!(!err.retryable());
        }
        let no_connection = listener.accept().unwrap_err();
        assert_eq!(no_connection.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn addresses_are_classified() {
        let allowed = [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1",
            "2a00:1450::1",
        ];
        for ip in allowed {
            assert!(address_allowed(ip.parse().unwrap()), "{ip}");
        }
        let refused = [
            ("127.0.0.2", "loopback"),
            ("10.255.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified (0.0.0.0/8)"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("192.0.2.7", "for documentation"),
            ("198.18.0.1", "for benchmarking"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique local (private)"),
            ("fc00::1", "unique local (private)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "for documentation"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("::ffff:0:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::192.168.0.1", "private"),
            ("2002:a00:1::", "private"),
        ];
        for (ip, kind) in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!address_allowed(ip), "{ip}");
            assert_eq!(refused_kind(ip), Some(kind), "{ip}");
        }
    }

    #[test]
    fn content_types_pick_the_reader() {
        for (ct, html) in [
            ("text/html; charset=utf-8", true),
            ("application/xhtml+xml", true),
        ] {
            assert!(matches!(body_kind(ct), Some(BodyKind::Html)) == html, "{ct}");
        }
        for ct in ["text/plain", "text/markdown", "application/json", "text/csv"] {
            assert!(matches!(body_kind(ct), Some(BodyKind::Text)), "{ct}");
        }
        for ct in ["image/png", "application/pdf", "application/octet-stream"] {
            assert!(body_kind(ct).is_none(), "{ct}");
        }
    }
}
