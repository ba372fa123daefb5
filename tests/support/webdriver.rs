//! A small W3C WebDriver client over hyper (HTTP/1, one connection per command), with only the
//! endpoints the browser test uses, plus the chromedriver process it talks to. No WebDriver crate:
//! this keeps the dev-dependencies as they are (hyper, http-body-util, serde_json, tokio).
#![allow(dead_code, unreachable_pub)]

use std::{
    fmt,
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take (a navigation waits for the page load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed WebDriver command: the W3C error code (such as `no such element`) and its message, or
/// a transport failure (code `transport`).
#[derive(Debug, Clone)]
pub struct WdError {
    pub code: String,
    pub message: String,
}

impl fmt::Display for WdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WdError {}

fn transport(message: impl fmt::Display) -> WdError {
    WdError {
        code: "transport".into(),
        message: message.to_string(),
    }
}

/// A free TCP port on 127.0.0.1 (another process may take it before it is used: callers retry).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the probe listener")
        .port()
}

/// One HTTP request to a WebDriver endpoint on 127.0.0.1; returns the response's `value`.
async fn request(
    port: u16,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let exchange = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| transport(format!("connect to chromedriver on 127.0.0.1:{port}: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(transport)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let bytes = match &body {
            Some(body) => Bytes::from(body.to_string()),
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{port}"));
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json; charset=utf-8");
        }
        let req = builder.body(Full::new(bytes)).map_err(transport)?;
        let response = sender.send_request(req).await.map_err(transport)?;
        let status = response.status();
        let raw = response
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        let parsed: Value = serde_json::from_slice(&raw).map_err(|e| {
            transport(format!(
                "{method} {path}: HTTP {status}, body is not JSON ({e}): {}",
                String::from_utf8_lossy(&raw)
            ))
        })?;
        let value = parsed.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(WdError {
            code: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            message: format!(
                "{method} {path} (HTTP {status}): {}",
                value["message"].as_str().unwrap_or("")
            ),
        })
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(transport(format!("no answer within {COMMAND_TIMEOUT:?}"))))
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
    /// Starts `chromedriver` and waits (bounded) until its `/status` says it is ready.
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
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    dir.join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", chromedriver.display()));
            let mut driver = Self {
                child: Some(child),
                port,
                dir: dir.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(child) = driver.child.as_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        break; // exited: most likely the port was taken; try another
                    }
                }
                if let Ok(status) = request(port, Method::GET, "/status", None).await {
                    if status["ready"].as_bool() == Some(true) {
                        return driver;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            driver.kill();
        }
        panic!(
            "chromedriver did not become ready on a free port; log: {}",
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
            "capabilities": {
                "alwaysMatch": {
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
                            // Every host name but localhost fails to resolve: the browser can
                            // reach nothing but this machine.
                            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                        "prefs": {
                            "credentials_enable_service": false,
                            "profile.password_manager_enabled": false,
                            "safebrowsing.enabled": false,
                        },
                    },
                },
            },
        });
        let value = request(self.port, Method::POST, "/session", Some(capabilities))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "WebDriver could not start Chromium ({e}); chromedriver log: {}",
                    self.dir.join("chromedriver.log").display()
                )
            });
        let id = value["sessionId"]
            .as_str()
            .expect("new session answer has a sessionId")
            .to_owned();
        let version = value["capabilities"]["browserVersion"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        Browser {
            port: self.port,
            id,
            version,
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.kill();
        self.kill_leftover_browsers();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cookie as WebDriver reports it.
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
    fn from_json(v: &Value) -> Self {
        let text = |key: &str| v[key].as_str().map(str::to_owned);
        Self {
            name: text("name").unwrap_or_default(),
            value: text("value").unwrap_or_default(),
            path: text("path"),
            domain: text("domain"),
            secure: v["secure"].as_bool().unwrap_or(false),
            http_only: v["httpOnly"].as_bool().unwrap_or(false),
            same_site: text("sameSite"),
            expiry: v["expiry"].as_u64(),
        }
    }

    fn to_json(&self) -> Value {
        let mut cookie = json!({
            "name": self.name,
            "value": self.value,
            "secure": self.secure,
            "httpOnly": self.http_only,
        });
        if let Some(path) = &self.path {
            cookie["path"] = json!(path);
        }
        if let Some(domain) = &self.domain {
            cookie["domain"] = json!(domain);
        }
        if let Some(same_site) = &self.same_site {
            cookie["sameSite"] = json!(same_site);
        }
        if let Some(expiry) = self.expiry {
            cookie["expiry"] = json!(expiry);
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

/// An element reference in the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A WebDriver session: one browser.
pub struct Browser {
    port: u16,
    id: String,
    pub version: String,
}

impl Browser {
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let path = format!("/session/{}{path}", self.id);
        request(self.port, method, &path, body).await
    }

    /// Ends the session: the browser quits.
    pub async fn quit(&self) -> Result<(), WdError> {
        request(
            self.port,
            Method::DELETE,
            &format!("/session/{}", self.id),
            None,
        )
        .await
        .map(drop)
    }

    /// Opens `url` and waits for the page load.
    pub async fn goto(&self, url: &str) -> Result<(), WdError> {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Reloads the page and waits for the load.
    pub async fn refresh(&self) -> Result<(), WdError> {
        self.cmd(Method::POST, "/refresh", Some(json!({})))
            .await
            .map(drop)
    }

    pub async fn current_url(&self) -> Result<String, WdError> {
        let v = self.cmd(Method::GET, "/url", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching a CSS selector, or `no such element`.
    pub async fn find(&self, css: &str) -> Result<Element, WdError> {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        v[ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .ok_or_else(|| transport(format!("find {css}: no element reference in {v}")))
    }

    /// All elements matching a CSS selector (possibly none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, WdError> {
        let v = self
            .cmd(
                Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        Ok(v.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str())
                    .map(|id| Element(id.to_owned()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The rendered text of an element.
    pub async fn text(&self, element: &Element) -> Result<String, WdError> {
        let v = self
            .cmd(Method::GET, &format!("/element/{}/text", element.0), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Types `text` into an element.
    pub async fn send_keys(&self, element: &Element, text: &str) -> Result<(), WdError> {
        self.cmd(
            Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    pub async fn click(&self, element: &Element) -> Result<(), WdError> {
        self.cmd(
            Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Runs a script (a function body) in the page and returns its result; a returned promise is
    /// awaited.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, WdError> {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The cookies the browser would send to the current page (HttpOnly ones included).
    pub async fn cookies(&self) -> Result<Vec<Cookie>, WdError> {
        let v = self.cmd(Method::GET, "/cookie", None).await?;
        Ok(v.as_array()
            .map(|items| items.iter().map(Cookie::from_json).collect())
            .unwrap_or_default())
    }

    /// Adds a cookie for the current page's domain (when `cookie.domain` is `None`).
    pub async fn add_cookie(&self, cookie: &Cookie) -> Result<(), WdError> {
        self.cmd(
            Method::POST,
            "/cookie",
            Some(json!({ "cookie": cookie.to_json() })),
        )
        .await
        .map(drop)
    }

    pub async fn delete_cookie(&self, name: &str) -> Result<(), WdError> {
        self.cmd(Method::DELETE, &format!("/cookie/{name}"), None)
            .await
            .map(drop)
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>, WdError> {
        let v = self.cmd(Method::GET, "/screenshot", None).await?;
        let encoded = v
            .as_str()
            .ok_or_else(|| transport("screenshot: the answer is not a string"))?;
        base64_decode(encoded).ok_or_else(|| transport("screenshot: the answer is not base64"))
    }
}

/// Standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(
            base64_decode("iVBORw0KGgo=").as_deref(),
            Some(&b"\x89PNG\r\n\x1a\n"[..])
        );
        assert_eq!(base64_decode("Zm9v!"), None);
    }
}
