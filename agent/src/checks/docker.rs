//! The `docker` checker: a container's state and health through the Docker Engine API
//! (`GET /containers/{name}/json`, via bollard) over a unix socket or plain TCP.
//!
//! Up when the container is running (not paused or restarting) and its health check, if
//! any, does not report `unhealthy`. With `successCriteria.docker.requireHealthy: true`
//! the container must also have a health check that already reports `healthy`.
//!
//! A client is built per check: bollard keeps no idle connections
//! (`pool_max_idle_per_host(0)`), so a cached client would save one small allocation and
//! would pin a socket path that did not exist yet.

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

use super::{Attempt, CheckContext, error_chain, excerpt, human_duration, is_connect_kind};
use crate::findings::Sink;

/// The engine used when neither the monitor nor `DOCKER_HOST` names one.
const DEFAULT_ENGINE: &str = "unix:///var/run/docker.sock";
/// Port of `tcp://host` without a port (the Engine's unencrypted port).
const DEFAULT_TCP_PORT: u16 = 2375;
/// Most characters of engine-supplied text (health check output, errors) in a message.
const EXCERPT_CHARS: usize = 200;

/// Where the Engine API listens, as parsed from `spec.target.docker.engine`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    /// A unix socket at this path.
    Unix(String),
    /// Plain HTTP to `host:port` (`tcp://` or `http://`); `scheme` is kept for messages.
    Http {
        /// `tcp` or `http`, as written.
        scheme: &'static str,
        /// `host:port`, IPv6 hosts in brackets.
        addr: String,
    },
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Unix(path) => write!(f, "unix://{path}"),
            Engine::Http { scheme, addr } => write!(f, "{scheme}://{addr}"),
        }
    }
}

/// Parse an engine address: `unix:///path`, `/path`, `tcp://host[:port]`,
/// `http://host[:port]`. The error is a message for a `config` outcome.
pub(crate) fn parse_engine(raw: &str) -> Result<Engine, String> {
    let raw = raw.trim();
    if let Some(path) = raw.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("engine unix:// names no socket path".into());
        }
        return Ok(Engine::Unix(path.to_string()));
    }
    if raw.starts_with('/') {
        return Ok(Engine::Unix(raw.to_string()));
    }
    let (scheme, rest) = match raw.split_once("://") {
        Some(("tcp", rest)) => ("tcp", rest),
        Some(("http", rest)) => ("http", rest),
        Some(("https", _)) => {
            return Err(
                "https:// engines (TLS, usually with client certificates) are not supported; use a unix socket, tcp:// or http://".into(),
            );
        }
        Some((scheme, _)) => {
            return Err(format!(
                "engine scheme {scheme:?} is not supported; use unix://, tcp:// or http://"
            ));
        }
        None => {
            return Err(
                "engine must be unix:///path/to/docker.sock, /path/to/docker.sock, tcp://host:port or http://host:port".into(),
            );
        }
    };
    let url = url::Url::parse(&format!("http://{rest}"))
        .map_err(|e| format!("engine {scheme}:// address does not parse: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the engine address are not supported".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "engine {scheme}:// address must be host:port, without a path"
        ));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("engine {scheme}:// address names no host"));
    };
    let port = match (url.port(), scheme) {
        (Some(p), _) => p,
        (None, "tcp") => DEFAULT_TCP_PORT,
        (None, _) => 80,
    };
    Ok(Engine::Http {
        scheme,
        addr: format!("{host}:{port}"),
    })
}

/// The engine to use when the monitor names none: `DOCKER_HOST`, else the usual socket.
fn default_engine() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENGINE.to_string())
}

/// A container name or ID as one path segment: every byte but RFC 3986 unreserved ones
/// percent-encoded. bollard puts the name into the path as it is. A leading `/` (as in
/// the `Name` the engine reports) is dropped: the engine looks up `db` and `/db` alike.
pub(crate) fn path_segment(container: &str) -> String {
    let mut out = String::new();
    for b in container.trim().trim_start_matches('/').bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `docker` monitor's container, engine and criteria, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerPlan {
    /// The container name or ID, trimmed.
    container: String,
    /// The engine address as written; `None`: `DOCKER_HOST`, else the default socket.
    engine: Option<String>,
    /// `successCriteria.docker.requireHealthy`.
    require_healthy: bool,
}

