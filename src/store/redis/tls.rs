//! TLS settings for `rediss://` connections beyond the system's root certificates.

use std::{fmt, sync::Arc};

use redis::RedisError;

/// What a `rediss://` connection trusts and presents, for [`RedisStore::connect_with_tls`]
/// (and `connect_cluster_with_tls`): your own CA's certificate instead of the system's roots
/// (a private CA, a test), and a client certificate for servers that require one (mutual TLS).
///
/// A plain [`RedisStore::connect`] with a `rediss://` URL already speaks TLS and trusts the
/// system's root certificates, which is what managed Redis services need.
///
/// ```no_run
/// use tower_typed_sessions::{store::redis::RedisTls, RedisStore, Session};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
/// # impl Session for Data {}
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let ca = std::fs::read("/etc/myapp/redis-ca.pem")?;
/// let tls = RedisTls::new().with_root_certificate(ca);
/// let store = RedisStore::<Data>::connect_with_tls("rediss://redis.internal:6380", tls).await?;
/// # Ok(()) }
/// ```
///
/// [`RedisStore::connect_with_tls`]: super::RedisStore::connect_with_tls
/// [`RedisStore::connect`]: super::RedisStore::connect
#[derive(Clone, Default)]
pub struct RedisTls {
    root_certificate: Option<Vec<u8>>,
    client_certificate: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client key is a secret: say only whether there is one.
        f.debug_struct("RedisTls")
            .field("root_certificate", &self.root_certificate.is_some())
            .field("client_certificate", &self.client_certificate.is_some())
            .finish()
    }
}

impl RedisTls {
    /// The system's root certificates, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA in `pem` (PEM text) instead of the system's root certificates.
    #[must_use]
    pub fn with_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Presents this certificate and private key (PEM text) to a server that asks for one.
    #[must_use]
    pub fn with_client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_certificate = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    pub(super) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client_certificate.as_ref().map(|(cert, key)| {
                redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }
            }),
            root_cert: self.root_certificate.clone(),
        }
    }
}

/// The rustls configuration a cached store's own TLS connections use: the CA of `tls` (else the
/// system's root certificates), its client certificate if any; ring as the crypto provider.
pub(super) fn client_config(tls: Option<&RedisTls>) -> Result<rustls::ClientConfig, RedisError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

    let invalid = |what: &str, err: &dyn fmt::Display| -> RedisError {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {err}")).into()
    };
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|tls| tls.root_certificate.as_deref()) {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate.map_err(|err| invalid("root certificate", &err))?;
                roots
                    .add(certificate)
                    .map_err(|err| invalid("root certificate", &err))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for certificate in native.certs {
                // A system certificate rustls cannot use is skipped, as the redis crate does.
                let _ = roots.add(certificate);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| invalid("TLS versions", &err))?
    .with_root_certificates(roots);
    match tls.and_then(|tls| tls.client_certificate.as_ref()) {
        Some((certificate, key)) => {
            let chain = CertificateDer::pem_slice_iter(certificate)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| invalid("client certificate", &err))?;
            let key =
                PrivateKeyDer::from_pem_slice(key).map_err(|err| invalid("client key", &err))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| invalid("client certificate", &err))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}
