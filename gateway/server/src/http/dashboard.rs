//! The operator dashboard at `/admin`: a small front end — HTML, CSS and
//! JavaScript modules in `assets/admin/`, built into the binary — over the
//! JSON admin API, and the two routes only it needs: `GET /admin/v1/me`
//! (who a token is, so the pages show only what its role may see) and
//! `GET /admin/v1/changes` (the change notifications, as server-sent
//! events). docs/dashboard.md has the sign-in model and the roles.
//!
//! The files carry no data, so they are open routes. Every datum a page
//! shows comes from the API, fetched with the Bearer token the operator
//! typed, which the page keeps in memory only: no cookie, so no request is
//! ever authorized by something ambient (no CSRF). Nothing here renders
//! data into HTML, and the pages' content security policy allows scripts,
//! styles and connections to the gateway itself only, and nothing inline.
//! There is no build step: the files served are the files in the
//! repository.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, header};
use serde_json::json;
use tokio::sync::broadcast;

use super::{ApiError, Params, Req, Resp, admin, stream};
use crate::app::App;
use crate::notify::{Change, ChangeKind};

/// The pages' content security policy: scripts, styles, images and API
/// calls from the gateway itself only — no inline script or style, no
/// plugin, no framing (no clickjacking), no `<base>`, and no form that
/// navigates (a sign-in form submitted before its script ran would put the
/// token in a URL).
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// How often an idle change feed sends a comment: 15 s, well inside the
/// 30–60 s idle timeouts of common proxies and load balancers, so a quiet
/// feed is not cut, and a dead connection is noticed within one beat.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(15);

/// One file of the front end.
struct Asset {
    /// Its name under `/admin/ui/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../assets/admin/", $name)),
        }
    };
}

/// The page at `/admin`.
static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// Everything the page loads, under `/admin/ui/{name}`.
static ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("customers.js", JS),
    asset!("inbox.js", JS),
    asset!("conflicts.js", JS),
    asset!("analytics.js", JS),
    asset!("audit.js", JS),
];

/// Each file's ETag, a hash of its content, by name.
static ETAGS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS)
        .map(|a| {
            let d = ring::digest::digest(&ring::digest::SHA256, a.body);
            let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
            (a.name, format!("\"{hex}\""))
        })
        .collect()
});

/// `asset` with its headers: revalidated at every use (`no-cache`: an
/// upgraded gateway serves new files at once, and an unchanged one costs a
/// 304), the policy, and no sniffing, framing or referrer.
fn serve(asset: &Asset, req: &Req) -> Resp {
    let etag = ETAGS
        .iter()
        .find(|(n, _)| *n == asset.name)
        .map(|(_, e)| e.as_str())
        .unwrap_or("\"0\"");
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let (status, body) = if fresh {
        (304, Bytes::new())
    } else {
        (200, Bytes::from_static(asset.body))
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, asset.content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::ETAG, etag)
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .body(Full::new(body))
        .expect("valid response")
}

/// `GET /admin`: the page.
pub(super) async fn index(_: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    Ok(serve(&INDEX, req))
}

/// `GET /admin/ui/{file}`: a file the page loads.
pub(super) async fn asset(_: &App, req: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == p[0])
        .ok_or_else(|| ApiError::not_found(req.uri().path()))?;
    Ok(serve(asset, req))
}

/// `GET /admin/v1/me`: the token's name and role, for any role.
pub(super) async fn me(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let token = admin::authenticate(app, req)?;
    Ok(admin::json_resp(
        200,
        &json!({"name": token.name, "role": token.role}),
    ))
}

/// `GET /admin/v1/changes`: every change notification of every customer
/// from now on, as server-sent events — `data: {"customer_id","kind"}` per
/// change (`kind` `resync`, with no customer, when some were missed: read
/// again), and a comment every [`HEARTBEAT`]. Notifications name a
/// customer, never their data: the page reads the API to see what changed.
pub(super) async fn changes(app: &App, _: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    // Subscribed before the head leaves, so nothing published after the
    // client sees the answer is missed.
    let changes = app.notifier.subscribe_all();
    let head = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // nginx would otherwise hold events back to fill its buffer.
        .header("x-accel-buffering", "no")
        .body(Full::new(Bytes::new()))
        .expect("valid response");
    Ok(stream::streaming(head, Box::pin(feed(changes, HEARTBEAT))))
}

