//! Reading the locations: every agent's `results.json` from the shared store, fetched
//! only when its version (ETag, else modification time, with its size) changed, and the
//! latest result per (location, monitor). Several agents of one location (replicas)
//! count as one: for each monitor the result of the agent with the newest `generatedAt`
//! wins. The consensus (`crate::alerting::consensus`) reads what this keeps; nothing in
//! the agent calls it yet (see `alerting/CONSENSUS.md`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kubekuma_crds::objects::{AgentResults, LocationResult, keys};
use kubekuma_crds::store::{ExportError, ObjectTarget};

/// One location's latest result of one monitor, and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// The agent that wrote it.
    pub agent_id: String,
    /// When that agent wrote its `results.json`.
    pub generated_at: DateTime<Utc>,
    /// The result.
    pub result: LocationResult,
}

/// What one [`Locations::refresh`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Refresh {
    /// `results.json` objects fetched (new or changed).
    pub fetched: usize,
    /// Objects that would not parse, as `(key, reason)`: the agent's previous results
    /// are kept.
    pub broken: Vec<(String, String)>,
    /// Agents whose `results.json` is gone (their results are dropped).
    pub gone: Vec<String>,
}

/// The agents' latest results, kept across refreshes.
#[derive(Debug, Default)]
pub struct Locations {
    /// Per agent: the version tag of its `results.json` and what it said (absent when
    /// the object never parsed).
    agents: BTreeMap<String, (String, Option<AgentResults>)>,
    /// Requests made so far: (LIST, GET), for tests and the request figures.
    pub requests: (u64, u64),
}

impl Locations {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Locations::default()
    }

    /// List the agents' prefix (one LIST request per 1,000 objects) and GET each
    /// `results.json` whose version changed since the last refresh. A listing that fails
    /// is an error and changes nothing; an object that fails to parse is reported in
    /// [`Refresh::broken`] and the agent's previous results stay.
    pub async fn refresh(&mut self, source: &ObjectTarget) -> Result<Refresh, ExportError> {
        let prefix = keys::agents();
        let listed = source.list_versions(&prefix).await?;
        self.requests.0 += 1;
        let current: BTreeMap<String, String> = listed
            .into_iter()
            .filter_map(|(key, size, tag)| {
                let agent = key.strip_prefix(&prefix)?.strip_suffix("/results.json")?;
                (!agent.contains('/')).then(|| (agent.to_string(), format!("{size}:{tag}")))
            })
            .collect();
        let mut report = Refresh::default();
        let before: Vec<String> = self.agents.keys().cloned().collect();
        for agent in before {
            if !current.contains_key(&agent) {
                self.agents.remove(&agent);
                report.gone.push(agent);
            }
        }
        for (agent, version) in current {
            if self.agents.get(&agent).is_some_and(|(v, _)| *v == version) {
                continue;
            }
            let key = keys::results(&agent);
            self.requests.1 += 1;
            let Some(body) = source.get(&key).await? else {
                // Deleted between the listing and the read: seen at the next listing.
                continue;
            };
            report.fetched += 1;
            let previous = self.agents.remove(&agent).and_then(|(_, r)| r);
            let parsed = serde_json::from_slice::<AgentResults>(&body)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    if r.agent_id == agent {
                        Ok(r)
                    } else {
                        Err(format!(
                            "written by agent {:?}, found under agent {agent:?}",
                            r.agent_id
                        ))
                    }
                });
            let kept = match parsed {
                Ok(r) => Some(r),
                Err(e) => {
                    report.broken.push((key, e));
                    previous
                }
            };
            self.agents.insert(agent, (version, kept));
        }
        Ok(report)
    }

    /// The latest result per location, then per monitor (`namespace/name`): among the
    /// agents of one location, the one with the newest `generatedAt` that has the
    /// monitor (on a tie, the greater agent id).
    pub fn latest(&self) -> BTreeMap<String, BTreeMap<String, Seen>> {
        let mut out: BTreeMap<String, BTreeMap<String, Seen>> = BTreeMap::new();
        for r in self.agents.values().filter_map(|(_, r)| r.as_ref()) {
            let by_monitor = out.entry(r.location.clone()).or_default();
            for (monitor, result) in &r.monitors {
                let newer = by_monitor.get(monitor).is_none_or(|s| {
                    (r.generated_at, r.agent_id.as_str()) > (s.generated_at, s.agent_id.as_str())
                });
                if newer {
                    by_monitor.insert(
                        monitor.clone(),
                        Seen {
                            agent_id: r.agent_id.clone(),
                            generated_at: r.generated_at,
                            result: result.clone(),
                        },
                    );
                }
            }
        }
        out
    }

    /// Every location some agent reports, in name order.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .agents
            .values()
            .filter_map(|(_, r)| r.as_ref().map(|r| r.location.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
