//! The sockets of a cached store's connections, opened by the store itself, so that it can tell
//! when every invalidation that reached one has been applied.
//!
//! A logout acknowledged on another instance has its invalidation already on this instance's
//! socket when a request with the logged-out cookie arrives here (Redis sends the push before
//! the reply that lets the other instance answer). The invalidations come on a quiet connection
//! of their own ([`Pair`]: the commands connection's tracking redirects them there), so an
//! unread byte on it can only be one. Before the cache answers a read, the store asks
//! [`Settled::settled_now`]: the socket holds no unread byte and neither socket of the pair
//! hung up (a `poll` with no timeout on Linux, a `MSG_PEEK` elsewhere; nothing is read), and
//! the connection's driver is not in the middle of a poll. The driver reads until the socket is
//! empty and hands every complete push to the cache within one poll, so together these mean
//! that every push that arrived before the question was applied. When they do not hold, the
//! read waits for the driver's next pass (it has data to read, so it was woken), within a bound.

use std::{
    future::Future,
    io,
    net::Shutdown,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, ConnectionAddr, ConnectionInfo};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::gather::Gathered;

/// What the store knows about one tracked connection's socket and driver.
pub(in crate::store::redis) struct Settled {
    stream: Arc<TcpStream>,
    /// The driver is polling: bytes it read may not have reached the cache yet.
    in_poll: AtomicBool,
    /// The driver ended (the connection is gone).
    closed: AtomicBool,
    /// Driver polls begun, and the number of the last one that ended having read the socket
    /// empty: once such a poll begun after a question ended, every byte that was there when the
    /// question was asked has been applied.
    started: AtomicU64,
    done: AtomicU64,
    /// The current driver poll found the socket empty (a read would block). A poll that ends
    /// without that (the runtime's budget ran out, readiness not yet seen) counts for nothing.
    drained: Arc<AtomicBool>,
    /// Told at the end of every driver poll.
    passes: tokio::sync::Notify,
    /// The commands connection of the same pair: once it hung up, its tracking is gone, and
    /// this socket's silence means nothing.
    partner: std::sync::OnceLock<Arc<Settled>>,
    /// Until when the driver is held back (fault injection for tests, feature `testing`).
    #[cfg(feature = "testing")]
    paused_until: HoldBack,
    /// Until when the socket's reading (not its writing) is held back (tests).
    #[cfg(feature = "testing")]
    replies_held: Arc<HoldBack>,
}

impl Settled {
    /// Whether every byte that reached the socket before this call has been read and applied:
    /// `Some(true)` yes, `Some(false)` it cannot be told (the connection is gone: nothing may
    /// be answered from the cache), `None` not yet (the driver has bytes to read or is reading).
    pub(in crate::store::redis) fn settled_now(&self) -> Option<bool> {
        if self.closed.load(Ordering::SeqCst)
            || self
                .partner
                .get()
                .is_some_and(|partner| partner.closed.load(Ordering::SeqCst))
        {
            return Some(false);
        }
        // The sockets first: bytes they do not show were read by a driver poll that either
        // ended (and applied them) or is still on (`in_poll`, read after).
        match self.sockets_now() {
            Sockets::Quiet => (!self.in_poll.load(Ordering::SeqCst)).then_some(true),
            // Bytes waiting: the driver was woken for them.
            Sockets::Unread => None,
            Sockets::HungUp => Some(false),
        }
    }

