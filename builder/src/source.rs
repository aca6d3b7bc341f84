//! Reading what agents wrote: every agent's catalog, state, rollups and incidents from an
//! object store laid out as `kubekuma_crds::objects` (layout v1).
//!
//! One agent's broken or missing object never stops a build: it is reported as a
//! warning naming the key and the cause, and the rest is used.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kubekuma_crds::objects::{
    AgentCatalog, AgentState, DailyMonth, HourlyDay, IncidentMonth, LAYOUT, MonitorNow, keys,
};
use kubekuma_crds::store::{ExportError, ObjectTarget};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::par::{Cancelled, off_runtime, par_map};

/// Why the source could not be read (one agent's broken objects are warnings instead).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not be listed (names the prefix and the store).
    #[error(transparent)]
    Store(#[from] ExportError),
    /// Parsing on the blocking pool was cancelled.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

/// Days of history a page shows (the 90-day strip, the incident history).
pub const HISTORY_DAYS: i64 = 90;

/// Everything one agent published that a build uses.
#[derive(Clone, Debug)]
pub struct AgentData {
    /// The agent id (its sub-prefix).
    pub id: String,
    /// Its public catalog.
    pub catalog: AgentCatalog,
    /// Current state of its monitors; `None` before its first flush.
    pub state: Option<AgentState>,
    /// Hourly rollups by day (the last two days).
    pub hourly: BTreeMap<NaiveDate, Arc<HourlyDay>>,
    /// Daily rollups by `YYYY-MM` (the months the history covers).
    pub daily: BTreeMap<String, Arc<DailyMonth>>,
    /// Incidents by `YYYY-MM`.
    pub incidents: BTreeMap<String, Arc<IncidentMonth>>,
}

/// History objects parsed by earlier builds of the same builder, by key, with the size
/// and version tag the listing gave them: an object listed with the same size and tag
/// is not read or parsed again (a watching builder keeps it; a fresh process starts
/// without one).
#[derive(Default)]
pub struct ReadCache {
    objects: HashMap<String, (u64, String, Parsed)>,
    /// Each agent's monitors from its last state object, by agent id then monitor key:
    /// the entry's JSON text and its parse. An entry whose text is the same in the next
    /// state object is taken as parsed then (a state object changes a few monitors at a
    /// time, and parsing all of them is the bulk of reading it).
    monitors: HashMap<String, HashMap<String, (Box<str>, MonitorNow)>>,
}

/// The inputs of one build.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Agents in id order.
    pub agents: Vec<AgentData>,
    /// Problems met while reading (unreadable or malformed objects), one line each.
    pub warnings: Vec<String>,
}

impl Inputs {
    /// The time of the data: the newest state any agent wrote (else the newest catalog).
    pub fn data_time(&self) -> Option<DateTime<Utc>> {
        let states = self
            .agents
            .iter()
            .filter_map(|a| a.state.as_ref().map(|s| s.generated_at));
        states
            .max()
            .or_else(|| self.agents.iter().map(|a| a.catalog.generated_at).max())
    }
}

/// Every object under the agents' prefix as (key, size, version tag), sorted.
pub async fn list(source: &ObjectTarget) -> Result<Vec<(String, u64, String)>, ExportError> {
    source.list_versions(&keys::agents()).await
}

