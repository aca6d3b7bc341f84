//! The listener's connection layer: how many connections the agent holds and for how long,
//! so that slow or many clients cannot take its descriptors or keep `/health` from
//! answering.
//!
//! - Time: a connection must finish each request's headers within the header timeout
//!   (hyper's `header_read_timeout` for HTTP/1, and a watchdog of this module for the
//!   protocol detection and HTTP/2), a connection without a request in flight is closed
//!   after the idle timeout, and a request body must arrive within the request timeout
//!   (else 408).
//! - Room: at most [`Limits::connections`] connections at once (from `RLIMIT_NOFILE`,
//!   leaving [`FD_RESERVE`] descriptors or a quarter for checks, SQLite and files; at most
//!   [`DEFAULT_MAX_CONNECTIONS`]), at most [`Limits::per_client`] from one address (IPv6
//!   by its /64; trusted proxies are exempt). When the general slots are full, a few
//!   health slots still take connections from addresses that hold no other one; those
//!   answer only `/health` and `/ready` and close. Connections beyond that are closed at
//!   once.
//! - Accept errors (out of descriptors above all) make the loop sleep with a growing
//!   delay ([`AcceptBackoff`]) instead of spinning, logged once per streak.
//! - The client address of a request is the socket peer, or, when the peer is a trusted
//!   proxy, the right-most untrusted address of `X-Forwarded-For` (or `Forwarded: for=`)
//!   ([`client_address`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::error::ApiError;
use super::{Api, headers, read_body};

/// The most connections the listener holds by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Descriptors kept for checks, SQLite, files and the object store, at the least (or a
/// quarter of `RLIMIT_NOFILE` when that is more).
pub const FD_RESERVE: u64 = 256;

/// Slots kept for `/health` and `/ready` when all others are taken.
pub const DEFAULT_HEALTH_SLOTS: usize = 8;

/// The first sleep after an accept error; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(5);

/// The longest sleep after accept errors.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Which header a trusted proxy names the client in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    #[value(name = "forwarded")]
    Forwarded,
}

/// How the listener treats connections. `Default` is what the agent runs with unless
/// told otherwise.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// Time a client has to send a request's headers (also the keep-alive wait of HTTP/1).
    pub header_timeout: Duration,
    /// Time a connection may stay open without a request in flight.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's body.
    pub request_timeout: Duration,
    /// Connections at once; `None`: from `RLIMIT_NOFILE`, at most
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// Connections at once from one address (IPv6: one /64); `None`: an eighth of the
    /// connections, at least 16.
    pub max_per_client: Option<usize>,
    /// Slots that answer only `/health` and `/ready` once the others are taken (taken
    /// from the connections).
    pub health_slots: usize,
    /// Peers whose forwarded header names the client (CIDRs; a bare address is a /32 or
    /// /128). They are exempt from the per-client connection limit.
    pub trusted_proxies: Vec<IpNet>,
    /// The header trusted proxies write.
    pub forwarded_header: ForwardedHeader,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: None,
            max_per_client: None,
            health_slots: DEFAULT_HEALTH_SLOTS,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
        }
    }
}

/// The connection limits in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections at once, the health slots included.
    pub connections: usize,
    /// Connections at once from one address.
    pub per_client: usize,
    /// Of [`Limits::connections`], those kept for `/health` and `/ready`.
    pub health_slots: usize,
}

