//! The `gateway` command line. `main.rs` only parses and dispatches; each
//! command lives here so the tests can call it too.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chatcrafter_core::channel::{
    Encoding, Handshake, InboundRequest, Manifest, OutboundMessage, Verification,
};

use crate::plugin::{Plugin, PluginHost};

/// Loads `FILE.wasm`, or a bundled plugin named `builtin:NAME`.
fn load(host: &PluginHost, path: &Path) -> anyhow::Result<Plugin> {
    crate::plugin::load_spec(host, &path.to_string_lossy(), Path::new(""))
}

/// `gateway plugin new NAME [--dir DIR] [--sdk PATH]`: writes a plugin crate
/// that builds out of tree and passes its own tests (templates in
/// `gateway/server/templates/plugin`). Refuses to overwrite anything.
pub fn plugin_new(name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        anyhow::bail!(
            "`{name}` cannot be a plugin id: use lower-case letters, digits and `-`, starting with a letter, at most 32"
        );
    }
    let sdk = match sdk {
        Some(p) => {
            let p = p
                .canonicalize()
                .with_context(|| format!("--sdk {}: not found", p.display()))?;
            if !p.join("Cargo.toml").exists() {
                anyhow::bail!(
                    "--sdk {}: not the SDK's folder (no Cargo.toml)",
                    p.display()
                );
            }
            format!("{{ path = {:?} }}", p.display().to_string())
        }
        None => format!("{{ git = {:?} }}", env!("CARGO_PKG_REPOSITORY")),
    };
    let root = dir.join(name);
    if root.exists() {
        anyhow::bail!("{} already exists; nothing was written", root.display());
    }
    let krate = name.replace('-', "_");
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{sdk}}", &sdk)
    };
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("{}: cannot create", root.display()))?;
    std::fs::write(
        root.join("Cargo.toml"),
        fill(include_str!("../templates/plugin/Cargo.toml.tmpl")),
    )?;
    std::fs::write(
        root.join("src/lib.rs"),
        fill(include_str!("../templates/plugin/lib.rs.tmpl")),
    )?;
    Ok(format!(
        "wrote {root}

next:
  cd {root}
  cargo test
  cargo build --release --target wasm32-wasip2
  gateway plugin check target/wasm32-wasip2/release/{krate}.wasm
",
        root = root.display()
    ))
}

/// `gateway plugin check FILE.wasm`: load, validate, describe.
pub fn plugin_check(path: &Path, json: bool) -> anyhow::Result<String> {
    let host = PluginHost::new()?;
    let plugin = load(&host, path)?;
    if json {
        return Ok(serde_json::to_string_pretty(plugin.manifest())? + "\n");
    }
    Ok(describe(&plugin))
}

/// A human-readable account of a loaded plugin.
pub fn describe(plugin: &Plugin) -> String {
    let m: &Manifest = plugin.manifest();
    let mut out = format!(
        "ok: {source} is a chatcrafter:channel@{contract} plugin\n\
         id:            {id}\n\
         version:       {version}\n\
         name:          {name}\n\
         verification:  {verification}\n\
         handshake:     {handshake}\n\
         sha256:        {sha256}\n",
        source = plugin.source(),
        contract = plugin.contract_version(),
        sha256 = plugin.sha256(),
        id = m.id,
        version = m.version,
        name = m.display_name,
        verification = verification(&m.verification),
        handshake = handshake(&m.handshake),
    );
    let caps: Vec<String> = m
        .capabilities
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        })
        .collect();
    out.push_str(&format!("capabilities:  {}\n", caps.join(", ")));
    let l = &m.outbound_limits;
    out.push_str(&format!(
        "outbound:      text ≤ {} chars, choices ≤ {} (titles ≤ {} chars), captions ≤ {} chars\n",
        l.max_text_chars, l.max_choices, l.max_choice_title_chars, l.max_caption_chars
    ));
    out.push_str(&format!(
        "reply window:  {}\n",
        m.reply_window_seconds
            .map(|w| format!("{w} s after the customer's last message"))
            .unwrap_or_else(|| "none".into())
    ));
    for link in &m.deep_links {
        out.push_str(&format!("deep link:     {link}\n"));
    }
    for (title, list) in [("secrets", &m.secrets), ("settings", &m.settings)] {
        out.push_str(&format!("{title}:\n"));
        if list.is_empty() {
            out.push_str("  (none)\n");
        }
        for s in list {
            let req = if s.required { "required" } else { "optional" };
            out.push_str(&format!("  {} ({req}): {}\n", s.name, s.description));
        }
    }
    let imports = if plugin.imports().is_empty() {
        "none".to_string()
    } else {
        format!(
            "{} (granted an empty WASI context)",
            plugin.imports().join(", ")
        )
    };
    out.push_str(&format!("host imports:  {imports}\n"));
    out
}

