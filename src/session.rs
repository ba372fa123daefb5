//! The trait an application's own session type implements.

use serde::{de::DeserializeOwned, Serialize};

/// The application's typed session data.
///
/// Any `Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static` type implements it
/// in one line. `Default` is the value a new, empty session starts with.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tower_typed_sessions::Session;
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Visitor {
///     user_id: Option<u64>,
///     visits: u32,
/// }
///
/// impl Session for Visitor {}
/// ```
///
/// Optional hooks have default bodies, so adding one never breaks an existing implementation.
pub trait Session: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {
    /// The user this session belongs to, if any. When it returns `Some`, the store keeps an index
    /// from the owner to their live sessions, which [`SessionManager`](crate::SessionManager)
    /// lists and revokes ("log out my other devices", "log out everywhere after a password
    /// change"). The layer calls it only on requests that change the session (a write, a
    /// regenerate, a logout): a request that only reads the session never calls it.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tower_typed_sessions::Session;
    /// #[derive(Clone, Default, Serialize, Deserialize)]
    /// struct Account {
    ///     user_id: Option<u64>,
    /// }
    ///
    /// impl Session for Account {
    ///     fn owner(&self) -> Option<String> {
    ///         self.user_id.map(|id| id.to_string())
    ///     }
    /// }
    /// ```
    fn owner(&self) -> Option<String> {
        None
    }
}
