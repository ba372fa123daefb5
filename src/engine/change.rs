//! Step 3: what the handler left in the session state, turned into the one write the request
//! makes. Each arm of [`Change`] is written by one function in `write.rs`.

use std::time::Duration;

use time::OffsetDateTime;

use crate::{
    csrf::CsrfToken,
    flash::Flash,
    handle::{Existing, Intent, LifetimeChange, State},
    id::{SessionId, SessionKey},
    lifetime::Lifetime,
    record::{Record, RECORD_FORMAT},
    session::Session,
};

/// The one write a request makes.
pub(crate) enum Change<T> {
    /// Nothing to write.
    Nothing,
    /// Nothing changed, but the live cookie goes out again: a persistent cookie's `Max-Age`
    /// slid, or the cookie was signed with an older key; for a cookie-only session, `record`
    /// is re-sealed (it slid, its flash was shown, or it was sealed with an older key). A store
    /// writes nothing.
    Announce {
        record: Record<T>,
        cookie_id: SessionId,
        persistent: bool,
    },
    /// A new session: the first write of a request that had none.
    Create(Fresh<T>),
    /// The loaded session changed.
    Save {
        record: Record<T>,
        loaded: Existing,
        owner_was: Option<String>,
    },
    /// The loaded session moves to a new ID (login).
    Regenerate {
        record: Record<T>,
        loaded: Existing,
        owner_was: Option<String>,
    },
    /// Logout: the loaded session ends, and a new one starts if the handler wrote to the handle
    /// after deleting (a "logged out" flash, say).
    Logout {
        key: SessionKey,
        data: Option<T>,
        owner_was: Option<String>,
        /// The ended session's deadline, when this request loaded it: no copy of its cookie
        /// outlives it (what a cookie-only session's revocation must cover).
        deadline: Option<OffsetDateTime>,
        then: Option<Fresh<T>>,
    },
    /// The loaded session held nothing but a flash, which this request consumed: housekeeping,
    /// not a logout, so it is removed only if nobody wrote to it meanwhile.
    Discard {
        key: SessionKey,
        revision: u64,
        owner_was: Option<String>,
    },
    /// The handler changed a session it may only read (grace window): nothing is written.
    Refuse { key: SessionKey },
}

/// The content of a session to create.
pub(crate) struct Fresh<T> {
    pub(crate) data: T,
    pub(crate) has_data: bool,
    pub(crate) flash: Flash,
    /// A lifetime of its own (a session remembered on the request that created it).
    pub(crate) lifetime: Option<Lifetime>,
    pub(crate) csrf: Option<CsrfToken>,
}

/// The layer's settings a decision needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Defaults {
    /// The layer sends persistent cookies (`Max-Age`).
    pub(crate) persistent: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_lifetime: Duration,
}