/// The SHA-256 of a listing (keys, sizes, version tags): equal digests mean nothing was
/// written since.
pub fn listing_digest(listed: &[(String, u64, String)]) -> String {
    let mut h = Sha256::new();
    for (key, size, tag) in listed {
        h.update(key.as_bytes());
        h.update(size.to_le_bytes());
        h.update(tag.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())
}

/// Read every agent of `listed` (a [`list`] of the source). `now` chooses which days
/// and months are read; `None` means "the time of the data", found from the agents'
/// state objects.
///
/// Only agents in the listing are read, and every object read was written no earlier
/// than the listing saw it, so a build whose fingerprint is the listing's never shows
/// older data than the listing describes.
pub async fn load(
    source: &ObjectTarget,
    listed: &[(String, u64, String)],
    now: Option<DateTime<Utc>>,
    cache: &mut ReadCache,
) -> Result<Inputs, SourceError> {
    let mut inputs = Inputs::default();
    let versions: HashMap<&str, (u64, &str)> = listed
        .iter()
        .map(|(k, size, tag)| (k.as_str(), (*size, tag.as_str())))
        .collect();
    let mut next_cache = HashMap::new();
    let mut ids: Vec<String> = listed
        .iter()
        .filter_map(|(k, _, _)| k.strip_prefix(&keys::agents()))
        .filter_map(|rest| rest.split_once('/').map(|(id, _)| id.to_string()))
        .collect();
    ids.dedup();

    let mut partial = Vec::new();
    let mut next_monitors = HashMap::new();
    for id in ids {
        let Some(catalog) =
            read_json::<AgentCatalog>(source, &keys::catalog(&id), &mut inputs.warnings).await
        else {
            continue;
        };
        if catalog.layout != LAYOUT {
            inputs.warnings.push(format!(
                "{}: layout {:?} is not {LAYOUT}; agent {id} skipped",
                keys::catalog(&id),
                catalog.layout
            ));
            continue;
        }
        let previous = cache.monitors.remove(&id).unwrap_or_default();
        let state = match read_state(source, &keys::state(&id), previous).await {
            Ok(Some((state, monitors))) => {
                next_monitors.insert(id.clone(), monitors);
                Some(state)
            }
            Ok(None) => None,
            Err(w) => {
                inputs.warnings.push(w);
                None
            }
        };
        partial.push((id, catalog, state));
    }
    cache.monitors = next_monitors;

    let data_now = now.unwrap_or_else(|| {
        partial
            .iter()
            .filter_map(|(_, c, s)| s.as_ref().map(|s| s.generated_at).or(Some(c.generated_at)))
            .max()
            .unwrap_or_else(Utc::now)
    });
    let today = data_now.date_naive();
    let months = months_back(today, HISTORY_DAYS);

    for (id, catalog, state) in partial {
        let mut agent = AgentData {
            id: id.clone(),
            catalog,
            state,
            hourly: BTreeMap::new(),
            daily: BTreeMap::new(),
            incidents: BTreeMap::new(),
        };
        // Fetched one by one, parsed on all cores off the runtime (the daily months are
        // the bulk).
        let mut fetched: Vec<(History, String, bytes::Bytes)> = Vec::new();
        let mut wanted: Vec<(History, String)> = [today - Duration::days(1), today]
            .into_iter()
            .map(|day| (History::Hourly(day), keys::hourly(&id, day)))
            .collect();
        for &(y, m) in &months {
            let month = format!("{y:04}-{m:02}");
            wanted.push((History::Daily(month.clone()), keys::daily(&id, y, m)));
            wanted.push((History::Incidents(month), keys::incidents(&id, y, m)));
        }
        let mut parsed = Vec::new();
        for (what, key) in wanted {
            let version = versions.get(key.as_str()).copied();
            // Unchanged since the last build: taken as parsed then.
            if let Some((size, tag, p)) = cache.objects.remove(&key)
                && version == Some((size, tag.as_str()))
            {
                parsed.push(Ok(p.clone()));
                next_cache.insert(key, (size, tag, p));
                continue;
            }
            match source.get(&key).await {
                Ok(None) => {}
                Ok(Some(bytes)) => fetched.push((what, key, bytes)),
                Err(e) => inputs.warnings.push(e.to_string()),
            }
        }
        let fetched = off_runtime(move || {
            let parsed = par_map(&fetched, parse_history);
            (fetched, parsed)
        })
        .await?;
        for ((_, key, _), p) in fetched.0.iter().zip(fetched.1) {
            // Remembered with the version listed before it was read: should it have
            // changed in between, the next listing differs and it is read again.
            if let (Ok(p), Some((size, tag))) = (&p, versions.get(key.as_str())) {
                next_cache.insert(key.clone(), (*size, tag.to_string(), p.clone()));
            }
            parsed.push(p);
        }
        for p in parsed {
            match p {
                Ok(Parsed::Hourly(day, h)) => {
                    agent.hourly.insert(day, h);
                }
                Ok(Parsed::Daily(month, d)) => {
                    agent.daily.insert(month, d);
                }
                Ok(Parsed::Incidents(month, i)) => {
                    agent.incidents.insert(month, i);
                }
                Err(w) => inputs.warnings.push(w),
            }
        }
        inputs.agents.push(agent);
    }
    cache.objects = next_cache;
    Ok(inputs)
}

/// One fetched history object, parsed; `Err` is the warning naming the key and cause.
fn parse_history((what, key, bytes): &(History, String, bytes::Bytes)) -> Result<Parsed, String> {
    let bad = |e: serde_json::Error| format!("{key}: not a valid object of layout {LAYOUT}: {e}");
    match what {
        History::Hourly(day) => serde_json::from_slice(bytes)
            .map(|h| Parsed::Hourly(*day, Arc::new(h)))
            .map_err(bad),
        History::Daily(month) => serde_json::from_slice(bytes)
            .map(|d| Parsed::Daily(month.clone(), Arc::new(d)))
            .map_err(bad),
        History::Incidents(month) => serde_json::from_slice(bytes)
            .map(|i| Parsed::Incidents(month.clone(), Arc::new(i)))
            .map_err(bad),
    }
}

/// A state object with each monitor still as its JSON text: [`AgentState`] field for
/// field (built into one by [`read_state`], which names every field, so a field added
/// there fails to compile until it is read here too).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawState<'a> {
    layout: String,
    agent_id: String,
    #[serde(default)]
    location: Option<String>,
    generated_at: DateTime<Utc>,
    #[serde(default, borrow)]
    monitors: BTreeMap<String, &'a RawValue>,
}

