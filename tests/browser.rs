//! End to end in a real browser: headless Chromium, driven over WebDriver (chromedriver), against
//! the `login` example's binary (a memory store) and the `cookie_only` example's (the same app on
//! cookie-only sessions). It checks what a person would see (the guard's redirects, flash
//! messages, the greeting) and what the browser keeps (the session cookie's attributes, its
//! regeneration at login, its removal at logout, and that a replayed old value is worthless), and
//! that a forged form on another origin cannot log the user out (CSRF), nor a script post
//! without the token.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or `CHROMIUM_BIN` / `CHROMEDRIVER_BIN`). Without
//! them the test prints a SKIPPED line and passes, except under `CI=true`, where it fails.
//!
//! The example is started from its built binary (`target/<profile>/examples/login`): a plain
//! `cargo test` builds it; with `cargo test --test browser`, run `cargo build --examples` first.
//!
//! Every step's log goes straight to stderr (not captured by the test harness), so that a CI log
//! shows what the browser showed. A screenshot of the logged-in page is saved under
//! `target/tmp/browser-test/`.
#![cfg(feature = "axum")]

#[path = "support/webdriver.rs"]
mod webdriver;

use std::{
    future::Future,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde_json::json;
use webdriver::{Browser, ChromeDriver, Cookie, Element, WdError};

/// The session cookie's name (the crate's default).
const COOKIE: &str = "id";

/// How long a page may take to appear after a click.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes one log line to stderr directly, past the test harness's output capture.
macro_rules! log {
    ($($arg:tt)*) => {{
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[browser] {}", format_args!($($arg)*));
    }};
}

// ---------------------------------------------------------------------------------------------
// Finding the browser and the example binary
// ---------------------------------------------------------------------------------------------

struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// `$env` if set (it must name an existing file), else `/usr/bin/<name>`, else `<name>` on PATH.
fn locate(env: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env}={} does not exist", path.display()))
        };
    }
    let default = Path::new("/usr/bin").join(name);
    if default.is_file() {
        return Ok(default);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{name}` is neither at {} nor on PATH", default.display()))
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The browser tools, or `None` after printing SKIPPED (outside CI; under CI=true it fails).
fn tools_or_skip() -> Option<Tools> {
    let chromium = locate("CHROMIUM_BIN", "chromium");
    let chromedriver = locate("CHROMEDRIVER_BIN", "chromedriver");
    match (chromium, chromedriver) {
        (Ok(chromium), Ok(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => {
            let why: Vec<String> = [chromium.err(), chromedriver.err()]
                .into_iter()
                .flatten()
                .collect();
            let why = why.join("; ");
            assert!(
                !is_ci(),
                "CI=true and the browser test cannot run: {why}. Install the Debian packages \
                 `chromium` and `chromium-driver` (apt-get install chromium chromium-driver), as \
                 .ci/run does."
            );
            log!(
                "SKIPPED: chromium/chromedriver not found; install with apt-get install chromium \
                 chromium-driver ({why})"
            );
            None
        }
    }
}

/// The newest modification time among the files under `dir` (recursively).
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// The built example `name` next to this test binary: target/<profile>/deps/browser-<hash> ->
/// target/<profile>/examples/<name>.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the {name} example is not built ({} is missing): run `cargo build --examples` \
         (a plain `cargo test` builds it, `cargo test --test browser` does not)",
        binary.display()
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let sources = newest_mtime(&manifest.join("src")).max(newest_mtime(&manifest.join("examples")));
    if let (Some(built), Some(sources)) = (built, sources) {
        if sources > built {
            log!(
                "warning: {} is older than the sources; run `cargo build --examples` to test \
                 the current code",
                binary.display()
            );
        }
    }
    binary
}

/// An example's process on a free 127.0.0.1 port, killed on drop.
struct LoginServer {
    child: Child,
    port: u16,
}

impl LoginServer {
    fn start(example: &str) -> Self {
        let binary = example_binary(example);
        for _ in 0..10 {
            let port = webdriver::free_port();
            let mut child = Command::new(&binary)
                .env("PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
            let expected = format!("listening on http://localhost:{port}");
            let line = webdriver::wait_for_line(&mut child, Duration::from_secs(30), move |l| {
                l.trim() == expected
            });
            if let Some(line) = line {
                log!("server: {} printed `{line}`", binary.display());
                return Self { child, port };
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                exited,
                "the {example} example did not print its listening line within 30 s"
            );
            // It exited: most likely the port was taken between the probe and its bind.
        }
        panic!("the {example} example could not bind a free port in 10 tries");
    }
}

impl Drop for LoginServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Looking at pages
// ---------------------------------------------------------------------------------------------

/// What the page shows: its URL, its `<h1>`, the text of `#flash` (if any).
#[derive(Debug)]
struct Page {
    url: String,
    h1: String,
    flash: Option<String>,
}

async fn look(browser: &Browser) -> Page {
    let url = browser.current_url().await.expect("current URL");
    let h1 = browser.find("h1").await.expect("the page has an <h1>");
    let h1 = browser.text(&h1).await.expect("text of <h1>");
    let flash = match browser
        .find_all("#flash")
        .await
        .expect("look for #flash")
        .first()
    {
        Some(flash) => Some(browser.text(flash).await.expect("text of #flash")),
        None => None,
    };
    Page { url, h1, flash }
}

fn log_page(step: &str, page: &Page) {
    log!(
        "{step}: url={} h1={:?} flash={}",
        page.url,
        page.h1,
        page.flash
            .as_deref()
            .map_or("(none)".to_owned(), |f| format!("{f:?}"))
    );
}

async fn session_cookie(browser: &Browser) -> Option<Cookie> {
    browser
        .cookies()
        .await
        .expect("get cookies")
        .into_iter()
        .find(|c| c.name == COOKIE)
}

fn log_cookies(step: &str, cookie: Option<&Cookie>) {
    match cookie {
        Some(cookie) => log!("{step}: cookie {cookie}"),
        None => log!("{step}: no `{COOKIE}` cookie in the browser"),
    }
}

/// Polls `check` until it returns `Some`, for at most `PAGE_TIMEOUT`.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PAGE_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Clicks an element that navigates, then waits (bounded) until a new document has loaded: the
/// old document is marked first, so the new one is told apart even at the same URL.
async fn click_and_wait(browser: &Browser, element: &Element) {
    browser
        .execute("window.__ttsOldPage = true;", vec![])
        .await
        .expect("mark the current page");
    browser.click(element).await.expect("click");
    poll("the next page to load", || async {
        // While the page changes, a script may fail (no execution context): not ready yet.
        let state = browser
            .execute(
                "return window.__ttsOldPage !== true && document.readyState === 'complete';",
                vec![],
            )
            .await;
        matches!(state, Ok(serde_json::Value::Bool(true))).then_some(())
    })
    .await;
}

/// Fills the login form and submits it with its button.
async fn submit_login(browser: &Browser, username: &str, password: &str) {
    for (name, value) in [("username", username), ("password", password)] {
        let input = browser
            .find(&format!("#login-form input[name={name}]"))
            .await
            .unwrap_or_else(|e| panic!("the login form has a {name} input: {e}"));
        browser
            .send_keys(&input, value)
            .await
            .unwrap_or_else(|e| panic!("type into {name}: {e}"));
    }
    let button = browser
        .find("#login-form button[type=submit]")
        .await
        .expect("the login form has a submit button");
    click_and_wait(browser, &button).await;
}

/// Plants `value` as the session cookie and opens `/`: the login form must show. `cleared`: the
/// server must also replace the cookie (a value that names no session), or must leave it alone
/// (the old value of a regenerated session, whose removal could overtake the login's cookie).
async fn replay(browser: &Browser, base: &str, label: &str, value: &str, cleared: bool) {
    let planted = Cookie {
        name: COOKIE.into(),
        value: value.into(),
        path: Some("/".into()),
        // fantoccini (through the webdriver crate) sends a missing domain as `null`, which
        // chromedriver refuses: name the page's host, as the browser reports the server's cookie.
        domain: Some("localhost".into()),
        secure: true,
        http_only: true,
        same_site: Some("Lax".into()),
        expiry: None,
    };
    browser
        .add_cookie(&planted)
        .await
        .expect("add the replayed cookie");
    let stored = session_cookie(browser).await;
    log_cookies(&format!("5. replay {label}: set"), stored.as_ref());
    assert_eq!(
        stored.as_ref().map(|c| c.value.as_str()),
        Some(value),
        "the browser took the replayed cookie"
    );
    browser.goto(&format!("{base}/")).await.expect("open /");
    let page = look(browser).await;
    log_page(&format!("5. replay {label}: GET /"), &page);
    assert_eq!(
        page.url,
        format!("{base}/login?next=%2F"),
        "a replayed {label} is not a session"
    );
    assert_eq!(page.h1, "Log in");
    assert_eq!(page.flash, None);
    let after = session_cookie(browser).await;
    log_cookies(&format!("5. replay {label}: after"), after.as_ref());
    if cleared {
        // Replaced by the login form's new session (or removed): never kept.
        assert!(
            after.as_ref().is_none_or(|c| c.value != value),
            "the server replaced the replayed {label}"
        );
    } else {
        assert_eq!(
            after.as_ref().map(|c| c.value.as_str()),
            Some(value),
            "the server left the replayed {label} alone"
        );
    }
    // Whatever the server answered, start the next check from an empty jar.
    browser.delete_cookie(COOKIE).await.expect("delete cookie");
}

/// The PNG's width and height (from its IHDR chunk), if it is a PNG.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

// ---------------------------------------------------------------------------------------------
// The steps
// ---------------------------------------------------------------------------------------------

/// Which session backend the app under test runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    /// A store: the cookie carries the ID, unchanged until a regenerate.
    Store,
    /// Cookie-only: the cookie carries the sealed session, re-sealed on each change.
    Sealed,
}

