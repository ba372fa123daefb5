//! Flash messages: set in one request, shown in the next, gone after it.

use serde::{Deserialize, Serialize};

/// One flash message: a key (such as `"notice"` or `"error"`) and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashMessage {
    /// What kind of message this is, chosen by the application.
    pub key: String,
    /// The message text.
    pub message: String,
}

/// A set of flash messages, at most one per key (setting a key again replaces its message).
///
/// Stored inside the session record, so it belongs to one user only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flash {
    messages: Vec<FlashMessage>,
}

impl Flash {
    /// No messages.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// How many messages there are.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// The message stored under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.messages
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.message.as_str())
    }

    /// All messages, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = &FlashMessage> {
        self.messages.iter()
    }

    pub(crate) fn insert(&mut self, key: String, message: String) {
        match self.messages.iter_mut().find(|m| m.key == key) {
            Some(existing) => existing.message = message,
            None => self.messages.push(FlashMessage { key, message }),
        }
    }

    /// Removes the message under `key`; whether there was one.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let before = self.messages.len();
        self.messages.retain(|m| m.key != key);
        self.messages.len() != before
    }

    pub(crate) fn clear(&mut self) {
        self.messages.clear();
    }

    /// The stored form (JSON), for a backend that keeps pending flash messages apart from the
    /// record so that a load can take them in one step.
    pub fn encode(&self) -> Result<Vec<u8>, crate::StoreError> {
        serde_json::to_vec(self).map_err(|err| crate::StoreError::Encode(Box::new(err)))
    }

    /// Reads what [`Flash::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::StoreError> {
        serde_json::from_slice(bytes).map_err(|err| crate::StoreError::Decode(Box::new(err)))
    }
}
