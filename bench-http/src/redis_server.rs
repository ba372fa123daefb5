//! `redis-server` child processes on free 127.0.0.1 ports (`--save "" --appendonly no`), killed
//! when dropped (and on Ctrl-C), plus the few raw commands the bench needs: INFO snapshots for
//! per-command counts and CPU, and a MONITOR pass that tells client commands from the ones run
//! inside Lua scripts.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// PIDs of the servers alive, for the Ctrl-C handler.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// With [`RedisServer::start_tls`]: the TLS port and the CA that signed its certificate
    /// (the plain port stays for the bench's own INFO and MONITOR).
    tls: Option<(u16, String)>,
}

pub fn available() -> Result<(), String> {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("`redis-server` is not on PATH (Debian/Ubuntu: apt-get install redis-server)".into())
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl RedisServer {
    pub fn start(tag: &str) -> Self {
        Self::start_with(tag, None)
    }

    /// A server with a TLS port too, its certificate signed by a CA made for this run.
    pub fn start_tls(tag: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("bench-http CA {}", std::process::id()),
        );
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        let dir = std::env::temp_dir().join(format!("bench-http-{}-{tag}-tls", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path.to_string_lossy().into_owned()
        };
        let (cert, key, ca) = (
            write("server.pem", server_cert.pem()),
            write("server-key.pem", server_key.serialize_pem()),
            write("ca.pem", ca_cert.pem()),
        );
        Self::start_with(tag, Some(([cert, key, ca], ca_cert.pem())))
    }

    /// `tls`: the server's certificate, key and CA files, and the CA's PEM for the clients.
    fn start_with(tag: &str, tls: Option<([String; 3], String)>) -> Self {
        let dir = std::env::temp_dir().join(format!("bench-http-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for _ in 0..20 {
            let port = free_port();
            // A fresh TLS port on each try too: either may have been taken meanwhile.
            let tls = tls
                .as_ref()
                .map(|(files, ca_pem)| (free_port(), files, ca_pem));
            let mut extra = Vec::new();
            if let Some((tls_port, [cert, key, ca], _)) = &tls {
                extra.extend(
                    [
                        "--tls-port",
                        &tls_port.to_string(),
                        "--tls-cert-file",
                        cert,
                        "--tls-key-file",
                        key,
                        "--tls-ca-cert-file",
                        ca,
                        "--tls-auth-clients",
                        "no",
                    ]
                    .map(str::to_owned),
                );
            }
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(&extra)
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", &dir.to_string_lossy()])
                .args(["--logfile", &dir.join("redis.log").to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if command(port, &["PING"]).is_ok_and(|r| r == "PONG") {
                    CHILDREN.lock().unwrap().push(child.id());
                    return Self {
                        child,
                        port,
                        dir,
                        tls: tls.map(|(tls_port, _, ca_pem)| (tls_port, ca_pem.clone())),
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "could not start redis-server ({tag}); see {}",
            dir.display()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TLS port's `rediss://` URL and the CA to trust (a server from `start_tls`).
    pub fn tls(&self) -> Option<(String, String)> {
        self.tls
            .as_ref()
            .map(|(port, ca)| (format!("rediss://127.0.0.1:{port}/"), ca.clone()))
    }

    /// One INFO snapshot: calls per command, CPU seconds, memory.
    pub fn info(&self) -> Info {
        let text = command(self.port, &["INFO", "cpu", "memory", "commandstats"]).expect("INFO");
        let mut info = Info::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let (name, fields) = rest.split_once(':').unwrap_or((rest, ""));
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                info.calls.insert(name.to_owned(), calls);
            } else if let Some((key, value)) = line.split_once(':') {
                match key {
                    "used_cpu_sys" | "used_cpu_user" => {
                        info.cpu_seconds += value.trim().parse::<f64>().unwrap_or(0.0)
                    }
                    "used_memory" => info.used_memory = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        info
    }

    /// Starts counting what clients send (see [`Monitor::finish`]).
    pub fn monitor(&self) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("monitor connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("MONITOR reply");
        assert_eq!(line.trim_end(), "+OK", "MONITOR answered {line}");
        Monitor {
            reader,
            port: self.port,
        }
    }
}

/// A MONITOR connection.
pub struct Monitor {
    reader: BufReader<TcpStream>,
    port: u16,
}

impl Monitor {
    /// What clients sent since [`RedisServer::monitor`]: `(client commands, commands run inside
    /// scripts)`, as calls per command name. MONITOR prints a script's commands with a `[0 lua]`
    /// source; an `ECHO` marker ends the pass.
    pub fn finish(mut self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let marker = format!("bench-http-marker-{}", std::process::id());
        command(self.port, &["ECHO", &marker]).expect("ECHO");
        let (mut client, mut scripted) = (BTreeMap::new(), BTreeMap::new());
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).expect("monitor line") == 0 {
                panic!("monitor closed before the marker");
            }
            if line.contains(&marker) {
                break;
            }
            // +1700000000.123456 [0 127.0.0.1:5555] "evalsha" "..." ...   or   [0 lua] "GET" ...
            let Some((source, args)) = line.split_once("] ") else {
                continue;
            };
            let name = args.split('"').nth(1).unwrap_or("?").to_ascii_lowercase();
            let map = if source.ends_with(" lua") {
                &mut scripted
            } else {
                &mut client
            };
            *map.entry(name).or_insert(0) += 1;
        }
        (client, scripted)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Info {
    /// `INFO commandstats` calls per command, which count commands run inside scripts too.
    pub calls: BTreeMap<String, u64>,
    pub cpu_seconds: f64,
    pub used_memory: u64,
}

impl Info {
    /// Calls per command between `self` (earlier) and `later`, leaving out the bench's own INFO.
    pub fn delta(&self, later: &Info) -> BTreeMap<String, u64> {
        later
            .calls
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, n)| {
                let d = n - self.calls.get(name).copied().unwrap_or(0);
                (d > 0).then(|| (name.clone(), d))
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let pid = self.child.id();
        CHILDREN.lock().unwrap().retain(|p| *p != pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills the servers this process started (for Ctrl-C, where destructors do not run).
pub fn kill_all() {
    for pid in CHILDREN.lock().unwrap().drain(..) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}

/// Sends one command and returns the reply as text (a bulk or simple string, or an integer).
pub fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{}\r\n", arg.len(), arg));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let first = first.trim_end();
    match first.as_bytes().first() {
        Some(b'$') => {
            let len: i64 = first[1..].parse().unwrap_or(-1);
            if len < 0 {
                return Ok(String::new());
            }
            let mut body = vec![0u8; len as usize + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len as usize);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        Some(b'-') => Err(std::io::Error::other(first.to_owned())),
        _ => Ok(first[1..].to_owned()),
    }
}
