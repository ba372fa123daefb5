//! The layer's concurrency guarantees, each raced between two actors (requests, or a revoke)
//! over a store wrapper that lets their store calls through in a chosen order: every
//! interleaving of their first calls, one call at a time and overlapping, repeated.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    task::Poll,
    time::Duration,
};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tower_layer::Layer;
use tower_service::Service;

use super::{probe::ProbeApp, Factory, Probe};
use crate::{
    config::Concurrency,
    error::StoreError,
    id::{SessionId, SessionKey},
    keys::IdsAtRest,
    layer::SessionLayer,
    manager::SessionManager,
    record::Record,
    service::SessionService,
    store::{Expect, Forward, LoadOptions, Loaded, Store, WriteOutcome},
};

/// How the races run.
pub(crate) struct Plan {
    pub(crate) repetitions: usize,
    pub(crate) calls_per_actor: usize,
}

tokio::task_local! {
    /// Which actor the current task's store calls belong to (0 or 1); unset for set-up and
    /// checks, whose calls pass freely.
    static ACTOR: usize;
}

/// How the ordered calls are let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A call starts only when the previous ordered call has answered.
    OneAtATime,
    /// A call starts when its turn comes, the previous one possibly still running, after a
    /// random pause of up to 2 ms.
    Overlapping,
}

#[derive(Default)]
struct GateState {
    order: Vec<usize>,
    pos: usize,
    finished: [bool; 2],
    mode: Option<Mode>,
}

impl GateState {
    /// Skips the turns of actors that have finished: they will make no more calls.
    fn skip_finished(&mut self) {
        while self.pos < self.order.len() && self.finished[self.order[self.pos]] {
            self.pos += 1;
        }
    }
}

/// Lets the actors' store calls through in the order of the current race.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    notify: Notify,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reset(&self, order: Vec<usize>, mode: Mode) {
        *self.lock() = GateState {
            order,
            pos: 0,
            finished: [false; 2],
            mode: Some(mode),
        };
    }

    /// Waits for `actor`'s turn. Returns whether the call is ordered (and must `leave`).
    async fn enter(&self, actor: usize) -> bool {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mode = {
                let mut state = self.lock();
                state.skip_finished();
                if state.pos >= state.order.len() {
                    return false;
                }
                if state.order[state.pos] != actor {
                    None
                } else {
                    if state.mode == Some(Mode::Overlapping) {
                        state.pos += 1;
                    }
                    state.mode
                }
            };
            match mode {
                Some(Mode::Overlapping) => {
                    self.notify.notify_waiters();
                    let mut pause = [0u8; 1];
                    let _ = getrandom::fill(&mut pause);
                    tokio::time::sleep(Duration::from_micros(u64::from(pause[0]) * 8)).await;
                    return false;
                }
                Some(Mode::OneAtATime) => return true,
                None => notified.await,
            }
        }
    }

    fn leave(&self) {
        self.lock().pos += 1;
        self.notify.notify_waiters();
    }

    fn finish(&self, actor: usize) {
        self.lock().finished[actor] = true;
        self.notify.notify_waiters();
    }
}

/// The store under test, its calls ordered by the gate when they come from an actor.
struct Gated<St> {
    inner: St,
    gate: Arc<Gate>,
}

impl<St: Clone> Clone for Gated<St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<St> Gated<St> {
    async fn through<R>(&self, call: impl Future<Output = R>) -> R {
        let Ok(actor) = ACTOR.try_with(|a| *a) else {
            return call.await;
        };
        let ordered = self.gate.enter(actor).await;
        let result = call.await;
        if ordered {
            self.gate.leave();
        }
        result
    }
}

