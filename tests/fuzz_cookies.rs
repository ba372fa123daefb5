//! Property tests over the Cookie header and ID decoding, through the public API: whatever a
//! client sends, the layer answers, never panics, asks the store nothing unless a well-formed
//! (and, when signing, correctly signed) session cookie is present, and clears a session cookie
//! that names no session with exactly one removal cookie.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::{
    body::Body,
    http::{header, HeaderValue, Request, StatusCode},
};
use proptest::prelude::*;
use support::{send, Client, TestStore};
use tower_typed_sessions::{Key, SessionId, SessionLayer};

static CASES: AtomicUsize = AtomicUsize::new(0);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One runtime, store and app per property, built once: the cases then cost a request each.
struct Fixture {
    rt: tokio::runtime::Runtime,
    store: TestStore,
    app: axum::Router,
}

fn fixture(signed: bool) -> &'static Fixture {
    static PLAIN: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    static SIGNED: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    let cell = if signed { &SIGNED } else { &PLAIN };
    cell.get_or_init(|| {
        let store = TestStore::new();
        let mut layer = SessionLayer::new(store.clone());
        if signed {
            layer = layer.with_signing_keys([Key::from_bytes(&[3u8; 32]).unwrap()]);
        }
        let app = support::routes().layer(layer);
        Fixture {
            rt: runtime(),
            store,
            app,
        }
    })
}

/// Bytes a header value may hold: visible ASCII, space, tab and obs-text (0x80-0xFF). Control
/// bytes are folded into that range (cheaper to generate than a union of ranges).
fn header_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len).prop_map(|mut bytes| {
        for b in &mut bytes {
            if *b == 0x7f || (*b < 0x20 && *b != b'\t') {
                *b ^= 0x40;
            }
        }
        bytes
    })
}

fn cookie_pair() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just(b"id".to_vec()),
        Just(b" id".to_vec()),
        Just(b"ID".to_vec()),
        Just(b"idx".to_vec()),
        Just(b"xid".to_vec()),
        header_bytes(0..8),
    ];
    let value = prop_oneof![
        header_bytes(0..64),
        // Near misses of a real ID: right length, arbitrary alphabet.
        header_bytes(43..44),
        proptest::collection::vec(0usize..64, 42..=44).prop_map(|digits| {
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            digits.into_iter().map(|d| alphabet[d]).collect::<Vec<u8>>()
        }),
        header_bytes(80..100),
    ];
    (name, value).prop_map(|(mut n, v)| {
        n.push(b'=');
        n.extend(v);
        n
    })
}

fn cookie_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        header_bytes(0..512),
        proptest::collection::vec(cookie_pair(), 0..40).prop_map(|pairs| pairs.join(&b"; "[..])),
    ]
}

/// Whether any cookie is named exactly `id` (after trimming whitespace), whatever its value:
/// such a request carries a session cookie, and since none of these name a live session, the
/// layer must clear it.
fn has_session_cookie(header: &[u8]) -> bool {
    header.split(|b| *b == b';').any(|pair| {
        pair.iter()
            .position(|b| *b == b'=')
            .is_some_and(|eq| pair[..eq].trim_ascii() == b"id")
    })
}

/// Whether any cookie named exactly `id` holds a well-formed ID (the only case that may reach
/// the store).
fn has_well_formed_id(header: &[u8]) -> bool {
    header.split(|b| *b == b';').any(|pair| {
        let Some(eq) = pair.iter().position(|b| *b == b'=') else {
            return false;
        };
        let mut value = pair[eq + 1..].trim_ascii();
        if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
            value = &value[1..value.len() - 1];
        }
        pair[..eq].trim_ascii() == b"id"
            && SessionId::parse_bytes(value.split(|b| *b == b'.').next().unwrap_or(value)).is_some()
    })
}

fn check(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    store: &TestStore,
    header: &[u8],
    signed: bool,
) {
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    CASES.fetch_add(1, Ordering::Relaxed);
    store.take_calls();
    let request = Request::get("/read")
        .header(header::COOKIE, value)
        .body(Body::empty())
        .unwrap();
    let reply = rt.block_on(send(app, request));
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body, "0 new=true",
        "no forged or random cookie is adopted"
    );
    if has_session_cookie(header) {
        assert!(
            reply.is_removal("id"),
            "stale session cookie not cleared: {:?} on {:?}",
            reply.set_cookies(),
            String::from_utf8_lossy(header)
        );
    } else {
        assert!(
            reply.set_cookies().is_empty(),
            "{:?} on {:?}",
            reply.set_cookies(),
            String::from_utf8_lossy(header)
        );
    }
    let calls = store.take_calls();
    if signed || !has_well_formed_id(header) {
        assert!(
            calls.is_empty(),
            "store asked for {:?} on {:?}",
            calls,
            String::from_utf8_lossy(header)
        );
    } else {
        assert!(calls.len() <= 1, "{calls:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_cookie_header_is_answered_without_panic_or_lookup(header in cookie_header()) {
        let f = fixture(false);
        check(&f.rt, &f.app, &f.store, &header, false);
    }

    #[test]
    fn with_signing_no_unsigned_or_forged_cookie_reaches_the_store(header in cookie_header()) {
        let f = fixture(true);
        check(&f.rt, &f.app, &f.store, &header, true);
    }
}

#[test]
fn huge_and_crowded_headers_and_duplicates() {
    let rt = runtime();
    let store = TestStore::new();
    let app = support::routes().layer(SessionLayer::new(store.clone()));

    // A 64 KiB Cookie header, and 2,000 cookies.
    let big = format!("id={}", "A".repeat(64 * 1024));
    check(&rt, &app, &store, big.as_bytes(), false);
    let crowded: Vec<String> = (0..2000).map(|i| format!("c{i}=v{i}")).collect();
    check(&rt, &app, &store, crowded.join("; ").as_bytes(), false);
    // Several Cookie header lines.
    let request = Request::get("/read")
        .header(header::COOKIE, "a=1")
        .header(header::COOKIE, "id=bad")
        .header(header::COOKIE, [0xffu8, 0xfe].as_slice())
        .body(Body::empty())
        .unwrap();
    let reply = rt.block_on(send(&app, request));
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.is_removal("id"), "{:?}", reply.set_cookies());

    // Duplicates: the first well-formed one wins (documented rule), after a real session exists.
    let mut client = Client::new(app.clone());
    rt.block_on(client.get("/incr"));
    let real = client.id().unwrap();
    let forged = SessionId::generate().unwrap();
    for (header, expect) in [
        (
            format!("id={}; id={}", real.expose_secret(), forged.expose_secret()),
            "1 new=false",
        ),
        (
            format!("id={}; id={}", forged.expose_secret(), real.expose_secret()),
            "0 new=true",
        ),
        (
            format!("id=junk; id={}", real.expose_secret()),
            "1 new=false",
        ),
    ] {
        let request = Request::get("/read")
            .header(header::COOKIE, header.as_str())
            .body(Body::empty())
            .unwrap();
        assert_eq!(rt.block_on(send(&app, request)).body, expect, "{header}");
    }
    println!(
        "fuzz: {} cookie headers checked so far in this binary (each property runs 2,000 cases)",
        CASES.load(Ordering::Relaxed)
    );
}
