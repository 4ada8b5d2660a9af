//! The `gateway` binary's plugin commands, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chatcrafter_gateway::plugin::bundled;

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .output()
        .expect("run gateway")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatcrafter-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn plugin_check_prints_the_manifest_of_a_plugin_file() {
    let dir = scratch("check");
    let wasm = dir.join("telegram.wasm");
    let bytes = bundled::PLUGINS
        .iter()
        .find(|(n, _)| *n == "telegram")
        .unwrap()
        .1;
    std::fs::write(&wasm, bytes).unwrap();
    let out = gateway(&["plugin", "check", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("is a chatcrafter:channel@0.2.0 plugin"),
        "{text}"
    );
    assert!(
        text.contains("deep link:     https://t.me/{setting:bot_username}?start={token}\n"),
        "{text}"
    );
    assert!(text.contains("reply window:  none\n"), "{text}");
    assert!(
        text.contains("outbound:      text ≤ 4096 chars, choices ≤ 20 (titles ≤ 64 chars), captions ≤ 1024 chars\n"),
        "{text}"
    );
    assert!(text.contains("id:            telegram\n"), "{text}");
    assert!(text.contains("verification:  shared secret in `x-telegram-bot-api-secret-token` equal to secret `secret_token`"), "{text}");
    assert!(
        text.contains(
            "capabilities:  receive-messages, send-text, link-tokens, send-media, send-choices\n"
        ),
        "{text}"
    );
    assert!(text.contains("bot_token (required)"), "{text}");
}

#[test]
fn plugin_check_json_is_the_manifest() {
    let out = gateway(&["plugin", "check", "builtin:discord", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["id"], "discord");
    assert_eq!(manifest["verification"]["scheme"], "ed25519");
    assert_eq!(manifest["verification"]["max_age_seconds"], 300);
}

#[test]
fn plugin_check_refuses_a_component_of_the_wrong_world_with_exit_1() {
    let out = gateway(&["plugin", "check", bundled::test_programs::WRONG_WORLD]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "not a chatcrafter:channel plugin: it exports [`acme:chat/handler@1.0.0`], but a channel plugin must export `chatcrafter:channel/plugin@0.2.0`"
        ),
        "{err}"
    );
}

#[test]
fn plugin_check_names_a_missing_file() {
    let out = gateway(&["plugin", "check", "/nonexistent/plugin.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/plugin.wasm: cannot read: No such file or directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plugin_run_prints_the_normalized_events_of_a_recorded_request() {
    let dir = scratch("run");
    let body = std::fs::read_to_string(fixture("telegram_start.json")).unwrap();
    let req = serde_json::json!({
        "headers": {"Content-Type": "application/json"},
        "body": body,
        "context": {"settings": [["bot_id", "7012345678"]]},
    });
    let req_path = dir.join("req.json");
    std::fs::write(&req_path, req.to_string()).unwrap();
    let out = gateway(&[
        "plugin",
        "run",
        "builtin:telegram",
        "--request",
        req_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let event = &v["events"][0];
    assert_eq!(event["event"], "message");
    assert_eq!(event["link_token"], "lt_9fQ2-x7");
    assert_eq!(event["sender"]["scope"], "7012345678");
    assert_eq!(
        event["contents"],
        serde_json::json!([{"type": "text", "text": "/start lt_9fQ2-x7"}])
    );
    assert_eq!(v["response"]["status"], 200);
}

#[test]
fn plugin_run_renders_an_outbound_message() {
    let dir = scratch("render");
    let msg = serde_json::json!({
        "message_id": "m-1",
        "recipient": {"channel": "whatsapp", "scope": "106540352242922", "id": "16505551234"},
        "content": {"type": "choices", "prompt": "Which colour?",
                    "options": [{"id": "black", "title": "Black"}, {"id": "grey", "title": "Grey"}]},
        "reply_handle": null,
        "context": {"purpose": "agent-reply", "last_inbound_at": 1767225000, "now": 1767225600},
    });
    let path = dir.join("msg.json");
    std::fs::write(&path, msg.to_string()).unwrap();
    let out = gateway(&[
        "plugin",
        "run",
        "builtin:whatsapp",
        "--export",
        "render-outbound",
        "--request",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["via"], "http");
    assert_eq!(v["path"], "/106540352242922/messages");
    assert_eq!(v["credential"]["secret"], "access_token");
    let body: serde_json::Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["interactive"]["type"], "button");
    assert_eq!(
        body["interactive"]["action"]["buttons"][1]["reply"]["id"],
        "grey"
    );
    // Through a text-only plugin the host degrades the choices, as it does
    // when delivering.
    let out = gateway(&[
        "plugin",
        "run",
        "builtin:widget",
        "--export",
        "render-outbound",
        "--request",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let frame: serde_json::Value = serde_json::from_str(v["frame"].as_str().unwrap()).unwrap();
    assert_eq!(frame["text"], "Which colour?\n1. Black\n2. Grey");
}

#[test]
fn plugin_run_reports_a_malformed_payload_and_exits_1() {
    let dir = scratch("malformed");
    let path = dir.join("req.json");
    std::fs::write(&path, r#"{"body": "{not json"}"#).unwrap();
    let out = gateway(&[
        "plugin",
        "run",
        "builtin:whatsapp",
        "--request",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("plugin whatsapp@0.1.0: `parse-inbound` returned an error: malformed payload: body: key must be a string at line 1 column 2"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plugin_run_names_an_unknown_key_in_the_request_file() {
    let dir = scratch("badreq");
    let path = dir.join("req.json");
    std::fs::write(&path, r#"{"bodyy": "{}"}"#).unwrap();
    let out = gateway(&[
        "plugin",
        "run",
        "builtin:whatsapp",
        "--request",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("req.json: not a recorded request: unknown field `bodyy`"),
        "{err}"
    );
}

#[test]
fn version_and_help_work() {
    let out = gateway(&["--version"]);
    assert_eq!(
        stdout(&out).trim(),
        format!("gateway {}", env!("CARGO_PKG_VERSION"))
    );
    let out = gateway(&["help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("plugin"));
}

/// The first fenced block of `lang` after `heading` in `text`.
fn block_after<'a>(text: &'a str, heading: &str, lang: &str) -> &'a str {
    let after = &text[text.find(heading).expect("the heading")..];
    let open = format!("```{lang}\n");
    let start = after.find(&open).expect("the block") + open.len();
    let len = after[start..].find("```").expect("the block's end");
    &after[start..start + len]
}

/// `cargo ARGS --target-dir TARGET` in the crate at `dir`, outside this
/// workspace, without the outer build's host settings.
fn cargo_out_of_tree(dir: &Path, target: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(dir)
        .args(args)
        .arg("--target-dir")
        .arg(target);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(var);
    }
    c.output().unwrap()
}

/// Where the out-of-tree crates build: beside the tests' own target.
fn out_of_tree_target(root: &Path, name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(name)
}

#[test]
fn the_plugin_guides_example_builds_out_of_tree_and_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let manifest = block_after(&guide, "## A plugin, in full", "toml");
    let source = block_after(&guide, "## A plugin, in full", "rust");
    // The crate as the guide writes it, but for the SDK's path here.
    let sdk = root.join("plugins/sdk").canonicalize().unwrap();
    let manifest = manifest.replace(
        "path = \"../chatcrafter/plugins/sdk\"",
        &format!("path = {:?}", sdk.display().to_string()),
    );
    assert_ne!(
        manifest,
        block_after(&guide, "## A plugin, in full", "toml")
    );
    let dir = scratch("guide-example");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), source).unwrap();
    let target = out_of_tree_target(&root, "guide-example");
    let built = cargo_out_of_tree(
        &dir,
        &target,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );

    assert!(
        built.status.success(),
        "the guide's example does not build:\n{}",
        stderr(&built)
    );
    let wasm = target.join("wasm32-wasip2/release/acme_channel.wasm");
    let wasm = wasm.to_str().unwrap();

    let out = gateway(&["plugin", "check", wasm]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("id:            acme"),
        "{}",
        stdout(&out)
    );

    let req = serde_json::json!({
        "body": r#"{"id": "a-1", "from": "u-7", "text": "hello", "ts": 1800000000}"#,
    });
    let req_path = dir.join("req.json");
    std::fs::write(&req_path, req.to_string()).unwrap();
    let out = gateway(&[
        "plugin",
        "run",
        wasm,
        "--request",
        req_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"][0]["provider_message_id"], "a-1");
    assert_eq!(v["events"][0]["sender"]["id"], "u-7");
    assert_eq!(
        v["events"][0]["contents"],
        serde_json::json!([{"type": "text", "text": "hello"}])
    );

    let reply = serde_json::json!({"message_id": "m-1",
        "recipient": {"channel": "acme", "scope": "", "id": "u-7"},
        "content": {"type": "text", "text": "Hi!"}, "reply_handle": null});
    std::fs::write(dir.join("reply.json"), reply.to_string()).unwrap();
    let out = gateway(&[
        "plugin",
        "run",
        wasm,
        "--export",
        "render-outbound",
        "--request",
        dir.join("reply.json").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("/v1/messages") && text.contains("api_token"),
        "{text}"
    );
}

#[test]
fn plugin_run_verifies_a_recorded_request_as_the_gateway_would_and_signs_one() {
    let dir = scratch("run-verify");
    let body = std::fs::read_to_string(fixture("whatsapp_text.json")).unwrap();
    let write = |name: &str, headers: serde_json::Value, body: &str| {
        let path = dir.join(name);
        let req = serde_json::json!({"headers": headers, "body": body});
        std::fs::write(&path, req.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let unsigned = write("unsigned.json", serde_json::json!({}), &body);
    let run = |req: &str, extra: &[&str]| {
        let mut args = vec!["plugin", "run", "builtin:whatsapp", "--request", req];
        args.extend_from_slice(extra);
        gateway(&args)
    };
    // Unsigned, with the secret: refused as the gateway would refuse it.
    let out = run(&unsigned, &["--secret", "app_secret=s3cr3t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("missing `x-hub-signature-256` header")
            && stderr(&out).contains("401 missing_signature"),
        "{}",
        stderr(&out)
    );
    // Signed here: the signature is Meta's HMAC of the body, and it verifies.
    let out = run(&unsigned, &["--secret", "app_secret=s3cr3t", "--sign"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cr3t");
    let tag = ring::hmac::sign(&key, body.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let signed = format!("signed: x-hub-signature-256: sha256={hex}");
    assert!(stderr(&out).contains(&signed), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"][0]["event"], "message");
    // That signature over another body, or another secret: refused.
    let tampered = write(
        "tampered.json",
        serde_json::json!({"x-hub-signature-256": format!("sha256={hex}")}),
        &body.replace("Hi", "Ho"),
    );
    assert_ne!(body, body.replace("Hi", "Ho"), "the fixture says Hi");
    let out = run(&tampered, &["--secret", "app_secret=s3cr3t"]);
    assert!(
        stderr(&out).contains("401 bad_signature"),
        "{}",
        stderr(&out)
    );
    let out = run(&unsigned, &["--sign"]);
    assert!(
        stderr(&out).contains("--secret app_secret=VALUE"),
        "{}",
        stderr(&out)
    );
    let out = run(&unsigned, &["--secret", "app_secret"]);
    assert!(
        stderr(&out).contains("write NAME=VALUE"),
        "{}",
        stderr(&out)
    );
}

/// The JSON Schemas of the files `plugin run` reads say what serde accepts:
/// the guide's examples and the tests' requests are valid under them and
/// read; what serde refuses, they refuse.
#[test]
fn the_plugin_file_schemas_agree_with_what_plugin_run_reads() {
    use chatcrafter_core::channel::{InboundRequest, OutboundMessage};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema = |name: &str| {
        let text = std::fs::read_to_string(root.join("docs/schemas").join(name)).unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
    };
    let request = schema("recorded-request.schema.json");
    let outbound = schema("outbound-message.schema.json");
    let guide = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let example_request: serde_json::Value =
        serde_json::from_str(block_after(&guide, "A recorded request", "json")).unwrap();
    let example_outbound: serde_json::Value =
        serde_json::from_str(block_after(&guide, "An outbound message", "json")).unwrap();

    let good_requests = [
        example_request,
        serde_json::json!({"headers": {"Content-Type": "application/json"}, "body": "{}",
            "context": {"settings": [["bot_id", "7012345678"]]}}),
        serde_json::json!({"method": "GET", "path": "/webhooks/whatsapp", "query": "hub.mode=subscribe",
            "headers": [{"name": "x-a", "value": "1"}], "body": [0, 255],
            "context": {"received_at_ms": 1_800_000_000_000u64, "request_id": "r-1",
                "user": {"issuer": "shop", "subject": "u-1",
                    "claims": [{"kind": "email", "value": "a@example.com", "verified": true},
                               {"kind": {"other": "loyalty"}, "value": "gold", "verified": false}]}}}),
    ];
    for r in &good_requests {
        assert!(request.is_valid(r), "{r}: {:?}", request.validate(r).err());
        serde_json::from_value::<InboundRequest>(r.clone()).unwrap();
    }
    let bad_requests = [
        serde_json::json!({"bdy": "x"}),
        serde_json::json!({"context": {"setting": []}}),
        serde_json::json!({"body": [256]}),
        serde_json::json!({"headers": {"a": 1}}),
        serde_json::json!({"context": {"settings": [["only-a-name"]]}}),
        serde_json::json!({"context": {"user": {"issuer": "shop"}}}),
    ];
    for r in &bad_requests {
        assert!(!request.is_valid(r), "the schema takes {r}");
        assert!(
            serde_json::from_value::<InboundRequest>(r.clone()).is_err(),
            "serde takes {r}"
        );
    }

    let good_outbound = [
        example_outbound,
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "scope": "", "id": "u"},
            "content": {"type": "text", "text": "Hi"}}),
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "scope": "", "id": "u"},
            "content": {"type": "media", "kind": "image", "source": {"url": "https://x.example/a.png"}},
            "context": {"channel": "shop", "purpose": "proactive", "last_inbound_at": null, "now": 5,
                        "settings": [["page_id", "1"]]}}),
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "scope": "", "id": "u"},
            "content": {"type": "template", "name": "t", "language": "en", "parameters": ["a"]}}),
    ];
    for m in &good_outbound {
        assert!(
            outbound.is_valid(m),
            "{m}: {:?}",
            outbound.validate(m).err()
        );
        serde_json::from_value::<OutboundMessage>(m.clone()).unwrap();
    }
    let bad_outbound = [
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "scope": "", "id": "u"}}),
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "id": "u"},
            "content": {"type": "text", "text": "Hi"}}),
        serde_json::json!({"message_id": 7, "recipient": {"channel": "acme", "scope": "", "id": "u"},
            "content": {"type": "text", "text": "Hi"}}),
        // 0.1's `text` is now `content`.
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "scope": "", "id": "u"}, "text": "Hi"}),
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "scope": "", "id": "u"},
            "content": {"type": "choices", "prompt": "?", "options": [{"id": "a"}]}}),
        serde_json::json!({"message_id": "m", "recipient": {"channel": "acme", "scope": "", "id": "u"},
            "content": {"type": "text", "text": "Hi"}, "context": {"purpose": "marketing"}}),
    ];
    for m in &bad_outbound {
        assert!(!outbound.is_valid(m), "the schema takes {m}");
        assert!(
            serde_json::from_value::<OutboundMessage>(m.clone()).is_err(),
            "serde takes {m}"
        );
    }
}

