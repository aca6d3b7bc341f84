//! Incidents as the admin API asks for them: one by ID, or filtered by monitor, state and
//! start time.

use chrono::{DateTime, Utc};
use kubekuma_crds::results::Incident;

use super::convert::ms;
use super::{Store, StoreError};

/// Which incidents [`Store::find_incidents`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    /// Only this monitor (namespace, name).
    pub monitor: Option<(String, String)>,
    /// `Some(true)`: only open ones; `Some(false)`: only resolved ones.
    pub open: Option<bool>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Started before.
    pub until: Option<DateTime<Utc>>,
}

impl Store {
    /// One incident with its updates.
    pub async fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::incidents::by_id(pg, id)).await;
        }
        self.read(move |c| {
            Ok(super::incidents::load(c, "id = ?1", &[&id])?
                .into_iter()
                .next())
        })
        .await
    }

    /// Incidents matching `filter`, oldest first, with their updates.
    pub async fn find_incidents(
        &self,
        filter: IncidentFilter,
    ) -> Result<Vec<Incident>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::incidents::find(pg, &filter)).await;
        }
        self.read(move |c| {
            let (ns, name) = filter.monitor.clone().unzip();
            let open = filter.open.map(i64::from);
            let since = filter.since.map(ms);
            let until = filter.until.map(ms);
            super::incidents::load(
                c,
                "(?1 IS NULL OR (monitor_namespace = ?1 AND monitor_name = ?2))
                 AND (?3 IS NULL OR (?3 = 1 AND ended_at IS NULL) OR (?3 = 0 AND ended_at IS NOT NULL))
                 AND (?4 IS NULL OR started_at >= ?4)
                 AND (?5 IS NULL OR started_at < ?5)",
                &[&ns, &name, &open, &since, &until],
            )
        })
        .await
    }
}
