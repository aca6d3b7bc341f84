//! The dynamic twins of the static outputs, public like the static site:
//! `GET /status/{slug}` (the builder's `status.json`), `GET /badge/{slug}/{monitor}`
//! (the builder's status badge as SVG; `?kind=uptime-24h|…` for the others) and
//! `GET /uptime/{monitor}?days=N`. They are computed from this agent's store and catalog
//! through the builder's own model and renderers: the objects this agent would export
//! become the builder's inputs (90 days of daily rollups and incidents, two days of
//! hourly ones), so the answers equal what a build of this agent alone would publish.
//! Only monitors shown on a published page are answered for, as on the static site.
//! The model is computed once per change of the data and shared by every request (see
//! [`Twins`]): single flight, stale while revalidate, per-request work bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration as StdDuration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use http::{Response, StatusCode, header};
use http_body_util::Full;
use kubekuma_builder::twins::{
    AgentData, Badges, HISTORY_DAYS, Inputs, Model, Monitor, Page, round2,
};
use kubekuma_crds::objects::{self, DailyMonth, HourlyDay, IncidentMonth};
use tokio::sync::{Semaphore, watch};

use super::{Call, store_error};
use crate::admin::error::{ApiError, Reply, json_text_reply};
use crate::catalog::Snapshot;
use crate::export::objects::{self as agent_objects, month_name, start_of};
use crate::state::live::Live;
use crate::store::Store;

/// How long a computed model is fresh. Past it, the next request starts the next
/// computation (if the data changed) and is answered from this model meanwhile.
pub const TTL: StdDuration = StdDuration::from_secs(5);
/// The oldest a model is served while the next one is computed; older, requests wait
/// for the computation.
pub const MAX_STALE: StdDuration = StdDuration::from_secs(60);
/// Requests waiting at once for a computation when there is no model to serve (a cold
/// start, or after an explicit [`invalidate`]); more are answered 503 with `Retry-After`.
pub const MAX_WAITERS: usize = 1024;
/// Twin requests doing work of their own beyond the shared model at once (a badge
/// render, `/uptime`'s rollup query); more are answered 503 with `Retry-After`.
pub const MAX_REQUEST_WORK: usize = 16;
/// The agent ID the local inputs carry.
const LOCAL: &str = "local";
/// Largest `days` of `/uptime`.
pub const MAX_DAYS: u32 = 365;

/// The twins' shared state: the site model (one computation at a time, shared by every
/// request: single flight, stale while revalidate), the badge renderer, the bound on
/// per-request work and the count of computations.
#[derive(Clone)]
pub struct Twins {
    inner: Arc<Shared>,
}

struct Shared {
    slot: Mutex<Slot>,
    computations: AtomicU64,
    waiting: AtomicUsize,
    work: Arc<Semaphore>,
    badges: OnceLock<Option<Badges>>,
}

impl Default for Twins {
    fn default() -> Self {
        Twins {
            inner: Arc::new(Shared {
                slot: Mutex::new(Slot::default()),
                computations: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                work: Arc::new(Semaphore::new(MAX_REQUEST_WORK)),
                badges: OnceLock::new(),
            }),
        }
    }
}

impl std::fmt::Debug for Twins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twins")
            .field("computations", &self.computations())
            .finish_non_exhaustive()
    }
}

impl Twins {
    /// How many times the model was computed since start.
    pub fn computations(&self) -> u64 {
        self.inner.computations.load(Ordering::SeqCst)
    }
}

/// What a computation ends with (shared by every request waiting for it).
type Outcome = Result<Arc<Computed>, ApiError>;

#[derive(Default)]
struct Slot {
    /// The last model computed.
    current: Option<Arc<Computed>>,
    /// When `current` was computed or found still equal to the data.
    fresh_at: Option<Instant>,
    /// Bumped by [`invalidate`]: a model computed from older data is not served.
    invalidations: u64,
    /// The computation running, if any.
    flight: Option<watch::Receiver<Option<Outcome>>>,
}

/// A computed model with what it was computed from and its pages' `status.json`.
struct Computed {
    model: Model,
    /// `status.json` of every published page, by slug.
    status: HashMap<String, Bytes>,
    /// The catalog it was computed from.
    catalog: Arc<Snapshot>,
    /// The store's write count before the computation read it.
    writes: u64,
    /// The hour (since the epoch) it was computed in: windows move with the clock.
    hour: i64,
    /// [`Slot::invalidations`] when the computation started.
    invalidations: u64,
    /// When it was computed.
    at: Instant,
}

