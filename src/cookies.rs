//! Reading the session cookie from a request and writing Set-Cookie values.

use http::{header, HeaderMap, HeaderValue};

use crate::{
    config::CookieSettings,
    id::SessionId,
    keys::{Signer, Verified},
};

/// A request's `Cookie` headers, kept for a load that may never come: one header (the usual case)
/// without an allocation, several in a list. The values are reference-counted, not copied.
#[derive(Clone, Debug, Default)]
pub(crate) enum CookieHeaders {
    #[default]
    None,
    One(HeaderValue),
    Many(Vec<HeaderValue>),
}

impl CookieHeaders {
    pub(crate) fn from_request(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(header::COOKIE).iter();
        match (values.next(), values.next()) {
            (None, _) => Self::None,
            (Some(one), None) => Self::One(one.clone()),
            (Some(first), Some(second)) => {
                let mut all = vec![first.clone(), second.clone()];
                all.extend(values.cloned());
                Self::Many(all)
            }
        }
    }

    pub(crate) fn as_slice(&self) -> &[HeaderValue] {
        match self {
            Self::None => &[],
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(all) => all,
        }
    }
}

/// What the request's cookies say about the session.
pub(crate) enum Incoming {
    /// No cookie with the session cookie's name.
    Absent,
    /// Cookies with the name, none of them a well-formed ID.
    Malformed,
    /// A well-formed ID whose signature is missing or matches no key.
    BadSignature,
    /// The first valid ID among the cookies with the name.
    Id {
        id: SessionId,
        /// Signed with an older key: to be re-issued under the current one.
        resign: bool,
    },
}

/// The raw values of the cookies named `name`, in the order the client sent them (browsers send
/// the most specific path or domain first), unquoted. The scan is linear in the header size and
/// never allocates.
pub(crate) fn values_named<'a>(
    cookie_headers: impl IntoIterator<Item = &'a HeaderValue>,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> {
    let name = name.as_bytes();
    cookie_headers
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            // `name` is a token (no `=`, no whitespace), so a pair is ours exactly when it reads
            // `name`, optional whitespace, `=`: checked without searching other pairs for `=`.
            let rest = pair.trim_ascii_start().strip_prefix(name)?;
            let mut raw = rest.trim_ascii_start().strip_prefix(b"=")?.trim_ascii();
            if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
                raw = &raw[1..raw.len() - 1];
            }
            Some(raw)
        })
}

/// Finds the session cookie. Several cookies may carry the name (set for different paths or
/// domains); the first valid one wins.
pub(crate) fn find_session_id<'a>(
    cookie_headers: impl IntoIterator<Item = &'a HeaderValue>,
    name: &'a str,
    signer: Option<&Signer>,
) -> Incoming {
    let mut seen = false;
    let mut bad_signature = false;
    for raw in values_named(cookie_headers, name) {
        seen = true;
        match signer {
            None => {
                if let Some(id) = SessionId::parse_bytes(raw) {
                    return Incoming::Id { id, resign: false };
                }
            }
            Some(signer) => match signer.verify(raw) {
                Verified::Current(id) => return Incoming::Id { id, resign: false },
                Verified::Rotated(id) => return Incoming::Id { id, resign: true },
                Verified::BadSignature => bad_signature = true,
                Verified::Malformed => {}
            },
        }
    }
    if bad_signature {
        Incoming::BadSignature
    } else if seen {
        Incoming::Malformed
    } else {
        Incoming::Absent
    }
}

/// A Set-Cookie header carrying `id` (signed when a signer is set), with `max_age` seconds when
/// the cookie is persistent.
pub(crate) fn live_cookie(
    settings: &CookieSettings,
    signer: Option<&Signer>,
    id: &SessionId,
    max_age: Option<u64>,
) -> HeaderValue {
    let signed;
    let value = match signer {
        Some(signer) => {
            signed = signer.sign(id);
            signed.as_str()
        }
        None => id.expose_secret(),
    };
    set_cookie(settings, value, max_age)
}

/// A Set-Cookie header carrying `value` (an ID, signed or not, or a sealed session: base64url
/// either way), with `max_age` seconds when the cookie is persistent.
pub(crate) fn set_cookie(
    settings: &CookieSettings,
    value: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut text =
        String::with_capacity(settings.name.len() + settings.attributes.len() + value.len() + 24);
    text.push_str(&settings.name);
    text.push('=');
    text.push_str(value);
    text.push_str(&settings.attributes);
    if let Some(seconds) = max_age {
        text.push_str("; Max-Age=");
        text.push_str(&seconds.to_string());
    }
    // Name and attributes were validated when the layer was built; the value is base64url.
    HeaderValue::from_str(&text).unwrap_or_else(|_| settings.removal.clone())
}

/// Adds `Cache-Control: no-store` (unless the handler chose its own) and `Vary: Cookie` to a
/// response that carries a session cookie, so no shared cache stores or replays it.
pub(crate) fn mark_uncacheable(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    vary_on_cookie(headers);
}

/// Adds `Vary: Cookie` unless the response already varies on it (or on everything).
pub(crate) fn vary_on_cookie(headers: &mut HeaderMap) {
    if !headers.contains_key(header::VARY) {
        headers.insert(header::VARY, HeaderValue::from_static("Cookie"));
        return;
    }
    let varies_on_cookie = headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case("cookie") || part.trim() == "*")
        })
    });
    if !varies_on_cookie {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find_session_id(map: &HeaderMap, name: &str, signer: Option<&Signer>) -> Incoming {
        super::find_session_id(map.get_all(header::COOKIE), name, signer)
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn finds_first_well_formed_cookie_across_headers() {
        let id = SessionId::generate().unwrap();
        let good = format!("id={}", id.expose_secret());
        let map = headers(&[b"a=1; id=short", good.as_bytes()]);
        assert!(
            matches!(find_session_id(&map, "id", None), Incoming::Id { id: found, .. } if found == id)
        );
        let spaced = format!("idx=1; id_2=3;  id = {} ", id.expose_secret());
        assert!(
            matches!(find_session_id(&headers(&[spaced.as_bytes()]), "id", None), Incoming::Id { id: found, .. } if found == id)
        );
        let quoted = format!("x=y;id=\"{}\"", id.expose_secret());
        assert!(matches!(
            find_session_id(&headers(&[quoted.as_bytes()]), "id", None),
            Incoming::Id { .. }
        ));
    }

    #[test]
    fn tells_absent_from_malformed() {
        assert!(matches!(
            find_session_id(&headers(&[b"idx=1; xid=2"]), "id", None),
            Incoming::Absent
        ));
        assert!(matches!(
            find_session_id(&headers(&[b"id=\xff\xfe"]), "id", None),
            Incoming::Malformed
        ));
        assert!(matches!(
            find_session_id(&HeaderMap::new(), "id", None),
            Incoming::Absent
        ));
    }

    #[test]
    fn vary_is_appended_once() {
        let mut map = HeaderMap::new();
        map.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        mark_uncacheable(&mut map);
        mark_uncacheable(&mut map);
        let vary: Vec<_> = map.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Cookie"]);
        assert_eq!(map[header::CACHE_CONTROL], "no-store");
    }
}
