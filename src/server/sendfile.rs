//! A plain TCP connection whose writer sends blob windows with `sendfile(2)`.
//!
//! hyper writes a response as vectored writes of its header buffer and the body's `Bytes`. A
//! blob body is a stream of mapped windows registered in `blobs::fs::file_region`, the filesystem backend's `sendfile` capability; when the next
//! slice to write is such a window, this writer asks the kernel to send that range of the file
//! instead, so the bytes go from the page cache to the socket with no userspace copy and the
//! mapping is never faulted in. Every other slice (headers, manifests, JSON) is written as
//! usual. Each call writes from one kind of slice only and reports how much it wrote, so
//! hyper's bookkeeping of partial writes stays exact.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::blobs::fs::{FileRegion, file_region};

/// A TCP stream that sends mapped blob windows with `sendfile`.
pub struct PlainTcp(pub TcpStream);

impl PlainTcp {
    fn poll_sendfile(&self, cx: &mut Context<'_>, region: &FileRegion, len: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let sent = self.0.try_io(Interest::WRITABLE, || {
                let mut offset = region.offset;
                rustix::fs::sendfile(&self.0, &*region.file, Some(&mut offset), len).map_err(io::Error::from)
            });
            match sent {
                // The file ended early: it was changed behind our back. Never send short.
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for PlainTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match file_region(buf) {
            Some(region) => self.poll_sendfile(cx, &region, buf.len()),
            None => Pin::new(&mut self.get_mut().0).poll_write(cx, buf),
        }
    }

    /// Sends the first non-empty slice with `sendfile` if it is a blob window; otherwise
    /// writes the slices up to the first window with one `writev`.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let bufs = &bufs[bufs.iter().take_while(|b| b.is_empty()).count()..];
        let Some(first) = bufs.first() else {
            return Poll::Ready(Ok(0));
        };
        if let Some(region) = file_region(first) {
            return self.poll_sendfile(cx, &region, first.len());
        }
        let plain = 1 + bufs[1..].iter().take_while(|b| file_region(b).is_none()).count();
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, &bufs[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
