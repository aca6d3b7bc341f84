//! PostgreSQL's numbered schema migrations, its own sequence (not SQLite's numbers):
//! migration N is `MIGRATIONS[N - 1]`, applied once in its own transaction and recorded
//! in `schema_migrations`, under a transaction-level advisory lock so that replicas
//! starting at once apply each exactly once. Append only.
//!
//! The schema is SQLite's latest (see `store::migrations`), table for table and column
//! for column, with PostgreSQL types: times are BIGINT unix milliseconds (as in
//! SQLite, so both backends share the conversions), booleans BOOLEAN, JSON TEXT (kept
//! byte for byte, as SQLite does: `jsonb` would refuse `\u0000`), ids identity columns
//! that never reuse a value. Which SQLite version each migration catches up with is
//! noted beside it.

use tokio_postgres::Client;

/// The advisory lock key of migrations (any fixed number; "kkmigrat" in ASCII).
pub(crate) const LOCK_KEY: i64 = 0x6b6b_6d69_6772_6174;

/// Every migration, oldest first.
pub const MIGRATIONS: &[&str] = &[
    // 1: SQLite's schema version 4.
    r#"
CREATE TABLE heartbeats (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  checked_at BIGINT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('up', 'down', 'pending', 'flapping', 'paused')),
  latency_ms DOUBLE PRECISION,
  reason TEXT,
  message TEXT,
  attempts BIGINT NOT NULL DEFAULT 1,
  PRIMARY KEY (monitor_namespace, monitor_name, checked_at)
);

CREATE TABLE heartbeat_rollups (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  resolution TEXT NOT NULL CHECK (resolution IN ('hour')),
  bucket_start BIGINT NOT NULL,
  up BIGINT NOT NULL DEFAULT 0,
  down BIGINT NOT NULL DEFAULT 0,
  flapping BIGINT NOT NULL DEFAULT 0,
  pending BIGINT NOT NULL DEFAULT 0,
  paused BIGINT NOT NULL DEFAULT 0,
  maintenance BIGINT NOT NULL DEFAULT 0,
  latency_count BIGINT NOT NULL DEFAULT 0,
  latency_min DOUBLE PRECISION,
  latency_avg DOUBLE PRECISION,
  latency_p95 DOUBLE PRECISION,
  latency_max DOUBLE PRECISION,
  PRIMARY KEY (monitor_namespace, monitor_name, resolution, bucket_start)
);

-- Incident IDs are published: an identity never hands out a deleted ID again.
CREATE TABLE incidents (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('up', 'down')),
  started_at BIGINT NOT NULL,
  ended_at BIGINT,
  duration BIGINT,
  reason TEXT,
  suppressed BOOLEAN NOT NULL DEFAULT FALSE,
  suppress_reason TEXT,
  acknowledged BOOLEAN NOT NULL DEFAULT FALSE,
  acknowledged_at BIGINT,
  acknowledged_by TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX idx_incidents_monitor ON incidents (monitor_namespace, monitor_name, started_at);
CREATE INDEX idx_incidents_started ON incidents (started_at);
CREATE INDEX idx_incidents_open ON incidents (started_at) WHERE ended_at IS NULL;

CREATE TABLE incident_updates (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  incident_id BIGINT NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
  at BIGINT NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX idx_incident_updates_incident ON incident_updates (incident_id, at);

CREATE TABLE monitor_state (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('up', 'down', 'pending', 'flapping', 'paused')),
  since BIGINT,
  last_checked_at BIGINT,
  consecutive_failures BIGINT NOT NULL DEFAULT 0,
  open_incident_id BIGINT REFERENCES incidents (id) ON DELETE SET NULL,
  cert_expires_at BIGINT,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (monitor_namespace, monitor_name)
);

-- Never Secrets: the store refuses the kind, and so does this CHECK.
CREATE TABLE crd_cache (
  kind TEXT NOT NULL CHECK (lower(kind) <> 'secret'),
  api_version TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  generation BIGINT NOT NULL DEFAULT 1,
  resource_version TEXT,
  spec TEXT,
  status TEXT,
  labels TEXT,
  annotations TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  deleted_at BIGINT,
  PRIMARY KEY (kind, namespace, name)
);

