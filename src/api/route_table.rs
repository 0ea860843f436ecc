//! The one table of the API's routes: each template and the methods it answers. The `/metrics`
//! request histogram labels a request by its template ([`route_template`]), a 405 names the
//! template's methods in `Allow` ([`super::allow`]), and tests/openapi.rs checks the table
//! against the OpenAPI document both ways (every documented operation is here, every route here
//! is documented). A new route is added here, to the router in `api/mod.rs`, and to `openapi/`.

/// A route template (`{id}`, `{name}`: one path segment) and its methods, as an `Allow` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub template: &'static str,
    pub allow: &'static str,
}

const fn route(template: &'static str, allow: &'static str) -> Route {
    Route { template, allow }
}

/// Every route the API serves.
pub const ROUTES: &[Route] = &[
    route("/metrics", "GET"),
    route("/v1/health", "GET"),
    route("/v1/openapi.yaml", "GET"),
    route("/v1/events/job-started", "POST"),
    route("/v1/events/job-finished", "POST"),
    route("/v1/jobs", "GET, POST"),
    route("/v1/jobs/{id}", "GET, PATCH, DELETE"),
    route("/v1/jobs/{id}/metrics", "GET, POST"),
    route("/v1/jobs/{id}/audit", "GET"),
    route("/v1/jobs/{id}/report", "GET"),
    route("/v1/jobs/{id}/log", "GET, POST"),
    route("/v1/jobs/{id}/log/download", "GET"),
    route("/v1/reports", "GET"),
    route("/v1/whoami", "GET"),
    route("/v1/samples", "POST"),
    route("/v1/nodes", "GET"),
    route("/v1/nodes/{name}", "GET"),
    route("/v1/nodes/{name}/jobs", "GET"),
    route("/v1/partitions", "GET"),
    route("/v1/partitions/{name}", "GET"),
    route("/v1/stream/jobs", "GET"),
    route("/v1/stream/jobs/{id}", "GET"),
    route("/v1/stream/jobs/{id}/log", "GET"),
    route("/v1/stream/logs", "GET"),
    route("/v1/stream/cluster", "GET"),
    route("/v1/stream/nodes", "GET"),
    route("/v1/stream/partitions", "GET"),
    route("/v1/stream/tickets", "POST"),
    route("/v1/stream/status", "GET"),
    route("/v1/ws", "GET"),
    // The seeds' stream dialects (see `api::dialects`).
    route("/ws", "GET"),
    route("/ws/cluster", "GET"),
    route("/events", "GET"),
    // Seeds 002 and 004's log streams (see `api::log_dialects`).
    route("/api/v1/jobs/{id}/logs/stream", "GET"),
    route("/api/v1/jobs/{id}/events/stream", "GET"),
    route("/api/v1/logs/stream/sse", "GET"),
    route("/api/v1/logs/stream/ws", "GET"),
];

impl Route {
    /// The methods, one by one.
    pub fn methods(&self) -> impl Iterator<Item = &'static str> {
        self.allow.split(", ")
    }

    /// Whether `path`'s segments (without the leading and trailing `/`) fall under this template.
    fn matches(&self, segments: &[&str]) -> bool {
        let mut template = self.template.trim_start_matches('/').split('/');
        segments.iter().all(|segment| {
            template
                .next()
                .is_some_and(|t| t.starts_with('{') || t == *segment)
        }) && template.next().is_none()
    }
}

/// The route template of a request path, for the request histogram: a bounded set of values,
/// never the raw path (job ids would make a series per job); `other` for no route.
pub fn route_template(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    ROUTES
        .iter()
        .find(|r| r.matches(&segments))
        .map_or("other", |r| r.template)
}

/// The methods `template` answers, as an `Allow` value; `None` for an unknown template.
pub fn allowed_methods(template: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|r| r.template == template)
        .map(|r| r.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_under_their_templates() {
        assert_eq!(route_template("/v1/jobs"), "/v1/jobs");
        assert_eq!(route_template("/v1/jobs/"), "/v1/jobs");
        assert_eq!(route_template("/v1/jobs/4242"), "/v1/jobs/{id}");
        assert_eq!(route_template("/v1/nodes/n1/jobs"), "/v1/nodes/{name}/jobs");
        assert_eq!(route_template("/v1/stream/jobs"), "/v1/stream/jobs");
        assert_eq!(route_template("/v1/stream/tickets"), "/v1/stream/tickets");
        assert_eq!(route_template("/v1"), "other");
        assert_eq!(route_template("/v1/jobs/1/audit/x"), "other");
        assert_eq!(allowed_methods("/v1/jobs/{id}"), Some("GET, PATCH, DELETE"));
        assert_eq!(allowed_methods("/v1/jobs/4242"), None);
    }

    #[test]
    fn every_template_is_listed_once() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[i + 1..].iter().all(|o| o.template != r.template),
                "{} twice",
                r.template
            );
        }
    }
}