/// The CSRF token the login form carries: the same for as long as the session keeps its ID.
async fn form_token(browser: &Browser) -> String {
    browser
        .find("#login-form input[name=csrf_token]")
        .await
        .expect("the login form has a token field")
        .attr("value")
        .await
        .expect("read the token")
        .expect("the token field has a value")
}

async fn steps(browser: Arc<Browser>, base: String, attacker: String, backend: Backend) {
    let browser = browser.as_ref();

    // 1. The guarded page redirects to the login form, with the way back in `next`. The login
    //    page draws the session's CSRF token, so the visitor now has a (pre-login) session.
    browser.goto(&format!("{base}/")).await.expect("open /");
    let page = look(browser).await;
    log_page("1. GET / (logged out)", &page);
    assert_eq!(
        page.url,
        format!("{base}/login?next=%2F"),
        "/ redirects to /login?next=%2F"
    );
    assert_eq!(page.h1, "Log in");
    browser
        .find("#login-form")
        .await
        .expect("the login form is shown");
    let first = session_cookie(browser)
        .await
        .expect("the login form's token lives in a session");
    log_cookies("1. cookies", Some(&first));
    let first_token = form_token(browser).await;

    // 2a. A failed login through the form: the error flash is shown once; the session (and its
    //     token) stays.
    submit_login(browser, "alice", "wrong").await;
    let page = look(browser).await;
    log_page("2a. wrong password", &page);
    assert_eq!(page.url, format!("{base}/login"));
    assert_eq!(page.flash.as_deref(), Some("Wrong username or password."));
    let before_login = session_cookie(browser)
        .await
        .expect("the pre-login session keeps its cookie");
    log_cookies("2a. pre-login cookie", Some(&before_login));
    assert_eq!(
        form_token(browser).await,
        first_token,
        "no new session for a failed login"
    );
    if backend == Backend::Store {
        assert_eq!(before_login.value, first.value, "nor a new cookie");
    }

    // 2b. A script's POST without the token is refused (403) even from the page's own origin;
    //     with the token from the form it reaches the login handler (a redirect, not followed).
    let fetched = browser
        .execute(
            "const token = document.querySelector('#login-form input[name=csrf_token]').value;\
             const post = (fields) => fetch('/login', { method: 'POST', \
               body: new URLSearchParams(fields), redirect: 'manual', credentials: 'same-origin' })\
               .then(r => r.type + ' ' + r.status);\
             return Promise.all([\
               post({ username: arguments[0], password: arguments[1] }),\
               post({ username: arguments[0], password: arguments[1], csrf_token: token })]);",
            vec![json!("alice"), json!("wrong")],
        )
        .await
        .expect("POST /login with fetch");
    log!("2b. fetch POST /login without, then with the token: {fetched}");
    assert_eq!(fetched, json!(["basic 403", "opaqueredirect 0"]));

    // 2c. Log in: redirected to /, greeted, the welcome flash shown (the pending error flash was
    //     consumed by the login request itself).
    submit_login(browser, "alice", "password").await;
    let page = look(browser).await;
    log_page("2c. logged in", &page);
    assert_eq!(page.url, format!("{base}/"), "login redirects to /");
    assert_eq!(page.h1, "Hello, alice");
    assert_eq!(page.flash.as_deref(), Some("Welcome, alice!"));
    browser
        .find("#logout")
        .await
        .expect("the logout button is shown");

    // 6 (taken here, where the page shows everything: greeting, flash, logout button). A
    //   screenshot of the logged-in page.
    let png = browser.screenshot().await.expect("take a screenshot");
    let (width, height) = png_size(&png).expect("the screenshot is a PNG");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-test");
    std::fs::create_dir_all(&out_dir).expect("create the screenshot folder");
    let shot = out_dir.join("logged-in.png");
    std::fs::write(&shot, &png).expect("write the screenshot");
    log!(
        "6. screenshot of the logged-in page ({width}x{height}, {} bytes): {}",
        png.len(),
        shot.display()
    );

    // 2d. Reload: the flash is gone, the user is still logged in.
    browser.refresh().await.expect("reload");
    let page = look(browser).await;
    log_page("2d. reload", &page);
    assert_eq!(page.url, format!("{base}/"));
    assert_eq!(page.h1, "Hello, alice");
    assert_eq!(page.flash, None, "a flash is shown once");

    // 3. The browser's cookie: HttpOnly, SameSite=Lax, Path=/, Secure, and a new value.
    let logged_in = session_cookie(browser)
        .await
        .expect("the logged-in session has a cookie");
    log_cookies("3. logged-in cookie", Some(&logged_in));
    assert!(logged_in.http_only, "HttpOnly");
    assert_eq!(logged_in.same_site.as_deref(), Some("Lax"), "SameSite=Lax");
    assert_eq!(logged_in.path.as_deref(), Some("/"), "Path=/");
    assert!(
        logged_in.secure,
        "Secure (kept by the browser on http://localhost)"
    );
    assert_ne!(
        logged_in.value, before_login.value,
        "the session ID is regenerated at login"
    );
    log!(
        "3. regenerated at login: {} -> {}",
        before_login.value,
        logged_in.value
    );

    // 4. Scripts cannot read it.
    let document_cookie = browser
        .execute("return document.cookie;", vec![])
        .await
        .expect("read document.cookie");
    log!("4. document.cookie = {document_cookie}");
    let document_cookie = document_cookie
        .as_str()
        .expect("document.cookie is a string");
    assert!(
        !document_cookie
            .split(';')
            .any(|c| c.trim().starts_with(&format!("{COOKIE}="))),
        "document.cookie does not expose the session cookie"
    );
    assert!(!document_cookie.contains(&logged_in.value));

    // 7. A forged form on another origin (same site: another port of localhost, so SameSite=Lax
    //    lets the browser send the session cookie) posts to /logout as soon as it loads. The
    //    CSRF layer refuses it, and the user is still logged in.
    browser.goto(&attacker).await.expect("open the forged page");
    let refused = poll("the forged post's answer", || async {
        let text = browser
            .execute(
                "return location.href.endsWith('/logout') && document.readyState === 'complete' \
                 ? document.body.innerText : null;",
                vec![],
            )
            .await
            .ok()?;
        text.as_str().map(str::to_owned)
    })
    .await;
    log!("7. forged cross-site POST /logout from {attacker}: {refused:?}");
    assert_eq!(refused.trim(), "cross-site request refused");
    browser.goto(&format!("{base}/")).await.expect("open /");
    let page = look(browser).await;
    log_page("7. after the forged post", &page);
    assert_eq!(page.h1, "Hello, alice", "the forged logout did nothing");
    assert_eq!(
        session_cookie(browser).await.map(|c| c.value),
        Some(logged_in.value.clone())
    );

    // 5. Log out: the cookie is gone; replaying old values gets the login form.
    let logout = browser.find("#logout").await.expect("the logout button");
    click_and_wait(browser, &logout).await;
    let page = look(browser).await;
    log_page("5. logged out", &page);
    assert_eq!(
        page.url,
        format!("{base}/login"),
        "logout redirects to /login"
    );
    assert_eq!(page.h1, "Log in");
    assert_eq!(page.flash.as_deref(), Some("You have been logged out."));
    let after_logout = session_cookie(browser).await;
    log_cookies("5. cookies after logout", after_logout.as_ref());
    assert!(
        after_logout
            .as_ref()
            .is_none_or(|c| c.value != logged_in.value),
        "the logged-in cookie is gone after logout (the login form's new session may replace it)"
    );
    browser.delete_cookie(COOKIE).await.expect("delete cookie");
    replay(
        browser,
        &base,
        "logged-in value (after logout)",
        &logged_in.value,
        true,
    )
    .await;
    replay(
        browser,
        &base,
        "pre-login value (regenerated away)",
        &before_login.value,
        false,
    )
    .await;
}