/// One monitor's entry of the state object and its parse, kept for the next build.
type KeptMonitors = HashMap<String, (Box<str>, MonitorNow)>;

/// Read and parse an agent's state object. Monitors whose JSON text is the same as in
/// `previous` (the last state object read) are taken as parsed then; the others are
/// parsed on all cores. `Ok(None)`: no state object; `Err`: the warning naming the key
/// and the cause (the object is then not used at all, as a malformed whole).
async fn read_state(
    source: &ObjectTarget,
    key: &str,
    mut previous: KeptMonitors,
) -> Result<Option<(AgentState, KeptMonitors)>, String> {
    let bytes = match source.get(key).await {
        Ok(None) => return Ok(None),
        Ok(Some(bytes)) => bytes,
        Err(e) => return Err(e.to_string()),
    };
    let bad = |e: serde_json::Error| format!("{key}: not a valid object of layout {LAYOUT}: {e}");
    let raw: RawState<'_> = serde_json::from_slice(&bytes).map_err(bad)?;
    let mut kept = HashMap::with_capacity(raw.monitors.len());
    let mut fresh = Vec::new();
    let mut monitors = BTreeMap::new();
    for (name, text) in raw.monitors {
        match previous.remove_entry(&name) {
            Some((name, (old, parsed))) if *old == *text.get() => {
                monitors.insert(name.clone(), parsed.clone());
                kept.insert(name, (old, parsed));
            }
            _ => fresh.push((name, text)),
        }
    }
    let parsed = par_map(&fresh, |(_, text)| {
        serde_json::from_str::<MonitorNow>(text.get())
    });
    for ((name, text), parsed) in fresh.into_iter().zip(parsed) {
        let parsed = parsed.map_err(|e| {
            format!("{key}: not a valid object of layout {LAYOUT}: monitor {name}: {e}")
        })?;
        monitors.insert(name.clone(), parsed.clone());
        kept.insert(name, (Box::from(text.get()), parsed));
    }
    let state = AgentState {
        layout: raw.layout,
        agent_id: raw.agent_id,
        location: raw.location,
        generated_at: raw.generated_at,
        monitors,
    };
    Ok(Some((state, kept)))
}

/// Which history object a key holds.
enum History {
    Hourly(NaiveDate),
    Daily(String),
    Incidents(String),
}

/// A parsed history object.
#[derive(Clone)]
enum Parsed {
    Hourly(NaiveDate, Arc<HourlyDay>),
    Daily(String, Arc<DailyMonth>),
    Incidents(String, Arc<IncidentMonth>),
}

/// (year, month) of every month touched by the `days` days ending `today`, oldest first.
pub fn months_back(today: NaiveDate, days: i64) -> Vec<(i32, u32)> {
    let mut out: Vec<(i32, u32)> = Vec::new();
    let mut d = today - Duration::days(days - 1);
    while d <= today {
        let ym = (d.year(), d.month());
        if out.last() != Some(&ym) {
            out.push(ym);
        }
        d += Duration::days(1);
    }
    out
}

/// An object parsed as JSON; a missing object is `None` silently, an unreadable or
/// malformed one is `None` with a warning that names the key and the cause.
async fn read_json<T: DeserializeOwned>(
    source: &ObjectTarget,
    key: &str,
    warnings: &mut Vec<String>,
) -> Option<T> {
    match source.get(key).await {
        Ok(None) => None,
        Ok(Some(bytes)) => match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                warnings.push(format!("{key}: not a valid object of layout {LAYOUT}: {e}"));
                None
            }
        },
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ninety_days_touch_four_months() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(
            months_back(today, 90),
            vec![(2026, 8), (2026, 9), (2026, 10), (2026, 11)]
        );
        let jan = NaiveDate::from_ymd_opt(2027, 1, 5).unwrap();
        assert_eq!(months_back(jan, 10), vec![(2026, 12), (2027, 1)]);
    }
}
