//! Numbered schema migrations: migration N is `MIGRATIONS[N - 1]`, applied once, in its
//! own transaction, and recorded in `schema_migrations`. Append only: never edit or
//! reorder a migration that has shipped; change the schema with a new one.
//!
//! Conventions: times are INTEGER unix milliseconds (UTC), booleans INTEGER 0/1, JSON
//! TEXT, columns snake_case as in the design spec.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// Every migration, oldest first.
pub const MIGRATIONS: &[&str] = &[
    // 1: what the agent itself reads and writes.
    r#"
-- One row per check result. Clustered on (monitor, time) without a rowid: the primary
-- key is the index, so a heartbeat costs one b-tree entry (one per monitor per
-- millisecond; a second result in the same millisecond replaces the first).
CREATE TABLE heartbeats (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  checked_at INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('up', 'down', 'pending', 'flapping', 'paused')),
  latency_ms REAL,
  reason TEXT,
  message TEXT,
  attempts INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (monitor_namespace, monitor_name, checked_at)
) WITHOUT ROWID;

-- Downsampled heartbeats. latency_* describe up and flapping results with a latency;
-- latency_count is how many, so averages merge exactly.
CREATE TABLE heartbeat_rollups (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  resolution TEXT NOT NULL CHECK (resolution IN ('hour')),
  bucket_start INTEGER NOT NULL,
  up INTEGER NOT NULL DEFAULT 0,
  down INTEGER NOT NULL DEFAULT 0,
  flapping INTEGER NOT NULL DEFAULT 0,
  pending INTEGER NOT NULL DEFAULT 0,
  paused INTEGER NOT NULL DEFAULT 0,
  maintenance INTEGER NOT NULL DEFAULT 0,
  latency_count INTEGER NOT NULL DEFAULT 0,
  latency_min REAL,
  latency_avg REAL,
  latency_p95 REAL,
  latency_max REAL,
  PRIMARY KEY (monitor_namespace, monitor_name, resolution, bucket_start)
) WITHOUT ROWID;

-- AUTOINCREMENT: incident IDs are published, so a deleted ID is never reused.
CREATE TABLE incidents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('up', 'down')),
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  duration INTEGER,
  reason TEXT,
  suppressed INTEGER NOT NULL DEFAULT 0,
  suppress_reason TEXT,
  acknowledged INTEGER NOT NULL DEFAULT 0,
  acknowledged_at INTEGER,
  acknowledged_by TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX idx_incidents_monitor ON incidents (monitor_namespace, monitor_name, started_at);
CREATE INDEX idx_incidents_started ON incidents (started_at);
CREATE INDEX idx_incidents_open ON incidents (started_at) WHERE ended_at IS NULL;

CREATE TABLE incident_updates (
  id INTEGER PRIMARY KEY,
  incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
  at INTEGER NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX idx_incident_updates_incident ON incident_updates (incident_id, at);

-- The state machine's memory, so a restart neither re-alerts nor forgets an incident.
CREATE TABLE monitor_state (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('up', 'down', 'pending', 'flapping', 'paused')),
  since INTEGER,
  last_checked_at INTEGER,
  consecutive_failures INTEGER NOT NULL DEFAULT 0,
  open_incident_id INTEGER REFERENCES incidents (id) ON DELETE SET NULL,
  cert_expires_at INTEGER,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (monitor_namespace, monitor_name)
);

-- Materialised copy of the KubeKuma resources. Never Secrets: the store refuses the
-- kind, and so does this CHECK.
CREATE TABLE crd_cache (
  kind TEXT NOT NULL CHECK (lower(kind) <> 'secret'),
  api_version TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  generation INTEGER NOT NULL DEFAULT 1,
  resource_version TEXT,
  spec TEXT,
  status TEXT,
  labels TEXT,
  annotations TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  deleted_at INTEGER,
  PRIMARY KEY (kind, namespace, name)
);

-- The latest body of each object key still to be uploaded.
CREATE TABLE export_outbox (
  key TEXT PRIMARY KEY,
  body BLOB NOT NULL,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);

