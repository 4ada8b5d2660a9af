//! Responses whose body is written over time: the operator dashboard's
//! change feed (`GET /admin/v1/changes`, server-sent events). Every handler
//! answers a [`Resp`], a whole body; one that streams answers its head with
//! the body as a [`streaming`] extension, and the connection's service
//! swaps it in ([`served`]). Nothing else streams, so every other answer
//! keeps its `Full` body, unboxed.
//!
//! A streamed body ends when its stream does, when the client goes away
//! (hyper drops the body, and with it whatever the stream holds), or when
//! the server begins to shut down — so an open feed never holds the drain
//! for the whole grace period.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::{Either, Full, StreamBody};
use hyper::Response;
use hyper::body::Frame;

use super::Resp;

/// The chunks of a streamed body, in order.
pub(crate) type Chunks = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

pub(crate) type Frames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

/// The body of a response as the connection sends it: whole, or streamed.
pub(crate) type Body = Either<Full<Bytes>, StreamBody<Frames>>;

/// A response as the connection sends it.
pub(crate) type Served = Response<Body>;

/// Turns true when the server begins to shut down.
pub(crate) type Stopping = tokio::sync::watch::Receiver<bool>;

/// A streamed body on its way from a handler to the connection. Response
/// extensions must be `Clone`, hence the shared slot; it is taken once.
#[derive(Clone)]
struct Streaming(Arc<Mutex<Option<Chunks>>>);

/// `head` (whose own body is ignored) answered with `chunks` as its body.
pub(crate) fn streaming(mut head: Resp, chunks: Chunks) -> Resp {
    head.extensions_mut()
        .insert(Streaming(Arc::new(Mutex::new(Some(chunks)))));
    head
}

/// `resp` as the connection sends it. A streamed body also ends when
/// `stopping` turns true (or its sender is gone); without `stopping` it
/// ends only on its own.
pub(crate) fn served(resp: Resp, stopping: Option<&Stopping>) -> Served {
    let (mut parts, full) = resp.into_parts();
    let chunks = parts
        .extensions
        .remove::<Streaming>()
        .and_then(|s| s.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    let Some(chunks) = chunks else {
        return Response::from_parts(parts, Either::Left(full));
    };
    let stopping = stopping.cloned();
    let stop = async move {
        match stopping {
            // An error means the sender is gone: the server has stopped.
            Some(mut s) => drop(s.wait_for(|stop| *stop).await),
            None => std::future::pending().await,
        }
    };
    let frames: Frames = Box::pin(chunks.take_until(stop).map(|b| Ok(Frame::data(b))));
    Response::from_parts(parts, Either::Right(StreamBody::new(frames)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn head() -> Resp {
        Response::new(Full::new(Bytes::from_static(b"ignored")))
    }

    #[tokio::test]
    async fn a_whole_body_is_sent_as_it_is() {
        let resp = super::super::ops::text(200, "text/plain", "ok".into());
        let body = served(resp, None).into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), Bytes::from_static(b"ok"));
    }

    #[tokio::test]
    async fn a_streamed_body_replaces_the_heads_and_ends_with_its_stream() {
        let chunks =
            futures_util::stream::iter([Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        let resp = served(streaming(head(), Box::pin(chunks)), None);
        let body = resp.into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), Bytes::from_static(b"ab"));
    }

    #[tokio::test]
    async fn a_streamed_body_ends_when_the_server_begins_to_stop() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let endless = futures_util::stream::iter([Bytes::from_static(b"a")])
            .chain(futures_util::stream::pending());
        let mut body = served(streaming(head(), Box::pin(endless)), Some(&rx)).into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, Bytes::from_static(b"a"));
        tx.send(true).unwrap();
        assert!(body.frame().await.is_none(), "the body ends");
    }
}
