//! Web pages for the Research agent to read: fixed HTML bodies by path, served until dropped.

use std::{io, net::SocketAddr};

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
};
use tokio::task::JoinHandle;

/// Pages served on an address of a test's choosing.
pub struct Pages {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Pages {
    /// Serves each `(path, html)` of `pages` at `addr` (port 0 for a free one); any other path
    /// is a 404.
    pub async fn serve(addr: SocketAddr, pages: &[(&str, &str)]) -> io::Result<Pages> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let pages: Vec<(String, String)> = pages
            .iter()
            .map(|(p, h)| (p.to_string(), h.to_string()))
            .collect();
        let app = Router::new().fallback(move |uri: axum::http::Uri| {
            let found = pages
                .iter()
                .find(|(p, _)| p == uri.path())
                .map(|(_, h)| h.clone());
            async move {
                match found {
                    Some(html) => {
                        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Pages { addr, task })
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.task.abort();
    }
}