-- Small named counters of the store itself (the outbox version sequence).
CREATE TABLE store_meta (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
"#,
    // 2: the spec's remaining tables, used by later features (auth, alerting, audit).
    r#"
CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  username TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
  token_hash TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  ip_address TEXT,
  user_agent TEXT
);
CREATE INDEX idx_sessions_user ON sessions (user_id);
CREATE INDEX idx_sessions_token ON sessions (token_hash);

CREATE TABLE notification_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  incident_id INTEGER REFERENCES incidents (id) ON DELETE CASCADE,
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  policy_name TEXT NOT NULL,
  provider_name TEXT NOT NULL,
  provider_type TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'deduped')),
  attempts INTEGER NOT NULL DEFAULT 0,
  last_attempt_at INTEGER,
  last_error TEXT,
  metadata TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX idx_deliveries_incident ON notification_deliveries (incident_id);
CREATE INDEX idx_deliveries_status ON notification_deliveries (status);

CREATE TABLE silences (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  silence_namespace TEXT NOT NULL,
  silence_name TEXT NOT NULL,
  starts_at INTEGER NOT NULL,
  ends_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (silence_namespace, silence_name)
);

CREATE TABLE maintenance_windows (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  window_namespace TEXT NOT NULL,
  window_name TEXT NOT NULL,
  description TEXT,
  schedule TEXT NOT NULL,
  duration_minutes INTEGER NOT NULL,
  next_occurrence_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (window_namespace, window_name)
);

CREATE TABLE audit_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  resource_type TEXT NOT NULL,
  resource_key TEXT NOT NULL,
  event_type TEXT NOT NULL,
  actor TEXT,
  details TEXT,
  changes_summary TEXT,
  timestamp INTEGER NOT NULL
);
CREATE INDEX idx_audit_resource ON audit_events (resource_type, resource_key, timestamp);
"#,
    // 3: push monitors. The token generated for a push monitor without
    // spec.target.push.token (a credential: never logged, never exported) and the time of
    // its last push, so that a restart keeps the push URL and the deadline.
    r#"
CREATE TABLE push_monitors (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  generated_token TEXT,
  last_push_at INTEGER,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (monitor_namespace, monitor_name)
);
"#,
    // 4: alerting's delivery outbox (the table of migration 2 was never written: it is
    // rebuilt with the columns the worker needs), the alert gate's memory, the admin
    // API's silences, and the last login / last use of users and API keys.
    r#"
DROP TABLE notification_deliveries;
-- Every notification, recorded before it is sent. `payload` is the route, the event
-- and the rendered message as JSON (no credentials: those are resolved at send time).
CREATE TABLE notification_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  incident_id INTEGER REFERENCES incidents (id) ON DELETE SET NULL,
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  policy_namespace TEXT NOT NULL,
  policy_name TEXT NOT NULL,
  provider_namespace TEXT NOT NULL,
  provider_name TEXT NOT NULL,
  provider_type TEXT NOT NULL,
  event_kind TEXT NOT NULL,
  dedupe_key TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'deduped', 'rate_limited')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER,
  last_attempt_at INTEGER,
  last_error TEXT,
  detail TEXT,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX idx_deliveries_incident ON notification_deliveries (incident_id);
CREATE INDEX idx_deliveries_due ON notification_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX idx_deliveries_provider ON notification_deliveries (provider_namespace, provider_name, created_at);

-- The alert gate (dedupe, rate limit, reminders) as JSON, written in the same
-- transaction as the deliveries it let through.
CREATE TABLE alert_gate_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  state TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);

-- Silences created through the admin API (Silence resources live in the catalog).
CREATE TABLE api_silences (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  silence_namespace TEXT NOT NULL,
  silence_name TEXT NOT NULL,
  spec TEXT NOT NULL,
  created_by TEXT,
  created_at INTEGER NOT NULL,
  expired_at INTEGER,
  updated_at INTEGER NOT NULL,
  UNIQUE (silence_namespace, silence_name)
);