/// `gateway plugin new demo` writes a crate that, out of tree, passes its
/// own tests, builds for wasm32-wasip2 and loads as a plugin.
#[test]
fn plugin_new_writes_a_crate_that_tests_builds_and_loads_out_of_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = scratch("plugin-new");
    let _ = std::fs::remove_dir_all(dir.join("demo"));
    let sdk = root.join("plugins/sdk");
    let new = |name: &str| {
        gateway(&[
            "plugin",
            "new",
            name,
            "--dir",
            dir.to_str().unwrap(),
            "--sdk",
            sdk.to_str().unwrap(),
        ])
    };
    let out = new("demo");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("cargo test"), "{}", stdout(&out));
    // Nothing is overwritten; a bad id is named.
    let again = new("demo");
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let bad = new("Demo_Plugin");
    assert!(
        stderr(&bad).contains("cannot be a plugin id"),
        "{}",
        stderr(&bad)
    );

    let target = out_of_tree_target(&root, "plugin-new");
    let cargo = |args: &[&str]| cargo_out_of_tree(&dir.join("demo"), &target, args);
    let tested = cargo(&["test"]);
    assert!(
        tested.status.success(),
        "{}\n{}",
        stdout(&tested),
        stderr(&tested)
    );
    assert!(stdout(&tested).contains("3 passed"), "{}", stdout(&tested));
    let built = cargo(&["build", "--release", "--target", "wasm32-wasip2"]);
    assert!(built.status.success(), "{}", stderr(&built));
    let wasm = target.join("wasm32-wasip2/release/demo.wasm");
    let out = gateway(&["plugin", "check", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("id:            demo"),
        "{}",
        stdout(&out)
    );
}

