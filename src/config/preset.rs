//! Named postures: settings that belong together, chosen by name.

use std::time::Duration;

use super::{Config, SameSite};

/// A named set of settings for a common kind of application, for
/// [`SessionLayer::from_preset`](crate::SessionLayer::from_preset). Every setting can still be
/// changed afterwards with the layer's builder methods.
///
/// Both presets follow the timeouts of OWASP's Session Management Cheat Sheet and add the
/// cookie hardening it recommends: a `__Host-` cookie name (Secure, `Path=/`, no Domain, so no
/// sibling subdomain can set or shadow it) and `SameSite=Strict`. Strict means a user who
/// follows a link to your site from another site (an e-mail, a search result) arrives without
/// the cookie on that first request and looks logged out until the next one; use the defaults
/// (`Lax`) where that matters more than cross-site protection.
///
/// | preset | idle timeout | absolute lifetime | `SameSite` | cookie name |
/// |---|---|---|---|---|
/// | [`Preset::OfficeApplication`] | 30 minutes | 8 hours | `Strict` | `__Host-id` |
/// | [`Preset::HighValue`] | 5 minutes | 4 hours | `Strict` | `__Host-id` |
/// | (the defaults, [`SessionLayer::new`](crate::SessionLayer::new)) | 1 hour | 24 hours | `Lax` | `id` |
///
/// ```
/// use tower_typed_sessions::{MemoryStore, Preset, Session, SessionLayer};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
/// # impl Session for Data {}
///
/// let layer = SessionLayer::from_preset(MemoryStore::<Data>::new(), Preset::OfficeApplication);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// An application used through a working day ("low risk" in OWASP's terms): idle 15-30
    /// minutes, absolute 4-8 hours; here 30 minutes and 8 hours.
    OfficeApplication,
    /// Money, health or administration ("high-value"): OWASP's idle range is 2-5 minutes; here
    /// 5 minutes, and an absolute lifetime of 4 hours (the low end of its absolute range).
    HighValue,
}

impl Preset {
    pub(crate) fn config<T>(self) -> Config<T> {
        let (idle, lifetime) = match self {
            Preset::OfficeApplication => (30 * 60, 8 * 60 * 60),
            Preset::HighValue => (5 * 60, 4 * 60 * 60),
        };
        Config::default()
            .with_cookie_name("__Host-id")
            .with_same_site(SameSite::Strict)
            .with_idle_timeout(Duration::from_secs(idle))
            .with_absolute_lifetime(Duration::from_secs(lifetime))
    }
}
