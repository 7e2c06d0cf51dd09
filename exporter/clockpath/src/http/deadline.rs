//! A connection's writes must keep moving: once a write waits on the client (its receive
//! window is full), the client has [`STALL_TIMEOUT`] to take in [`MIN_PROGRESS`] bytes, or the
//! connection fails with `TimedOut`. A reader that takes nothing, or a byte at a time, cannot
//! hold a connection (and its place) for longer than that per response.

use std::{
    future::Future as _,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// How long a write may wait for the client to make room.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// What the client must take in within that time for the wait to start over.
pub const MIN_PROGRESS: usize = 1024;

/// `io` with the write deadline.
pub struct Deadlined<I> {
    io: I,
    timeout: Duration,
    min_progress: usize,
    /// Running while the client holds up a write; with the bytes it took since.
    stall: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<I> Deadlined<I> {
    pub fn new(io: I) -> Deadlined<I> {
        Deadlined::with(io, STALL_TIMEOUT, MIN_PROGRESS)
    }

    pub fn with(io: I, timeout: Duration, min_progress: usize) -> Deadlined<I> {
        Deadlined { io, timeout, min_progress, stall: None }
    }

    /// A write call returned: `done` bytes, or none and it waits.
    fn account(&mut self, cx: &mut Context<'_>, done: Option<usize>) -> Poll<io::Result<()>> {
        match done {
            Some(n) => {
                if let Some((_, taken)) = &mut self.stall {
                    *taken += n;
                    if *taken >= self.min_progress {
                        self.stall = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            None => {
                let timeout = self.timeout;
                let (sleep, taken) = self.stall.get_or_insert_with(|| (Box::pin(tokio::time::sleep(timeout)), 0));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client took in {taken} bytes in {timeout:?} while a response waited"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// A write call's outcome, accounted.
    fn written(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                ready!(self.account(cx, Some(n)))?;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(self.account(cx, None))?;
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Deadlined<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadlined<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                ready!(self.account(cx, None))?;
                Poll::Pending
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                ready!(self.account(cx, None))?;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_times_out_and_one_that_keeps_up_does_not() {
        // A 4 KiB pipe: writes wait once it is full.
        let (server, client) = tokio::io::duplex(4096);
        let mut w = Deadlined::with(server, Duration::from_secs(10), 1024);
        let big = vec![7u8; 64 * 1024];
        let e = w.write_all(&big).await.expect_err("nobody reads");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        drop((w, client));

        let (server, mut client2) = tokio::io::duplex(4096);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            client2.read_to_end(&mut sink).await.map(|_| sink.len())
        });
        let mut w = Deadlined::with(server, Duration::from_secs(10), 1024);
        w.write_all(&big).await.expect("a reader that keeps up");
        w.shutdown().await.expect("shutdown");
        drop(w);
        assert_eq!(reader.await.expect("join").expect("read"), big.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_times_out() {
        let (server, mut client) = tokio::io::duplex(4096);
        let trickle = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            // A byte a second: 10 bytes per 10 s, far below 1 KiB.
            while client.read_exact(&mut byte).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut w = Deadlined::with(server, Duration::from_secs(10), 1024);
        let started = tokio::time::Instant::now();
        let e = w.write_all(&vec![1u8; 64 * 1024]).await.expect_err("a trickle");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= Duration::from_secs(11), "{:?}", started.elapsed());
        drop(w);
        trickle.abort();
    }
}