impl<T: Session> Change<T> {
    /// Decides the request's write.
    pub(crate) fn decide(state: State<T>, now: OffsetDateTime, defaults: Defaults) -> Self {
        let State {
            data,
            existing,
            changed,
            has_data,
            outgoing_flash,
            intent,
            refused_write,
            loaded_owner,
            moved_from,
            lifetime,
            csrf,
            csrf_changed,
            ..
        } = state;
        let writes = changed || !outgoing_flash.is_empty() || lifetime.is_some() || csrf_changed;
        let remembered = match lifetime {
            Some(LifetimeChange::Remember(lifetime)) => Some(lifetime),
            _ => None,
        };
        let fresh = |data, has_data, flash| {
            writes.then_some(Fresh {
                data,
                has_data,
                flash,
                lifetime: remembered,
                csrf,
            })
        };
        let Some(loaded) = existing else {
            match (moved_from, &intent) {
                (Some(key), Intent::Delete { .. }) => {
                    return Change::Logout {
                        key,
                        data: None,
                        owner_was: None,
                        deadline: None,
                        then: fresh(data, has_data, outgoing_flash),
                    }
                }
                (Some(key), _) if refused_write => return Change::Refuse { key },
                _ => {}
            }
            return if writes {
                Change::Create(Fresh {
                    data,
                    has_data,
                    flash: outgoing_flash,
                    lifetime: remembered,
                    csrf,
                })
            } else {
                Change::Nothing
            };
        };
        // Only the arms that write ask for the owner: a read never calls `Session::owner`.
        let owner_was = |data: &T| loaded_owner.clone().unwrap_or_else(|| data.owner());
        let regenerate = match intent {
            // A logout goes through whatever else the request did.
            Intent::Delete { data: ended } => {
                return Change::Logout {
                    key: loaded.key,
                    owner_was: loaded_owner.clone().flatten(),
                    deadline: Some(loaded.deadline),
                    then: fresh(data, has_data, outgoing_flash),
                    data: ended,
                }
            }
            Intent::Regenerate => true,
            Intent::Keep => false,
        };
        if refused_write {
            return Change::Refuse { key: loaded.key };
        }
        if loaded.read_only() {
            // The old cookie of a regenerated session (grace window): it reads, and writes
            // nothing, not even housekeeping on the moved session.
            return Change::Nothing;
        }
        match regenerate {
            _ if !has_data && outgoing_flash.is_empty() => Change::Discard {
                key: loaded.key,
                revision: loaded.revision,
                owner_was: owner_was(&data),
            },
            true => Change::Regenerate {
                owner_was: owner_was(&data),
                record: with_lifetime(
                    record(&loaded, data, outgoing_flash, has_data, csrf, now),
                    lifetime,
                    now,
                    defaults,
                ),
                loaded,
            },
            false if writes => Change::Save {
                owner_was: owner_was(&data),
                record: record(&loaded, data, outgoing_flash, has_data, csrf, now),
                loaded,
            },
            false => match loaded.cookie_id {
                Some(cookie_id)
                    if (loaded.persistent(defaults.persistent) && loaded.slid)
                        || loaded.reissue =>
                {
                    Change::Announce {
                        persistent: loaded.persistent(defaults.persistent),
                        record: Record {
                            // Unchanged: not a new revision.
                            revision: loaded.revision,
                            ..record(&loaded, data, Flash::default(), has_data, csrf, now)
                        },
                        cookie_id,
                    }
                }
                _ => Change::Nothing,
            },
        }
    }
}

/// The loaded session's record with the handler's content, one revision on.
fn record<T>(
    loaded: &Existing,
    data: T,
    flash: Flash,
    has_data: bool,
    csrf_token: Option<CsrfToken>,
    now: OffsetDateTime,
) -> Record<T> {
    Record {
        format: RECORD_FORMAT,
        key: loaded.key,
        data,
        flash,
        has_data,
        created_at: loaded.created_at,
        revision: loaded.revision + 1,
        last_seen: now,
        expires_at: loaded.expires_at,
        deadline: loaded.deadline,
        idle_timeout: loaded.idle_timeout,
        csrf_token,
    }
}

/// `record` with the lifetime the handler gave it, if it changed: its own bounds from now, or
/// the layer's (never past the deadline it had).
fn with_lifetime<T>(
    mut record: Record<T>,
    change: Option<LifetimeChange>,
    now: OffsetDateTime,
    defaults: Defaults,
) -> Record<T> {
    let (idle, deadline) = match change {
        None => return record,
        Some(LifetimeChange::Remember(lifetime)) => (
            Some(lifetime.idle_timeout().max(defaults.idle_timeout)),
            now + lifetime.absolute_lifetime(),
        ),
        Some(LifetimeChange::LayerDefault) => {
            (None, record.deadline.min(now + defaults.absolute_lifetime))
        }
    };
    record.idle_timeout = idle;
    record.deadline = deadline;
    record.expires_at = (now + idle.unwrap_or(defaults.idle_timeout)).min(deadline);
    record.last_seen = now;
    record
}
