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
/// The trait leaves room for optional hooks with default bodies, so adding one never breaks an
/// existing implementation.
pub trait Session: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {}
