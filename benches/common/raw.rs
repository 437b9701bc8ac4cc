//! A lean HTTP/1.1 GET client for bulk reads, shared by the benchmarks that pull large blobs
//! (load, proxy): the client's own cost stays out of the way of the servers measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A lean HTTP/1.1 GET client for bulk reads: one keep-alive connection, the body counted and
/// dropped. reqwest allocates a fresh buffer for every read, and on two shared cores the client's
/// cost decides the pull rate; this keeps it out of the way.
///
/// The body is dropped in the kernel, and the client wakes once per megabyte, not per segment:
/// - `recv(MSG_TRUNC)` on a TCP socket discards up to `len` queued bytes without copying them
///   to userspace (tcp(7)).
/// - `SO_RCVLOWAT` keeps the socket from reporting readable until that many body bytes are
///   queued (or the peer closes). On loopback the sender's own system call delivers each
///   segment and wakes the reader, so every wake-up saved is CPU charged to the server.
///
/// Content-Length still has to match exactly. `LOAD_PULL_COPY=1` reads the body into a 64 KiB
/// buffer instead, as most clients would, to show what the copy and the wake-ups cost;
/// `LOAD_PULL_LOWAT=0` keeps `MSG_TRUNC` but wakes for every segment.
pub struct RawGet {
    stream: tokio::net::TcpStream,
    host: String,
    buf: Vec<u8>,
    /// Never written: `recv(MSG_TRUNC)` needs only its length, so it is never faulted in.
    sink: Vec<u8>,
    /// The socket's `SO_RCVLOWAT` now (1, the kernel's default, between bodies).
    lowat: usize,
    /// The most body bytes to wait for in one wake-up (1: every segment).
    lowat_max: usize,
    copy: bool,
}

impl RawGet {
    /// The most body bytes one `recv` takes, and by default one wake-up.
    const DISCARD: usize = 1 << 20;
    /// Below this much body left, the mark is not worth two system calls.
    const LOWAT_MIN: usize = 64 << 10;
    /// A wait this long for a raised mark means the kernel will not honour it (an old kernel,
    /// or a receive buffer capped under twice the mark): this connection wakes per segment.
    const LOWAT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

    pub async fn connect(base: &str) -> RawGet {
        let host = base.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        stream.set_nodelay(true).unwrap();
        RawGet {
            stream,
            host,
            buf: vec![0; 64 << 10],
            sink: Vec::with_capacity(Self::DISCARD),
            lowat: 1,
            lowat_max: std::env::var("LOAD_PULL_LOWAT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(Self::DISCARD)
                .clamp(1, Self::DISCARD),
            copy: std::env::var("LOAD_PULL_COPY").is_ok_and(|v| v == "1"),
        }
    }

    /// Set `SO_RCVLOWAT` to `bytes` unless it is already.
    fn set_lowat(&mut self, bytes: usize) {
        if bytes == self.lowat {
            return;
        }
        let value = libc::c_int::try_from(bytes).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from a pointer to a live
        // local c_int, on a descriptor the stream owns; neither socket2 nor rustix wraps this
        // option. (Bench client only; the server has no such call.)
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.stream),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap(),
            )
        };
        assert_eq!(rc, 0, "SO_RCVLOWAT: {}", std::io::Error::last_os_error());
        self.lowat = bytes;
    }

    /// Receive and drop up to `want` body bytes; returns how many (0 at end of stream).
    async fn discard(&mut self, want: usize) -> usize {
        use tokio::io::AsyncReadExt;
        if self.copy {
            let want = want.min(self.buf.len());
            return self.stream.read(&mut self.buf[..want]).await.unwrap();
        }
        let want = want.min(Self::DISCARD);
        self.set_lowat(if want >= Self::LOWAT_MIN {
            want.min(self.lowat_max)
        } else {
            1
        });
        loop {
            if self.lowat == 1 {
                self.stream.readable().await.unwrap();
            } else if tokio::time::timeout(Self::LOWAT_PATIENCE, self.stream.readable())
                .await
                .is_err()
            {
                eprintln!("bench: SO_RCVLOWAT {} not honoured; waking per segment", self.lowat);
                self.lowat_max = 1;
                self.set_lowat(1);
                continue;
            }
            let sink = &mut self.sink.spare_capacity_mut()[..want];
            let sock = socket2::SockRef::from(&self.stream);
            match self.stream.try_io(tokio::io::Interest::READABLE, || {
                sock.recv_with_flags(sink, libc::MSG_TRUNC)
            }) {
                Ok(n) => return n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// GET `path` (with an optional `Range` value); returns the status, the body's length and
    /// its first byte.
    pub async fn get(&mut self, path: &str, range: Option<&str>) -> (u16, usize, Option<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let range = range.map_or_else(String::new, |r| format!("Range: {r}\r\n"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{range}\r\n", self.host);
        self.stream.write_all(request.as_bytes()).await.unwrap();
        let mut filled = 0;
        let (status, length, head) = loop {
            let n = self.stream.read(&mut self.buf[filled..]).await.unwrap();
            assert!(n > 0, "connection closed before the response headers");
            filled += n;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.buf[..filled]).unwrap() {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap())
                    .expect("a Content-Length");
                break (response.code.unwrap(), length, head);
            }
        };
        let first = (filled > head).then(|| self.buf[head]);
        let mut received = filled - head;
        while received < length {
            let n = self.discard(length - received).await;
            assert!(n > 0, "connection closed in the body");
            received += n;
        }
        assert_eq!(received, length, "body longer than Content-Length");
        // The next response's headers are small: be woken by the first byte again.
        self.set_lowat(1);
        (status, length, first)
    }
}

/// Run `n` jobs on `workers` lean connections, each taking the next job when it is free. Each
/// connection is its own task, so the client uses every core, as separate clients would.
pub async fn run_raw<F>(base: &str, n: usize, workers: usize, job: F)
where
    F: Fn(usize) -> (String, Option<String>, u16, usize) + Send + Sync + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let job = Arc::new(job);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (next, job, base) = (next.clone(), job.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut conn = RawGet::connect(&base).await;
                loop {
                    let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap();
                    if i >= n {
                        break;
                    }
                    let (path, range, status, len) = job(i);
                    let got = conn.get(&path, range.as_deref()).await;
                    assert_eq!((got.0, got.1), (status, len), "GET {path}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
