//! What only the PostgreSQL backend has: TLS modes and password sources against a real
//! server that accepts TLS only and checks passwords, one clear error when the server
//! is unreachable (never the password), migrations taken under the advisory lock by
//! replicas starting at once, and `DATABASE_URL=postgres://…` selecting it, for the store
//! alone and for the whole agent.

use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_agent::store::pg::config::PasswordSource;
use kubekuma_agent::store::pg::migrations::MIGRATIONS;
use kubekuma_agent::store::{Store, StoreError};
use kubekuma_crds::MonitorState;

use crate::common::postgres::{self, PASSWORD, PrivateServer};

async fn open(url: &str, password: &PasswordSource) -> Result<Store, StoreError> {
    Store::open_postgres(url, password).await
}

fn none() -> PasswordSource {
    PasswordSource::default()
}

#[tokio::test]
async fn tls_modes_and_passwords_against_a_tls_only_server() {
    if !postgres::enabled() {
        return;
    }
    let server = tokio::task::spawn_blocking(PrivateServer::start)
        .await
        .unwrap();
    let ca = server.ca().display().to_string();

    // Encrypted without checking the certificate (libpq's require and prefer).
    for mode in ["require", "prefer"] {
        let store = open(
            &server.url("127.0.0.1", Some(PASSWORD), &format!("sslmode={mode}")),
            &none(),
        )
        .await
        .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        store.open_incidents().await.unwrap();
        store.close().await.unwrap();
    }
    // The server takes TLS only: without it there is no way in.
    let err = open(
        &server.url("127.0.0.1", Some(PASSWORD), "sslmode=disable"),
        &none(),
    )
    .await
    .err()
    .expect("sslmode=disable must be refused by a TLS-only server");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{text}");
    assert!(text.contains("no encryption"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // verify-full: the chain and the name. The certificate names localhost only.
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    let store = open(&server.url("localhost", Some(PASSWORD), &full), &none())
        .await
        .unwrap();
    store.close().await.unwrap();
    let err = open(&server.url("127.0.0.1", Some(PASSWORD), &full), &none())
        .await
        .err()
        .expect("verify-full must check the name");
    assert!(err.to_string().contains("TLS"), "{err}");
    // verify-ca: the chain only.
    let store = open(
        &server.url(
            "127.0.0.1",
            Some(PASSWORD),
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        &none(),
    )
    .await
    .unwrap();
    store.close().await.unwrap();
    // Another CA's certificate does not verify.
    let other = tempfile::NamedTempFile::new().unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(other.path(), stranger.cert.pem()).unwrap();
    let err = open(
        &server.url(
            "localhost",
            Some(PASSWORD),
            &format!("sslmode=verify-full&sslrootcert={}", other.path().display()),
        ),
        &none(),
    )
    .await
    .err()
    .expect("a certificate from another CA must not verify");
    assert!(err.to_string().contains("TLS"), "{err}");

    // The password from DATABASE_PASSWORD_FILE (a mounted Secret) or DATABASE_PASSWORD.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{PASSWORD}\n")).unwrap();
    let from_file = PasswordSource {
        value: None,
        file: Some(file.path().to_path_buf()),
    };
    let url = server.url("127.0.0.1", None, "sslmode=require");
    open(&url, &from_file).await.unwrap().close().await.unwrap();
    let from_env = PasswordSource {
        value: Some(PASSWORD.into()),
        file: None,
    };
    open(&url, &from_env).await.unwrap().close().await.unwrap();

    // A wrong password: one clear error that repeats neither password.
    let wrong = "wrong-Secret-77";
    let err = open(
        &server.url("127.0.0.1", Some(wrong), "sslmode=require"),
        &none(),
    )
    .await
    .err()
    .expect("a wrong password must be refused");
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.starts_with(&format!(
            "cannot connect to database postgres://postgres@127.0.0.1:{}/postgres",
            server.port
        )),
        "{text}"
    );
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    assert!(!format!("{err:?}").contains(wrong), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_one_clear_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens on the port any more.
    let url = format!("postgres://kuma:hunter2@127.0.0.1:{port}/kubekuma?sslmode=disable");
    let err = open(&url, &none()).await.err().expect("must not open");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "cannot connect to database postgres://kuma@127.0.0.1:{port}/kubekuma: "
        )),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?}").contains("hunter2"));

    // A bad sslmode is refused before any connection, naming the URL without password.
    let err = open(
        &format!("postgres://kuma:hunter2@127.0.0.1:{port}/kubekuma?sslmode=always"),
        &none(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::PostgresConfig { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn replicas_starting_at_once_apply_each_migration_once() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { open(&url, &none()).await })
    });
    for store in futures::future::join_all(opens).await {
        store.unwrap().unwrap().close().await.unwrap();
    }
    let c = postgres::connect(&url).await.unwrap();
    let versions: Vec<i64> = c
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
}