-- Last login of a LocalUser (kind 'user') and last use of an ApiKey (kind 'apikey'),
-- by `namespace/name`.
CREATE TABLE auth_activity (
  kind TEXT NOT NULL CHECK (kind IN ('user', 'apikey')),
  id TEXT NOT NULL,
  last_at INTEGER NOT NULL,
  PRIMARY KEY (kind, id)
);
"#,
    // 5: the login before each session, so `auth/me` shows the previous login rather
    // than the one that made the session (NULL: the user's first login, or a session
    // made before this migration).
    r#"
ALTER TABLE sessions ADD COLUMN previous_login_at INTEGER;
"#,
    // 6: daily rollups (`retention.downsample.resolution: daily`). SQLite cannot change a
    // CHECK constraint in place: the table is rebuilt with the wider one and its rows copied.
    r#"
CREATE TABLE heartbeat_rollups_v2 (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  resolution TEXT NOT NULL CHECK (resolution IN ('hour', 'day')),
  bucket_start INTEGER NOT NULL,
  up INTEGER NOT NULL DEFAULT 0,
  down INTEGER NOT NULL DEFAULT 0,
  flapping INTEGER NOT NULL DEFAULT 0,
  pending INTEGER NOT NULL DEFAULT 0,
  paused INTEGER NOT NULL DEFAULT 0,
  maintenance INTEGER NOT NULL DEFAULT 0,
  latency_count INTEGER NOT NULL DEFAULT 0,
  latency_min REAL,
  latency_avg REAL,
  latency_p95 REAL,
  latency_max REAL,
  PRIMARY KEY (monitor_namespace, monitor_name, resolution, bucket_start)
) WITHOUT ROWID;
INSERT INTO heartbeat_rollups_v2 SELECT
  monitor_namespace, monitor_name, resolution, bucket_start, up, down, flapping, pending,
  paused, maintenance, latency_count, latency_min, latency_avg, latency_p95, latency_max
  FROM heartbeat_rollups;
DROP TABLE heartbeat_rollups;
ALTER TABLE heartbeat_rollups_v2 RENAME TO heartbeat_rollups;
"#,
    // 7: delivery claims (several agents on one database): who is sending a pending row
    // and until when (unix ms; an expired claim means its sender stopped mid-send), and
    // how many claims in a row expired since the row's last recorded attempt.
    r#"
ALTER TABLE notification_deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE notification_deliveries ADD COLUMN claimed_until INTEGER;
ALTER TABLE notification_deliveries ADD COLUMN orphaned INTEGER NOT NULL DEFAULT 0;
"#,
];

/// Why migrating failed.
#[derive(Debug)]
pub(crate) enum MigrateError {
    /// The database was migrated by a newer agent.
    Newer { found: i64, known: i64 },
    /// Migration `version` (0 for the bookkeeping table) failed.
    Sql {
        version: i64,
        source: rusqlite::Error,
    },
}

/// Bring the schema up to date; returns how many migrations were applied.
pub(crate) fn migrate(conn: &mut Connection, now_ms: i64) -> Result<usize, MigrateError> {
    let sql = |version: i64| move |source| MigrateError::Sql { version, source };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
           version INTEGER PRIMARY KEY,
           applied_at INTEGER NOT NULL
         )",
    )
    .map_err(sql(0))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let found: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sql(0))?;
    if found > known {
        return Err(MigrateError::Newer { found, known });
    }
    let mut applied = 0;
    for (version, migration) in (1..).zip(MIGRATIONS.iter()) {
        if version <= found {
            continue;
        }
        // IMMEDIATE takes the write lock first, so two processes opening the same file
        // at once apply each migration exactly once.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(version))?;
        let done = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [version],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql(version))?
            .is_some();
        if !done {
            tx.execute_batch(migration).map_err(sql(version))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now_ms],
            )
            .map_err(sql(version))?;
            applied += 1;
        }
        tx.commit().map_err(sql(version))?;
    }
    Ok(applied)
}
