//! The agent's objects (layout v1 of `kubekuma_crds::objects`) as typed values: the
//! public catalog, the current state, the results seen from the agent's location,
//! today's hourly rollups, this month's daily rollups and this month's incidents. [`build`] derives them from the catalog, the live view and
//! SQLite; [`AgentObjects::encode`] turns them into the keys and bytes a flush queues.
//! The twins of the admin API read the typed values directly.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kubekuma_crds::MonitorState;
use kubekuma_crds::objects::{
    self, AgentCatalog, AgentResults, AgentState, DailyMonth, HourlyDay, IncidentMonth, MonitorNow,
    keys,
};

use super::catalog::{in_maintenance, public_catalog_with};
use crate::catalog::{ObjKey, Snapshot};
use crate::state::live::{Live, LiveMonitor};
use crate::store::{Store, StoreError};

/// Why the objects could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// SQLite could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The live view's lock was poisoned by a panic.
    #[error("live state poisoned")]
    LivePoisoned,
}

/// The location of an agent given manifests when `--location` is not set.
pub const DEFAULT_LOCATION: &str = "home";

/// The objects of one flush.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentObjects {
    /// Pages, monitors, maintenance windows and silences (`catalog.json`).
    pub catalog: AgentCatalog,
    /// Every monitor's current state (`state.json`).
    pub state: AgentState,
    /// Every monitor's latest result at this agent's location (`results.json`).
    pub results: AgentResults,
    /// Today's hourly rollups.
    pub hourly: HourlyDay,
    /// This month's daily rollups.
    pub daily: DailyMonth,
    /// This month's incidents.
    pub incidents: IncidentMonth,
}

impl AgentObjects {
    /// The objects as `(key, JSON bytes)`, in the order catalog, state, results, hourly,
    /// daily, incidents.
    pub fn encode(&self) -> serde_json::Result<Vec<(String, Vec<u8>)>> {
        let agent_id = &self.catalog.agent_id;
        let day = self.hourly.day;
        Ok(vec![
            (keys::catalog(agent_id), serde_json::to_vec(&self.catalog)?),
            (keys::state(agent_id), serde_json::to_vec(&self.state)?),
            (keys::results(agent_id), serde_json::to_vec(&self.results)?),
            (
                keys::hourly(agent_id, day),
                serde_json::to_vec(&self.hourly)?,
            ),
            (
                keys::daily(agent_id, day.year(), day.month()),
                serde_json::to_vec(&self.daily)?,
            ),
            (
                keys::incidents(agent_id, day.year(), day.month()),
                serde_json::to_vec(&self.incidents)?,
            ),
        ])
    }
}

/// The catalog and the current state of agent `agent_id` at `now`, without history (the
/// twins read the history over wider ranges themselves).
pub async fn current(
    agent_id: &str,
    snapshot: &Snapshot,
    store: &Store,
    live: &Mutex<Live>,
    now: DateTime<Utc>,
) -> Result<(AgentCatalog, AgentState), ObjectsError> {
    let api_silences: BTreeMap<ObjKey, kubekuma_crds::Silence> =
        match store.active_api_silences(now).await {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the admin API's silences for the catalog");
                Default::default()
            }
        };
    let catalog = public_catalog_with(snapshot, &api_silences, agent_id, now);
    let state = state(agent_id, snapshot, store, live, now).await?;
    Ok((catalog, state))
}

/// Build the objects of agent `agent_id` at `location` at `now`: catalog, state,
/// results, today's hourly rollups, this month's daily rollups and this month's
/// incidents.
pub async fn build(
    agent_id: &str,
    location: &str,
    snapshot: &Snapshot,
    store: &Store,
    live: &Mutex<Live>,
    now: DateTime<Utc>,
) -> Result<AgentObjects, ObjectsError> {
    let (mut catalog, mut state) = current(agent_id, snapshot, store, live, now).await?;
    catalog.location = Some(location.to_string());
    state.location = Some(location.to_string());
    let results = AgentResults::of_state(&state, location);

    let day = now.date_naive();
    let day_start = start_of(day);
    let hourly = store
        .hourly_rollups(day_start, day_start + Duration::days(1))
        .await?;
    let hourly = HourlyDay {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        day,
        monitors: hourly
            .into_iter()
            .map(|(m, buckets)| {
                let hours = buckets
                    .into_iter()
                    .map(|(start_ms, r)| {
                        (
                            ((start_ms - day_start.timestamp_millis()) / 3_600_000) as u8,
                            r,
                        )
                    })
                    .collect();
                (m, hours)
            })
            .collect(),
    };

    let month_start = start_of(day.with_day(1).unwrap_or(day));
    let next_month = if day.month() == 12 {
        NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(day.year(), day.month() + 1, 1)
    };
    let next_month = start_of(next_month.unwrap_or(day));
    let daily = store.daily_rollups(month_start, next_month).await?;
    let month = month_name(day);
    let daily = DailyMonth {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        month: month.clone(),
        monitors: daily
            .into_iter()
            .map(|(m, buckets)| {
                let days = buckets
                    .into_iter()
                    .filter_map(|(start_ms, r)| {
                        DateTime::from_timestamp_millis(start_ms).map(|d| (d.day() as u8, r))
                    })
                    .collect();
                (m, days)
            })
            .collect(),
    };

    let incidents = IncidentMonth {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        month,
        incidents: store.incidents_between(month_start, next_month).await?,
    };
    Ok(AgentObjects {
        catalog,
        state,
        results,
        hourly,
        daily,
        incidents,
    })
}

/// Midnight UTC of `day`.
pub fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The `YYYY-MM` of `day`'s month, as the monthly objects are named.
pub fn month_name(day: NaiveDate) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

/// Every monitor of the catalog as it is now: its shown state, last result, maintenance
/// and the last 24 hours of latency.
async fn state(
    agent_id: &str,
    snapshot: &Snapshot,
    store: &Store,
    live: &Mutex<Live>,
    now: DateTime<Utc>,
) -> Result<AgentState, ObjectsError> {
    let in_maintenance = in_maintenance(snapshot, now);
    let mut monitors = BTreeMap::new();
    let since = now - Duration::hours(24);
    let entries: Vec<(ObjKey, Option<LiveMonitor>)> = {
        let l = live.lock().map_err(|_| ObjectsError::LivePoisoned)?;
        snapshot
            .monitors
            .keys()
            .map(|k| (k.clone(), l.monitors.get(k).cloned()))
            .collect()
    };
    for (k, m) in entries {
        let paused = snapshot
            .monitors
            .get(&k)
            .is_some_and(|m| !m.spec.is_enabled());
        let recent = store
            .recent_latency(&k.namespace, &k.name, since, Duration::minutes(10))
            .await
            .unwrap_or_default();
        let now_state = MonitorNow {
            state: if paused {
                MonitorState::Paused
            } else {
                m.as_ref()
                    .map(|m| m.tracker.shown())
                    .unwrap_or(MonitorState::Pending)
            },
            since: m.as_ref().and_then(|m| m.tracker.since),
            checked_at: m.as_ref().and_then(|m| m.checked_at),
            latency_ms: m.as_ref().and_then(|m| m.latency_ms),
            reason: m.as_ref().and_then(|m| m.reason),
            cert_days_left: m
                .as_ref()
                .and_then(|m| m.cert.as_ref())
                .map(|c| c.days_left),
            maintenance: in_maintenance.contains(&k),
            recent,
        };
        monitors.insert(objects::monitor_key(&k.namespace, &k.name), now_state);
    }
    Ok(AgentState {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        location: None,
        generated_at: now,
        monitors,
    })
}