/// `DATABASE_URL` picks the backend: `postgres://` and `postgresql://` open PostgreSQL
/// (the URL's password never in the store's name), other schemes are refused without
/// repeating the URL.
#[tokio::test]
async fn database_url_selects_postgres() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    for url in [url.clone(), url.replacen("postgres://", "postgresql://", 1)] {
        let store = Store::connect(&url).await.unwrap();
        assert!(store.path().starts_with("postgres"), "{}", store.path());
        store.open_incidents().await.unwrap();
        store.close().await.unwrap();
    }
    let err = Store::connect("mysql://kuma:hunter2@db/kuma")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = Store::connect("postgres://kuma:hunter2@127.0.0.1:1/kuma?sslmode=disable")
        .await
        .err()
        .unwrap();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// The agent on `DATABASE_URL=postgres://…`: its checks are recorded in PostgreSQL, and a
/// second start on the same database goes on from the state the first one left.
#[tokio::test]
async fn the_agent_runs_on_postgres() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir_all(&folder).unwrap();
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    std::fs::write(
        folder.join("all.yaml"),
        format!(
            "apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {{name: kubekuma}}
spec:
  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: db, namespace: prod}}
spec:
  type: tcp
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target: {{tcp: {{host: 127.0.0.1, port: {port}}}}}
"
        ),
    )
    .unwrap();
    let opts = AgentOptions {
        config: vec![folder],
        database_url: Some(url.clone()),
        ..AgentOptions::new("pg", dir.path().join("data"), "127.0.0.1:0".to_string())
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runtime::run(opts, stop_rx));
    let reader = Store::connect(&url).await.unwrap();
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let mut up = Vec::new();
    for _ in 0..300 {
        up = reader.heartbeats("prod", "db", since, 10).await.unwrap();
        if up.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up.len() >= 2, "no heartbeats in PostgreSQL: {up:?}");
    assert!(up.iter().all(|h| h.state == MonitorState::Up), "{up:?}");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let states = reader.load_monitor_states().await.unwrap();
    assert!(
        states
            .iter()
            .any(|s| s.namespace == "prod" && s.name == "db"),
        "the monitor's state is kept in PostgreSQL"
    );
    drop(target);
}

