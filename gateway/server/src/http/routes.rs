//! The route table: every route the gateway serves, as (method, pattern,
//! who may call it, handler). The 404 for an unknown path, the 405 with
//! `Allow` for a known path called with a method it does not serve, and
//! the admin role check all come from here, so no handler repeats them.

use chatcrafter_core::config::Role;
use hyper::Method;

use super::{
    ApiError, Params, Req, Resp, admin, analytics, demo, ops, privacy, webhook, widget, ws,
};
use crate::app::App;
use chatcrafter_core::store::BoxFuture;

/// Who may call a route.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    /// Anyone: the route authenticates by other means (a channel's
    /// signature, a widget JWT) or serves nothing private.
    Open,
    /// An admin bearer token whose role is one of these.
    Roles(&'static [Role]),
}

/// A handler: the app, the request and the path's `{…}` parameters, in
/// order.
pub(crate) type Handler = for<'a> fn(
    &'a std::sync::Arc<App>,
    &'a mut Req,
    Params<'a>,
) -> BoxFuture<'a, Result<Resp, ApiError>>;

/// One row of the table.
#[derive(Debug)]
pub(crate) struct Route {
    /// The method served.
    pub(crate) method: Method,
    /// `/`-separated segments; `{name}` matches any one non-empty segment.
    pub(crate) pattern: &'static str,
    /// Who may call it.
    pub(crate) access: Access,
    /// What answers it.
    pub(crate) handler: Handler,
    /// The audit log's name for what it does (every admin and business
    /// route has one: docs/security.md); `None` for open routes.
    pub(crate) audit: Option<&'static str>,
}

const ADMIN: &[Role] = &[Role::Admin];
const STAFF: &[Role] = &[Role::Admin, Role::Agent];
const AUDIT: &[Role] = &[Role::Admin, Role::Auditor];
const ANALYSTS: &[Role] = &[Role::Admin, Role::Analyst];
const ANY_ROLE: &[Role] = &[Role::Admin, Role::Agent, Role::Analyst, Role::Auditor];

macro_rules! route {
    ($method:ident $pattern:literal, $access:expr, $handler:path) => {
        Route {
            method: Method::$method,
            pattern: $pattern,
            access: $access,
            handler: |app, req, params| Box::pin($handler(app, req, params)),
            audit: None,
        }
    };
    ($method:ident $pattern:literal, $access:expr, $handler:path, audit $action:literal) => {
        Route {
            method: Method::$method,
            pattern: $pattern,
            access: $access,
            handler: |app, req, params| Box::pin($handler(app, req, params)),
            audit: Some($action),
        }
    };
}

