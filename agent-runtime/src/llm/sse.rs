//! Reading a `text/event-stream` answer: each event's data, in order, as the bytes arrive, up
//! to [`MAX_ANSWER_BYTES`](super::MAX_ANSWER_BYTES) bytes in all.

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

use super::{MAX_ANSWER_BYTES, ModelError};

/// Why the bytes of a stream stopped.
#[derive(Debug)]
enum Source {
    /// The connection failed.
    Http(reqwest::Error),
    /// The stream passed the limit.
    TooLarge,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http(e) => write!(f, "{e}"),
            Source::TooLarge => write!(f, "over {MAX_ANSWER_BYTES} bytes"),
        }
    }
}

/// The data of each event of `res`'s body. The stream's end comes as None; a connection that
/// breaks, or a stream past the limit, comes as an error.
pub(super) fn events(
    res: reqwest::Response,
    timeout: std::time::Duration,
) -> impl Stream<Item = Result<String, ModelError>> {
    let mut total = 0usize;
    let bytes = res.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(Source::Http)?;
        total += chunk.len();
        if total > MAX_ANSWER_BYTES {
            return Err(Source::TooLarge);
        }
        Ok(chunk)
    });
    bytes.eventsource().map(move |event| match event {
        Ok(e) => Ok(e.data),
        Err(eventsource_stream::EventStreamError::Transport(Source::TooLarge)) => Err(ModelError::Malformed(
            format!("a stream of over {MAX_ANSWER_BYTES} bytes"),
        )),
        Err(eventsource_stream::EventStreamError::Transport(Source::Http(e))) => {
            match ModelError::from_reqwest(e, timeout) {
                ModelError::Transport(why) => Err(ModelError::Transport(format!(
                    "the answer's stream ended before the answer was complete ({why})"
                ))),
                other => Err(other),
            }
        }
        Err(e) => Err(ModelError::Malformed(format!("a broken event stream: {e}"))),
    })
}
