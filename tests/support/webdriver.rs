//! The browser the browser test drives: the chromedriver process, on a free 127.0.0.1 port and
//! killed on drop, and a WebDriver session through the `fantoccini` crate (plain HTTP to
//! localhost: no TLS stack), behind the few calls the test makes.
#![allow(dead_code, unreachable_pub)]

use std::{
    fmt,
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{elements::Element as FantocciniElement, Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// A failed WebDriver command.
pub type WdError = fantoccini::error::CmdError;

/// An element of the current page.
pub type Element = FantocciniElement;

/// A free TCP port on 127.0.0.1 (another process may take it before it is used: callers retry).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the probe listener")
        .port()
}

/// The chromedriver process, on a free 127.0.0.1 port, killed on drop (with any browser that a
/// failed test did not quit: found by its unique `--user-data-dir`).
pub struct ChromeDriver {
    child: Option<Child>,
    pub port: u16,
    /// A temporary directory: the browser profile (`profile/`) and `chromedriver.log`.
    pub dir: PathBuf,
}

impl ChromeDriver {
    /// Starts `chromedriver` and waits (bounded) until it says it started.
    pub async fn start(chromedriver: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tts-browser-{}-{}",
            std::process::id(),
            tower_typed_sessions::SessionId::generate()
                .expect("random bytes for a temp dir name")
                .fingerprint()
                .replace(':', "")
        ));
        std::fs::create_dir_all(dir.join("profile")).expect("create the browser temp dir");
        for _ in 0..10 {
            let port = free_port();
            let mut child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    dir.join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", chromedriver.display()));
            let started = wait_for_line(&mut child, Duration::from_secs(20), |line| {
                line.contains("started successfully")
            });
            let mut driver = Self {
                child: Some(child),
                port,
                dir: dir.clone(),
            };
            if started.is_some() {
                return driver;
            }
            // It exited or never said so: most likely the port was taken; try another.
            driver.kill();
        }
        panic!(
            "chromedriver did not start on a free port; log: {}",
            dir.join("chromedriver.log").display()
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills browser processes that still use this driver's profile directory (only when a test
    /// failed before it could end its session), by process ID.
    fn kill_leftover_browsers(&self) {
        let marker = self.dir.join("profile");
        let marker = marker.to_string_lossy();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(marker.as_ref()) {
                let _ = Command::new("kill")
                    .args(["-KILL", pid])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Starts a browser session (headless Chromium at `chromium`, with a fresh profile in this
    /// driver's temp dir).
    pub async fn new_session(&self, chromium: &Path) -> Browser {
        let profile = self.dir.join("profile");
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                    "--disable-dev-shm-usage",
                    "--disable-default-apps",
                    "--disable-extensions",
                    "--no-default-browser-check",
                    "--password-store=basic",
                    "--window-size=1024,768",
                    // Every host name but localhost fails to resolve: the browser can reach
                    // nothing but this machine.
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal");
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "WebDriver could not start Chromium ({e}); chromedriver log: {}",
                    self.dir.join("chromedriver.log").display()
                )
            });
        let version = client
            .capabilities()
            .and_then(|c| c.get("browserVersion"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        Browser { client, version }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.kill();
        self.kill_leftover_browsers();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cookie as the browser keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<String>,
    /// Seconds since the epoch; `None` for a session cookie.
    pub expiry: Option<u64>,
}

impl Cookie {
    fn from_webdriver(cookie: &fantoccini::cookies::Cookie<'_>) -> Self {
        Self {
            name: cookie.name().to_owned(),
            value: cookie.value().to_owned(),
            path: cookie.path().map(str::to_owned),
            domain: cookie.domain().map(str::to_owned),
            secure: cookie.secure().unwrap_or(false),
            http_only: cookie.http_only().unwrap_or(false),
            same_site: cookie.same_site().map(|s| s.to_string()),
            expiry: cookie
                .expires_datetime()
                .and_then(|t| u64::try_from(t.unix_timestamp()).ok()),
        }
    }

    fn to_webdriver(&self) -> fantoccini::cookies::Cookie<'static> {
        let mut cookie = fantoccini::cookies::Cookie::new(self.name.clone(), self.value.clone());
        if let Some(path) = &self.path {
            cookie.set_path(path.clone());
        }
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie.set_secure(self.secure);
        cookie.set_http_only(self.http_only);
        if let Some(same_site) = &self.same_site {
            cookie.set_same_site(match same_site.as_str() {
                "Strict" => cookie::SameSite::Strict,
                "None" => cookie::SameSite::None,
                _ => cookie::SameSite::Lax,
            });
        }
        cookie
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} (domain={}, path={}, secure={}, httpOnly={}, sameSite={}, expiry={})",
            self.name,
            self.value,
            self.domain.as_deref().unwrap_or("-"),
            self.path.as_deref().unwrap_or("-"),
            self.secure,
            self.http_only,
            self.same_site.as_deref().unwrap_or("-"),
            self.expiry.map_or("session".to_owned(), |e| e.to_string()),
        )
    }
}

/// A WebDriver session: one browser.
pub struct Browser {
    client: Client,
    pub version: String,
}

impl Browser {
    /// Ends the session: the browser quits.
    pub async fn quit(&self) -> Result<(), WdError> {
        self.client.clone().close().await
    }

    pub async fn goto(&self, url: &str) -> Result<(), WdError> {
        self.client.goto(url).await
    }

    pub async fn refresh(&self) -> Result<(), WdError> {
        self.client.refresh().await
    }

    pub async fn current_url(&self) -> Result<String, WdError> {
        Ok(self.client.current_url().await?.to_string())
    }

    pub async fn find(&self, css: &str) -> Result<Element, WdError> {
        self.client.find(Locator::Css(css)).await
    }

    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, WdError> {
        self.client.find_all(Locator::Css(css)).await
    }

    pub async fn text(&self, element: &Element) -> Result<String, WdError> {
        element.text().await
    }

    pub async fn send_keys(&self, element: &Element, text: &str) -> Result<(), WdError> {
        element.send_keys(text).await
    }

    pub async fn click(&self, element: &Element) -> Result<(), WdError> {
        element.click().await
    }

    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, WdError> {
        self.client.execute(script, args).await
    }

    pub async fn cookies(&self) -> Result<Vec<Cookie>, WdError> {
        Ok(self
            .client
            .get_all_cookies()
            .await?
            .iter()
            .map(Cookie::from_webdriver)
            .collect())
    }

    pub async fn add_cookie(&self, cookie: &Cookie) -> Result<(), WdError> {
        self.client.add_cookie(cookie.to_webdriver()).await
    }

    pub async fn delete_cookie(&self, name: &str) -> Result<(), WdError> {
        self.client.delete_cookie(name).await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>, WdError> {
        self.client.screenshot().await
    }
}

/// Reads a child's stdout line by line on a thread until a line satisfies `ready`, bounded by
/// `timeout`; the thread then keeps draining the pipe. Returns the matching line.
pub fn wait_for_line(
    child: &mut Child,
    timeout: Duration,
    ready: impl Fn(&str) -> bool + Send + 'static,
) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && ready(&line) {
                sent = true;
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}
