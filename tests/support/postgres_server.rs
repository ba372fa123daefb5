//! A PostgreSQL server that a test starts and stops itself: `initdb` into a temporary directory,
//! `postgres` on a free 127.0.0.1 port (no Unix socket, no fsync), stopped by its PID on drop.
//! Every statement the server executes goes to its log, so a test can count them.
//!
//! PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user (or
//! `nobody`), which owns the temporary directory.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The server binaries, or why there are none.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file());
    if let Some(dir) = on_path {
        return Ok(dir);
    }
    // Debian and Ubuntu keep them off PATH, one directory per major version: take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL's `initdb` and `postgres` are neither on PATH nor under \
         /usr/lib/postgresql/*/bin (Debian/Ubuntu: apt-get install postgresql; or set PG_BIN_DIR)"
            .to_owned()
    })
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether this test can start PostgreSQL; prints SKIPPED when not (outside CI; under CI=true a
/// missing PostgreSQL fails the test).
pub fn available_or_skip(test: &str) -> bool {
    match bin_dir() {
        Ok(_) => true,
        Err(why) => {
            assert!(!is_ci(), "CI=true and {test} cannot run: {why}");
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// uid and gid to run the server as when this process is root.
fn unprivileged_user() -> Option<(u32, u32)> {
    let euid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&euid.stdout).trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    Some(
        find("postgres")
            .or_else(|| find("nobody"))
            .unwrap_or((65534, 65534)),
    )
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    user: Option<(u32, u32)>,
    port: u16,
    child: Option<Child>,
    log_statements: bool,
}

impl PostgresServer {
    /// initdb and start, logging every statement; panics with the server's log if it does not
    /// come up.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Like [`PostgresServer::start`], without the statement log (for benchmarks).
    pub fn start_quiet() -> Self {
        Self::start_with(false)
    }

    fn start_with(log_statements: bool) -> Self {
        let bin = bin_dir().unwrap_or_else(|why| panic!("{why}"));
        let dir = std::env::temp_dir().join(format!(
            "tts-pg-{}-{}",
            std::process::id(),
            tower_typed_sessions::SessionId::generate()
                .unwrap()
                .fingerprint()
                .replace(':', "")
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let user = unprivileged_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the temp dir");
        }
        let mut server = Self {
            bin,
            dir,
            user,
            port: 0,
            child: None,
            log_statements,
        };
        let initdb = server
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions", "-D"])
            .arg(server.data())
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        for _ in 0..5 {
            server.port = free_port();
            if server.launch() {
                return server;
            }
        }
        panic!("postgres did not start:\n{}", server.log());
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command.current_dir(&self.dir);
        command
    }

    /// Starts `postgres` on `self.port`; whether it became ready.
    fn launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        if let Some((uid, gid)) = self.user {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let before = self.log().len();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(["-c", "log_line_prefix="])
            .args([
                "-c",
                if self.log_statements {
                    "log_statement=all"
                } else {
                    "log_statement=none"
                },
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let fresh = self.log().get(before..).unwrap_or_default().to_owned();
            if fresh.contains("ready to accept connections") {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || fresh.contains("could not bind") {
                self.stop();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for sqlx.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server by its PID (fast shutdown: sessions are disconnected) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        assert!(self.launch(), "postgres did not restart:\n{}", self.log());
    }

    /// Statements the server executed since the log was `from` bytes long, and the log's length
    /// now. Only `execute` and `statement` lines of the test's own statements.
    pub fn statements_since(&self, from: usize) -> (Vec<String>, usize) {
        let log = self.log();
        let statements = log
            .get(from..)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let text = line
                    .strip_prefix("LOG:  execute ")
                    .and_then(|rest| rest.split_once(": ").map(|(_, sql)| sql))
                    .or_else(|| line.strip_prefix("LOG:  statement: "))?;
                Some(text.trim().to_owned())
            })
            .collect();
        (statements, log.len())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path for a temporary SQLite database, removed (with its WAL files) on drop.
pub struct TempSqlite {
    path: PathBuf,
}

impl TempSqlite {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "tts-sqlite-{}-{}.db",
            std::process::id(),
            tower_typed_sessions::SessionId::generate()
                .unwrap()
                .fingerprint()
                .replace(':', "")
        ));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}
