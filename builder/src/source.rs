//! Reading what agents wrote: every agent's catalog, state, rollups and incidents from an
//! object store laid out as `kubekuma_crds::objects` (layout v1).
//!
//! One agent's broken or missing object never stops a build: it is reported as a
//! warning naming the key and the cause, and the rest is used.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kubekuma_crds::objects::{
    AgentCatalog, AgentState, DailyMonth, HourlyDay, IncidentMonth, LAYOUT, keys,
};
use kubekuma_crds::store::{ExportError, ObjectTarget};
use serde::de::DeserializeOwned;

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
    pub hourly: BTreeMap<NaiveDate, HourlyDay>,
    /// Daily rollups by `YYYY-MM` (the months the history covers).
    pub daily: BTreeMap<String, DailyMonth>,
    /// Incidents by `YYYY-MM`.
    pub incidents: BTreeMap<String, IncidentMonth>,
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

/// Read every agent under the source. `now` chooses which days and months are read;
/// `None` means "the time of the data", found from the agents' state objects.
pub async fn load(
    source: &ObjectTarget,
    now: Option<DateTime<Utc>>,
) -> Result<Inputs, SourceError> {
    let mut inputs = Inputs::default();
    let keys_found = source.list(&keys::agents()).await?;
    let mut ids: Vec<String> = keys_found
        .iter()
        .filter_map(|k| k.strip_prefix(&keys::agents()))
        .filter_map(|rest| rest.split_once('/').map(|(id, _)| id.to_string()))
        .collect();
    ids.dedup();

    let mut partial = Vec::new();
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
        let state = read_json::<AgentState>(source, &keys::state(&id), &mut inputs.warnings).await;
        partial.push((id, catalog, state));
    }

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
        for (what, key) in wanted {
            match source.get(&key).await {
                Ok(None) => {}
                Ok(Some(bytes)) => fetched.push((what, key, bytes)),
                Err(e) => inputs.warnings.push(e.to_string()),
            }
        }
        let parsed = off_runtime(move || par_map(&fetched, parse_history)).await?;
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
    Ok(inputs)
}

/// One fetched history object, parsed; `Err` is the warning naming the key and cause.
fn parse_history((what, key, bytes): &(History, String, bytes::Bytes)) -> Result<Parsed, String> {
    let bad = |e: serde_json::Error| format!("{key}: not a valid object of layout {LAYOUT}: {e}");
    match what {
        History::Hourly(day) => serde_json::from_slice(bytes)
            .map(|h| Parsed::Hourly(*day, h))
            .map_err(bad),
        History::Daily(month) => serde_json::from_slice(bytes)
            .map(|d| Parsed::Daily(month.clone(), d))
            .map_err(bad),
        History::Incidents(month) => serde_json::from_slice(bytes)
            .map(|i| Parsed::Incidents(month.clone(), i))
            .map_err(bad),
    }
}

/// Which history object a key holds.
enum History {
    Hourly(NaiveDate),
    Daily(String),
    Incidents(String),
}

/// A parsed history object.
enum Parsed {
    Hourly(NaiveDate, HourlyDay),
    Daily(String, DailyMonth),
    Incidents(String, IncidentMonth),
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