    /// This socket and its partner's, without reading or locking either: one `poll` with no
    /// timeout (Linux: TCP answers it without the socket's lock, which a peek takes and which
    /// both worker threads would contend for on every cached read). An end of stream or an
    /// error on either, and unread bytes on this one, show before the driver reads up to them.
    #[cfg(target_os = "linux")]
    fn sockets_now(&self) -> Sockets {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let ended = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
        let partner: &Settled = self.partner.get().map_or(self, |partner| partner);
        let mut fds = [
            PollFd::new(&*self.stream, PollFlags::IN | PollFlags::RDHUP),
            PollFd::new(&*partner.stream, PollFlags::RDHUP),
        ];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            return match poll(&mut fds, Some(&now)) {
                Ok(_) if fds.iter().any(|fd| fd.revents().intersects(ended)) => Sockets::HungUp,
                Ok(_) if fds[0].revents().contains(PollFlags::IN) => Sockets::Unread,
                Ok(_) => Sockets::Quiet,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => Sockets::HungUp,
            };
        }
    }

    /// Elsewhere: a peek at this socket, and the runtime's readiness of the partner's (whose
    /// socket carries replies, so a peek tells nothing of its end).
    #[cfg(not(target_os = "linux"))]
    fn sockets_now(&self) -> Sockets {
        if self.partner.get().is_some_and(|partner| partner.hung_up()) {
            return Sockets::HungUp;
        }
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        loop {
            return match socket2::SockRef::from(&*self.stream).peek(&mut byte) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => Sockets::Quiet,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Ok(read) if read > 0 => Sockets::Unread,
                // End of stream, or a broken socket.
                _ => Sockets::HungUp,
            };
        }
    }

    /// Whether the socket reports a hang-up or an error (seen by the runtime, before the driver
    /// read up to it), without reading anything.
    #[cfg(not(target_os = "linux"))]
    fn hung_up(&self) -> bool {
        let mut ready = std::pin::pin!(self.stream.ready(tokio::io::Interest::READABLE));
        let mut context = Context::from_waker(std::task::Waker::noop());
        match ready.as_mut().poll(&mut context) {
            Poll::Ready(Ok(ready)) => ready.is_read_closed() || ready.is_error(),
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        }
    }

    /// [`Self::settled_now`], waiting up to `within` for the driver's passes while it says not
    /// yet; false if the driver did not get there in time.
    pub(in crate::store::redis) fn settled(&self, within: Duration) -> Settling<'_> {
        Settling {
            settled: self,
            need: self.started.load(Ordering::SeqCst) + 1,
            pass: Box::pin(self.passes.notified()),
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// What a socket pair shows at one moment.
enum Sockets {
    /// No unread byte, no end.
    Quiet,
    /// Bytes wait on the quiet socket.
    Unread,
    /// Either socket ended or failed.
    HungUp,
}

/// The future of [`Settled::settled`]; hand-written, as a read's future holds it.
pub(in crate::store::redis) struct Settling<'a> {
    settled: &'a Settled,
    /// The first driver poll begun after the question.
    need: u64,
    pass: Pin<Box<tokio::sync::futures::Notified<'a>>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Future for Settling<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            // Registered before looking, so that a pass ending meanwhile is not missed.
            self.pass.as_mut().enable();
            if let Some(answer) = self.settled.settled_now() {
                return Poll::Ready(answer);
            }
            // Under steady traffic the socket may never be empty: a whole poll begun after the
            // question is enough.
            if self.settled.done.load(Ordering::SeqCst) >= self.need {
                return Poll::Ready(true);
            }
            if self.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            if self.pass.as_mut().poll(cx).is_ready() {
                let next = Box::pin(self.settled.passes.notified());
                self.pass = next;
                continue;
            }
            return Poll::Pending;
        }
    }
}

#[cfg(feature = "testing")]
impl Settled {
    /// Holds the driver back for `pause`: what reaches the socket meanwhile stays unread.
    pub(in crate::store::redis) fn pause(&self, pause: Duration) {
        self.paused_until.hold(pause);
    }

    /// Holds back the reading of the commands connection of this pair for `hold`, from now:
    /// what it sends still leaves, its replies wait.
    pub(in crate::store::redis) fn hold_replies(&self, hold: Duration) {
        if let Some(commands) = self.partner.get() {
            commands.replies_held.hold(hold);
        }
    }

    fn paused_until(&self) -> Option<tokio::time::Instant> {
        self.paused_until.until()
    }
}

/// The socket, shared between the connection (which reads and writes it) and [`Settled`]
/// (which only looks).
struct Shared {
    stream: Arc<TcpStream>,
    drained: Arc<AtomicBool>,
    /// Until when reading is held back, writing not (fault injection for tests).
    #[cfg(feature = "testing")]
    replies_held: Arc<HoldBack>,
    #[cfg(feature = "testing")]
    hold_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        #[cfg(feature = "testing")]
        if held_back(&mut this.hold_timer, this.replies_held.until(), cx) {
            return Poll::Pending;
        }
        loop {
            ready!(this.stream.poll_read_ready(cx))?;
            match this.stream.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    this.drained.store(true, Ordering::SeqCst);
                    continue;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                outcome => return Poll::Ready(outcome),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Write))
    }
}

/// Until when a fault injection (tests) holds something back. Checked on every read and driver
/// poll of a build with the `testing` feature, so the check is one load while nothing is held.
#[cfg(feature = "testing")]
#[derive(Default)]
struct HoldBack {
    armed: AtomicBool,
    until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

#[cfg(feature = "testing")]
impl HoldBack {
    fn hold(&self, hold: Duration) {
        *self
            .until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(tokio::time::Instant::now() + hold);
        self.armed.store(true, Ordering::SeqCst);
    }

