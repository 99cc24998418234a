//! TLS for the HTTP clients of the agent (model APIs, pages the Research agent reads): rustls
//! with the ring provider and the system's root certificates, set up once per process.

use std::sync::{Arc, OnceLock};

/// The client configuration, or why it cannot be made.
pub fn client_config() -> Result<&'static rustls::ClientConfig, &'static rustls::Error> {
    static TLS: OnceLock<Result<rustls::ClientConfig, rustls::Error>> = OnceLock::new();
    let tls = TLS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth())
    });
    tls.as_ref()
}