/// The SDK's and every bundled plugin's behaviour tests live natively in
/// their own crates (`plugins/*/src/tests.rs`); the gateway's test command
/// runs them here. From the repository root, cargo does not read
/// `plugins/.cargo/config.toml`, so they build for the host.
#[test]
fn the_sdk_and_the_bundled_plugins_pass_their_own_native_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = out_of_tree_target(&root, "plugins-native");
    for c in [
        "chatcrafter-plugin-sdk",
        "chatcrafter-plugin-whatsapp",
        "chatcrafter-plugin-telegram",
        "chatcrafter-plugin-discord",
        "chatcrafter-plugin-webwidget",
        "chatcrafter-plugin-messenger",
    ] {
        let out = cargo_out_of_tree(
            &root,
            &target,
            &[
                "test",
                "--manifest-path",
                "plugins/Cargo.toml",
                "--lib",
                "--features",
                "chatcrafter-plugin-sdk/testing",
                "-p",
                c,
            ],
        );
        let report = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "{c}:\n{report}");
        let passed = stdout(&out)
            .lines()
            .find_map(|l| l.strip_prefix("test result: ok. "))
            .and_then(|l| l.split(' ').next()?.parse::<usize>().ok());
        assert!(
            passed.is_some_and(|n| n > 0),
            "{c}: no tests passed ({passed:?}):\n{report}"
        );
    }
}