/// A setting of the listener that cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// More connections than the descriptors allow.
    #[error(
        "--max-connections {asked} leaves too few descriptors: RLIMIT_NOFILE is {nofile} and the agent keeps {reserve} for checks and SQLite, so at most {budget} (raise the limit with `ulimit -n` or lower the setting)"
    )]
    TooMany {
        /// The setting.
        asked: usize,
        /// The descriptor limit.
        nofile: u64,
        /// Descriptors kept.
        reserve: u64,
        /// The most connections allowed.
        budget: usize,
    },
    /// A limit of zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Fewer connections than health slots plus one.
    #[error(
        "--max-connections {connections} leaves no room beside the {health} slots kept for /health and /ready"
    )]
    NoRoom {
        /// The connections.
        connections: usize,
        /// The health slots.
        health: usize,
    },
    /// A timeout of zero.
    #[error("{0} must be longer than zero")]
    ZeroTimeout(&'static str),
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("{0}")]
    Bind(#[from] io::Error),
    /// A setting cannot be honoured.
    #[error(transparent)]
    Limits(#[from] LimitError),
}

/// Descriptors kept for everything but the listener, out of `nofile`.
pub fn fd_reserve(nofile: u64) -> u64 {
    FD_RESERVE.max(nofile / 4)
}

/// The most connections `nofile` descriptors allow beside [`fd_reserve`] (at least 1).
pub fn descriptor_budget(nofile: u64) -> usize {
    let budget = nofile
        .saturating_sub(fd_reserve(nofile))
        .max(nofile / 8)
        .max(1);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

impl ListenOptions {
    /// The limits these settings give with `nofile` descriptors (`None`: unknown or
    /// unlimited).
    pub fn limits(&self, nofile: Option<u64>) -> Result<Limits, LimitError> {
        for (d, name) in [
            (self.header_timeout, "the header timeout"),
            (self.idle_timeout, "the idle timeout"),
            (self.request_timeout, "the request timeout"),
        ] {
            if d.is_zero() {
                return Err(LimitError::ZeroTimeout(name));
            }
        }
        let budget = nofile.map(descriptor_budget);
        let connections = match self.max_connections {
            Some(0) => return Err(LimitError::Zero("--max-connections")),
            Some(asked) => match (nofile, budget) {
                (Some(nofile), Some(budget)) if asked > budget => {
                    return Err(LimitError::TooMany {
                        asked,
                        nofile,
                        reserve: fd_reserve(nofile),
                        budget,
                    });
                }
                _ => asked,
            },
            None => budget.map_or(DEFAULT_MAX_CONNECTIONS, |b| b.min(DEFAULT_MAX_CONNECTIONS)),
        };
        let health_slots = match self.max_connections {
            // Derived limits shrink the health slots to fit; a given one must leave room.
            None => self.health_slots.min(connections / 2),
            Some(_) if connections <= self.health_slots => {
                return Err(LimitError::NoRoom {
                    connections,
                    health: self.health_slots,
                });
            }
            Some(_) => self.health_slots,
        };
        let per_client = match self.max_per_client {
            Some(0) => return Err(LimitError::Zero("--max-connections-per-client")),
            Some(n) => n,
            None => (connections / 8).max(16),
        };
        Ok(Limits {
            connections,
            per_client,
            health_slots,
        })
    }
}

/// The soft `RLIMIT_NOFILE` of the process; `None` when unlimited or unknown.
pub fn nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard one (as Go programs do at start), so that
/// the defaults of a container (a soft 1024 under a far higher hard limit) do not starve
/// the agent. Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let now = getrlimit(Resource::Nofile);
        if let (Some(current), Some(maximum)) = (now.current, now.maximum)
            && maximum > current
        {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!(error = %e, "could not raise RLIMIT_NOFILE");
            }
        }
    }
    nofile_limit()
}

/// The sleep after accept errors: a growing delay for errors of the process or the system
/// (out of descriptors or memory), none for errors of one connection (it was reset before
/// it was accepted).
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    streak: u32,
}

impl AcceptBackoff {
    /// The time to sleep after `e`.
    pub fn failed(&mut self, e: &io::Error) -> Duration {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        ) {
            return Duration::ZERO;
        }
        let delay = BACKOFF_START
            .saturating_mul(1u32 << self.streak.min(16))
            .min(BACKOFF_MAX);
        self.streak = self.streak.saturating_add(1);
        delay
    }

    /// Errors in the streak so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// A connection was accepted: the number of errors of the streak this ends (0: none).
    pub fn succeeded(&mut self) -> u32 {
        std::mem::take(&mut self.streak)
    }
}

/// Where connections come from: a TCP listener, or a fake in tests.
pub trait Acceptor: Send + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Acceptor for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// The address a connection counts against: IPv4 as it is, IPv6 by its /64 (one host
/// usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|n| n.contains(&ip))
}