impl<St: Store<Probe>> Store<Probe> for Gated<St> {
    async fn load(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<Probe>, StoreError> {
        self.through(self.inner.load(key, options)).await
    }
    async fn create(&self, record: &Record<Probe>) -> Result<WriteOutcome, StoreError> {
        self.through(self.inner.create(record)).await
    }
    async fn save(
        &self,
        record: &Record<Probe>,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError> {
        self.through(self.inner.save(record, expect)).await
    }
    async fn regenerate(
        &self,
        old: &SessionKey,
        record: &Record<Probe>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        self.through(self.inner.regenerate(old, record, expect, forward))
            .await
    }
    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        self.through(self.inner.delete(key, expect)).await
    }
    fn contents_stay_in_process(&self) -> bool {
        self.inner.contents_stay_in_process()
    }
    async fn count(&self) -> Result<usize, StoreError> {
        self.inner.count().await
    }
    fn supports_owner_index(&self) -> bool {
        self.inner.supports_owner_index()
    }
    async fn index_owner(
        &self,
        owner: &str,
        key: &SessionKey,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.through(self.inner.index_owner(owner, key, until))
            .await
    }
    async fn unindex_owner(&self, owner: &str, key: &SessionKey) -> Result<(), StoreError> {
        self.through(self.inner.unindex_owner(owner, key)).await
    }
    async fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>, StoreError> {
        self.through(self.inner.owner_keys(owner)).await
    }
}

/// Every way to interleave `a` turns of actor 0 with `b` turns of actor 1.
fn interleavings(a: usize, b: usize) -> Vec<Vec<usize>> {
    if a == 0 {
        return vec![vec![1; b]];
    }
    if b == 0 {
        return vec![vec![0; a]];
    }
    let mut all = Vec::new();
    for (first, rest) in [(0, interleavings(a - 1, b)), (1, interleavings(a, b - 1))] {
        for mut order in rest {
            order.insert(0, first);
            all.push(order);
        }
    }
    all
}

/// What a request got back.
struct Reply {
    status: StatusCode,
    body: String,
    /// The value of a live session cookie it set (not a removal).
    cookie: Option<String>,
}

type App<St> = SessionService<ProbeApp, Probe, Gated<St>>;

/// One layer over the gated store, and the requests the races send through it.
struct Rig<St> {
    app: App<St>,
    manager: SessionManager<Probe, Gated<St>>,
    gate: Arc<Gate>,
    owner_index: bool,
}

impl<St: Store<Probe> + Clone> Rig<St> {
    fn new(store: St, concurrency: Concurrency) -> Self {
        Self::with_grace(store, concurrency, Duration::ZERO)
    }

    /// A rig whose layer has a regenerate grace window of `grace` (zero: none).
    fn with_grace(store: St, concurrency: Concurrency, grace: Duration) -> Self {
        let gate = Arc::new(Gate::default());
        let owner_index = store.supports_owner_index();
        let gated = Gated {
            inner: store,
            gate: Arc::clone(&gate),
        };
        let layer = SessionLayer::new(gated)
            .with_concurrency(concurrency)
            .with_ids_at_rest(IdsAtRest::Hash)
            .with_regenerate_grace(grace);
        Self {
            app: layer.layer(ProbeApp),
            manager: layer.manager(),
            gate,
            owner_index,
        }
    }