/// Every route, INTERFACE §3.
pub(crate) static ROUTES: &[Route] = &[
    route!(GET "/healthz", Access::Open, ops::healthz),
    route!(GET "/readyz", Access::Open, ops::readyz),
    route!(GET "/metrics", Access::Open, ops::metrics),
    // GET serves the channel's subscription handshake, where it has one.
    route!(GET "/webhooks/{channel}", Access::Open, webhook::handle),
    route!(POST "/webhooks/{channel}", Access::Open, webhook::handle),
    route!(POST "/widget/v1/messages", Access::Open, widget::post_message),
    route!(OPTIONS "/widget/v1/messages", Access::Open, widget::post_message),
    route!(GET "/widget/v1/history", Access::Open, widget::history),
    route!(GET "/widget/v1/ws", Access::Open, ws::upgrade),
    route!(GET "/widget/v1/widget.js", Access::Open, widget::script),
    route!(POST "/widget/v1/continue", Access::Open, widget::continue_on),
    route!(OPTIONS "/widget/v1/continue", Access::Open, widget::continue_on),
    route!(GET "/widget/v1/me/export", Access::Open, privacy::my_export),
    route!(OPTIONS "/widget/v1/me/export", Access::Open, privacy::my_export),
    route!(POST "/widget/v1/me/erasure-request", Access::Open, privacy::my_erasure_request),
    route!(OPTIONS "/widget/v1/me/erasure-request", Access::Open, privacy::my_erasure_request),
    // Dev mode only (404 otherwise).
    route!(GET "/demo", Access::Open, demo::shop),
    route!(GET "/demo/phone", Access::Open, demo::phone),
    route!(POST "/demo/token", Access::Open, demo::token),
    route!(POST "/demo/send", Access::Open, demo::send),
    route!(GET "/demo/timeline", Access::Open, demo::timeline),
    // The operator dashboard's files: no data in them (docs/dashboard.md).
    route!(GET "/admin", Access::Open, super::dashboard::index),
    route!(GET "/admin/", Access::Open, super::dashboard::index),
    route!(GET "/admin/ui/{file}", Access::Open, super::dashboard::asset),
    route!(OPTIONS "/widget/v1/history", Access::Open, widget::history),
    route!(GET "/admin/v1/customers", Access::Roles(STAFF), admin::find_customer, audit "customer.lookup"),
    route!(POST "/admin/v1/customers/merge", Access::Roles(ADMIN), admin::merge, audit "customer.merge"),
    route!(GET "/admin/v1/customers/{id}", Access::Roles(STAFF), admin::customer, audit "customer.read"),
    route!(PATCH "/admin/v1/customers/{id}", Access::Roles(STAFF), admin::patch_customer, audit "customer.update"),
    route!(DELETE "/admin/v1/customers/{id}", Access::Roles(ADMIN), privacy::erase, audit "customer.erase"),
    route!(GET "/admin/v1/customers/{id}/timeline", Access::Roles(STAFF), admin::timeline, audit "timeline.read"),
    route!(GET "/admin/v1/customers/{id}/export", Access::Roles(ADMIN), privacy::export, audit "customer.export"),
    route!(POST "/admin/v1/customers/{id}/restore", Access::Roles(ADMIN), privacy::restore, audit "customer.restore"),
    route!(POST "/admin/v1/merges/{id}/undo", Access::Roles(ADMIN), admin::undo, audit "merge.undo"),
    route!(GET "/admin/v1/conflicts", Access::Roles(ADMIN), admin::conflicts, audit "conflicts.read"),
    route!(POST "/admin/v1/conflicts/{id}/resolve", Access::Roles(ADMIN), admin::resolve_conflict, audit "conflict.resolve"),
    route!(GET "/admin/v1/malformed", Access::Roles(ADMIN), admin::malformed, audit "malformed.read"),
    route!(POST "/admin/v1/import", Access::Roles(ADMIN), admin::import, audit "import"),
    route!(GET "/admin/v1/handoffs", Access::Roles(STAFF), admin::handoffs, audit "handoffs.read"),
    route!(POST "/admin/v1/conversations/{id}/reply", Access::Roles(STAFF), admin::reply, audit "conversation.reply"),
    route!(POST "/admin/v1/conversations/{id}/close", Access::Roles(STAFF), admin::close, audit "conversation.close"),
    route!(POST "/v1/events", Access::Roles(STAFF), admin::event, audit "event.record"),
    route!(POST "/v1/link-tokens", Access::Roles(STAFF), admin::link_token, audit "link_token.create"),
    route!(POST "/v1/consent", Access::Roles(STAFF), privacy::set_consent, audit "consent.update"),
    route!(GET "/admin/v1/audit", Access::Roles(AUDIT), admin::audit_log, audit "audit.read"),
    route!(GET "/admin/v1/me", Access::Roles(ANY_ROLE), super::dashboard::me, audit "me.read"),
    route!(GET "/admin/v1/changes", Access::Roles(STAFF), super::dashboard::changes, audit "changes.follow"),
    route!(GET "/admin/v1/analytics/{report}", Access::Roles(ANALYSTS), analytics::report, audit "analytics.read"),
];

/// Each route's pattern as segments, split once.
static SEGMENTS: std::sync::LazyLock<Vec<Vec<&'static str>>> = std::sync::LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|r| r.pattern.trim_start_matches('/').split('/').collect())
        .collect()
});