/// The plan of a `docker` monitor: `spec.target.docker` checked.
pub(crate) fn plan(spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<DockerPlan> {
    let d = spec.target.docker.as_ref()?;
    if d.container.trim().is_empty() {
        sink.error("spec.target.docker.container", "must not be empty");
    }
    if let Some(e) = &d.engine {
        let ok = ["unix:///", "tcp://", "http://"]
            .iter()
            .any(|p| e.starts_with(p) && e.len() > p.len())
            || (e.starts_with('/') && e.len() > 1);
        if !ok {
            sink.error(
                "spec.target.docker.engine",
                format!(
                    "must be unix:///path/to/docker.sock, an absolute socket path, tcp://host:port or http://host:port (TLS engines are not supported), got {e:?}"
                ),
            );
        }
    }
    Some(DockerPlan {
        container: d.container.trim().to_string(),
        engine: d.engine.clone(),
        require_healthy: spec
            .success_criteria
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .and_then(|d| d.require_healthy)
            .unwrap_or(false),
    })
}

/// Inspect one container.
pub(crate) async fn check(
    _ctx: &CheckContext,
    plan: &DockerPlan,
    attempt: &Attempt,
) -> CheckOutcome {
    let (container, require_healthy) = (plan.container.as_str(), plan.require_healthy);
    let segment = path_segment(container);
    if segment.is_empty() {
        return CheckOutcome::down(
            0.0,
            FailureReason::Config,
            "spec.target.docker.container names no container",
        );
    }
    let raw_engine = plan.engine.clone().unwrap_or_else(default_engine);
    let engine = match parse_engine(&raw_engine) {
        Ok(e) => e,
        Err(msg) => return CheckOutcome::down(0.0, FailureReason::Config, msg),
    };
    let fail = |reason, msg: String| CheckOutcome::down(attempt.elapsed_ms(), reason, msg);
    // bollard's own timeout counts whole seconds; ours below is the one that matters.
    let secs = attempt.timeout().as_secs().saturating_add(1);
    let client = match &engine {
        Engine::Unix(path) => Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION),
        Engine::Http { addr, .. } => {
            Docker::connect_with_http(addr, secs, bollard::API_DEFAULT_VERSION)
        }
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            let (reason, msg) = classify(&e, &engine);
            return fail(reason, msg);
        }
    };
    let inspected = tokio::time::timeout_at(
        attempt.soft_deadline(),
        client.inspect_container(&segment, None),
    )
    .await;
    let info = match inspected {
        Err(_) => {
            return fail(
                FailureReason::Timeout,
                format!(
                    "no answer from the Docker engine at {engine} within {}",
                    human_duration(attempt.timeout())
                ),
            );
        }
        Ok(Err(EngineError::DockerResponseServerError {
            status_code: 404,
            message,
        })) if message.to_ascii_lowercase().contains("no such container") => {
            // Unhealthy, not config: a removed container (`docker rm`, `compose down`) is
            // the usual way a container goes away, and the same spec becomes up again when
            // it is recreated under that name. (Docker says "No such container: x", podman
            // "no container with name or ID "x" found: no such container"; any other 404,
            // such as a proxy's "page not found", is a status failure.)
            return fail(
                FailureReason::Unhealthy,
                format!("no such container {container:?} on {engine}"),
            );
        }
        Ok(Err(e)) => {
            let (reason, msg) = classify(&e, &engine);
            return fail(reason, msg);
        }
        Ok(Ok(info)) => info,
    };
    with_metadata(judge(&info, container, require_healthy, attempt), &info)
}