    async fn send(&self, path: &str, cookie: Option<&str>) -> Reply {
        let mut request = Request::builder().uri(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, format!("id={cookie}"));
        }
        let request = request.body(Bytes::new()).expect("a valid request");
        let mut app = self.app.clone();
        std::future::poll_fn(|cx| match app.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Poll::Pending,
        })
        .await;
        let response = match app.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let cookie = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("id="))
            .map(|v| v.split(';').next().unwrap_or_default().to_owned())
            .find(|v| !v.is_empty());
        Reply {
            status: response.status(),
            body: String::from_utf8_lossy(response.body()).into_owned(),
            cookie,
        }
    }

    /// The session `cookie` opens: `Some((user, count))`, or `None` for an anonymous request.
    async fn opens(&self, cookie: &str) -> Option<(String, u32)> {
        let reply = self.send("/read", Some(cookie)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "reading a session: {}",
            reply.body
        );
        let mut parts = reply.body.split('|');
        let new = parts.next() == Some("true");
        let user = parts.next().unwrap_or_default().to_owned();
        let count = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        (!new).then_some((user, count))
    }

    /// A session that has been written twice (count 2), and its cookie. A session a racing
    /// request starts afresh has a count of at most 1, so a count of 2 or more marks this one.
    async fn marked_session(&self) -> String {
        let cookie = self.session("/incr").await;
        let reply = self.send("/incr", Some(&cookie)).await;
        assert_eq!(reply.body, "2", "setting up a session");
        cookie
    }

    /// Whether `cookie` opens the session [`Rig::marked_session`] made (or what it became).
    async fn opens_marked(&self, cookie: &str) -> bool {
        self.opens(cookie)
            .await
            .is_some_and(|(_, count)| count >= 2)
    }

    /// A session made by `path` (a fresh request), and its cookie.
    async fn session(&self, path: &str) -> String {
        let reply = self.send(path, None).await;
        reply
            .cookie
            .unwrap_or_else(|| panic!("{path} should start a session ({})", reply.status))
    }

    /// Races two requests (`a` as actor 0, `b` as actor 1) that both carry `cookie`.
    async fn race_paths(
        &self,
        order: Vec<usize>,
        mode: Mode,
        a: &'static str,
        b: &'static str,
        cookie: &str,
    ) -> (Reply, Reply) {
        let (x, y) = (self.clone(), self.clone());
        let (cookie_x, cookie_y) = (cookie.to_owned(), cookie.to_owned());
        self.race(
            order,
            mode,
            async move { x.send(a, Some(&cookie_x)).await },
            async move { y.send(b, Some(&cookie_y)).await },
        )
        .await
    }

    /// Runs two actors at once under `order` and `mode`.
    async fn race<A, B>(&self, order: Vec<usize>, mode: Mode, a: A, b: B) -> (A::Output, B::Output)
    where
        A: Future + Send + 'static,
        A::Output: Send + 'static,
        B: Future + Send + 'static,
        B::Output: Send + 'static,
    {
        self.gate.reset(order, mode);
        let gate_a = Arc::clone(&self.gate);
        let gate_b = Arc::clone(&self.gate);
        let a = tokio::spawn(ACTOR.scope(0, async move {
            let out = a.await;
            gate_a.finish(0);
            out
        }));
        let b = tokio::spawn(ACTOR.scope(1, async move {
            let out = b.await;
            gate_b.finish(1);
            out
        }));
        let a = a
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let b = b
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        (a, b)
    }
}

impl<St> Clone for Rig<St>
where
    St: Clone,
{
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            manager: self.manager.clone(),
            gate: Arc::clone(&self.gate),
            owner_index: self.owner_index,
        }
    }
}

/// Runs `race` for every order, both modes, `plan.repetitions` times; returns how many.
async fn every_order<F, Fut>(plan: &Plan, mut race: F) -> usize
where
    F: FnMut(Vec<usize>, Mode) -> Fut,
    Fut: Future<Output = ()>,
{
    let orders = interleavings(plan.calls_per_actor, plan.calls_per_actor);
    let mut runs = 0;
    for _ in 0..plan.repetitions {
        for mode in [Mode::OneAtATime, Mode::Overlapping] {
            for order in &orders {
                race(order.clone(), mode).await;
                runs += 1;
            }
        }
    }
    runs
}

fn lww() -> Concurrency {
    Concurrency::LastWriteWins
}

fn optimistic() -> Concurrency {
    Concurrency::optimistic()
}