/// The client of a request from `peer`: `peer` itself unless it is one of `proxies`;
/// then, walking the forwarded addresses from the right (the nearest hop first), the
/// first that is not a trusted proxy. An entry that is not an address stops the walk at
/// the hop that wrote it; when every hop is trusted, the left-most one.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    proxies: &[IpNet],
    which: ForwardedHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = match which {
        ForwardedHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().ok().unwrap_or("?").split(','))
            .map(parse_hop)
            .collect(),
        ForwardedHeader::Forwarded => headers
            .get_all(header::FORWARDED)
            .iter()
            .flat_map(|v| v.to_str().ok().unwrap_or("?").split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_hop(v.trim().trim_matches('"')))
            })
            .collect(),
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { return client };
        client = ip.to_canonical();
        if !trusted(client, proxies) {
            return client;
        }
    }
    client
}

/// One forwarded address: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, with or without a
/// port.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// The connection slots: general ones, the health slots, and the count per client.
#[derive(Debug)]
struct Slots {
    general: Arc<Semaphore>,
    health: Arc<Semaphore>,
    per_client: usize,
    clients: Mutex<HashMap<IpAddr, usize>>,
    proxies: Vec<IpNet>,
    /// Whether refusals are being logged as a streak (one warning per streak).
    refusing: AtomicBool,
}

/// A connection's place: its permit and its count against its client.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
    key: IpAddr,
    health_only: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.key);
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    PerClient,
    Full,
}

impl Slots {
    fn new(limits: Limits, proxies: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Slots {
            general: Arc::new(Semaphore::new(
                limits.connections.saturating_sub(limits.health_slots),
            )),
            health: Arc::new(Semaphore::new(limits.health_slots)),
            per_client: limits.per_client,
            clients: Mutex::new(HashMap::new()),
            proxies,
            refusing: AtomicBool::new(false),
        })
    }

    /// A slot for a connection from `peer`: a general one while there are, else a health
    /// slot, but only for an address that holds no other connection (so that those
    /// holding the general slots cannot take the health slots too).
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let key = client_key(peer);
        let first = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            let n = clients.entry(key).or_insert(0);
            if *n >= self.per_client && !trusted(peer, &self.proxies) {
                return Err(Refusal::PerClient);
            }
            *n += 1;
            *n == 1
        };
        // From here the count is given back when the slot drops (or by `release`).
        let acquired = match self.general.clone().try_acquire_owned() {
            Ok(p) => Some((p, false)),
            Err(_) if first => self
                .health
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| (p, true)),
            Err(_) => None,
        };
        match acquired {
            Some((permit, health_only)) => Ok(Slot {
                _permit: permit,
                slots: self.clone(),
                key,
                health_only,
            }),
            None => {
                self.release(key);
                Err(Refusal::Full)
            }
        }
    }

    /// Give back one connection of `key`.
    fn release(&self, key: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = clients.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                clients.remove(&key);
            }
        }
    }
}

/// What every connection of one listener shares.
struct Shared {
    api: Arc<Api>,
    opts: ListenOptions,
    slots: Arc<Slots>,
    full: auto::Builder<TokioExecutor>,
    health_only: auto::Builder<TokioExecutor>,
}

/// When a connection last had a request in flight.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    served: bool,
}

/// A request in flight; dropping it marks the connection idle again when it was the last.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        }
        self.0.changed.notify_waiters();
    }
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                served: false,
            }),
            changed: Notify::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.in_flight += 1;
            s.served = true;
        }
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// When the connection is to be closed: `None` while a request is in flight; else
    /// the header timeout after the start (nothing asked yet) or the idle timeout after
    /// the last request.
    fn deadline(&self, opts: &ListenOptions) -> Option<Instant> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.in_flight == 0).then(|| {
            s.idle_since
                + if s.served {
                    opts.idle_timeout
                } else {
                    opts.header_timeout
                }
        })
    }
}

fn builders(opts: &ListenOptions) -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
    let mut full = auto::Builder::new(TokioExecutor::new());
    full.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_headers(100);
    full.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(opts.idle_timeout.min(Duration::from_secs(30))))
        .keep_alive_timeout(opts.header_timeout)
        .max_concurrent_streams(64)
        .max_header_list_size(64 << 10)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256));
    let mut health = auto::Builder::new(TokioExecutor::new()).http1_only();
    health
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(false)
        .max_headers(100);
    (full, health)
}

