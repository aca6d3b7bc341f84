//! A real PostgreSQL server for the store tests (Debian's `postgresql` package, which
//! `tests/run` installs): one server per test run, shared by every test process (nextest
//! runs each test in a process of its own), and a fresh database per test.
//!
//! `tests/run` starts the server and exports `KUBEKUMA_TEST_POSTGRES`, the URL of its
//! `postgres` database as the superuser `postgres` (trust authentication on
//! 127.0.0.1). Without that variable (a plain `cargo nextest run`), the first test that
//! needs the server starts one itself, under a lock file in the target folder, and
//! later tests and runs reuse it while it answers. That server keeps running after the
//! run; `target/tmp/kubekuma-postgres/server` names its folder (stop it with
//! `pg_ctl stop -D <folder>/data`).
//!
//! The server runs as an unprivileged user: as root, the system user `kubekuma-pg` is
//! created when missing and the server runs as it (PostgreSQL refuses to run as root).
//! When no `/usr/lib/postgresql/*/bin/postgres` exists the tests fail naming `tests/run`,
//! unless `KUBEKUMA_SKIP_POSTGRES=1` is set, which leaves PostgreSQL out (only SQLite is
//! tested then).
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The variable `tests/run` sets to the server's URL.
pub const URL_VAR: &str = "KUBEKUMA_TEST_POSTGRES";
/// The unprivileged user the server runs as when the tests run as root.
pub const SYSTEM_USER: &str = "kubekuma-pg";
/// How long a server may take to accept connections.
const START: Duration = Duration::from_secs(60);

/// Whether PostgreSQL takes part in the tests: its server is installed (or
/// `tests/run` started one), unless `KUBEKUMA_SKIP_POSTGRES=1` says to leave it out.
pub fn enabled() -> bool {
    if std::env::var(URL_VAR).is_ok_and(|v| !v.is_empty()) {
        return true;
    }
    if bin_dir().is_some() {
        return true;
    }
    if std::env::var("KUBEKUMA_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("skipped: no PostgreSQL server installed (KUBEKUMA_SKIP_POSTGRES=1)");
        return false;
    }
    panic!(
        "no PostgreSQL server: run the tests through tests/run, which installs Debian's \
         postgresql package and starts one, or set KUBEKUMA_SKIP_POSTGRES=1 to test SQLite only"
    );
}

/// A new empty database on the shared server; returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url().await;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "kk_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let client = connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let mut sweep = false;
    SWEPT.call_once(|| sweep = true);
    if sweep {
        drop_leftovers(&client).await;
    }
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    with_database(&server, &name)
}

/// Drop the databases of test processes that have ended (a shared server outlives a
/// run; each database costs a few megabytes). Names are `kk_<pid>_…`.
async fn drop_leftovers(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'kk\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// `url` with its database (the path) replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("server url");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A plain connection (no TLS) for checks and setup; its driver runs on a task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The server's URL: `KUBEKUMA_TEST_POSTGRES`, else the shared server of the target
/// folder, started when it does not answer.
pub async fn server_url() -> String {
    if let Ok(url) = std::env::var(URL_VAR)
        && !url.is_empty()
    {
        return url;
    }
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubekuma-postgres");
    std::fs::create_dir_all(&state).expect("state folder");
    tokio::task::spawn_blocking(move || {
        let lock = std::fs::File::create(state.join("lock")).expect("lock file");
        lock.lock().expect("take the lock");
        let info = state.join("server");
        if let Ok(text) = std::fs::read_to_string(&info)
            && let Some(url) = text.lines().next()
            && answers(url)
        {
            return url.to_string();
        }
        let (url, dir) = start_server();
        std::fs::write(&info, format!("{url}\n{}\n", dir.display())).expect("write server info");
        url
        // The lock is released when `lock` is dropped.
    })
    .await
    .expect("start the server")
}

/// Whether a server answers at `url` (checked from a blocking thread).
fn answers(url: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), connect(url))
            .await
            .is_ok_and(|r| r.is_ok())
    })
}

