//! Bodies that count what actually crossed the wire, for the access log and the request
//! metrics: a request body counts the bytes read from it (chunked uploads declare no
//! `Content-Length`), and a response body reports, when it ends or is dropped, how many bytes
//! it gave hyper and how long the whole exchange took, so a slow client's 8 MB blob is logged
//! at its real duration, not at the moment its headers went out.
//!
//! Frames pass through untouched: the `Bytes` of a mapped blob window stay the same object, so
//! the connection writer still recognises them for `sendfile`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};

/// A request body that adds the length of every data frame to a shared counter.
pub struct CountedRequest {
    inner: Body,
    read: Arc<AtomicU64>,
}

impl CountedRequest {
    /// Wrap `inner`; the counter reads what has been consumed so far.
    pub fn wrap(inner: Body) -> (Body, Arc<AtomicU64>) {
        let read = Arc::new(AtomicU64::new(0));
        let body = CountedRequest {
            inner,
            read: Arc::clone(&read),
        };
        (Body::new(body), read)
    }
}

impl HttpBody for CountedRequest {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once a response body has ended (`complete`) or was dropped before its end, with the
/// bytes it handed to hyper.
pub type OnDone = Box<dyn FnOnce(u64, bool) + Send + Sync>;

/// A response body that reports its bytes sent and completion once: when the last of its
/// declared length has been handed over (before the client can see its end, so a log line
/// is never behind the client), at its end, or when dropped.
pub struct CountedResponse {
    inner: Body,
    sent: u64,
    declared: Option<u64>,
    done: Option<OnDone>,
}

impl CountedResponse {
    /// Wrap `inner`, which `Content-Length` says is `declared` bytes long (if it says).
    pub fn wrap(inner: Body, declared: Option<u64>, done: OnDone) -> Body {
        Body::new(CountedResponse {
            inner,
            sent: 0,
            declared,
            done: Some(done),
        })
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            done(self.sent, complete);
        }
    }
}

impl HttpBody for CountedResponse {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                if self.declared.is_some_and(|n| self.sent >= n) {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedResponse {
    fn drop(&mut self) {
        // An empty body hyper never polls, or a client gone mid-body.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
