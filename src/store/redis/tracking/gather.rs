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

// `poll_write_vectored` and `is_write_vectored` keep tokio's defaults, which go through
// `poll_write`: forwarding them to the inner stream would skip the hold.
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
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        task::{Wake, Waker},
    };

    use super::*;

    /// Records the bytes that reach it; its first flush is not done at once.
    #[derive(Default)]
    struct Recording {
        written: Vec<u8>,
        writes: usize,
        flushes_pending: usize,
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.flushes_pending > 0 {
                self.flushes_pending -= 1;
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts its wake-ups.
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(stream: &mut Gathered<Recording>, cx: &mut Context<'_>, bytes: &[u8]) -> bool {
        Pin::new(stream).poll_write(cx, bytes).is_ready()
    }

    fn flush(stream: &mut Gathered<Recording>, cx: &mut Context<'_>) -> bool {
        Pin::new(stream).poll_flush(cx).is_ready()
    }

    #[test]
    fn the_first_write_of_each_batch_waits_one_woken_pass_and_only_that_one() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut gathered = Gathered::new(
            Recording {
                flushes_pending: 1,
                ..Recording::default()
            },
            true,
        );
        // Held once, and woken so that the driver runs again; then through, with the
        // batch's next write.
        assert!(!write(&mut gathered, &mut cx, b"SET a"));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(gathered.inner.writes, 0);
        assert!(write(&mut gathered, &mut cx, b"SET a"));
        assert!(write(&mut gathered, &mut cx, b";SET b"));
        assert_eq!(gathered.inner.written, b"SET a;SET b");
        // A flush that is not done yet leaves the batch open: nothing more is held.
        assert!(!flush(&mut gathered, &mut cx));
        assert!(write(&mut gathered, &mut cx, b";SET c"));
        // A finished flush ends the batch: the next write is held again.
        assert!(flush(&mut gathered, &mut cx));
        assert!(!write(&mut gathered, &mut cx, b";SET d"));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(gathered.inner.written, b"SET a;SET b;SET c");
    }

    #[test]
    fn without_gathering_nothing_is_held() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut plain = Gathered::new(Recording::default(), false);
        assert!(write(&mut plain, &mut cx, b"PING"));
        assert!(flush(&mut plain, &mut cx));
        assert!(write(&mut plain, &mut cx, b"PING"));
        assert_eq!(plain.inner.written, b"PINGPING");
    }
}