/// The newest installed server's `bin` folder.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Create the system user the server runs as, unless it exists; returns its uid.
fn system_user() -> u32 {
    let uid = || {
        Command::new("id")
            .args(["-u", SYSTEM_USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    if let Some(uid) = uid() {
        return uid;
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ])
        .status()
        .expect("run useradd");
    // Another process may have created it meanwhile.
    uid().unwrap_or_else(|| panic!("useradd {SYSTEM_USER} failed: {status}"))
}

/// `program` from the server's bin folder, run as the unprivileged user when root.
fn server_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SYSTEM_USER, "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

/// Start a server on a free port over a new folder under the system's temporary
/// folder; returns its URL and folder. It runs until stopped (`pg_ctl stop`).
fn start_server() -> (String, PathBuf) {
    let bin = bin_dir().expect("no PostgreSQL server installed: run tests/run");
    let dir = tempfile::Builder::new()
        .prefix("kubekuma-pg-")
        .tempdir()
        .expect("server folder")
        .keep();
    if is_root() {
        let uid = system_user();
        std::os::unix::fs::chown(&dir, Some(uid), None).expect("chown the server folder");
    }
    let data = dir.join("data");
    let out = server_command(&bin, "initdb")
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let options = format!(
        "-k {} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=300 \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        dir.display()
    );
    let status = server_command(&bin, "pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-w", "-t", "300", "-o", &options, "start"])
        .stdout(Stdio::null())
        .status()
        .expect("run pg_ctl");
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    assert!(status.success(), "pg_ctl start failed: {status}\n{log}");
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deadline = Instant::now() + START;
    while !answers(&url) {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not answer\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::io::stderr().write_all(
        format!(
            "started a shared PostgreSQL for the tests at {url} in {}\n",
            dir.display()
        )
        .as_bytes(),
    );
    (url, dir)
}

/// The superuser's password on a [`PrivateServer`] (which checks passwords).
pub const PASSWORD: &str = "kk-test-pw-4c1d9e";

/// A server of one test's own, to check what the shared one does not: TLS only
/// (`hostssl` with SCRAM passwords; unencrypted connections are rejected), with a
/// certificate for `localhost` (not `127.0.0.1`) from a CA of its own. Stopped and
/// removed when dropped.
pub struct PrivateServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its folder (data, socket, log); `ca.pem` is the CA's certificate.
    pub dir: PathBuf,
    bin: PathBuf,
    options: String,
}

impl PrivateServer {
    /// Start one (blocking: call it from `spawn_blocking`).
    pub fn start() -> PrivateServer {
        let bin = bin_dir().expect("no PostgreSQL server installed: run tests/run");
        let dir = tempfile::Builder::new()
            .prefix("kubekuma-pg-private-")
            .tempdir()
            .expect("server folder")
            .keep();
        let uid = is_root().then(system_user);
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&dir, Some(uid), None).expect("chown");
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("password file");
        let data = dir.join("data");
        let out = server_command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // TLS only: no `host` line, so an unencrypted connection finds no entry.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let (ca_pem, cert_pem, key_pem) = certificates();
        std::fs::write(dir.join("ca.pem"), ca_pem).expect("ca.pem");
        std::fs::write(data.join("server.crt"), cert_pem).expect("server.crt");
        let key = data.join("server.key");
        std::fs::write(&key, key_pem).expect("server.key");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if let Some(uid) = uid {
            for f in ["pg_hba.conf", "server.crt", "server.key"] {
                std::os::unix::fs::chown(data.join(f), Some(uid), None).expect("chown");
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let options = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off",
            dir.display()
        );
        let server = PrivateServer {
            port,
            dir,
            bin,
            options,
        };
        server.resume();
        server
    }

    /// Start it again (on the same port, with the same data) after [`Self::stop`]
    /// (blocking).
    pub fn resume(&self) {
        let status = server_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "300", "-o", &self.options, "start"])
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        assert!(status.success(), "pg_ctl start failed: {status}\n{log}");
    }

    /// Stop it as an operator would (`pg_ctl stop -m fast`: clients are disconnected),
    /// keeping its data (blocking). A fast shutdown that has not finished within 20 s
    /// (seen on the loaded test machine) becomes an immediate one, as a crash would be.
    pub fn stop(&self) {
        let run = |mode: &str, wait: &str| {
            server_command(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-w", "-t", wait, "-m", mode, "stop"])
                .stdout(Stdio::null())
                .status()
                .expect("run pg_ctl")
        };
        if run("fast", "20").success() {
            return;
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        eprintln!("fast shutdown did not finish; server log ends with:");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
        let status = run("immediate", "300");
        assert!(status.success(), "pg_ctl stop failed: {status}");
    }

    /// The URL of its `postgres` database at `host`, with `password` in it (if any)
    /// and `query`.
    pub fn url(&self, host: &str, password: Option<&str>, query: &str) -> String {
        let user = match password {
            Some(p) => format!("postgres:{p}"),
            None => "postgres".to_string(),
        };
        format!("postgres://{user}@{host}:{}/postgres?{query}", self.port)
    }

    /// The CA's certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = server_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a server certificate for `localhost` only, as PEM: (CA, leaf, leaf's key).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "KubeKuma test PostgreSQL CA");
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = params.self_signed(&ca_key).expect("ca");
    let ca_pem = ca.pem();
    let issuer = Issuer::new(params, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    let key = KeyPair::generate().expect("leaf key");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    (ca_pem, cert.pem(), key.serialize_pem())
}
