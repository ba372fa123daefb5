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
/// The sentinels name the master by address and port only, so the master is reached over TLS
/// when [`SentinelMaster::with_tls`] says so (`RedisTls::new()` for the system's root
/// certificates), whatever the sentinels' URLs are: a master that speaks only TLS refuses a
/// store without it when the store connects.
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
    /// No credentials, database 0, no TLS.
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

    /// Reaches the master over TLS trusting what `tls` says (your CA or the system's roots, a
    /// client certificate); sentinels given as `rediss://` are reached with the same settings.
    /// The redis crate then takes one set of sentinel credentials and one kind of connection
    /// for all sentinels: the store refuses to connect (an invalid configuration) when the
    /// sentinels' URLs differ in either.
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
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(settings)
            .set_tcp_settings(super::connection::tcp_settings());
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

/// A client whose connections to the master, and to the sentinels if they are given as
/// `rediss://`, trust `tls`: only the redis crate's builder takes certificates for both, and it
/// takes one set of sentinel credentials and one TLS setting for all sentinels, so their URLs
/// must agree on both.
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
    let over_tls =
        |info: &redis::ConnectionInfo| matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    let credentials = |info: &redis::ConnectionInfo| {
        let settings = info.redis_settings();
        (
            settings.username().map(str::to_owned),
            settings.password().map(str::to_owned),
        )
    };
    let Some(first) = sentinels.first() else {
        return Err(invalid("no sentinel given"));
    };
    let all_tls = over_tls(first);
    if sentinels.iter().any(|info| over_tls(info) != all_tls) {
        return Err(invalid(
            "with TLS settings, give every sentinel as rediss:// or every one as redis://",
        ));
    }
    if sentinels
        .iter()
        .any(|info| credentials(info) != credentials(first))
    {
        return Err(invalid(
            "with TLS settings, every sentinel's URL must carry the same username and password",
        ));
    }
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
    let (username, password) = credentials(first);
    if let Some(username) = username {
        builder = builder.set_client_to_sentinel_username(username);
    }
    if let Some(password) = password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if all_tls {
        builder = builder.set_client_to_sentinel_certificates(tls.certificates());
    }
    builder.build()
}

/// The error of a Sentinel configuration the redis crate cannot carry out as given.
#[cfg(feature = "redis-tls")]
fn invalid(why: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::InvalidClientConfig, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "redis-tls")]
    #[test]
    fn with_tls_the_sentinels_must_agree_on_tls_and_credentials() {
        let master = SentinelMaster::new().with_tls(RedisTls::new());
        let refused = |sentinels: &[&str]| {
            let err = match master.client(sentinels, "sessions", false) {
                Ok(_) => panic!("{sentinels:?} should be refused"),
                Err(err) => err,
            };
            assert_eq!(err.kind(), redis::ErrorKind::InvalidClientConfig, "{err}");
        };
        refused(&["rediss://10.0.0.1:26379", "redis://10.0.0.2:26379"]);
        refused(&[
            "rediss://:one@10.0.0.1:26379",
            "rediss://:another@10.0.0.2:26379",
        ]);
        refused(&["rediss://:one@10.0.0.1:26379", "rediss://10.0.0.2:26379"]);
        refused(&[]);
        for agreeing in [
            &[
                "rediss://:one@10.0.0.1:26379",
                "rediss://:one@10.0.0.2:26379",
            ][..],
            &["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"][..],
        ] {
            assert!(
                master.client(agreeing, "sessions", false).is_ok(),
                "{agreeing:?}"
            );
        }
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
