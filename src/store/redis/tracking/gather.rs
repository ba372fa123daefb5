//! Fewer, larger writes on a cached store's commands connection, over TCP and TLS alike.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose first write of a batch waits one pass of the runtime: the connection's
/// driver wakes itself and is polled again after the tasks already queued, so that the
/// requests that run meanwhile add their commands to the same write, and Redis reads several
/// at once. It sits above TLS: below it, the TLS stream would take the bytes and write them on
/// its flush whatever the socket said.
pub(super) struct Gathered<S> {
    inner: S,
    /// Whether writes are held back at all (only the commands connection's are).
    gather: bool,
    /// This batch's first write was held back once already.
    held: bool,
}

impl<S> Gathered<S> {
    pub(super) fn new(inner: S, gather: bool) -> Self {
        Self {
            inner,
            gather,
            held: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gathered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gathered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.gather && !self.held {
            self.held = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() {
            // The batch is out: the next write starts another.
            self.held = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Counts the writes that reach it.
    struct Counting(Arc<AtomicUsize>);

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_first_write_of_each_batch_waits_one_pass_and_only_that_one() {
        let writes = Arc::new(AtomicUsize::new(0));
        let mut gathered = Gathered::new(Counting(Arc::clone(&writes)), true);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Held once, then through; the second write of the batch goes at once.
        assert!(Pin::new(&mut gathered)
            .poll_write(&mut cx, b"a")
            .is_pending());
        assert_eq!(writes.load(Ordering::SeqCst), 0);
        assert!(Pin::new(&mut gathered).poll_write(&mut cx, b"a").is_ready());
        assert!(Pin::new(&mut gathered).poll_write(&mut cx, b"b").is_ready());
        assert_eq!(writes.load(Ordering::SeqCst), 2);
        // A flush ends the batch: the next write is held again.
        gathered.flush().await.unwrap();
        assert!(Pin::new(&mut gathered)
            .poll_write(&mut cx, b"c")
            .is_pending());
        // Without gathering, nothing is held.
        let mut plain = Gathered::new(Counting(Arc::clone(&writes)), false);
        assert!(Pin::new(&mut plain).poll_write(&mut cx, b"d").is_ready());
    }
}