/// The guarantees, in the order they run; each entry is (name, races run).
pub(crate) async fn run_all<St: Store<Probe> + Clone>(
    make: &Factory<St>,
    plan: &Plan,
) -> Vec<(&'static str, usize)> {
    let mut report = Vec::new();
    report.push((
        "logout ends the session whatever runs concurrently",
        logout_ends_the_session(make, plan).await,
    ));
    report.push((
        "optimistic: no write answered with success is lost",
        optimistic_loses_no_write(make, plan).await,
    ));
    report.push((
        "revoke ends every session of the owner, regenerated ones included",
        revoke_ends_every_session(make, plan).await,
    ));
    report.push((
        "last write wins never resurrects a session nor undoes a login",
        last_write_wins_never_resurrects(make, plan).await,
    ));
    report.push((
        "a grace window never hands the session to the old cookie",
        grace_is_read_only(make, plan).await,
    ));
    report.push((
        "a flash reaches exactly one request",
        flash_reaches_one_request(make, plan).await,
    ));
    report
}

/// Logout (actor 0) against a login, a save, a regenerate or another logout (actor 1) of the
/// same session, in both concurrency modes: once both answered, no cookie either handed out,
/// nor the old one, opens the session (a request that arrives after the logout may start a new
/// one, which is another session).
pub(crate) async fn logout_ends_the_session<St: Store<Probe> + Clone>(
    make: &Factory<St>,
    plan: &Plan,
) -> usize {
    let mut runs = 0;
    for concurrency in [lww(), optimistic()] {
        let rig = Rig::new(make().await, concurrency);
        for other in ["/login", "/incr", "/regenerate", "/logout"] {
            runs += every_order(plan, |order, mode| {
                let rig = rig.clone();
                async move {
                    let c0 = rig.marked_session().await;
                    let (r0, r1) = rig.race_paths(order.clone(), mode, "/logout", other, &c0).await;
                    assert_eq!(r0.status, StatusCode::OK, "logout answers 200 ({mode:?} {order:?})");
                    for cookie in [Some(c0), r0.cookie, r1.cookie].into_iter().flatten() {
                        assert!(
                            !rig.opens_marked(&cookie).await,
                            "logout vs {other} ({mode:?} {order:?}): a cookie still opens the session"
                        );
                    }
                }
            })
            .await;
        }
    }
    runs
}

/// Optimistic mode: increments, logins and regenerates racing each other; every write answered
/// 200 is in the session that survives.
pub(crate) async fn optimistic_loses_no_write<St: Store<Probe> + Clone>(
    make: &Factory<St>,
    plan: &Plan,
) -> usize {
    let rig = Rig::new(make().await, optimistic());
    let mut runs = 0;
    for (first, second) in [
        ("/incr", "/incr"),
        ("/incr", "/login"),
        ("/login", "/login"),
        ("/incr", "/regenerate"),
    ] {
        runs += every_order(plan, |order, mode| {
            let rig = rig.clone();
            async move {
                let c0 = rig.session("/incr").await;
                let (r0, r1) = rig
                    .race_paths(order.clone(), mode, first, second, &c0)
                    .await;
                let what = format!("{first} vs {second} ({mode:?} {order:?})");
                for reply in [&r0, &r1] {
                    assert!(
                        reply.status == StatusCode::OK || reply.status == StatusCode::CONFLICT,
                        "{what}: answered {}",
                        reply.status
                    );
                }
                // The session now lives under the newest cookie handed out, or the old one.
                let cookie = r1.cookie.clone().or(r0.cookie.clone()).unwrap_or(c0);
                let Some((user, count)) = rig.opens(&cookie).await else {
                    panic!("{what}: the session is gone");
                };
                let increments = [(&r0, first), (&r1, second)]
                    .iter()
                    .filter(|(r, path)| *path == "/incr" && r.status == StatusCode::OK)
                    .count();
                assert_eq!(
                    count as usize,
                    1 + increments,
                    "{what}: an answered increment was lost"
                );
                let logins = [(&r0, first), (&r1, second)]
                    .iter()
                    .filter(|(r, path)| *path == "/login" && r.status == StatusCode::OK)
                    .count();
                if logins > 0 {
                    assert_eq!(user, "alice", "{what}: an answered login was lost");
                }
                assert!(
                    r0.cookie.is_none() || r1.cookie.is_none(),
                    "{what}: two requests moved one session"
                );
            }
        })
        .await;
    }
    runs
}