/// Serve `api` on connections from `acceptor` until `shutdown` turns true.
pub(super) async fn run<A: Acceptor>(
    mut acceptor: A,
    api: Arc<Api>,
    opts: ListenOptions,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (full, health_only) = builders(&opts);
    let shared = Arc::new(Shared {
        api,
        slots: Slots::new(limits, opts.trusted_proxies.clone()),
        opts,
        full,
        health_only,
    });
    let mut backoff = AcceptBackoff::default();
    // Without a sender there is nothing to wait for (and `changed` would be ready forever).
    let mut watching = true;
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            changed = shutdown.changed(), if watching => {
                match changed {
                    Ok(()) if *shutdown.borrow() => return,
                    Ok(()) => {}
                    Err(_) => watching = false,
                }
                continue;
            }
        };
        match accepted {
            Ok((io, peer)) => {
                let ended = backoff.succeeded();
                if ended > 0 {
                    tracing::info!(errors = ended, "accepting connections again");
                }
                let peer_ip = peer.ip().to_canonical();
                match shared.slots.admit(peer_ip) {
                    Ok(slot) => {
                        if shared.slots.refusing.swap(false, Ordering::Relaxed) {
                            tracing::info!("connections admitted again");
                        }
                        tokio::spawn(connection(shared.clone(), io, peer, slot));
                    }
                    Err(why) => {
                        if !shared.slots.refusing.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                %peer,
                                reason = ?why,
                                connections = limits.connections,
                                per_client = limits.per_client,
                                "closing new connections: no room (logged once until one is admitted)"
                            );
                        } else {
                            tracing::debug!(%peer, reason = ?why, "connection refused");
                        }
                        drop(io);
                    }
                }
            }
            Err(e) => {
                let delay = backoff.failed(&e);
                if delay.is_zero() {
                    continue;
                }
                if backoff.streak() == 1 {
                    tracing::warn!(
                        error = %e,
                        "cannot accept connections; backing off (logged once until it recovers)"
                    );
                }
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        changed = shutdown.changed(), if watching => {
                            match changed {
                                Ok(()) if *shutdown.borrow() => return,
                                Ok(()) => {}
                                Err(_) => watching = false,
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One connection, until it ends or the watchdog closes it.
async fn connection<I>(shared: Arc<Shared>, io: I, peer: SocketAddr, slot: Slot)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let health_only = slot.health_only;
    let svc = {
        let shared = shared.clone();
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let in_flight = activity.begin();
            async move {
                let reply = answer(&shared, req, peer, health_only).await;
                drop(in_flight);
                Ok::<_, Infallible>(headers::secure(reply))
            }
        })
    };
    let builder = if health_only {
        &shared.health_only
    } else {
        &shared.full
    };
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    loop {
        let changed = activity.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let deadline = activity.deadline(&shared.opts);
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if activity.deadline(&shared.opts).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing a connection without a request in time");
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// The reply to one request: only `/health` and `/ready` on a health slot; the body read
/// within the request timeout; then [`Api::respond`] with the client's address.
async fn answer(
    shared: &Shared,
    req: Request<Incoming>,
    peer: SocketAddr,
    health_only: bool,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    if health_only && !matches!(parts.uri.path(), "/health" | "/ready") {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the agent holds as many connections as it can; retry later",
        )
        .into_reply();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let body =
        match tokio::time::timeout(shared.opts.request_timeout, read_body(&parts.headers, body))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return e.into_reply(),
            Err(_) => {
                let mut r = ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                )
                .into_reply();
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        };
    let client = client_address(
        peer.ip(),
        &parts.headers,
        &shared.opts.trusted_proxies,
        shared.opts.forwarded_header,
    );
    shared
        .api
        .respond(Request::from_parts(parts, body), client)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxies = nets(&["10.0.0.0/8", "fd00::/8"]);
        let x = ForwardedHeader::XForwardedFor;
        // An untrusted peer forging the header: the peer.
        let forged = xff(&["198.51.100.1"]);
        assert_eq!(
            client_address(ip("203.0.113.9"), &forged, &proxies, x),
            ip("203.0.113.9")
        );
        // Nothing trusted at all: the peer, whatever the header says.
        assert_eq!(
            client_address(ip("10.0.0.5"), &forged, &[], x),
            ip("10.0.0.5")
        );
        // A trusted proxy: the right-most untrusted hop, not what the client prepended.
        let chain = xff(&["1.1.1.1, 198.51.100.7", "10.0.0.9"]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &chain, &proxies, x),
            ip("198.51.100.7")
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            client_address(ip("10.0.0.5"), &xff(&["10.1.1.1, 10.2.2.2"]), &proxies, x),
            ip("10.1.1.1")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.0.5"), &HeaderMap::new(), &proxies, x),
            ip("10.0.0.5")
        );
        // Garbage stops at the hop that wrote it.
        assert_eq!(
            client_address(ip("10.0.0.5"), &xff(&["nonsense, 10.0.0.7"]), &proxies, x),
            ip("10.0.0.7")
        );
        // Ports, brackets, IPv4-mapped peers.
        assert_eq!(
            client_address(
                ip("::ffff:10.0.0.5"),
                &xff(&["[2001:db8::1]:443"]),
                &proxies,
                x
            ),
            ip("2001:db8::1")
        );
        // The Forwarded header, when that is the one the proxies write; X-Forwarded-For is
        // then ignored.
        let mut h = xff(&["192.0.2.200"]);
        h.insert(
            header::FORWARDED,
            HeaderValue::from_static(
                "for=192.0.2.1;proto=https, for=\"[2001:db8:cafe::17]:4711\", for=10.0.0.3",
            ),
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies, ForwardedHeader::Forwarded),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies, x),
            ip("192.0.2.200")
        );
    }

    #[test]
    fn limits_come_from_the_descriptors_and_settings_are_honoured_or_refused() {
        let d = ListenOptions::default();
        // A container's soft 1024: a reserve of 256 for checks and SQLite.
        let l = d.limits(Some(1024)).unwrap();
        assert_eq!(l.connections, 768);
        assert_eq!(l.per_client, 96);
        assert_eq!(l.health_slots, DEFAULT_HEALTH_SLOTS);
        // Plenty: the default cap.
        assert_eq!(d.limits(Some(1 << 20)).unwrap().connections, 1024);
        assert_eq!(d.limits(None).unwrap().connections, 1024);
        // Very few: still some room, never all of them.
        let l = d.limits(Some(64)).unwrap();
        assert!(l.connections >= 1 && l.connections <= 8, "{l:?}");
        assert!(l.health_slots < l.connections.max(1));
        // A setting beyond the descriptors is refused, with the numbers.
        let asked = ListenOptions {
            max_connections: Some(5000),
            ..Default::default()
        };
        let e = asked.limits(Some(1024)).unwrap_err().to_string();
        assert!(
            e.contains("5000") && e.contains("1024") && e.contains("768"),
            "{e}"
        );
        assert_eq!(asked.limits(Some(1 << 20)).unwrap().connections, 5000);
        let zero = ListenOptions {
            max_per_client: Some(0),
            ..Default::default()
        };
        assert!(zero.limits(None).is_err());
        let cramped = ListenOptions {
            max_connections: Some(8),
            ..Default::default()
        };
        assert!(cramped.limits(None).is_err());
    }

    #[test]
    fn clients_are_counted_by_address_and_ipv6_by_64() {
        assert_eq!(client_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let slots = Slots::new(
            Limits {
                connections: 10,
                per_client: 2,
                health_slots: 2,
            },
            nets(&["10.0.0.1/32"]),
        );
        let a: Vec<_> = (0..2)
            .map(|_| slots.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(
            slots.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerClient
        );
        // Other addresses of the same /64 are the same client.
        let b: Vec<_> = (1..=2)
            .map(|n| slots.admit(ip(&format!("2001:db8::{n}"))).unwrap())
            .collect();
        assert_eq!(
            slots.admit(ip("2001:db8::3")).unwrap_err(),
            Refusal::PerClient
        );
        // The trusted proxy is not limited per client, only by the slots.
        let p: Vec<_> = (0..4)
            .map(|_| slots.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert!(a.iter().chain(&b).chain(&p).all(|s| !s.health_only));
        // The eight general slots are taken. The health slots go to addresses that hold
        // nothing else, then nothing is left.
        assert_eq!(slots.admit(ip("10.0.0.1")).unwrap_err(), Refusal::Full);
        assert_eq!(
            slots.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerClient
        );
        let h1 = slots.admit(ip("198.51.100.2")).unwrap();
        let h2 = slots.admit(ip("198.51.100.3")).unwrap();
        assert!(h1.health_only && h2.health_only);
        assert_eq!(slots.admit(ip("203.0.113.5")).unwrap_err(), Refusal::Full);
        // A refusal for room gives the client's count back.
        assert!(
            !slots
                .clients
                .lock()
                .unwrap()
                .contains_key(&ip("203.0.113.5"))
        );
        // Closed connections give their slots and counts back.
        drop(a);
        assert!(!slots.clients.lock().unwrap().contains_key(&ip("192.0.2.1")));
        let again = slots.admit(ip("192.0.2.1")).unwrap();
        assert!(!again.health_only);
    }

    #[test]
    fn accept_errors_back_off_and_a_success_ends_the_streak() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let delays: Vec<Duration> = (0..12).map(|_| b.failed(&emfile)).collect();
        assert_eq!(delays[0], BACKOFF_START);
        assert_eq!(delays[1], BACKOFF_START * 2);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
        // A connection reset before it was accepted is no reason to wait.
        assert_eq!(
            b.failed(&io::Error::from(io::ErrorKind::ConnectionAborted)),
            Duration::ZERO
        );
        assert_eq!(b.succeeded(), 12);
        assert_eq!(b.succeeded(), 0);
        assert_eq!(b.failed(&emfile), BACKOFF_START);
    }

    /// An acceptor that fails with EMFILE a number of times, recording when it was
    /// called, then gives one connection and waits forever.
    struct Failing {
        errors: usize,
        calls: Arc<Mutex<Vec<Instant>>>,
        conn: Option<tokio::io::DuplexStream>,
    }

    impl Acceptor for Failing {
        type Io = tokio::io::DuplexStream;
        async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
            self.calls.lock().unwrap().push(Instant::now());
            if self.calls.lock().unwrap().len() <= self.errors {
                return Err(io::Error::from_raw_os_error(24));
            }
            match self.conn.take() {
                Some(c) => Ok((c, SocketAddr::from(([192, 0, 2, 1], 4000)))),
                None => std::future::pending().await,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_accept_loop_sleeps_on_errors_and_serves_after_them() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let acceptor = Failing {
            errors: 10,
            calls: calls.clone(),
            conn: Some(server),
        };
        let api = Arc::new(Api::new(Arc::new(super::super::Health::default())));
        let opts = ListenOptions::default();
        let limits = opts.limits(None).unwrap();
        // Without a shutdown sender the loop serves on (and does not spin on the closed
        // channel, which would hang this single-threaded test).
        let (stop, stop_rx) = watch::channel(false);
        drop(stop);
        tokio::spawn(run(acceptor, api, opts, limits, stop_rx));
        client
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("x-frame-options: DENY"), "{reply}");
        let calls = calls.lock().unwrap().clone();
        assert!(calls.len() >= 11);
        // Each error was followed by a sleep at least as long as the policy's.
        let mut policy = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        for w in calls.windows(2).take(10) {
            assert!(w[1] - w[0] >= policy.failed(&emfile), "{calls:?}");
        }
    }

    #[tokio::test]
    async fn the_accept_loop_ends_on_shutdown() {
        let acceptor = Failing {
            errors: 0,
            calls: Arc::new(Mutex::new(Vec::new())),
            conn: None,
        };
        let api = Arc::new(Api::new(Arc::new(super::super::Health::default())));
        let opts = ListenOptions::default();
        let limits = opts.limits(None).unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(acceptor, api, opts, limits, stop_rx));
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the loop ends")
            .unwrap();
    }
}