/// What a computation reads: the current catalog, the store and the live view.
struct Sources {
    catalog: Arc<Snapshot>,
    store: Store,
    live: Arc<Mutex<Live>>,
}

impl Sources {
    fn of(call: &Call<'_>) -> Sources {
        Sources {
            catalog: call.ctx.catalog.borrow().clone(),
            store: call.ctx.store.clone(),
            live: call.ctx.live.clone(),
        }
    }
}

fn hour_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(3600)
}

/// 503 `busy` with `Retry-After: 1`.
fn busy(what: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!("{what}: too many requests at once, retry later"),
    );
    e.retry_after = Some(1);
    e
}

/// The builder's inputs from this agent alone, as its objects would be at `now`.
async fn local_inputs(src: &Sources, now: DateTime<Utc>) -> Result<Inputs, ApiError> {
    let (catalog, state) = agent_objects::current(LOCAL, &src.catalog, &src.store, &src.live, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "twins: local objects");
            ApiError::internal("the status could not be computed")
        })?;

    let today = now.date_naive();
    let first = today - Duration::days(HISTORY_DAYS - 1);
    let from = start_of(first.with_day(1).unwrap_or(first));
    let to = start_of(today + Duration::days(1));

    let hourly = hourly_days(&src.store, start_of(today - Duration::days(1)), to).await?;
    let daily = daily_months(&src.store, from, to).await?;
    let incidents = incident_months(&src.store, from, to, today).await?;

    Ok(Inputs {
        agents: vec![AgentData {
            id: LOCAL.into(),
            catalog,
            state: Some(state),
            hourly: shared(hourly),
            daily: shared(daily),
            incidents: shared(incidents),
        }],
        warnings: Vec::new(),
    })
}

/// Each object behind an `Arc`, as the builder's inputs hold them.
fn shared<K: Ord, V>(
    m: std::collections::BTreeMap<K, V>,
) -> std::collections::BTreeMap<K, std::sync::Arc<V>> {
    m.into_iter()
        .map(|(k, v)| (k, std::sync::Arc::new(v)))
        .collect()
}

