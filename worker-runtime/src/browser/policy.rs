//! What pages may load. Every request a page makes is paused (CDP `Fetch`) and let through
//! only when its scheme is allowed and, for http and https, when none of its host's addresses
//! is the pod's own (loopback, unspecified, link-local such as cloud metadata, or the pod's
//! IPs), unless the CogoWorker allows them. Which other addresses a worker may reach is the
//! NetworkPolicy's to decide.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Mutex,
};

/// The policy of one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// `file://` addresses may load.
    pub allow_file: bool,
    /// The pod's own addresses may load.
    pub allow_pod_addresses: bool,
    /// The pod's IPs (from `COGO_POD_IP`).
    pub pod_ips: Vec<IpAddr>,
}

/// Schemes a task may give as its page: the web, inline documents, and `file` when allowed.
const PAGE_SCHEMES: [&str; 3] = ["http", "https", "data"];
/// Schemes a page's own requests may use beside those.
const SUBRESOURCE_SCHEMES: [&str; 2] = ["blob", "about"];

impl UrlPolicy {
    /// Why a task's page cannot be loaded at all, if it cannot (before any request).
    pub fn check_page(&self, url: &str) -> Result<(), String> {
        if url == "about:blank" {
            return Ok(());
        }
        let scheme = scheme(url).ok_or_else(|| format!("{url:?} is not an absolute address"))?;
        if PAGE_SCHEMES.contains(&scheme.as_str()) || (scheme == "file" && self.allow_file) {
            return Ok(());
        }
        Err(self.scheme_refusal(url, &scheme))
    }

    fn scheme_refusal(&self, url: &str, scheme: &str) -> String {
        if scheme == "file" {
            format!(
                "{} is a file address, which this worker does not load (spec.browser.allowFileUrls)",
                short(url)
            )
        } else {
            format!(
                "{} uses the scheme {scheme:?}; pages load http, https and data addresses",
                short(url)
            )
        }
    }

    /// Whether a request of a page may go out; `resolve` names a host's addresses.
    pub async fn check_request<F, Fut>(&self, url: &str, resolve: F) -> Result<(), String>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = std::io::Result<Vec<IpAddr>>>,
    {
        let scheme = scheme(url).ok_or_else(|| format!("{url:?} is not an absolute address"))?;
        match scheme.as_str() {
            "http" | "https" | "ws" | "wss" => {}
            "file" if self.allow_file => return Ok(()),
            s if PAGE_SCHEMES.contains(&s) || SUBRESOURCE_SCHEMES.contains(&s) => return Ok(()),
            s => return Err(self.scheme_refusal(url, s)),
        }
        if self.allow_pod_addresses {
            return Ok(());
        }
        let host = host(url).ok_or_else(|| format!("{} has no host", short(url)))?;
        let addresses = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_)
                if host.eq_ignore_ascii_case("localhost")
                    || host.to_ascii_lowercase().ends_with(".localhost") =>
            {
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
            }
            // A name that does not resolve fails in the browser as it would anyway.
            Err(_) => resolve(host.clone()).await.unwrap_or_default(),
        };
        match addresses.into_iter().find(|ip| self.own(*ip)) {
            Some(ip) => Err(format!(
                "{} is blocked: {host} is the pod's own address {ip} (spec.browser.allowPodAddresses)",
                short(url)
            )),
            None => Ok(()),
        }
    }

    /// Whether `ip` is the pod's own.
    pub fn own(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let local = match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || is_v6_link_local(v6),
        };
        local || self.pod_ips.contains(&ip)
    }
}

fn is_v6_link_local(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// The lower-case scheme of an absolute address.
fn scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once(':')?;
    let ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then(|| scheme.to_ascii_lowercase())
}

/// The host of an address with an authority, without brackets or port.
fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_string())
}

/// An address cut for messages.
pub fn short(url: &str) -> String {
    if url.chars().count() <= 120 {
        url.to_string()
    } else {
        format!("{}...", url.chars().take(120).collect::<String>())
    }
}

/// Names resolved once per job.
#[derive(Default)]
pub struct Resolved(Mutex<HashMap<String, Vec<IpAddr>>>);

impl Resolved {
    /// The addresses of `host`, looked up once.
    pub async fn lookup(&self, host: String) -> std::io::Result<Vec<IpAddr>> {
        if let Some(found) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&host) {
            return Ok(found.clone());
        }
        let found: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), 0))
            .await?
            .map(|a| a.ip())
            .collect();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host, found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(policy: &UrlPolicy, url: &str) -> Result<(), String> {
        policy
            .check_request(url, |host| async move {
                Ok(match host.as_str() {
                    "sneaky.example" => vec!["10.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
                    "metadata.example" => vec!["169.254.169.254".parse().unwrap()],
                    _ => vec!["93.184.216.34".parse().unwrap()],
                })
            })
            .await
    }

    #[tokio::test]
    async fn the_pods_own_addresses_and_files_are_blocked_by_default() {
        let policy = UrlPolicy {
            pod_ips: vec!["10.1.2.3".parse().unwrap()],
            ..Default::default()
        };
        for (url, fragment) in [
            (
                "http://127.0.0.1:3003/metrics",
                "127.0.0.1 is the pod's own address",
            ),
            ("http://localhost/", "the pod's own address 127.0.0.1"),
            ("http://[::1]:80/", "::1 is the pod's own"),
            ("http://[::ffff:127.0.0.1]/", "the pod's own address"),
            (
                "https://sneaky.example/x",
                "sneaky.example is the pod's own address 127.0.0.1",
            ),
            ("http://metadata.example/latest", "169.254.169.254"),
            ("http://10.1.2.3:8080/", "10.1.2.3 is the pod's own"),
            ("http://0.0.0.0/", "pod's own"),
            ("ws://user:pw@127.0.0.1:9/", "pod's own"),
            (
                "file:///etc/passwd",
                "file address, which this worker does not load",
            ),
            ("chrome://version", "uses the scheme \"chrome\""),
        ] {
            let e = check(&policy, url).await.unwrap_err();
            assert!(e.contains(fragment), "{url}: {e}");
        }
        for url in [
            "https://example.com/",
            "http://10.1.2.4/",
            "data:text/html,<p>hi</p>",
            "blob:https://a/b",
            "about:blank",
        ] {
            assert_eq!(check(&policy, url).await, Ok(()), "{url}");
        }
        assert!(
            policy
                .check_page("javascript:alert(1)")
                .unwrap_err()
                .contains("scheme \"javascript\"")
        );
        assert!(policy.check_page("file:///etc/passwd").is_err());
        assert!(
            policy
                .check_page("example.com")
                .unwrap_err()
                .contains("not an absolute address")
        );
        assert!(policy.check_page("data:text/html,x").is_ok());
    }

    #[tokio::test]
    async fn the_worker_may_allow_them() {
        let policy = UrlPolicy {
            allow_file: true,
            allow_pod_addresses: true,
            pod_ips: vec![],
        };
        for url in [
            "http://127.0.0.1:3003/",
            "file:///tmp/x.html",
            "http://169.254.169.254/",
        ] {
            assert_eq!(check(&policy, url).await, Ok(()), "{url}");
        }
        assert!(policy.check_page("file:///tmp/x.html").is_ok());
    }
}