/// Up or down from an inspected container.
fn judge(
    info: &ContainerInspectResponse,
    requested: &str,
    require_healthy: bool,
    attempt: &Attempt,
) -> CheckOutcome {
    let fail =
        |msg: String| CheckOutcome::down(attempt.elapsed_ms(), FailureReason::Unhealthy, msg);
    let name = info
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/'))
        .filter(|n| !n.is_empty())
        .unwrap_or(requested);
    let Some(state) = info.state.as_ref() else {
        return CheckOutcome::down(
            attempt.elapsed_ms(),
            FailureReason::Protocol,
            format!("the engine reported no state for container {name}"),
        );
    };
    let running = state.running.unwrap_or(false);
    let status = state
        .status
        .filter(|s| *s != ContainerStateStatusEnum::EMPTY);
    // `Running` stays true while a container is paused or restarting; `Status` tells.
    let status_ok = status.is_none_or(|s| s == ContainerStateStatusEnum::RUNNING);
    if !running || !status_ok {
        let shown = match status {
            Some(s) => s.to_string(),
            None => "not running".to_string(),
        };
        return fail(format!(
            "container {name} is {shown}{}",
            state_details(state)
        ));
    }
    let health = state.health.as_ref();
    let health_status = health
        .and_then(|h| h.status)
        .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE));
    let up = |msg: &str| {
        let mut o = CheckOutcome::up(attempt.elapsed_ms());
        o.message = Some(msg.to_string());
        o
    };
    match health_status {
        None if require_healthy => fail(format!(
            "container {name} is running but has no healthcheck, and requireHealthy is true"
        )),
        None => up("running (no healthcheck)"),
        Some(HealthStatusEnum::HEALTHY) => up("running, healthy"),
        Some(HealthStatusEnum::STARTING) if require_healthy => fail(format!(
            "container {name} is running but its health check is still starting, and requireHealthy is true"
        )),
        Some(HealthStatusEnum::STARTING) => up("running, health check starting"),
        Some(_) => {
            let streak = health.and_then(|h| h.failing_streak).unwrap_or(0);
            let mut msg = format!("container {name} is unhealthy");
            if streak > 0 {
                let s = if streak == 1 { "" } else { "s" };
                msg.push_str(&format!(" after {streak} failed health check{s}"));
            }
            let last = health
                .and_then(|h| h.log.as_ref())
                .and_then(|log| log.last());
            if let Some(last) = last {
                if let Some(code) = last.exit_code {
                    msg.push_str(&format!("; last check exited {code}"));
                }
                let output = last.output.as_deref().unwrap_or("").trim();
                if !output.is_empty() {
                    msg.push_str(&format!(": {}", excerpt(output.as_bytes(), EXCERPT_CHARS)));
                }
            }
            fail(msg)
        }
    }
}

/// ` (exit code 1, out of memory): error` for a container that is not running.
fn state_details(state: &bollard::models::ContainerState) -> String {
    let mut parts = Vec::new();
    // An exit code means something only once the container has run and stopped.
    let stopped = match state.status {
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::RESTARTING,
        ) => true,
        Some(ContainerStateStatusEnum::CREATED) => {
            parts.push("not started".to_string());
            false
        }
        Some(_) => false,
        None => state.running == Some(false),
    };
    if let Some(code) = state.exit_code.filter(|_| stopped) {
        parts.push(format!("exit code {code}"));
    }
    if state.oom_killed == Some(true) {
        parts.push("killed for running out of memory".to_string());
    }
    let mut out = String::new();
    if !parts.is_empty() {
        out = format!(" ({})", parts.join(", "));
    }
    if let Some(err) = state
        .error
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        out.push_str(&format!(": {}", excerpt(err.as_bytes(), EXCERPT_CHARS)));
    }
    out
}

/// Facts worth keeping with the result.
fn with_metadata(mut o: CheckOutcome, info: &ContainerInspectResponse) -> CheckOutcome {
    if let Some(id) = info.id.as_deref() {
        o = o.with("containerId", id.chars().take(12).collect::<String>());
    }
    if let Some(name) = info.name.as_deref() {
        o = o.with("containerName", name.trim_start_matches('/'));
    }
    if let Some(image) = info.config.as_ref().and_then(|c| c.image.as_deref()) {
        o = o.with("image", image);
    }
    if let Some(state) = info.state.as_ref() {
        if let Some(status) = state.status {
            o = o.with("status", status.to_string());
        }
        // Podman sends `Health: {"Status": ""}` for a container without a health check
        // where Docker sends no `Health`; neither is a health state worth keeping.
        if let Some(health) = state
            .health
            .as_ref()
            .and_then(|h| h.status)
            .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE))
        {
            o = o.with("health", health.to_string());
        }
        if state.running == Some(false)
            && let Some(code) = state.exit_code
        {
            o = o.with("exitCode", code);
        }
    }
    if let Some(n) = info.restart_count {
        o = o.with("restartCount", n);
    }
    o
}