/// The feed's chunks: a first comment (so proxies pass the head on at
/// once), then each change as an event, a comment every `every`.
fn feed(
    changes: broadcast::Receiver<Change>,
    every: Duration,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    use futures_util::StreamExt as _;
    let beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let open = futures_util::stream::once(async { Bytes::from_static(b": open\n\n") });
    open.chain(futures_util::stream::unfold(
        (changes, beat),
        |(mut changes, mut beat)| async move {
            let chunk = tokio::select! {
                change = changes.recv() => match change {
                    Ok(c) => event(&c),
                    // Fell behind: the page reads everything again.
                    Err(broadcast::error::RecvError::Lagged(_)) => event(&Change {
                        customer_id: String::new(),
                        kind: ChangeKind::Resync,
                    }),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = beat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            };
            Some((chunk, (changes, beat)))
        },
    ))
}

fn event(change: &Change) -> Bytes {
    Bytes::from(format!("data: {}\n\n", change.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    fn text(b: Option<Bytes>) -> String {
        String::from_utf8(b.expect("a chunk").to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_feed_sends_each_change_as_an_event_and_a_heartbeat_when_idle() {
        let notifier = crate::notify::Notifier::local();
        let mut feed = Box::pin(feed(notifier.subscribe_all(), HEARTBEAT));
        assert_eq!(text(feed.next().await), ": open\n\n");
        notifier
            .publish(Change {
                customer_id: "c_1".into(),
                kind: ChangeKind::Message,
            })
            .await;
        assert_eq!(
            text(feed.next().await),
            "data: {\"customer_id\":\"c_1\",\"kind\":\"message\"}\n\n"
        );
        // Paused time: the next chunk is the heartbeat, 15 s on.
        let before = tokio::time::Instant::now();
        assert_eq!(text(feed.next().await), ": heartbeat\n\n");
        assert_eq!(before.elapsed(), HEARTBEAT);
    }

    #[tokio::test]
    async fn a_feed_that_fell_behind_is_told_to_read_again() {
        let notifier = crate::notify::Notifier::local();
        let mut feed = Box::pin(feed(notifier.subscribe_all(), HEARTBEAT));
        assert_eq!(text(feed.next().await), ": open\n\n");
        for i in 0..2000 {
            notifier
                .publish(Change {
                    customer_id: format!("c_{i}"),
                    kind: ChangeKind::Profile,
                })
                .await;
        }
        assert_eq!(
            text(feed.next().await),
            "data: {\"customer_id\":\"\",\"kind\":\"resync\"}\n\n"
        );
    }

    /// The files and modules the page names, as `/admin/ui/…` paths or
    /// `./…` imports.
    fn references(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for marker in ["/admin/ui/", "from './", "import('./"] {
            for (i, _) in text.match_indices(marker) {
                let rest = &text[i + marker.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                    .unwrap_or(rest.len());
                found.push(rest[..end].to_string());
            }
        }
        found
    }

    #[test]
    fn every_file_the_page_loads_is_served() {
        let mut seen = 0;
        for a in std::iter::once(&INDEX).chain(ASSETS) {
            let text = std::str::from_utf8(a.body).unwrap();
            for name in references(text) {
                seen += 1;
                assert!(
                    ASSETS.iter().any(|b| b.name == name),
                    "{} loads `{name}`, which /admin/ui/ does not serve",
                    a.name
                );
            }
        }
        assert!(seen > ASSETS.len(), "{seen} references found");
    }

    #[test]
    fn the_page_has_nothing_inline_for_the_policy_to_refuse() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        // Every script has a src; no style element or attribute; no
        // `on…=` handler attribute.
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains("src=\"/admin/ui/"), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "an inline style element");
        assert!(!html.contains(" style="), "an inline style attribute");
        assert!(
            !html
                .split_whitespace()
                .any(|w| w.starts_with("on") && w.contains("=\"")),
            "an inline event handler"
        );
        // And no script writes markup from strings.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let js = std::str::from_utf8(a.body).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!js.contains(sink), "{} uses {sink}", a.name);
            }
        }
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe"));
    }
}