    fn until(&self) -> Option<tokio::time::Instant> {
        if !self.armed.load(Ordering::Relaxed) {
            return None;
        }
        *self
            .until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a fault injection (tests) still holds something back until `until`: then `timer`
/// wakes the task when it ends.
#[cfg(feature = "testing")]
fn held_back(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    until: Option<tokio::time::Instant>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(until) = until.filter(|until| tokio::time::Instant::now() < *until) else {
        return false;
    };
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
    timer.as_mut().reset(until);
    timer.as_mut().poll(cx).is_pending()
}

/// The connection's driver, marking when it polls and telling when a poll ends.
struct Driven {
    driver: Pin<Box<dyn Future<Output = ()> + Send>>,
    settled: Arc<Settled>,
    /// Told when the driver ends, however it ends (the redis crate reports only some ends).
    pushes: Pushes,
    #[cfg(feature = "testing")]
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for Driven {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        #[cfg(feature = "testing")]
        if held_back(&mut this.pause, this.settled.paused_until(), cx) {
            return Poll::Pending;
        }
        let pass = this.settled.started.fetch_add(1, Ordering::SeqCst) + 1;
        this.settled.in_poll.store(true, Ordering::SeqCst);
        this.settled.drained.store(false, Ordering::SeqCst);
        let outcome = this.driver.as_mut().poll(cx);
        this.settled.in_poll.store(false, Ordering::SeqCst);
        // Only a poll that read the socket empty applied everything that was on it.
        if this.settled.drained.load(Ordering::SeqCst) {
            this.settled.done.store(pass, Ordering::SeqCst);
        }
        if outcome.is_ready() {
            this.end();
        }
        this.settled.passes.notify_waiters();
        outcome
    }
}

impl Driven {
    /// The connection is gone: said once, to the readers waiting and to the cache.
    fn end(&self) {
        if !self.settled.closed.swap(true, Ordering::SeqCst) {
            (self.pushes)(redis::PushInfo {
                kind: redis::PushKind::Disconnection,
                data: Vec::new(),
            });
        }
        self.settled.passes.notify_waiters();
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        self.end();
    }
}

/// TLS on the store's own socket, trusting what `tls` says (the system's roots by default).
#[cfg(feature = "redis-tls")]
pub(in crate::store::redis) type Tls = Option<super::super::RedisTls>;
#[cfg(not(feature = "redis-tls"))]
pub(in crate::store::redis) type Tls = Option<std::convert::Infallible>;

/// Opens a RESP3 connection to the server `info` names on a socket of the store's own (TLS if
/// the address says so), spawns its driver, and returns it with what tells when it settled.
/// `gather`: the first write of a batch waits one pass of the runtime (the commands
/// connection, over TCP and TLS: fewer, larger writes under load, for one pass of latency).
async fn open(
    info: &ConnectionInfo,
    #[cfg_attr(not(feature = "redis-tls"), allow(unused_variables))] tls: &Tls,
    pushes: Pushes,
    timeout: Duration,
    gather: bool,
) -> Result<(MultiplexedConnection, Arc<Settled>), redis::RedisError> {
    let sender = Arc::clone(&pushes);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        // No reply timeout here: the store's command timeout bounds each operation, and the
        // pair's set-up and heartbeats have their own (set with it).
        .set_response_timeout(None)
        .set_push_sender(move |push: redis::PushInfo| {
            sender(push);
            Ok::<(), std::convert::Infallible>(())
        });
    let (host, port) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host.as_str(), *port),
        ConnectionAddr::TcpTls { host, port, .. } => (host.as_str(), *port),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a cached store connects to Redis over TCP (redis:// or rediss://)",
            )
            .into())
        }
    };
    let stream = tokio::time::timeout(timeout, connect(host, port))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let stream = Arc::new(stream);
    let drained = Arc::new(AtomicBool::new(false));
    #[cfg(feature = "testing")]
    let replies_held = Arc::new(HoldBack::default());
    let shared = Shared {
        stream: Arc::clone(&stream),
        drained: Arc::clone(&drained),
        #[cfg(feature = "testing")]
        replies_held: Arc::clone(&replies_held),
        #[cfg(feature = "testing")]
        hold_timer: None,
    };
    let settled = Arc::new(Settled {
        stream,
        in_poll: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        started: AtomicU64::new(0),
        done: AtomicU64::new(0),
        drained,
        passes: tokio::sync::Notify::new(),
        partner: std::sync::OnceLock::new(),
        #[cfg(feature = "testing")]
        paused_until: HoldBack::default(),
        #[cfg(feature = "testing")]
        replies_held,
    });
    let (connection, driver) = match info.addr() {
        #[cfg(feature = "redis-tls")]
        ConnectionAddr::TcpTls { insecure, .. } => {
            let tls_stream =
                tokio::time::timeout(timeout, tls_connect(host, *insecure, tls.as_ref(), shared))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            let stream = Gathered::new(tls_stream, gather);
            let (connection, driver) =
                MultiplexedConnection::new_with_config(info.redis_settings(), stream, config)
                    .await?;
            (
                connection,
                Box::pin(driver) as Pin<Box<dyn Future<Output = ()> + Send>>,
            )
        }
        #[cfg(not(feature = "redis-tls"))]
        ConnectionAddr::TcpTls { .. } => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "rediss:// needs the redis-tls feature",
            )
            .into())
        }
        _ => {
            let stream = Gathered::new(shared, gather);
            let (connection, driver) =
                MultiplexedConnection::new_with_config(info.redis_settings(), stream, config)
                    .await?;
            (
                connection,
                Box::pin(driver) as Pin<Box<dyn Future<Output = ()> + Send>>,
            )
        }
    };
    tokio::spawn(Driven {
        driver,
        settled: Arc::clone(&settled),
        pushes,
        #[cfg(feature = "testing")]
        pause: None,
    });
    Ok((connection, settled))
}

