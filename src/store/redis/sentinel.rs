//! How a store behind Redis Sentinel reaches the master: the sentinels name its address, and
//! [`SentinelMaster`] says what the master wants beyond that (credentials, database, TLS).

use std::fmt;

use redis::{
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
    RedisConnectionInfo, RedisError,
};

#[cfg(feature = "redis-tls")]
use super::RedisTls;

/// How [`RedisStore::connect_sentinel_with`] (and `connect_sentinel_cached_with`) reaches the
/// master the sentinels name: the username and password it asks for (`requirepass` or an ACL
/// user), the database, and (feature `redis-tls`) TLS with your own CA or a client certificate.
/// The sentinels themselves are reached as their URLs say (`redis://:password@host:26379` for
/// a sentinel with `requirepass`, `rediss://` for TLS).
///
/// Sentinels given as `rediss://` mean the master is reached over TLS too, trusting the
/// system's root certificates unless [`SentinelMaster::with_tls`] names a CA; a store never
/// falls back to plain text.
///
/// ```no_run
/// use tower_typed_sessions::{store::redis::SentinelMaster, RedisStore, Session};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
/// # impl Session for Data {}
/// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
/// let password = std::env::var("REDIS_PASSWORD").unwrap_or_default();
/// let master = SentinelMaster::new().with_password(password).with_db(2);
/// let store = RedisStore::<Data>::connect_sentinel_with(
///     &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
///     "sessions",
///     master,
/// )
/// .await?;
/// # Ok(()) }
/// ```
///
/// [`RedisStore::connect_sentinel_with`]: super::RedisStore::connect_sentinel_with
#[derive(Clone, Default)]
pub struct SentinelMaster {
    username: Option<String>,
    password: Option<String>,
    db: i64,
    #[cfg(feature = "redis-tls")]
    tls: Option<RedisTls>,
}

impl fmt::Debug for SentinelMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is a secret: say only whether there is one.
        let mut debug = f.debug_struct("SentinelMaster");
        debug
            .field("username", &self.username)
            .field("password", &self.password.is_some())
            .field("db", &self.db);
        #[cfg(feature = "redis-tls")]
        debug.field("tls", &self.tls);
        debug.finish()
    }
}

impl SentinelMaster {
    /// No credentials, database 0, and TLS only if the sentinels' URLs are `rediss://`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The password the master asks for (`requirepass`, or an ACL user's with
    /// [`SentinelMaster::with_username`]).
    #[must_use]
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The ACL user to log in to the master as (Redis 6 and later).
    #[must_use]
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The database on the master (`SELECT`); 0 unless set.
    #[must_use]
    pub fn with_db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// Reaches the master over TLS trusting what `tls` says (your CA, a client certificate);
    /// sentinels given as `rediss://` are reached with the same settings.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    #[must_use]
    pub fn with_tls(mut self, tls: RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings of the store's own connections to the master (a cached store's pair).
    pub(super) fn tls(&self) -> super::tracking::socket::Tls {
        #[cfg(feature = "redis-tls")]
        return self.tls.clone();
        #[cfg(not(feature = "redis-tls"))]
        None
    }

    /// The redis crate's client that asks `sentinels` for the master `master_name` and opens
    /// connections to it as this says (`resp3`: for a cached store, whose invalidations need it).
    pub(super) fn client(
        &self,
        sentinels: &[&str],
        master_name: &str,
        resp3: bool,
    ) -> Result<SentinelClient, RedisError> {
        let mut settings = RedisConnectionInfo::default().set_db(self.db);
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        if resp3 {
            settings = settings.set_protocol(redis::ProtocolVersion::RESP3);
        }
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = &self.tls {
            return with_certificates(sentinels, master_name, settings, tls);
        }
        let mut node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(settings)
            .set_tcp_settings(super::connection::tcp_settings());
        if implies_tls(sentinels) {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        SentinelClient::build(
            sentinels.to_vec(),
            // A String: the redis crate takes one without its TLS feature (and any
            // `AsRef<str>` with it).
            String::from(master_name),
            Some(node),
            SentinelServerType::Master,
        )
    }
}

/// Whether sentinels reached over TLS (any `rediss://` URL) mean a master reached over TLS: a
/// deployment that encrypts the one does not want the other in plain text.
fn implies_tls(sentinels: &[&str]) -> bool {
    sentinels.iter().any(|url| {
        url.get(.."rediss://".len())
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    })
}

/// A client whose connections to the master, and to the sentinels given as `rediss://`, trust
/// `tls`: only the redis crate's builder takes certificates for both, and it takes the
/// sentinels' credentials once for all, so they come from the first URL that has any.
#[cfg(feature = "redis-tls")]
fn with_certificates(
    sentinels: &[&str],
    master_name: &str,
    settings: RedisConnectionInfo,
    tls: &RedisTls,
) -> Result<SentinelClient, RedisError> {
    use redis::{sentinel::SentinelClientBuilder, ConnectionAddr, IntoConnectionInfo};

    let sentinels = sentinels
        .iter()
        .map(|url| url.into_connection_info())
        .collect::<Result<Vec<_>, _>>()?;
    let all_tls = sentinels
        .iter()
        .all(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
    let mut builder = SentinelClientBuilder::new(
        sentinels.iter().map(|info| info.addr().clone()),
        master_name,
        SentinelServerType::Master,
    )?
    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
    .set_client_to_redis_tcp_settings(super::connection::tcp_settings())
    .set_client_to_redis_certificates(tls.certificates())
    .set_client_to_redis_db(settings.db())
    .set_client_to_redis_protocol(settings.protocol());
    if let Some(username) = settings.username() {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = settings.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(credentials) = sentinels
        .iter()
        .map(|info| info.redis_settings())
        .find(|settings| settings.password().is_some())
    {
        if let Some(username) = credentials.username() {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = credentials.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    if all_tls {
        builder = builder.set_client_to_sentinel_certificates(tls.certificates());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_over_tls_means_a_master_over_tls() {
        assert!(implies_tls(&[
            "redis://10.0.0.1:26379",
            "rediss://10.0.0.2:26379"
        ]));
        assert!(implies_tls(&["REDISS://10.0.0.2:26379"]));
        assert!(!implies_tls(&[
            "redis://10.0.0.1:26379",
            "redis://10.0.0.2:26379"
        ]));
        assert!(!implies_tls(&["redis://rediss:26379"]));
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let master = SentinelMaster::new()
            .with_username("app")
            .with_password("hunter2-secret");
        let debug = format!("{master:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(debug.contains("password: true"), "{debug}");
    }
}