/// `revoke_all` and `revoke_others` (actor 0) racing a regenerate or a save of one of the
/// owner's sessions (actor 1): every session of the owner that existed when the revoke was
/// called ends, wherever it moved; the kept one lives.
pub(crate) async fn revoke_ends_every_session<St: Store<Probe> + Clone>(
    make: &Factory<St>,
    plan: &Plan,
) -> usize {
    let store = make().await;
    if !store.supports_owner_index() {
        return 0;
    }
    let rig = Rig::new(store, lww());
    let mut runs = 0;
    for (others, racer) in [
        (false, "/regenerate"),
        (true, "/regenerate"),
        (false, "/incr"),
    ] {
        runs += every_order(plan, |order, mode| {
            let rig = rig.clone();
            async move {
                let owner = "alice";
                // Earlier races' sessions of alice are gone: every race ends them all.
                let login = |rig: Rig<St>| async move {
                    let c = rig.session("/incr").await;
                    rig.send("/login", Some(&c))
                        .await
                        .cookie
                        .expect("a login hands out a cookie")
                };
                let kept = login(rig.clone()).await;
                let target = login(rig.clone()).await;
                let kept_key = SessionKey::hashed(&SessionId::parse(&kept).expect("an id"));
                let (x, y) = (rig.clone(), rig.clone());
                let t = target.clone();
                let (revoked, r1) = rig
                    .race(
                        order.clone(),
                        mode,
                        async move {
                            if others {
                                x.manager.revoke_others(owner, &kept_key).await
                            } else {
                                x.manager.revoke_all(owner).await
                            }
                        },
                        async move { y.send(racer, Some(&t)).await },
                    )
                    .await;
                let what = format!("revoke (others: {others}) vs {racer} ({mode:?} {order:?})");
                revoked.unwrap_or_else(|err| panic!("{what}: {err}"));
                for cookie in [Some(target), r1.cookie].into_iter().flatten() {
                    let opened = rig.opens(&cookie).await;
                    assert!(
                        opened.is_none_or(|(user, _)| user != owner),
                        "{what}: a revoked session lives"
                    );
                }
                let kept_alive = rig.opens(&kept).await.is_some();
                assert_eq!(kept_alive, others, "{what}: the kept session");
                rig.manager.revoke_all(owner).await.expect("clean up");
            }
        })
        .await;
    }
    runs
}

/// Last write wins: a save (actor 1) racing a logout (actor 0) never brings the session back
/// and never hands out a cookie for it; a save racing a login (actor 0) never undoes the login
/// (a copy loaded before it is refused with 409 once the session moved).
pub(crate) async fn last_write_wins_never_resurrects<St: Store<Probe> + Clone>(
    make: &Factory<St>,
    plan: &Plan,
) -> usize {
    let rig = Rig::new(make().await, lww());
    let mut runs = every_order(plan, |order, mode| {
        let rig = rig.clone();
        async move {
            let c0 = rig.marked_session().await;
            let (_, r1) = rig
                .race_paths(order.clone(), mode, "/logout", "/incr", &c0)
                .await;
            let what = format!("logout vs save ({mode:?} {order:?})");
            assert_eq!(
                r1.status,
                StatusCode::OK,
                "{what}: a save after a logout is not an error"
            );
            if let Some(cookie) = &r1.cookie {
                assert!(
                    !rig.opens_marked(cookie).await,
                    "{what}: a cookie for the ended session"
                );
            }
            assert!(
                !rig.opens_marked(&c0).await,
                "{what}: the session came back"
            );
        }
    })
    .await;
    runs += every_order(plan, |order, mode| {
        let rig = rig.clone();
        async move {
            let c0 = rig.marked_session().await;
            let (login, save) = rig
                .race_paths(order.clone(), mode, "/login", "/incr", &c0)
                .await;
            let what = format!("login vs save ({mode:?} {order:?})");
            assert!(
                save.status == StatusCode::OK || save.status == StatusCode::CONFLICT,
                "{what}: the save answered {}",
                save.status
            );
            assert_eq!(save.cookie, None, "{what}: the save handed out a cookie");
            let c1 = login
                .cookie
                .expect("a login of a live session hands out a cookie");
            let user = rig.opens(&c1).await.map(|(user, _)| user);
            assert_eq!(
                user.as_deref(),
                Some("alice"),
                "{what}: the save undid the login"
            );
        }
    })
    .await;
    runs
}

