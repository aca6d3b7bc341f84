//! The dynamic twins of the static outputs, public like the static site:
//! `GET /status/{slug}` (the builder's `status.json`), `GET /badge/{slug}/{monitor}`
//! (the builder's status badge as SVG; `?kind=uptime-24h|…` for the others) and
//! `GET /uptime/{monitor}?days=N`. They are computed from this agent's store and catalog
//! through the builder's own model and renderers: the objects this agent would export
//! become the builder's inputs (90 days of daily rollups and incidents, two days of
//! hourly ones), so the answers equal what a build of this agent alone would publish.
//! Only monitors shown on a published page are answered for, as on the static site.
//! The model is kept for [`TTL`].

use std::collections::BTreeMap;
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

use super::{Call, store_error};
use crate::admin::error::{ApiError, Reply, json_reply};
use crate::export::objects::{self as agent_objects, month_name, start_of};
use crate::store::Store;

/// How long a computed model answers the twins.
pub const TTL: StdDuration = StdDuration::from_secs(5);
/// The agent ID the local inputs carry.
const LOCAL: &str = "local";
/// Largest `days` of `/uptime`.
pub const MAX_DAYS: u32 = 365;

/// The twins' caches: the site model and the badge renderer.
#[derive(Default)]
pub struct Twins {
    site: Mutex<Option<(Instant, Arc<Model>)>>,
    badges: OnceLock<Option<Badges>>,
}

impl std::fmt::Debug for Twins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twins").finish_non_exhaustive()
    }
}

/// The builder's inputs from this agent alone, as its objects would be at `now`.
async fn local_inputs(call: &Call<'_>, now: DateTime<Utc>) -> Result<Inputs, ApiError> {
    let ctx = call.ctx;
    let snapshot = ctx.catalog.borrow().clone();
    let (catalog, state) = agent_objects::current(LOCAL, &snapshot, &ctx.store, &ctx.live, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "twins: local objects");
            ApiError::internal("the status could not be computed")
        })?;

    let today = now.date_naive();
    let first = today - Duration::days(HISTORY_DAYS - 1);
    let from = start_of(first.with_day(1).unwrap_or(first));
    let to = start_of(today + Duration::days(1));

    let hourly = hourly_days(&ctx.store, start_of(today - Duration::days(1)), to).await?;
    let daily = daily_months(&ctx.store, from, to).await?;
    let incidents = incident_months(&ctx.store, from, to, today).await?;

    Ok(Inputs {
        agents: vec![AgentData {
            id: LOCAL.into(),
            catalog,
            state: Some(state),
            hourly,
            daily,
            incidents,
        }],
        warnings: Vec::new(),
    })
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

/// The site model of this agent (cached for [`TTL`]).
async fn site(call: &Call<'_>) -> Result<Arc<Model>, ApiError> {
    if let Some((at, s)) = call
        .twins
        .site
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        && at.elapsed() < TTL
    {
        return Ok(s.clone());
    }
    let now = Utc::now();
    let inputs = local_inputs(call, now).await?;
    let site = Arc::new(Model::new(&inputs, now));
    *call.twins.site.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((Instant::now(), site.clone()));
    Ok(site)
}

/// Forget the cached model (the next twin request computes it again).
pub fn invalidate(twins: &Twins) {
    *twins.site.lock().unwrap_or_else(|p| p.into_inner()) = None;
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
    let page = page(&site, call.params.get("slug"))?;
    Ok(json_reply(StatusCode::OK, &page.status_json()))
}

/// `GET /badge/{slug}/{monitor}?kind=status|uptime-24h|uptime-7d|uptime-30d|uptime-90d|response-time|cert`:
/// the SVG badge of a monitor of a page that publishes per-monitor badges.
pub async fn badge(call: &Call<'_>) -> Result<Reply, ApiError> {
    let site = site(call).await?;
    let page = page(&site, call.params.get("slug"))?;
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
    let renderer = call.twins.badges.get_or_init(|| Badges::new().ok());
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
    let m = pick(call, site.monitors())?;
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
    Ok(json_reply(
        StatusCode::OK,
        &serde_json::json!({"monitor": m.key(), "days": days, "uptime": uptime}),
    ))
}