/// A page on another origin of the same site (another port of localhost) whose form posts to
/// the app's `/logout` as soon as it loads: a cross-site request forgery. Serves that page to
/// every request until the test ends.
async fn serve_forged_form(target: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the forged page's server");
    let port = listener.local_addr().expect("its port").port();
    let html = format!(
        "<!doctype html><html><body><form id=\"f\" method=\"post\" action=\"{target}/logout\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"guessed\"></form>\
         <script>document.getElementById('f').submit();</script></body></html>"
    );
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://localhost:{port}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flow_in_headless_chromium() {
    login_flow("login", Backend::Store).await;
}

/// The same app and steps on cookie-only sessions with a revocation list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_only_login_flow_in_headless_chromium() {
    login_flow("cookie_only", Backend::Sealed).await;
}

async fn login_flow(example: &str, backend: Backend) {
    let Some(tools) = tools_or_skip() else {
        return;
    };
    let started = Instant::now();
    let server = LoginServer::start(example);
    let driver = ChromeDriver::start(&tools.chromedriver).await;
    log!(
        "chromedriver {} on 127.0.0.1:{}",
        tools.chromedriver.display(),
        driver.port
    );
    let browser = Arc::new(driver.new_session(&tools.chromium).await);
    log!(
        "browser: {} (Chromium {}), headless",
        tools.chromium.display(),
        browser.version
    );
    let base = format!("http://localhost:{}", server.port);
    let attacker = serve_forged_form(base.clone()).await;

    // The steps run in their own task so that a failed assertion still lets the browser quit.
    let outcome = tokio::spawn(steps(browser.clone(), base, attacker, backend)).await;
    let quit: Result<(), WdError> = browser.quit().await;
    drop(driver);
    drop(server);
    match outcome {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the browser steps did not finish: {e}"),
    }
    quit.expect("end the WebDriver session (quit Chromium)");
    log!("{example}: all steps passed in {:.1?}", started.elapsed());
}