/// Reason and message for an engine error other than 404.
fn classify(err: &EngineError, engine: &Engine) -> (FailureReason, String) {
    let unreachable = |why: String| {
        (
            FailureReason::Connect,
            format!("cannot reach the Docker engine at {engine}: {why}"),
        )
    };
    match err {
        EngineError::SocketNotFoundError(_) => return unreachable("no such socket".into()),
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => {
            return (
                FailureReason::Status,
                format!(
                    "the Docker engine at {engine} answered {status_code}: {}",
                    excerpt(message.as_bytes(), EXCERPT_CHARS)
                ),
            );
        }
        EngineError::JsonDataError { message, .. } => {
            return (
                FailureReason::Protocol,
                format!(
                    "the Docker engine at {engine} sent a container description that does not parse: {message}"
                ),
            );
        }
        EngineError::RequestTimeoutError => {
            return (
                FailureReason::Timeout,
                format!("no answer from the Docker engine at {engine}"),
            );
        }
        _ => {}
    }
    let chain = error_chain(err);
    if chain.iter().any(|e| e.to_string().starts_with("dns error"))
        && let Engine::Http { addr, .. } = engine
    {
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        return (
            FailureReason::Dns,
            format!("Docker engine host {host} does not resolve"),
        );
    }
    if let Some(io) = chain
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
    {
        use std::io::ErrorKind;
        return match io.kind() {
            ErrorKind::NotFound => unreachable("no such socket".into()),
            ErrorKind::ConnectionRefused => unreachable("connection refused".into()),
            ErrorKind::PermissionDenied => {
                unreachable("permission denied (the agent needs access to the socket)".into())
            }
            kind if is_connect_kind(kind) => unreachable(io.to_string()),
            ErrorKind::TimedOut => (
                FailureReason::Timeout,
                format!("no answer from the Docker engine at {engine}"),
            ),
            _ => unreachable(io.to_string()),
        };
    }
    if let EngineError::HyperLegacyError { err: inner } = err
        && inner.is_connect()
    {
        let why = chain
            .last()
            .map_or_else(|| inner.to_string(), |e| e.to_string());
        return unreachable(why);
    }
    if let Some(h) = chain.iter().find_map(|e| e.downcast_ref::<hyper::Error>())
        && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
    {
        return unreachable(h.to_string());
    }
    let why = chain
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    (
        FailureReason::Protocol,
        format!("the Docker engine at {engine} did not answer as the Engine API does: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(scheme: &'static str, addr: &str) -> Engine {
        Engine::Http {
            scheme,
            addr: addr.into(),
        }
    }

    #[test]
    fn engine_addresses() {
        assert_eq!(
            parse_engine("unix:///var/run/docker.sock"),
            Ok(Engine::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            parse_engine("/run/podman/podman.sock"),
            Ok(Engine::Unix("/run/podman/podman.sock".into()))
        );
        assert_eq!(
            parse_engine("tcp://docker:2375"),
            Ok(http("tcp", "docker:2375"))
        );
        assert_eq!(parse_engine("tcp://docker"), Ok(http("tcp", "docker:2375")));
        assert_eq!(
            parse_engine("http://10.0.0.5:2375/"),
            Ok(http("http", "10.0.0.5:2375"))
        );
        assert_eq!(
            parse_engine("tcp://[::1]:2375"),
            Ok(http("tcp", "[::1]:2375"))
        );
        assert_eq!(
            parse_engine("unix:///x.sock").unwrap().to_string(),
            "unix:///x.sock"
        );
        for bad in [
            "unix://",
            "https://docker:2376",
            "ssh://me@host",
            "docker:2375",
            "tcp://user:pw@docker:2375",
            "http://docker:2375/v1.45",
            "tcp://",
        ] {
            assert!(parse_engine(bad).is_err(), "{bad}");
        }
        let msg = parse_engine("tcp://user:pw@docker:2375").unwrap_err();
        assert!(!msg.contains("pw"), "{msg}");
        // What a check says about engines the catalog's rules let through, and (for a
        // plan made some other way) about those it refuses.
        for (engine, expected) in [
            ("https://docker.example:2376", "https:// engines"),
            (
                "ssh://me@docker.example",
                "engine scheme \"ssh\" is not supported",
            ),
            (
                "docker.example:2375",
                "engine must be unix:///path/to/docker.sock",
            ),
            (
                "tcp://admin:hunter2@docker.example:2375",
                "credentials in the engine address",
            ),
            ("http://docker.example:2375/v1.45", "without a path"),
        ] {
            let msg = parse_engine(engine).unwrap_err();
            assert!(msg.contains(expected), "{engine}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn names_become_one_path_segment() {
        assert_eq!(path_segment("db"), "db");
        assert_eq!(path_segment("/db"), "db");
        assert_eq!(path_segment("my_app-1.web"), "my_app-1.web");
        assert_eq!(path_segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