/// Whether `path`'s segments fit `pattern`'s: as many, each equal or bound
/// to a `{…}` (which takes any one non-empty segment).
fn fits(pattern: &[&str], path: &[&str]) -> bool {
    pattern.len() == path.len()
        && pattern.iter().zip(path).all(|(w, h)| {
            if w.starts_with('{') {
                !h.is_empty()
            } else {
                w == h
            }
        })
}

/// The parameters `path` binds to `pattern`'s `{…}` segments, if it
/// matches.
#[cfg(test)]
fn bind<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let pattern: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let path: Vec<&'p str> = path.trim_start_matches('/').split('/').collect();
    fits(&pattern, &path).then(|| params(&pattern, &path))
}

fn params<'p>(pattern: &[&str], path: &[&'p str]) -> Vec<&'p str> {
    pattern
        .iter()
        .zip(path)
        .filter(|(w, _)| w.starts_with('{'))
        .map(|(_, h)| *h)
        .collect()
}

/// What the table says of a request: the route to run with its
/// parameters, or the error to answer with. Also returns the matched
/// pattern, for metrics (`(unknown)` when none matched). The path is split
/// once and compared with patterns split once, at first use.
pub(crate) fn find<'p>(
    method: &Method,
    path: &'p str,
) -> (
    &'static str,
    Result<(&'static Route, Vec<&'p str>), ApiError>,
) {
    let segments: Vec<&'p str> = path.trim_start_matches('/').split('/').collect();
    let mut allowed: Vec<&'static Route> = Vec::new();
    for (route, pattern) in ROUTES.iter().zip(SEGMENTS.iter()) {
        if fits(pattern, &segments) {
            if route.method == *method {
                return (route.pattern, Ok((route, params(pattern, &segments))));
            }
            allowed.push(route);
        }
    }
    match allowed.first() {
        None => ("(unknown)", Err(ApiError::not_found(path))),
        Some(first) => {
            // The most specific pattern that matched names the route.
            let mut methods: Vec<&str> = allowed
                .iter()
                .filter(|r| r.pattern == first.pattern)
                .map(|r| r.method.as_str())
                .collect();
            methods.sort_unstable();
            methods.dedup();
            (
                first.pattern,
                Err(ApiError::method_not_allowed(method, &methods.join(", "))),
            )
        }
    }
}

/// Checks `route`'s access rule against the request's credentials.
/// Who called, as far as the audit log is concerned: the token's name, or
/// `-` without a valid one.
pub(crate) fn authorize<'a>(
    app: &'a App,
    route: &Route,
    req: &Req,
) -> Result<Option<&'a str>, (Box<ApiError>, &'a str)> {
    match route.access {
        Access::Open => Ok(None),
        Access::Roles(roles) => {
            let token = admin::authenticate(app, req).map_err(|e| (Box::new(e), "-"))?;
            admin::require(token, roles).map_err(|e| (Box::new(e), token.name.as_str()))?;
            Ok(Some(token.name.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_bind_their_parameters_and_nothing_else() {
        assert_eq!(
            bind(
                "/admin/v1/customers/{id}/timeline",
                "/admin/v1/customers/c_1/timeline"
            ),
            Some(vec!["c_1"])
        );
        assert_eq!(
            bind("/admin/v1/customers/{id}", "/admin/v1/customers/"),
            None
        );
        assert_eq!(
            bind("/admin/v1/customers/{id}", "/admin/v1/customers/a/b"),
            None
        );
        assert_eq!(bind("/healthz", "/healthz"), Some(vec![]));
    }

    #[test]
    fn no_two_rows_serve_the_same_method_and_pattern() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.pattern == b.pattern),
                    "{} {} twice",
                    a.method,
                    a.pattern
                );
            }
        }
    }

    #[test]
    fn a_known_path_with_another_method_is_405_with_allow() {
        let (route, found) = find(&Method::PUT, "/admin/v1/customers/c_1");
        assert_eq!(route, "/admin/v1/customers/{id}");
        let e = found.unwrap_err();
        assert_eq!(e.status(), hyper::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.headers[0].1, "DELETE, GET, PATCH");
        let (_, found) = find(&Method::GET, "/nowhere");
        assert_eq!(found.unwrap_err().status(), hyper::StatusCode::NOT_FOUND);
    }
}