fn verification(v: &Verification) -> String {
    match v {
        Verification::None => "none".into(),
        Verification::HmacSha256 {
            header,
            prefix,
            encoding,
            signed_template,
            timestamp_header,
            max_age_seconds,
            secret,
        } => {
            let encoding = match encoding {
                Encoding::Hex => "hex",
                Encoding::Base64 => "base64",
            };
            let mut s = format!(
                "hmac-sha256 in `{header}` as `{prefix}<{encoding}>` over `{signed_template}`, keyed by secret `{secret}`"
            );
            if let (Some(t), Some(age)) = (timestamp_header, max_age_seconds) {
                s.push_str(&format!(", timestamp `{t}` within {age} s"));
            }
            s
        }
        Verification::SharedSecret { header, secret } => {
            format!("shared secret in `{header}` equal to secret `{secret}`")
        }
        Verification::Ed25519 {
            signature_header,
            timestamp_header,
            max_age_seconds,
            public_key,
            ..
        } => format!(
            "ed25519 in `{signature_header}` over `{timestamp_header}` ‖ body, \
             key from secret `{public_key}`, timestamp within {max_age_seconds} s"
        ),
    }
}

fn handshake(h: &Handshake) -> String {
    match h {
        Handshake::None => "none".into(),
        Handshake::QueryChallenge {
            method,
            mode_param,
            mode_value,
            token_param,
            token_secret,
            challenge_param,
        } => format!(
            "{method} ?{mode_param}={mode_value}&{token_param}=<secret `{token_secret}`> echoes `{challenge_param}`"
        ),
    }
}

/// Which export `gateway plugin run` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Export {
    /// `parse-inbound`: REQ.json is a recorded request.
    ParseInbound,
    /// `render-outbound`: REQ.json is an outbound message.
    RenderOutbound,
}

/// `gateway plugin run FILE.wasm --request REQ.json`: one export, offline.
pub fn plugin_run(
    path: &Path,
    request: &PathBuf,
    export: Export,
    secrets: &[String],
    sign: bool,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(request)
        .with_context(|| format!("{}: cannot read", request.display()))?;
    let host = PluginHost::new()?;
    let plugin = load(&host, path)?;
    let value = match export {
        Export::ParseInbound => {
            let mut req: InboundRequest = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a recorded request", request.display()))?;
            if req.context.received_at_ms == 0 {
                req.context.received_at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
            }
            if req.context.request_id.is_empty() {
                req.context.request_id = "plugin-run".into();
            }
            if sign || !secrets.is_empty() {
                verify_recorded(plugin.manifest(), &mut req, secrets, sign)?;
            }
            serde_json::to_value(plugin.parse_inbound(&req)?)?
        }
        Export::RenderOutbound => {
            let mut msg: OutboundMessage = serde_json::from_str(&text)
                .with_context(|| format!("{}: not an outbound message", request.display()))?;
            // As the host does: within what the channel takes, degraded
            // where it takes less (choices as numbered text).
            msg.content = chatcrafter_core::delivery::fit(plugin.manifest(), msg.content)
                .map_err(|why| anyhow::anyhow!("{}: {why}", plugin.manifest().id))?;
            if msg.context.channel.is_empty() {
                msg.context.channel = plugin.manifest().id.clone();
            }
            serde_json::to_value(plugin.render_outbound(&msg)?)?
        }
    };
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}