-- `seq` keeps the order keys were first queued in (SQLite's rowid).
CREATE TABLE export_outbox (
  key TEXT PRIMARY KEY,
  body BYTEA NOT NULL,
  version BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  seq BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX idx_export_outbox_order ON export_outbox (created_at, seq);

CREATE TABLE store_meta (
  key TEXT PRIMARY KEY,
  value BIGINT NOT NULL
);

CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  username TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
  token_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  ip_address TEXT,
  user_agent TEXT
);
CREATE INDEX idx_sessions_user ON sessions (user_id);
CREATE INDEX idx_sessions_token ON sessions (token_hash);

CREATE TABLE silences (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  silence_namespace TEXT NOT NULL,
  silence_name TEXT NOT NULL,
  starts_at BIGINT NOT NULL,
  ends_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (silence_namespace, silence_name)
);

CREATE TABLE maintenance_windows (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  window_namespace TEXT NOT NULL,
  window_name TEXT NOT NULL,
  description TEXT,
  schedule TEXT NOT NULL,
  duration_minutes BIGINT NOT NULL,
  next_occurrence_at BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (window_namespace, window_name)
);

CREATE TABLE audit_events (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  resource_type TEXT NOT NULL,
  resource_key TEXT NOT NULL,
  event_type TEXT NOT NULL,
  actor TEXT,
  details TEXT,
  changes_summary TEXT,
  timestamp BIGINT NOT NULL
);
CREATE INDEX idx_audit_resource ON audit_events (resource_type, resource_key, timestamp);

CREATE TABLE push_monitors (
  monitor_namespace TEXT NOT NULL,
  monitor_name TEXT NOT NULL,
  generated_token TEXT,
  last_push_at BIGINT,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (monitor_namespace, monitor_name)
);

CREATE TABLE notification_deliveries (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  incident_id BIGINT REFERENCES incidents (id) ON DELETE SET NULL,
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
  attempts BIGINT NOT NULL DEFAULT 0,
  next_attempt_at BIGINT,
  last_attempt_at BIGINT,
  last_error TEXT,
  detail TEXT,
  payload TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX idx_deliveries_incident ON notification_deliveries (incident_id);
CREATE INDEX idx_deliveries_due ON notification_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX idx_deliveries_provider ON notification_deliveries (provider_namespace, provider_name, created_at);
CREATE INDEX idx_deliveries_created ON notification_deliveries (created_at);

CREATE TABLE alert_gate_state (
  id BIGINT PRIMARY KEY CHECK (id = 1),
  state TEXT NOT NULL,
  updated_at BIGINT NOT NULL
);

CREATE TABLE api_silences (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  silence_namespace TEXT NOT NULL,
  silence_name TEXT NOT NULL,
  spec TEXT NOT NULL,
  created_by TEXT,
  created_at BIGINT NOT NULL,
  expired_at BIGINT,
  updated_at BIGINT NOT NULL,
  UNIQUE (silence_namespace, silence_name)
);

CREATE TABLE auth_activity (
  kind TEXT NOT NULL CHECK (kind IN ('user', 'apikey')),
  id TEXT NOT NULL,
  last_at BIGINT NOT NULL,
  PRIMARY KEY (kind, id)
);
"#,
    // 2: SQLite's 5: the login before each session (NULL: the user's first login, or a
    // session made before this migration).
    r#"
ALTER TABLE sessions ADD COLUMN previous_login_at BIGINT;
"#,
    // 3: SQLite's 6: daily rollups (`retention.downsample.resolution: daily`).
    r#"
ALTER TABLE heartbeat_rollups DROP CONSTRAINT heartbeat_rollups_resolution_check;
ALTER TABLE heartbeat_rollups ADD CONSTRAINT heartbeat_rollups_resolution_check
  CHECK (resolution IN ('hour', 'day'));
"#,
    // 4: SQLite's 7: delivery claims (who is sending a pending row and until when, unix
    // ms; how many claims in a row expired since the row's last recorded attempt).
    r#"
ALTER TABLE notification_deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE notification_deliveries ADD COLUMN claimed_until BIGINT;
ALTER TABLE notification_deliveries ADD COLUMN orphaned BIGINT NOT NULL DEFAULT 0;
"#,
];

/// Why migrating failed.
#[derive(Debug)]
pub(crate) enum MigrateError {
    /// The database was migrated by a newer agent.
    Newer { found: i64, known: i64 },
    /// Migration `version` (0 for the bookkeeping) failed.
    Sql {
        version: i64,
        source: tokio_postgres::Error,
    },
}

/// Bring the schema up to date; returns how many migrations this call applied.
pub(crate) async fn migrate(client: &mut Client, now_ms: i64) -> Result<usize, MigrateError> {
    let sql = |version: i64| move |source| MigrateError::Sql { version, source };
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let mut applied = 0;
    for (version, migration) in (1..).zip(MIGRATIONS.iter()) {
        let tx = client.transaction().await.map_err(sql(version))?;
        // Held until commit or rollback: a second replica waits here, then finds the
        // migration recorded.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(sql(0))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
               version BIGINT PRIMARY KEY,
               applied_at BIGINT NOT NULL
             )",
        )
        .await
        .map_err(sql(0))?;
        let found: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )
            .await
            .map_err(sql(0))?
            .get(0);
        if found > known {
            return Err(MigrateError::Newer { found, known });
        }
        if version > found {
            tx.batch_execute(migration).await.map_err(sql(version))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[&version, &now_ms],
            )
            .await
            .map_err(sql(version))?;
            applied += 1;
        }
        tx.commit().await.map_err(sql(version))?;
    }
    Ok(applied)
}