/// The server goes away while the agent runs (stopped, clients disconnected): queued
/// heartbeats are kept and retried, `write_failure` (readiness) says why, other
/// operations fail with a clear error instead of hanging or panicking, and once the
/// server is back every heartbeat is written.
#[tokio::test]
async fn heartbeats_are_kept_while_the_server_is_down() {
    if !postgres::enabled() {
        return;
    }
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(PrivateServer::start)
            .await
            .unwrap(),
    );
    let url = server.url("127.0.0.1", Some(PASSWORD), "sslmode=require");
    let store = open(&url, &none()).await.unwrap();
    let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let hb = |i: i64| kubekuma_crds::results::Heartbeat {
        namespace: "prod".into(),
        name: "api".into(),
        state: kubekuma_crds::MonitorState::Up,
        latency_ms: Some(3.5),
        reason: None,
        message: None,
        checked_at: t0 + chrono::TimeDelta::seconds(i),
        attempts: 1,
    };
    store.record_heartbeat(hb(0)).unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.write_failure(), None);

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    for i in 1..=200 {
        store.record_heartbeat(hb(i)).unwrap();
    }
    let err = store.flush().await.expect_err("the server is down");
    assert!(err.to_string().contains("kept, retrying"), "{err}");
    let failure = store.write_failure().expect("the failure is reported");
    assert!(failure.contains("not writable"), "{failure}");
    assert!(!failure.contains(PASSWORD), "{failure}");
    let read = store
        .open_incidents()
        .await
        .expect_err("the server is down");
    assert!(matches!(read, StoreError::Postgres { .. }), "{read}");
    assert!(!read.to_string().contains(PASSWORD), "{read}");

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.resume())
        .await
        .unwrap();
    // Bounded, not timed: the backlog goes in once the writer retries.
    let mut flushed = false;
    for _ in 0..300 {
        if store.flush().await.is_ok() && store.write_failure().is_none() {
            flushed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(flushed, "still failing: {:?}", store.write_failure());
    assert_eq!(store.heartbeats_written(), 201, "every heartbeat stored");
    let stored = store
        .heartbeats("prod", "api", chrono::DateTime::UNIX_EPOCH, 1000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 201);
    store.close().await.unwrap();
}

/// Leader election through the database: of three stores on one database exactly one
/// leads, and at no sampled moment do two lead while their connections are sound; when
/// the server ends the leader's session (a restart, an administrator), the agents
/// reconnect and exactly one leads again, holding the lock; a leader shutting down
/// releases the lock and another one takes over.
#[tokio::test]
async fn agents_on_one_database_elect_one_leader() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    let mut stops = Vec::new();
    let mut votes = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..3 {
        let store = open(&url, &none()).await.unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        votes.push(store.elect(stop_rx).expect("PostgreSQL elects"));
        stops.push(stop);
        stores.push(store);
    }
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&sqlite_dir.path().join("k.db")).unwrap();
    assert!(
        sqlite.elect(tokio::sync::watch::channel(false).1).is_none(),
        "a SQLite file belongs to one agent: no election"
    );
    let leaders = |votes: &[tokio::sync::watch::Receiver<bool>]| -> Vec<usize> {
        (0..votes.len()).filter(|i| *votes[*i].borrow()).collect()
    };
    // Sample every 20 ms until `want` holds (or 30 s), checking that at most one leads.
    async fn settle(
        votes: &[tokio::sync::watch::Receiver<bool>],
        want: impl Fn(&[usize]) -> bool,
    ) -> Vec<usize> {
        for _ in 0..1500 {
            let now: Vec<usize> = (0..votes.len()).filter(|i| *votes[*i].borrow()).collect();
            assert!(now.len() <= 1, "two leaders at once: {now:?}");
            if want(&now) {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the election did not settle");
    }
    settle(&votes, |l| l.len() == 1).await;

    // The server ends the leader's session: the agents reconnect and one leads again.
    let admin = postgres::connect(&url).await.unwrap();
    let in_this_database = "l.locktype = 'advisory' AND l.granted AND l.objid = $1::bigint::oid
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let low = kubekuma_agent::store::pg::leader::LEADER_LOCK_KEY & 0xffff_ffff;
    let ended = admin
        .execute(
            &format!("SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE {in_this_database}"),
            &[&low],
        )
        .await
        .unwrap();
    assert_eq!(ended, 1, "one session held the leader's lock");
    let sessions = || async {
        let rows = admin
            .query(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'kubekuma-leader' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        rows[0].get::<_, i64>(0)
    };
    let mut back = false;
    for _ in 0..300 {
        if sessions().await == 3 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(back, "the agent whose session ended reconnected");
    let second = settle(&votes, |l| l.len() == 1).await[0];
    let holders = admin
        .query(
            &format!("SELECT l.pid FROM pg_locks l WHERE {in_this_database}"),
            &[&low],
        )
        .await
        .unwrap();
    assert_eq!(holders.len(), 1, "one session holds the lock");
    assert_eq!(leaders(&votes), vec![second]);

    // The leader shuts down: it unlocks, and another agent takes over.
    stops[second].send_replace(true);
    let third = settle(&votes, |l| l.len() == 1 && l[0] != second).await[0];
    assert_ne!(third, second);
    drop(stores);
}

/// Issue 19 item 6: not only the heartbeat task reports a lost server. A read or a
/// write that cannot reach the server (no heartbeat queued at all) makes
/// `write_failure` (what `/ready` answers with) say the database is unreachable, naming
/// it without its password; the first statement that reaches the server again clears it.
#[tokio::test]
async fn any_statement_that_cannot_reach_the_server_makes_the_store_unready() {
    if !postgres::enabled() {
        return;
    }
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(PrivateServer::start)
            .await
            .unwrap(),
    );
    let url = server.url("127.0.0.1", Some(PASSWORD), "sslmode=require");
    let store = open(&url, &none()).await.unwrap();
    store.open_incidents().await.unwrap();
    assert_eq!(store.write_failure(), None);

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    // A read, then a write (an incident), both failing on the lost connection.
    store
        .open_incidents()
        .await
        .expect_err("the server is down");
    let failure = store.write_failure().expect("a failed read is reported");
    assert!(failure.contains("unreachable"), "{failure}");
    assert!(
        failure.contains(&format!("127.0.0.1:{}", server.port)),
        "{failure}"
    );
    assert!(!failure.contains(PASSWORD), "{failure}");
    let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    store
        .open_incident("prod", "api", at, None)
        .await
        .expect_err("the server is down");
    assert!(
        store
            .write_failure()
            .is_some_and(|f| f.contains("unreachable"))
    );

    // The first statement that reaches the server again clears it.
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.resume())
        .await
        .unwrap();
    let mut back = false;
    for _ in 0..300 {
        if store.open_incidents().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "the store never reached the server again");
    assert_eq!(store.write_failure(), None);
    store.close().await.unwrap();
}