/// `plugin run --secret NAME=VALUE [--sign]`: signs the recorded request
/// as the channel would (with `--sign`), then verifies it as the gateway
/// does, at the request's `received_at_ms`.
fn verify_recorded(
    m: &chatcrafter_core::channel::Manifest,
    req: &mut InboundRequest,
    secrets: &[String],
    sign: bool,
) -> anyhow::Result<()> {
    use chatcrafter_core::verify::signature::{Verifier, sign_request};
    let mut given = std::collections::BTreeMap::new();
    for s in secrets {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--secret {s}: write NAME=VALUE"))?;
        given.insert(name.to_string(), value.to_string());
    }
    let secret = |n: &str| given.get(n).map(String::as_str);
    let now = req.context.received_at_ms / 1000;
    if sign {
        let before = req.headers.clone();
        sign_request(&m.verification, secret, &mut req.headers, &req.body, now)?;
        for h in req.headers.iter().filter(|h| !before.contains(h)) {
            eprintln!("signed: {}: {}", h.name, h.value);
        }
    }
    let verifier = Verifier::new(&m.verification, secret, true, &crate::ids::random_bytes())
        .map_err(|e| {
            anyhow::anyhow!("plugin {}@{}: {e} (give it with --secret)", m.id, m.version)
        })?;
    verifier
        .verify(&req.headers, &req.body, now)
        .map_err(|e| {
            anyhow::anyhow!(
                "the request does not verify as plugin {}@{} declares: {e}; the gateway would answer 401 {}",
                m.id,
                m.version,
                e.code()
            )
        })?;
    eprintln!("verified as plugin {}@{} declares", m.id, m.version);
    Ok(())
}

/// `gateway serve [--config FILE]`: runs until SIGTERM or SIGINT.
pub fn serve(config_path: Option<&Path>) -> anyhow::Result<()> {
    run(config_path, true)
}

/// `gateway worker --config FILE`: the queue's worker and the sweeper
/// only, with no HTTP listener — replies, deliveries, reminders and
/// retention for a store other nodes write, such as the Spin edge's (which
/// has no timers for leases and backoff). Woken through the store's change
/// notifications; runs until SIGTERM or SIGINT.
pub fn worker(config_path: &Path) -> anyhow::Result<()> {
    run(Some(config_path), false)
}

