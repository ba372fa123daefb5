//! The owner index seen from the engine: a user's live sessions, and ending them through the
//! same write path as a logout.

use std::collections::HashSet;

use time::OffsetDateTime;

use super::{store_error, Engine};
use crate::{
    error::{SessionError, StoreOperation},
    events::Ending,
    id::SessionKey,
    record::Record,
    session::Session,
    store::{LoadOptions, Store},
};

/// A live session found through the owner index: the key it was indexed under (it may since
/// have moved) and its record now.
pub(crate) struct Indexed<T> {
    pub(crate) indexed: SessionKey,
    pub(crate) record: Record<T>,
}

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// The live sessions of `owner`, each once, found through the index and followed to where
    /// they moved. Entries that lead to no session of `owner` (expired, changed owner,
    /// undecodable) or to one listed under another entry are removed from the index on the way.
    pub(crate) async fn live_sessions(&self, owner: &str) -> Result<Vec<Indexed<T>>, SessionError> {
        let keys = self
            .store
            .owner_keys(owner)
            .await
            .map_err(store_error(StoreOperation::Index))?;
        let now = OffsetDateTime::now_utc();
        let mut seen = HashSet::with_capacity(keys.len());
        let mut live = Vec::with_capacity(keys.len());
        for key in keys {
            match self.follow(key, LoadOptions::at(now)).await {
                Ok(Some(record)) if record.data.owner().as_deref() == Some(owner) => {
                    if record.key != key {
                        // The session moved: its entry under the new key is (or will be) there.
                        self.unindex(Some(owner), &key).await;
                    }
                    if seen.insert(record.key) {
                        live.push(Indexed {
                            indexed: key,
                            record,
                        });
                    }
                }
                Ok(_) => self.unindex(Some(owner), &key).await,
                Err(error) if error.is_decode() => self.unindex(Some(owner), &key).await,
                Err(source) => return Err(store_error(StoreOperation::Load)(source)),
            }
        }
        Ok(live)
    }

    /// Ends every live session of `owner` that `select` picks (given the key it was indexed
    /// under and its key now), the way a logout does: from the indexed key, following the
    /// session wherever it moved meanwhile. Returns how many were live.
    pub(crate) async fn revoke(
        &self,
        owner: &str,
        select: impl Fn(&SessionKey, &SessionKey) -> bool,
    ) -> Result<usize, SessionError> {
        let mut revoked = 0;
        for Indexed { indexed, record } in self.live_sessions(owner).await? {
            if select(&indexed, &record.key)
                && self
                    .end(indexed, Some(&record.data), Some(owner), Ending::Revoke)
                    .await?
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}