/// A tracked server: the connection the store's commands go through, and the quiet one its
/// tracking sends invalidations to, with what tells when those have all been applied.
pub(in crate::store::redis) struct Pair {
    pub(in crate::store::redis) commands: MultiplexedConnection,
    pub(in crate::store::redis) invalidations: MultiplexedConnection,
    pub(in crate::store::redis) settled: Arc<Settled>,
}

impl Pair {
    /// Both connections answer a PING.
    pub(in crate::store::redis) async fn ping(&self) -> Result<(), redis::RedisError> {
        for connection in [&self.invalidations, &self.commands] {
            redis::cmd("PING")
                .query_async::<redis::Value>(&mut connection.clone())
                .await?;
        }
        Ok(())
    }
}

/// Where a pair's pushes go: the invalidations, and the end of either connection.
pub(in crate::store::redis) type Pushes = Arc<dyn Fn(redis::PushInfo) + Send + Sync>;

/// Opens a [`Pair`] to the server `info` names (RESP3): first the quiet connection, then the
/// one for commands, with tracking for the keys under `prefix` redirected to the first. Both
/// send their pushes to `pushes`: the commands connection's end (or its
/// `tracking-redir-broken`) stops the invalidations as surely as the quiet one's.
pub(in crate::store::redis) async fn open_pair(
    info: &ConnectionInfo,
    tls: &Tls,
    prefix: &str,
    pushes: Pushes,
    timeout: Duration,
) -> Result<Pair, redis::RedisError> {
    let (mut invalidations, settled) = open(info, tls, Arc::clone(&pushes), timeout, false).await?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut invalidations)
        .await?;
    let (mut commands, commands_settled) = open(info, tls, pushes, timeout, true).await?;
    let _ = settled.partner.set(commands_settled);
    super::track(&mut commands, prefix, id).await?;
    Ok(Pair {
        commands,
        invalidations,
        settled,
    })
}

/// A TCP connection to the first address of `host` that accepts one, without Nagle's delay
/// (the commands connection gathers writes itself) and with a dead peer noticed within seconds
/// (`connection::DEAD_PEER_TIMEOUT`).
async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the Redis host");
    for address in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let socket = socket2::SockRef::from(&stream);
                socket.set_tcp_keepalive(&super::super::connection::keepalive())?;
                #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
                socket.set_tcp_user_timeout(Some(super::super::connection::DEAD_PEER_TIMEOUT))?;
                return Ok(stream);
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

#[cfg(feature = "redis-tls")]
async fn tls_connect(
    host: &str,
    insecure: bool,
    tls: Option<&super::super::RedisTls>,
    stream: Shared,
) -> Result<tokio_rustls::client::TlsStream<Shared>, redis::RedisError> {
    if insecure {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a cached store does not skip certificate checks (#insecure)",
        )
        .into());
    }
    let config = super::super::tls::client_config(tls)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await?)
}