/// The hourly rollups from `from` to `to`, by day, as the agent would export them.
async fn hourly_days(
    store: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<NaiveDate, HourlyDay>, ApiError> {
    let mut hourly: BTreeMap<NaiveDate, HourlyDay> = BTreeMap::new();
    for (m, buckets) in store.hourly_rollups(from, to).await.map_err(store_error)? {
        for (start_ms, r) in buckets {
            let Some(t) = DateTime::from_timestamp_millis(start_ms) else {
                continue;
            };
            let day = t.date_naive();
            hourly
                .entry(day)
                .or_insert_with(|| HourlyDay {
                    layout: objects::LAYOUT.into(),
                    agent_id: LOCAL.into(),
                    day,
                    monitors: BTreeMap::new(),
                })
                .monitors
                .entry(m.clone())
                .or_default()
                .insert(u8::try_from(t.hour()).unwrap_or(0), r);
        }
    }
    Ok(hourly)
}

/// The daily rollups from `from` to `to`, by month, as the agent would export them.
async fn daily_months(
    store: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<String, DailyMonth>, ApiError> {
    let mut daily: BTreeMap<String, DailyMonth> = BTreeMap::new();
    for (m, buckets) in store.daily_rollups(from, to).await.map_err(store_error)? {
        for (start_ms, r) in buckets {
            let Some(t) = DateTime::from_timestamp_millis(start_ms) else {
                continue;
            };
            let month = month_name(t.date_naive());
            daily
                .entry(month.clone())
                .or_insert_with(|| DailyMonth {
                    layout: objects::LAYOUT.into(),
                    agent_id: LOCAL.into(),
                    month,
                    monitors: BTreeMap::new(),
                })
                .monitors
                .entry(m.clone())
                .or_default()
                .insert(u8::try_from(t.day()).unwrap_or(0), r);
        }
    }
    Ok(daily)
}

/// The incidents from `from` to `to`, by month of their start (open ones that started
/// before `from` in the month of `today`), as the agent would export them.
async fn incident_months(
    store: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    today: NaiveDate,
) -> Result<BTreeMap<String, IncidentMonth>, ApiError> {
    let mut incidents: BTreeMap<String, IncidentMonth> = BTreeMap::new();
    for i in store
        .incidents_between(from, to)
        .await
        .map_err(store_error)?
    {
        // Open incidents that started before the window count in the current month.
        let month = if i.started_at < from {
            month_name(today)
        } else {
            month_name(i.started_at.date_naive())
        };
        incidents
            .entry(month.clone())
            .or_insert_with(|| IncidentMonth {
                layout: objects::LAYOUT.into(),
                agent_id: LOCAL.into(),
                month,
                incidents: Vec::new(),
            })
            .incidents
            .push(i);
    }
    Ok(incidents)
}

/// The site model of this agent: the current one while fresh; past [`TTL`], the
/// current one while the next is computed (if the data changed at all); without one (or
/// after [`invalidate`]), the one computation running, which every waiting request
/// shares. At most one computation runs at a time, in a task of its own (a request that
/// goes away does not stop it), its model built on the blocking pool.
async fn site(call: &Call<'_>) -> Result<Arc<Computed>, ApiError> {
    let shared = &call.twins.inner;
    let rx = {
        let mut slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
        let valid = slot
            .current
            .clone()
            .filter(|c| c.invalidations == slot.invalidations);
        let fresh = slot.fresh_at.is_some_and(|t| t.elapsed() < TTL);
        if let Some(c) = &valid
            && fresh
        {
            return Ok(c.clone());
        }
        if slot.flight.is_none() {
            let src = Sources::of(call);
            match &valid {
                // Nothing changed since it was computed: it is fresh again.
                Some(c)
                    if Arc::ptr_eq(&c.catalog, &src.catalog)
                        && c.writes == src.store.write_count()
                        && c.hour == hour_of(Utc::now()) =>
                {
                    slot.fresh_at = Some(Instant::now());
                    return Ok(c.clone());
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    slot.flight = Some(rx);
                    let invalidations = slot.invalidations;
                    tokio::spawn(compute(call.twins.clone(), src, invalidations, tx));
                }
            }
        }
        if let Some(c) = &valid
            && c.at.elapsed() < MAX_STALE
        {
            return Ok(c.clone());
        }
        slot.flight.clone()
    };
    let Some(mut rx) = rx else {
        return Err(ApiError::internal("the status could not be computed"));
    };
    if shared.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITERS {
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(busy("the status is being computed"));
    }
    let waited = rx.wait_for(Option::is_some).await.map(|v| v.clone());
    shared.waiting.fetch_sub(1, Ordering::SeqCst);
    match waited {
        Ok(Some(outcome)) => outcome,
        _ => Err(ApiError::internal("the status could not be computed")),
    }
}

/// One computation: the inputs from the store (read connections, off the runtime),
/// then the model and every page's `status.json` on the blocking pool; the slot takes
/// the result and every waiting request gets it.
async fn compute(
    twins: Twins,
    src: Sources,
    invalidations: u64,
    tx: watch::Sender<Option<Outcome>>,
) {
    let shared = &twins.inner;
    shared.computations.fetch_add(1, Ordering::SeqCst);
    let now = Utc::now();
    let writes = src.store.write_count();
    let outcome = match local_inputs(&src, now).await {
        Ok(inputs) => tokio::task::spawn_blocking(move || {
            let model = Model::new(&inputs, now);
            let status = src
                .catalog
                .status_pages
                .values()
                .filter_map(|p| model.page(&p.spec.slug))
                .map(|p| {
                    let text = serde_json::to_vec(&p.status_json()).unwrap_or_default();
                    (p.slug().to_string(), Bytes::from(text))
                })
                .collect();
            Arc::new(Computed {
                model,
                status,
                catalog: src.catalog,
                writes,
                hour: hour_of(now),
                invalidations,
                at: Instant::now(),
            })
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "twins: the model computation failed");
            ApiError::internal("the status could not be computed")
        }),
        Err(e) => Err(e),
    };
    {
        let mut slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.flight = None;
        if let Ok(c) = &outcome {
            slot.current = Some(c.clone());
            slot.fresh_at = Some(c.at);
        }
    }
    tx.send_replace(Some(outcome));
}

/// Forget the cached model: the next twin request waits for a computation from the
/// data as it is now (a change through the admin API shows at once).
pub fn invalidate(twins: &Twins) {
    let mut slot = twins.inner.slot.lock().unwrap_or_else(|p| p.into_inner());
    slot.invalidations += 1;
    slot.fresh_at = None;
}

/// A permit for a request's own work, or 503 `busy`.
fn permit(call: &Call<'_>) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    call.twins
        .inner
        .work
        .clone()
        .try_acquire_owned()
        .map_err(|_| busy("twins"))
}

fn page<'a>(site: &'a Model, slug: &str) -> Result<Page<'a>, ApiError> {
    site.page(slug)
        .ok_or_else(|| ApiError::not_found(format!("no published status page {slug:?}")))
}

