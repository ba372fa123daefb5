//! A session's own lifetime ("remember me"), set by a handler for one session.

use std::time::Duration;

use crate::config::MAX_DURATION;

/// A lifetime of one session's own, for [`SessionHandle::remember`](crate::SessionHandle::remember):
/// an idle timeout and an absolute lifetime that replace the layer's for that session alone,
/// with a persistent cookie (`Max-Age`) so that the browser keeps it across restarts.
///
/// Both durations are kept between a millisecond and 100 years.
///
/// ```
/// use std::time::Duration;
/// use tower_typed_sessions::Lifetime;
///
/// const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// // Signed in on this device for 30 days of inactivity, 90 days at most.
/// let remember_me = Lifetime::new(30 * DAY, 90 * DAY);
/// assert_eq!(remember_me.idle_timeout(), 30 * DAY);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    idle: Duration,
    absolute: Duration,
}

impl Lifetime {
    /// Dies after `idle` without use, and `absolute` after it was given at the latest.
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        let keep = |d: Duration| d.clamp(Duration::from_millis(1), MAX_DURATION);
        Self {
            idle: keep(idle),
            absolute: keep(absolute),
        }
    }

    /// How long the session lives unused.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// How long the session lives at most, counted from the request that gave it this lifetime.
    pub fn absolute_lifetime(&self) -> Duration {
        self.absolute
    }
}

/// The smallest move of a remembered session's expiry worth a store round trip: a thousandth of
/// its idle timeout, at least a second, at most a minute, and never more than half of it. A
/// session used at least once every `idle - step` never expires.
pub(crate) fn slide_step(idle: Duration) -> Duration {
    (idle / 1000)
        .max(Duration::from_secs(1))
        .min(Duration::from_secs(60))
        .min(idle / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slide_step_stays_small_against_the_idle_timeout() {
        let day = Duration::from_secs(24 * 60 * 60);
        assert_eq!(slide_step(30 * day), Duration::from_secs(60));
        assert_eq!(
            slide_step(Duration::from_secs(3600)),
            Duration::from_millis(3600)
        );
        assert_eq!(slide_step(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(
            slide_step(Duration::from_millis(800)),
            Duration::from_millis(400)
        );
    }
}
