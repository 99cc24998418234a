//! Reading a `text/event-stream` answer: each event's data, in order, as the bytes arrive.

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

use super::ModelError;

/// The data of each event of `res`'s body. The stream's end comes as None; a connection that
/// breaks comes as an error.
pub(super) fn events(
    res: reqwest::Response,
    timeout: std::time::Duration,
) -> impl Stream<Item = Result<String, ModelError>> {
    res.bytes_stream().eventsource().map(move |event| match event {
        Ok(e) => Ok(e.data),
        Err(eventsource_stream::EventStreamError::Transport(e)) => match ModelError::from_reqwest(e, timeout)
        {
            ModelError::Transport(why) => Err(ModelError::Transport(format!(
                "the answer's stream ended before the answer was complete ({why})"
            ))),
            other => Err(other),
        },
        Err(e) => Err(ModelError::Malformed(format!("a broken event stream: {e}"))),
    })
}
