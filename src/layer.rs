//! The Tower layer.

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use crate::{
    config::SessionConfig, engine::Engine, error::ConfigError, manager::SessionManager,
    service::SessionService, session::Session, store::Store,
};

/// A [`tower_layer::Layer`] that gives every request a typed session backed by a [`Store`].
///
/// ```
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_typed_sessions::{MemoryStore, Session, SessionHandle, SessionLayer};
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Cart { items: Vec<String> }
/// impl Session for Cart {}
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = ServiceBuilder::new()
///     .layer(SessionLayer::new(MemoryStore::<Cart>::new()))
///     .service(service_fn(|req: Request<Full<Bytes>>| async move {
///         let session = req.extensions().get::<SessionHandle<Cart>>().unwrap();
///         session.update(|cart| cart.items.push("apple".into()));
///         Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
///     }));
///
/// let response = service.oneshot(Request::new(Full::default())).await?;
/// let cookie = response.headers()[header::SET_COOKIE].to_str()?;
/// assert!(cookie.starts_with("id="));
/// assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Secure"));
/// # Ok(()) }
/// ```
pub struct SessionLayer<T, St> {
    engine: Arc<Engine<T, St>>,
}

impl<T, St> Clone for SessionLayer<T, St> {
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
        }
    }
}

impl<T, St: fmt::Debug> fmt::Debug for SessionLayer<T, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("store", self.engine.store())
            .field("settings", self.engine.settings())
            .finish()
    }
}

impl<T: Session, St: Store<T>> SessionLayer<T, St> {
    /// A layer with the default [`SessionConfig`].
    pub fn new(store: St) -> Self {
        // The defaults are valid by construction; a test keeps them so.
        match Self::from_config(store, SessionConfig::default()) {
            Ok(layer) => layer,
            Err(err) => unreachable!("default session config is invalid: {err}"),
        }
    }

    /// A layer with `config`, refused if the configuration cannot work (for example a `__Host-`
    /// cookie with a Domain).
    pub fn from_config(store: St, config: SessionConfig<T>) -> Result<Self, ConfigError> {
        let settings = config.validate(!store.contents_stay_in_process())?;
        Ok(Self {
            engine: Arc::new(Engine::new(store, settings)),
        })
    }

    /// A [`SessionManager`] for listing and revoking users' sessions, sharing this layer's store
    /// and callbacks.
    pub fn manager(&self) -> SessionManager<T, St> {
        SessionManager::new(Arc::clone(&self.engine))
    }

    /// The store behind the layer.
    pub fn store(&self) -> &St {
        self.engine.store()
    }
}

impl<S, T, St> Layer<S> for SessionLayer<T, St> {
    type Service = SessionService<S, T, St>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, Arc::clone(&self.engine))
    }
}
