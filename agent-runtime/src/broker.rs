//! Finding the operator's broker. The pull loop builds on this; for now the agent resolves the
//! broker's address (its Service name, through cluster DNS) and logs what it found.

use std::time::Duration;

use tracing::{info, warn};

/// The `host:port` of an `http://` or `https://` URL, with the scheme's default port.
pub fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if has_port {
        return Some(authority.to_string());
    }
    let port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    Some(format!("{authority}:{port}"))
}

/// Resolves the broker's address, retrying with backoff until it succeeds.
pub async fn resolve(url: String) {
    let Some(target) = host_port(&url) else {
        warn!(%url, "the broker URL is not an http(s) URL with a host; not resolving it");
        return;
    };
    let mut delay = Duration::from_millis(500);
    loop {
        match tokio::net::lookup_host(target.as_str()).await {
            Ok(addrs) => {
                let addrs: Vec<String> = addrs.map(|a| a.to_string()).collect();
                info!(broker = %target, addresses = ?addrs, "resolved the broker's address");
                return;
            }
            Err(e) => {
                warn!(broker = %target, error = %e, retry_in = ?delay, "cannot resolve the broker's address");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_and_port_of_broker_urls() {
        let cases = [
            (
                "http://cogo-operator.cogo-system.svc:8080",
                Some("cogo-operator.cogo-system.svc:8080"),
            ),
            ("http://broker/v1/lease", Some("broker:80")),
            ("https://broker.example", Some("broker.example:443")),
            ("http://10.96.0.7:8080/", Some("10.96.0.7:8080")),
            ("ftp://broker", None),
            ("broker:8080", None),
            ("http://", None),
            ("http://user@broker", None),
        ];
        for (url, expected) in cases {
            assert_eq!(host_port(url).as_deref(), expected, "{url}");
        }
    }
}