fn run(config_path: Option<&Path>, listen: bool) -> anyhow::Result<()> {
    use std::sync::Arc;

    use crate::app::App;
    use crate::ids::SystemClock;
    use crate::load::load_config;

    let crate::load::Loaded {
        config,
        base_dir,
        dev,
    } = load_config(config_path)?;
    if let Some((secrets, created)) = dev {
        eprint!(
            "{}",
            secrets.banner(Path::new("./data/dev-secrets.toml"), created)
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = App::build(
            config,
            &base_dir,
            |k| std::env::var(k).ok(),
            Arc::new(SystemClock),
        )
        .await?;
        let app = Arc::new(app);
        if !listen {
            if app.config.store.kind != chatcrafter_core::config::StoreKind::Redis {
                anyhow::bail!(
                    "store.kind: `gateway worker` serves a store other nodes write; with the embedded store, run `gateway serve`"
                );
            }
            // The jobs are queued by other nodes (the Spin edge): their
            // change notifications wake this worker.
            app.notifier.wake_on_arrivals(app.wake.clone());
            let worker = tokio::spawn(crate::worker::Worker::new(app.clone(), app.wake.clone()).run());
            let sweeper = tokio::spawn(crate::worker::sweep(app.clone()));
            {
                use std::io::Write as _;
                let mut out = std::io::stdout();
                let _ = writeln!(
                    out,
                    "worker running (channels: {})",
                    app.plugins.channels().join(", ")
                );
                let _ = out.flush();
            }
            shutdown_signal().await;
            worker.abort();
            sweeper.abort();
            return Ok(());
        }
        let server = &app.config.server;
        let tls = match (&server.tls_cert, &server.tls_key) {
            (Some(c), Some(k)) => Some(crate::http::tls_acceptor(
                &base_dir.join(c),
                &base_dir.join(k),
            )?),
            _ => None,
        };
        let (listener, addr) = crate::http::bind(&server.listen).await?;
        // Answers and deliveries run from the stored queue, beside the
        // listener; jobs left by an earlier run start at once.
        tokio::spawn(crate::worker::Worker::new(app.clone(), app.wake.clone()).run());
        tokio::spawn(crate::worker::sweep(app.clone()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        {
            use std::io::Write as _;
            let mut out = std::io::stdout();
            let _ = writeln!(
                out,
                "listening on {scheme}://{addr} (channels: {})",
                app.plugins.channels().join(", ")
            );
            let _ = out.flush();
        }
        crate::http::serve(app.clone(), listener, tls, Box::pin(shutdown_signal())).await
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `gateway import customers.csv [--config FILE]`: the CSV identity import
/// straight into the configured store, with progress on stderr and the
/// summary on stdout.
pub fn import(file: &Path, config_path: Option<&Path>) -> anyhow::Result<String> {
    use std::io::Write as _;

    use crate::ids::SystemClock;
    use chatcrafter_core::Clock as _;

    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let (config, base_dir, runtime) = offline(config_path)?;
    runtime.block_on(async move {
        let graph = offline_db(&config, &base_dir, "; use POST /admin/v1/import then").await?;
        let mut err = std::io::stderr();
        let channels = crate::import::channel_names(&config);
        let summary = crate::import::import(
            &graph,
            &channels,
            &bytes,
            SystemClock.now_secs(),
            |done, total| {
                let width = 30;
                let filled = (done * width).checked_div(total).unwrap_or(width);
                let _ = write!(
                    err,
                    "\rimporting [{}{}] {done}/{total} rows",
                    "#".repeat(filled),
                    " ".repeat(width - filled)
                );
                if done == total {
                    let _ = writeln!(err);
                }
            },
        )
        .await
        .with_context(|| format!("{}", file.display()))?;
        let mut out = format!(
            "{}: {} rows read, {} linked, {} merged, {} conflicts, {} rejected\n",
            file.display(),
            summary.rows,
            summary.linked,
            summary.merged,
            summary.conflicts,
            summary.rejected.len()
        );
        for r in &summary.rejected {
            out.push_str(&format!("  line {}: {}\n", r.line, r.reason));
        }
        Ok(out)
    })
}

/// What an offline command (import, audit verify) works with: the
/// configuration (secrets from the environment too), its folder, and a
/// one-thread runtime.
fn offline(
    config_path: Option<&Path>,
) -> anyhow::Result<(
    chatcrafter_core::config::Config,
    PathBuf,
    tokio::runtime::Runtime,
)> {
    let crate::load::Loaded {
        mut config,
        base_dir,
        ..
    } = crate::load::load_config(config_path)?;
    config.apply_env(|k| std::env::var(k).ok(), |_| Vec::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((config, base_dir, runtime))
}

/// The store an offline command works on, on the system clock; `hint`
/// ends the error's advice when an embedded store is locked by its gateway.
async fn offline_db(
    config: &chatcrafter_core::config::Config,
    base_dir: &Path,
    hint: &str,
) -> anyhow::Result<crate::store::GatewayDb> {
    crate::store::open_db(
        config,
        base_dir,
        std::sync::Arc::new(crate::ids::SystemClock),
    )
    .await
    .with_context(|| {
        format!("opening the store (an embedded store is locked while `gateway serve` runs{hint})")
    })
}

/// `gateway audit verify [--config FILE]`: walks the audit log's hash chain.
pub fn audit_verify(config_path: Option<&Path>) -> anyhow::Result<String> {
    use chatcrafter_core::audit::AuditVerdict;

    let (config, base_dir, runtime) = offline(config_path)?;
    runtime.block_on(async move {
        let db = offline_db(&config, &base_dir, "").await?;
        match db.verify_audit().await? {
            AuditVerdict::Intact { entries, head } => Ok(format!(
                "audit log intact: {entries} entries, head {head}\n"
            )),
            AuditVerdict::Broken { seq, reason } => {
                anyhow::bail!("audit entry {seq} is not as it was written: {reason}")
            }
        }
    })
}

/// `gateway receipt verify FILE [--config FILE | --public-key KEY]`:
/// checks an erasure receipt's signature, with the configured signing
/// key's public half or the one given.
pub fn receipt_verify(
    file: &Path,
    config_path: Option<&Path>,
    public_key: Option<&str>,
) -> anyhow::Result<String> {
    use chatcrafter_core::receipt;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
    let (key, key_id) = match public_key {
        Some(k) => (k.to_string(), None),
        None => {
            let signer = receipt_signer(config_path)?;
            (signer.public_key(), Some(signer.key_id().to_string()))
        }
    };
    receipt::verify(&doc, &key, key_id.as_deref())
        .with_context(|| format!("{}: receipt does not verify", file.display()))?;
    Ok(format!(
        "receipt valid: customer {} erased at {}, signed by key {}\n",
        doc["customer_id"].as_str().unwrap_or("?"),
        doc["erased_at"].as_str().unwrap_or("?"),
        doc["key_id"].as_str().unwrap_or("?"),
    ))
}

/// `gateway receipt public-key [--config FILE]`: the receipt signing key's
/// id and public half (base64), for whoever verifies receipts elsewhere.
pub fn receipt_public_key(config_path: Option<&Path>) -> anyhow::Result<String> {
    let signer = receipt_signer(config_path)?;
    Ok(format!("{} {}\n", signer.key_id(), signer.public_key()))
}

fn receipt_signer(
    config_path: Option<&Path>,
) -> anyhow::Result<chatcrafter_core::receipt::ReceiptSigner> {
    let crate::load::Loaded { mut config, .. } = crate::load::load_config(config_path)?;
    config.apply_env(|k| std::env::var(k).ok(), |_| Vec::new());
    Ok(chatcrafter_core::receipt::ReceiptSigner::from_config(
        &config,
    )?)
}

/// `gateway rekey [--config FILE] [--batch N]`: seals again, under the
/// current `data_key`, everything still sealed under a retired one (the key
/// vault's wrapped customer keys, then the data store), a page at a time,
/// printing progress; safe to run beside a gateway on Redis, and to stop
/// and start again. Ends by counting what each retired key still seals.
pub fn rekey(config_path: Option<&Path>, batch: usize) -> anyhow::Result<String> {
    use chatcrafter_core::audit::AuditDraft;
    use chatcrafter_core::rekey::Part;

    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let (config, base_dir, runtime) = offline(config_path)?;
    runtime.block_on(async move {
        let db = offline_db(&config, &base_dir, ": stop it, or use redis").await?;
        let mut last = std::time::Instant::now();
        let total = db
            .rekey(batch, |part, p| {
                if last.elapsed() >= std::time::Duration::from_secs(1) {
                    last = std::time::Instant::now();
                    let part = match part {
                        Part::Vault => "key vault",
                        Part::Data => "data",
                    };
                    eprintln!(
                        "rekey: {part}: {} records looked at, {} sealed again",
                        p.scanned, p.resealed
                    );
                }
            })
            .await?;
        db.audit(&AuditDraft {
            actor: "gateway rekey".into(),
            action: "rekey".into(),
            route: "gateway rekey".into(),
            customer_id: None,
            outcome: "ok".into(),
        })
        .await?;
        let current = config.security.data_key_id.unwrap_or(1);
        let mut out = format!(
            "rekey done: {} records looked at, {} sealed again under key {current}, {} unreadable\n",
            total.scanned, total.resealed, total.unreadable
        );
        for id in config.security.retired_data_keys.keys() {
            let n: u8 = id.parse().unwrap_or(0);
            let left = db.count_sealed_with(n).await?;
            out.push_str(&match left {
                0 => format!("retired key {id}: nothing uses it; it can be removed from the configuration\n"),
                n => format!(
                    "retired key {id}: still seals {n} records (written meanwhile by a gateway not yet on the new key, or unreadable): keep it and run rekey again\n"
                ),
            });
        }
        Ok(out)
    })
}