/// The monitor named by the path: `{namespace}/{name}`, `{monitor}` as `namespace/name`,
/// or `{monitor}` as a name that only one of `candidates` has.
fn pick<'a>(
    call: &Call<'_>,
    candidates: impl Iterator<Item = Monitor<'a>>,
) -> Result<Monitor<'a>, ApiError> {
    let (ns, name) = if call.params.has("namespace") {
        (
            Some(call.params.get("namespace").to_string()),
            call.params.get("name").to_string(),
        )
    } else {
        match call.params.get("monitor").split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, call.params.get("monitor").to_string()),
        }
    };
    let shown = match &ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.clone(),
    };
    // A monitor shown on several pages counts once.
    let found: BTreeMap<&str, Monitor<'a>> = candidates
        .filter(|m| m.name() == name && ns.as_ref().is_none_or(|ns| ns == m.namespace()))
        .map(|m| (m.key(), m))
        .collect();
    let found: Vec<Monitor<'a>> = found.into_values().collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(ApiError::not_found(format!("monitor {shown} not found"))),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous",
            format!("several monitors are named {name}: use namespace/name"),
        )),
    }
}

/// `GET /status/{slug}`: the builder's `status.json` of a published page.
pub async fn status_page(call: &Call<'_>) -> Result<Reply, ApiError> {
    let site = site(call).await?;
    let page = page(&site.model, call.params.get("slug"))?;
    let text = site.status.get(page.slug()).cloned().unwrap_or_default();
    Ok(json_text_reply(StatusCode::OK, text))
}

/// `GET /badge/{slug}/{monitor}?kind=status|uptime-24h|uptime-7d|uptime-30d|uptime-90d|response-time|cert`:
/// the SVG badge of a monitor of a page that publishes per-monitor badges.
pub async fn badge(call: &Call<'_>) -> Result<Reply, ApiError> {
    let site = site(call).await?;
    let page = page(&site.model, call.params.get("slug"))?;
    if !page.has_monitor_badges() {
        return Err(ApiError::not_found(format!(
            "status page {} publishes no monitor badges",
            page.slug()
        )));
    }
    let m = pick(call, page.monitors())?;
    let kind = call
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "kind")
        .map(|(_, v)| v)
        .unwrap_or_else(|| "status".into());
    let _permit = permit(call)?;
    let renderer = call.twins.inner.badges.get_or_init(|| Badges::new().ok());
    let Some(renderer) = renderer else {
        return Err(ApiError::internal("badges cannot be rendered"));
    };
    let Some(svg) = renderer.svg(m, &kind) else {
        return Err(ApiError::bad_request(format!(
            "unknown badge kind {kind:?}"
        )));
    };
    let mut r = Response::new(Full::new(Bytes::from(svg)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("image/svg+xml"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

/// `GET /uptime/{monitor}?days=N` (default 30, 1 to [`MAX_DAYS`]): `{monitor, days,
/// uptime}` over the last N×24 hours, for a monitor shown on a published page; `uptime`
/// is null without results.
pub async fn uptime(call: &Call<'_>) -> Result<Reply, ApiError> {
    let days = match call
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "days")
        .map(|(_, v)| v)
    {
        None => 30,
        Some(v) => match v.parse::<u32>() {
            Ok(d) if (1..=MAX_DAYS).contains(&d) => d,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "days must be a whole number from 1 to {MAX_DAYS}"
                )));
            }
        },
    };
    let site = site(call).await?;
    let m = pick(call, site.model.monitors())?;
    let _permit = permit(call)?;
    let now = Utc::now();
    let uptime = call
        .ctx
        .store
        .rollup(
            m.namespace(),
            m.name(),
            now - Duration::days(i64::from(days)),
            now,
        )
        .await
        .map_err(store_error)?
        .uptime_percent()
        .map(round2);
    Ok(crate::admin::error::json_reply(
        StatusCode::OK,
        &serde_json::json!({"monitor": m.key(), "days": days, "uptime": uptime}),
    ))
}
