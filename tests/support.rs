//! Shared by the end-to-end tests: start the real `gateway` binary with a
//! configuration in a scratch directory, and talk raw HTTP/1.1 to it.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(unreachable_pub, reason = "a module of the test crate, shared by path")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running gateway, killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub stderr_path: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatcrafter-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

impl Gateway {
    /// Writes `config` to `dir/gateway.toml` and starts `gateway serve` on it.
    pub fn start(dir: &Path, config: &str) -> Gateway {
        Self::start_with_env(dir, config, &[])
    }

    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_with(dir, config, env, None)
    }

    /// Starts the gateway, under `ulimit -n nofile` when given one (soft
    /// and hard: the gateway cannot raise it).
    pub fn start_with(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Gateway {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let stderr_path = dir.join("gateway.stderr");
        let mut command = match nofile {
            None => Command::new(env!("CARGO_BIN_EXE_gateway")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_gateway"));
                c
            }
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start gateway");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            let _ = child.wait();
            panic!(
                "gateway did not start: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            )
        });
        let addr = line
            .strip_prefix("listening on http://")
            .or_else(|| line.strip_prefix("listening on https://"))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Gateway {
            child,
            addr,
            dir: dir.to_path_buf(),
            stderr_path,
        }
    }

    /// The gateway's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kb * 1024
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends one request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.addr, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.request("POST", path, headers, body)
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error.code` of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

/// Sends a request and reads only the answer's head (status and headers,
/// no body): for an answer that streams without end, like the dashboard's
/// change feed.
pub fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
        raw.push(byte[0]);
    }
    let mut resp = parse_response(&raw);
    resp.body.clear();
    resp
}

pub fn read_response(s: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..pos]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + size]);
        b = &b[pos + 2 + size + 2..];
    }
    out
}

/// Polls `f` until it returns true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex(ring::hmac::sign(&k, msg).as_ref())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_path("tests/fixtures").join(name)).unwrap()
}

/// A private `redis-server` on loopback (never the shared one on 6379),
/// with its data in a scratch directory, stopped on drop.
pub struct RedisServer {
    child: Child,
    /// The port it listens on (the TLS port when started with TLS).
    pub port: u16,
    /// Its working directory (where `SAVE` writes `dump.rdb`).
    pub dir: PathBuf,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    /// Starts one on `port` (0: a free port), or with TLS only when `tls`
    /// names a certificate and key, and waits until it accepts connections.
    pub fn start(dir: &Path, port: u16, tls: Option<(&Path, &Path)>) -> RedisServer {
        Self::start_persisting(dir, port, tls, false)
    }

    /// [`RedisServer::start`], keeping an append-only file in `dir` when
    /// `aof` (and loading the one there at start).
    pub fn start_persisting(
        dir: &Path,
        port: u16,
        tls: Option<(&Path, &Path)>,
        aof: bool,
    ) -> RedisServer {
        for _ in 0..5 {
            let port = if port == 0 {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            } else {
                port
            };
            let mut cmd = Command::new("redis-server");
            // Redis keeps the real clock even when the tests run under
            // libfaketime (which it does not survive): a gateway whose
            // clock is far from Redis's is exactly the skew to test.
            cmd.env_remove("LD_PRELOAD")
                .env_remove("FAKETIME")
                .env_remove("DYLD_INSERT_LIBRARIES");
            let appendonly = if aof { "yes" } else { "no" };
            cmd.args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                appendonly,
            ])
            .arg("--dir")
            .arg(dir);
            match tls {
                None => cmd.args(["--port", &port.to_string()]),
                Some((cert, key)) => cmd
                    .args([
                        "--port",
                        "0",
                        "--tls-port",
                        &port.to_string(),
                        "--tls-auth-clients",
                        "no",
                    ])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key),
            };
            let child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            let mut server = RedisServer {
                child,
                port,
                dir: dir.to_path_buf(),
            };
            let up = eventually(Duration::from_secs(5), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    || matches!(server.child.try_wait(), Ok(Some(_)))
            });
            if up && matches!(server.child.try_wait(), Ok(None)) {
                return server;
            }
        }
        panic!("could not start redis-server");
    }
}

/// The hex SHA-256 of an admin token, as `[[admin.tokens]]` lists it.
pub fn token_sha256(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// An HS256 widget token for `claims`, signed with `secret`.
pub fn widget_jwt(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// POSTs a WhatsApp notification carrying one change `value`, signed with
/// `app_secret` as Meta signs it.
pub fn post_whatsapp(gw: &Gateway, app_secret: &str, value: serde_json::Value) -> Response {
    post_whatsapp_to(gw, "whatsapp", app_secret, value)
}

/// [`post_whatsapp`] to the channel configured as `channel`.
pub fn post_whatsapp_to(
    gw: &Gateway,
    channel: &str,
    app_secret: &str,
    value: serde_json::Value,
) -> Response {
    let body = serde_json::json!({"object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]})
    .to_string();
    let sig = format!(
        "sha256={}",
        hmac_hex(app_secret.as_bytes(), body.as_bytes())
    );
    gw.post(
        &format!("/webhooks/{channel}"),
        &[("x-hub-signature-256", &sig)],
        body.as_bytes(),
    )
}

/// A WhatsApp change with one text message from `wa_id` (profile name
/// Sarah) to phone number id 106540352242922.
pub fn whatsapp_text(wa_id: &str, wamid: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Sarah"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": wamid, "timestamp": now().to_string(),
                      "type": "text", "text": {"body": text}}]})
}

/// POSTs a Telegram update: a private text message from `user` (first name
/// Sarah), with the secret token header.
pub fn post_telegram(
    gw: &Gateway,
    secret_token: &str,
    update_id: u64,
    user: u64,
    text: &str,
) -> Response {
    let body = serde_json::json!({"update_id": update_id, "message": {"message_id": update_id,
        "from": {"id": user, "is_bot": false, "first_name": "Sarah"},
        "chat": {"id": user, "type": "private"}, "date": now(), "text": text}})
    .to_string();
    gw.post(
        "/webhooks/telegram",
        &[("x-telegram-bot-api-secret-token", secret_token)],
        body.as_bytes(),
    )
}

/// POSTs a widget message `{"text": text}` with the widget JWT `token`.
pub fn post_widget(gw: &Gateway, token: &str, text: &str) -> Response {
    let body = serde_json::json!({"text": text}).to_string();
    with_bearer(gw, token, "POST", "/widget/v1/messages", body.as_bytes())
}

/// A request with a bearer token.
pub fn with_bearer(gw: &Gateway, token: &str, method: &str, path: &str, body: &[u8]) -> Response {
    gw.request(
        method,
        path,
        &[("authorization", &format!("Bearer {token}"))],
        body,
    )
}

/// `(channel, direction, kind)` of each timeline entry, for comparing a
/// timeline's shape at a glance.
pub fn timeline_summary<'a>(
    entries: impl IntoIterator<Item = &'a serde_json::Value>,
) -> Vec<(&'a str, &'a str, &'a str)> {
    entries
        .into_iter()
        .map(|e| {
            (
                e["channel"].as_str().unwrap(),
                e["direction"].as_str().unwrap(),
                e["kind"].as_str().unwrap(),
            )
        })
        .collect()
}

/// One request a [`MockApi`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// What a mock answers: status and JSON body, given the request and how
/// many requests came before it.
pub type Responder = dyn Fn(&Received, usize) -> (u16, String) + Send + Sync;

/// A local stand-in for a channel's API (or a business's agent): HTTP/1.1
/// with keep-alive on loopback, recording every request.
pub struct MockApi {
    pub addr: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl MockApi {
    pub fn start(
        respond: impl Fn(&Received, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> MockApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let respond: std::sync::Arc<Responder> = std::sync::Arc::new(respond);
        let log = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (log, respond) = (log.clone(), respond.clone());
                std::thread::spawn(move || serve_mock(conn, &log, &*respond));
            }
        });
        MockApi { addr, received }
    }

    /// `http://127.0.0.1:PORT` ‖ `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests whose path starts with `prefix`.
    pub fn to(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

fn serve_mock(conn: TcpStream, log: &std::sync::Mutex<Vec<Received>>, respond: &Responder) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Received {
            method,
            path,
            headers,
            body,
        };
        let (status, answer) = {
            let mut log = log.lock().unwrap();
            let n = log.len();
            log.push(req.clone());
            respond(&req, n)
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// One command to the Redis on `port` (the test's own, never 6379).
pub fn redis_cmd(port: u16, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn).unwrap()
}
