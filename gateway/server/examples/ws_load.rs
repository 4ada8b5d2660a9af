//! Widget live sessions under load (scripts/ws-load.sh, docs/benchmarks.md):
//! opens N authenticated sessions of N different users on a running
//! gateway, plus K sessions of one customer, then posts M signed WhatsApp
//! messages from that customer's phone and measures how long each takes to
//! reach every one of the K sessions (the webhook's send to the `message`
//! frame). Prints the gateway's RSS before and after the sessions opened.
//!
//! `ws_load ADDR GATEWAY_PID WIDGET_SECRET APP_SECRET N K M`

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn jwt(secret: &str, sub: &str, phone: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + 3600, "name": "Load"});
    if let Some(p) = phone {
        claims["phone"] = p.into();
        claims["phone_number_verified"] = true.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn open(addr: &str, token: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("ws://{addr}/widget/v1/ws")
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("upgrade");
    ws.send(Message::text(
        serde_json::json!({"type": "auth", "token": token}).to_string(),
    ))
    .await
    .unwrap();
    // Until the session frame.
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.contains("\"session\"")
        {
            break;
        }
    }
    ws
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (addr, pid, widget_secret, app_secret) =
        (&a[1], a[2].parse::<u32>().unwrap(), &a[3], &a[4]);
    let n: usize = a[5].parse().unwrap();
    let k: usize = a[6].parse().unwrap();
    let m: usize = a[7].parse().unwrap();
    let phone = "14155550123";

    // The customer, known before the sessions open (one widget message).
    let token = jwt(widget_secret, "load-customer", Some(&format!("+{phone}")));
    let mut first = open(addr, &token).await;
    first
        .send(Message::text(
            serde_json::json!({"type": "message", "text": "hello", "client_id": "load-1"})
                .to_string(),
        ))
        .await
        .unwrap();
    while let Some(Ok(msg)) = first.next().await {
        if let Message::Text(t) = msg
            && t.contains("\"ack\"")
        {
            break;
        }
    }

    let before = rss_kib(pid);
    let t0 = Instant::now();
    let mut idle = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let opened = futures_util::future::join_all(chunk.iter().map(|i| {
            let t = jwt(widget_secret, &format!("load-user-{i}"), None);
            async move { open(addr, &t).await }
        }))
        .await;
        idle.extend(opened);
    }
    let opened_in = t0.elapsed();
    let mut watchers = Vec::with_capacity(k);
    for _ in 0..k {
        watchers.push(open(addr, &token).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "sessions: {n} idle users + {k} of one customer, opened in {:.1} s",
        opened_in.as_secs_f64()
    );
    println!(
        "gateway RSS: {} MiB before, {} MiB with the sessions open: {:.1} KiB per session",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / (n + k) as f64
    );

    // Fan-out: each webhook's message must reach every watcher.
    let client = reqwest_like::Client::new(addr);
    let mut samples = Vec::with_capacity(m * k);
    for i in 0..m {
        let text = format!("fan-out {i}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": "100000000000001"},
            "contacts": [{"profile": {"name": "Load"}, "wa_id": phone}],
            "messages": [{"from": phone, "id": format!("wamid.load.{i}.{now}"), "timestamp": now.to_string(),
                          "type": "text", "text": {"body": text}}]}}]}]})
        .to_string();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, app_secret.as_bytes());
        let sig =
            chatcrafter_core::verify::hex_encode(ring::hmac::sign(&key, body.as_bytes()).as_ref());
        let sent = Instant::now();
        let status = client.post_whatsapp(&body, &sig).await;
        assert_eq!(status, 200, "the webhook was refused");
        let needle = format!("\"text\":\"{text}\"");
        let arrivals = futures_util::future::join_all(watchers.iter_mut().map(|ws| {
            let needle = needle.clone();
            async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg
                        && t.contains(&needle)
                    {
                        return sent.elapsed();
                    }
                }
                panic!("a watcher closed")
            }
        }))
        .await;
        samples.extend(arrivals.iter().map(|d| d.as_secs_f64() * 1000.0));
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "fan-out to {k} sessions, {m} webhooks: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (webhook sent → message frame at each session)",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples[samples.len() - 1]
    );
    drop(idle);
}

/// A minimal HTTP/1.1 POST over hyper's client, to keep this example to
/// the gateway's own dependencies.
mod reqwest_like {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::client::legacy::Client as Hyper;
    use hyper_util::rt::TokioExecutor;

    pub(crate) struct Client {
        addr: String,
        http: Hyper<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
    }

    impl Client {
        pub(crate) fn new(addr: &str) -> Self {
            Client {
                addr: addr.to_string(),
                http: Hyper::builder(TokioExecutor::new()).build_http(),
            }
        }

        pub(crate) async fn post_whatsapp(&self, body: &str, sig: &str) -> u16 {
            let req = hyper::Request::post(format!("http://{}/webhooks/whatsapp", self.addr))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", format!("sha256={sig}"))
                .body(Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap();
            let resp = self.http.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
    }
}