/// With a grace window: a login (actor 0) and another request with the same old cookie
/// (actor 1) doing a regenerate, a logout, a save or a read. The other request never receives
/// a cookie that opens the logged-in session; the login's cookie keeps working unless the other
/// request was a logout (which ends the session, whichever came first).
pub(crate) async fn grace_is_read_only<St: Store<Probe> + Clone>(
    make: &Factory<St>,
    plan: &Plan,
) -> usize {
    let mut runs = 0;
    for concurrency in [lww(), optimistic()] {
        let rig = Rig::with_grace(make().await, concurrency, Duration::from_secs(30));
        for other in ["/regenerate", "/logout", "/incr", "/read"] {
            runs += every_order(plan, |order, mode| {
                let rig = rig.clone();
                async move {
                    let c0 = rig.marked_session().await;
                    let (login, r1) = rig
                        .race_paths(order.clone(), mode, "/login", other, &c0)
                        .await;
                    let what = format!("login vs {other} with the old cookie ({mode:?} {order:?})");
                    if let Some(cookie) = &r1.cookie {
                        let opened = rig.opens(cookie).await;
                        assert!(
                        opened.as_ref().is_none_or(|(user, _)| user.is_empty()),
                        "{what}: the old cookie's request got a cookie to the logged-in session"
                    );
                    }
                    let Some(c1) = login.cookie else {
                        // The other request moved or ended the session first: the login was
                        // refused and handed out nothing.
                        return;
                    };
                    if other == "/logout" {
                        assert_eq!(
                            r1.status,
                            StatusCode::OK,
                            "{what}: a logout is never refused"
                        );
                        assert!(
                            !rig.opens_marked(&c1).await,
                            "{what}: the logout did not end the session"
                        );
                        return;
                    }
                    let logged_in = rig.opens(&c1).await;
                    assert!(
                        logged_in.as_ref().is_some_and(|(_, count)| *count >= 2),
                        "{what}: the login's own cookie stopped working"
                    );
                    // A save from a copy loaded before the login is refused in both modes.
                    assert_eq!(
                        logged_in.map(|(user, _)| user),
                        Some("alice".to_owned()),
                        "{what}: the login was undone"
                    );
                }
            })
            .await;
        }
    }
    runs
}

/// A flash set by one request, shown by two racing requests with the same cookie: exactly one
/// sees it.
pub(crate) async fn flash_reaches_one_request<St: Store<Probe> + Clone>(
    make: &Factory<St>,
    plan: &Plan,
) -> usize {
    let rig = Rig::new(make().await, lww());
    every_order(plan, |order, mode| {
        let rig = rig.clone();
        async move {
            let c0 = rig.session("/flash").await;
            let (r0, r1) = rig
                .race_paths(order.clone(), mode, "/show", "/show", &c0)
                .await;
            let shown = [&r0, &r1].iter().filter(|r| r.body == "hello").count();
            assert_eq!(
                shown, 1,
                "({mode:?} {order:?}) the flash was shown {shown} times"
            );
        }
    })
    .await
}
