//! Leadership through the database: agents sharing one PostgreSQL database elect one
//! leader with a session-level advisory lock (`pg_try_advisory_lock`) held on a
//! connection of its own, outside the pool.
//!
//! - A standby tries the lock every [`TICK`]; the leader checks its connection as often.
//! - The server releases the lock as soon as the holder's session ends: at once when the
//!   process dies (the kernel closes its socket), and within [`SERVER_NOTICES`] when its
//!   host or network vanishes (the session's TCP keepalives and user timeout are set on
//!   the server's side too). So a standby takes over within [`TAKEOVER_BOUND`].
//! - A leader that loses its connection keeps its role while it cannot reach the
//!   database: a sole agent goes on checking through a database outage and writes what
//!   it held when the database returns (notifications go through the database's outbox,
//!   so a leader cut off sends none). Once it reaches the database again it takes the
//!   lock back, or stands by when another agent took over meanwhile. The first
//!   reconnection is immediate, so a session the server ended (the server restarted, an
//!   administrator terminated it) is taken back before a standby's next try.

use std::time::Duration;

use tokio::sync::watch;

use super::Pg;
use super::config::source_text;

/// The advisory lock's key (ASCII "kklead" in the low bytes): distinct from the
/// migrations' lock, and the same for every agent on the database.
pub const LEADER_LOCK_KEY: i64 = 0x6b6b_6c65_6164;

/// How often a standby tries the lock and the leader checks its connection.
pub const TICK: Duration = Duration::from_secs(2);

/// Longest wait for a connection or a try of the lock before giving up on it.
pub const PROBE: Duration = Duration::from_secs(4);

/// Longest wait for the leader's check of its connection: a slow answer (a loaded
/// server or host) is not a lost session, and dropping the connection would free the
/// lock for a standby while this agent still leads. By this time the TCP user timeout
/// has ended a connection that is really gone.
pub const HELD_PROBE: Duration = Duration::from_secs(12);

/// Wait before a new connection after one failed.
const RECONNECT: Duration = Duration::from_secs(2);

/// How long the server takes at most to end the session of a holder that vanished
/// without closing its socket: keepalive idle 4 s + 3 probes 2 s apart, or the TCP user
/// timeout for unacknowledged data (10 s).
pub const SERVER_NOTICES: Duration = Duration::from_secs(10);

/// A standby leads within this time after the leader's process or network ends
/// ([`SERVER_NOTICES`] + [`TICK`], with margin for a slow connect).
pub const TAKEOVER_BOUND: Duration = Duration::from_secs(15);

/// Start the election on `pg`'s database; the receiver says whether this agent leads
/// now. It ends (releasing the lock) when `shutdown` turns true.
pub(crate) fn spawn(pg: &Pg, shutdown: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let (mut config, tls) = (*pg.connect).clone();
    config
        .application_name("kubekuma-leader")
        .connect_timeout(PROBE)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(4))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(SERVER_NOTICES);
    tokio::spawn(run(config, tls, pg.label.clone(), tx, shutdown));
    rx
}

/// Why a round of the election ended its connection.
enum Ended {
    /// The agent is shutting down.
    Shutdown,
    /// The connection failed or a check took too long: reconnect.
    Lost(String),
}

async fn run(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    label: String,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_error: Option<String> = None;
    // Reconnect at once after a connection that worked; wait between failed attempts.
    let mut wait = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if wait {
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT) => {}
                changed = shutdown.changed() => {
                    // The sender is gone: as good as a shutdown.
                    if changed.is_err() { break; }
                    continue;
                }
            }
        }
        let why = match tokio::time::timeout(PROBE, config.connect(tls.clone())).await {
            Ok(Ok((client, connection))) => {
                let driver = tokio::spawn(connection);
                last_error = None;
                let why = hold(&client, &leading, &label, &mut shutdown).await;
                drop(client);
                driver.abort();
                wait = false;
                why
            }
            Ok(Err(e)) => {
                wait = true;
                Ended::Lost(source_text(&e))
            }
            Err(_) => {
                wait = true;
                Ended::Lost(format!("no connection within {} s", PROBE.as_secs()))
            }
        };
        match why {
            Ended::Shutdown => break,
            Ended::Lost(e) => {
                // Log a failure once while it lasts, not every reconnect.
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(database = %label, error = %e, leading = *leading.borrow(),
                        "leader election: connection lost; reconnecting (a leader keeps its role until it reaches the database)");
                    last_error = Some(e);
                }
            }
        }
    }
    leading.send_replace(false);
}

/// Settings of the election's session: the server ends it soon after its peer vanishes,
/// which is what frees the lock of a leader cut off from the database.
const SESSION: &str = "SET tcp_keepalives_idle = 4; SET tcp_keepalives_interval = 2; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";

/// One statement, bounded by `limit`.
async fn probe<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Ended> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Ended::Lost(source_text(&e))),
        Err(_) => Err(Ended::Lost(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    }
}

/// One connection's rounds: try the lock every [`TICK`] until this session holds it
/// (an agent that led before and finds it taken stands by), then check the connection as
/// often, until the connection fails or `shutdown` turns true.
async fn hold(
    client: &tokio_postgres::Client,
    leading: &watch::Sender<bool>,
    label: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    if let Err(e) = probe(PROBE, client.batch_execute(SESSION)).await {
        return e;
    }
    let mut held = false;
    loop {
        if held {
            if let Err(e) = probe(HELD_PROBE, client.batch_execute("SELECT 1")).await {
                return e;
            }
        } else {
            let row = match probe(
                PROBE,
                client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY]),
            )
            .await
            {
                Ok(row) => row,
                Err(e) => return e,
            };
            held = row.try_get::<_, bool>(0).unwrap_or(false);
            let was = leading.send_replace(held);
            if held && !was {
                tracing::info!(database = %label, "leader election: this agent leads");
            } else if was && !held {
                tracing::warn!(database = %label, "leader election: another agent took over while this one was cut off; standing by");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    if held {
                        // Let a standby take over at once rather than when the process ends.
                        let _ = probe(PROBE, client.query_one("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK_KEY])).await;
                        leading.send_replace(false);
                    }
                    return Ended::Shutdown;
                }
            }
        }
    }
}
