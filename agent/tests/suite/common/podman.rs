//! A private podman for tests: podman's Docker-compatible API service
//! (`podman system service`) on a unix socket in a temporary folder, and optionally on
//! 127.0.0.1, over a podman state (storage, runtime state, locks, events) that lives
//! entirely in that folder, so it shares nothing with the machine's own containers or
//! with another test's podman.
//!
//! Everything goes through two configuration files written into the folder and named by
//! `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF`, which the CLI and the API service
//! read alike:
//!
//! - `storage.conf`: `graphroot` and `runroot` in the folder, and the `vfs` driver, which
//!   copies layers instead of mounting them (the image is a few megabytes), so nothing
//!   stays mounted over the folder and it works where overlay mounts do not.
//! - `containers.conf`:
//!   - `tmp_dir` in the folder (libpod's runtime state);
//!   - `lock_type = "file"`: the default lock manager is one shared-memory segment
//!     (`/dev/shm/libpod_lock`) for every podman state on the machine, and a state seen
//!     for the first time frees all of its locks, those of other states included;
//!   - `runtime = "runc"` and `cgroup_manager = "cgroupfs"`: crun fails on hosts with
//!     cgroup v1 (hybrid), and there is no systemd to ask for cgroups;
//!   - `default_ulimits` of at most 1024 open files and processes: as root podman asks
//!     the runtime for 1048576 of each, and raising a hard limit above the caller's needs
//!     CAP_SYS_RESOURCE, which containers (such as the one the tests may run in) lack;
//!   - `netns = "none"`, `events_logger = "file"`, `log_driver = "k8s-file"`: no network
//!     set-up, no journald.
//!
//! Containers run an image imported from a tarball of a root filesystem with a static
//! busybox (Debian's `busybox-static`) as `/bin/sh` and `/bin/sleep`: no registry, no
//! network. Health checks are configured with `--health-interval disable` (podman would
//! otherwise ask systemd for a timer) and run on demand with `podman healthcheck run`.
//!
//! Dropping a [`Podman`] kills the API services, removes every container (`podman rm
//! --all --force --time 0`), waits for the `podman container cleanup` processes that
//! conmon starts as the containers exit, then removes the folder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image the tests' containers run.
pub const IMAGE: &str = "localhost/kubekuma-busybox:1";

/// How long an API service may take to listen.
const SERVICE_START: Duration = Duration::from_secs(20);
/// How long podman's own clean-up may go on once the containers are removed.
const CLEANUP: Duration = Duration::from_secs(15);

/// A podman state in a temporary folder, and its API services.
pub struct Podman {
    /// The unix socket the API service listens on.
    pub socket: PathBuf,
    /// `unix://` and the socket path.
    pub engine: String,
    /// `tcp://127.0.0.1:port` once [`Podman::serve_tcp`] ran.
    pub tcp_engine: Option<String>,
    services: Vec<Child>,
    dir: tempfile::TempDir,
}

/// The hard limit of this process's `Max open files` or `Max processes` (from
/// `/proc/self/limits`), `None` when unlimited or unknown.
fn hard_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A static busybox to put into the image.
fn busybox() -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/bin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file());
    found.expect(
        "busybox is needed for the podman test's image (tests/run installs Debian's \
         busybox-static; set KUBEKUMA_SKIP_PODMAN=1 to skip)",
    )
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

impl Podman {
    /// A fresh podman state with the busybox image imported, and the API service
    /// listening on a unix socket; `None` when `KUBEKUMA_SKIP_PODMAN` is set. Without
    /// podman (or busybox) it fails unless `KUBEKUMA_SKIP_PODMAN` is set.
    pub fn start() -> Option<Podman> {
        if std::env::var_os("KUBEKUMA_SKIP_PODMAN").is_some() {
            return None;
        }
        let found = Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "podman is needed for this test (tests/run installs Debian's podman, runc and \
             busybox-static; set KUBEKUMA_SKIP_PODMAN=1 to skip)"
        );
        let dir = tempfile::Builder::new()
            .prefix("kkpod")
            .tempdir()
            .expect("temporary folder");
        let root = dir.path();
        let limit = |name| hard_limit(name).unwrap_or(1024).min(1024);
        let (nofile, nproc) = (limit("Max open files"), limit("Max processes"));
        let containers_conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
             netns = \"none\"\n\
             log_driver = \"k8s-file\"\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             lock_type = \"file\"\n\
             tmp_dir = {}\n",
            toml_string(&root.join("tmp"))
        );
        let storage_conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
            toml_string(&root.join("storage")),
            toml_string(&root.join("run"))
        );
        std::fs::write(root.join("containers.conf"), containers_conf).unwrap();
        std::fs::write(root.join("storage.conf"), storage_conf).unwrap();

        let socket = root.join("api.sock");
        let mut podman = Podman {
            engine: format!("unix://{}", socket.display()),
            socket,
            tcp_engine: None,
            services: Vec::new(),
            dir,
        };
        podman.import_busybox();
        let url = podman.engine.clone();
        podman.serve(&url, "api-unix.log");
        let socket = podman.socket.clone();
        podman.wait_listening("unix socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Some(podman)
    }

    /// The folder holding the state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman` with this state's configuration.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir().join("storage.conf"))
            // Either would make the CLI a client of some other podman.
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            .stdin(Stdio::null());
        cmd
    }

    /// Run podman with these arguments; its output, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
    }

    /// Run podman with these arguments, which must succeed; its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "podman {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Start a container from the busybox image (`podman run --detach`) with these
    /// options and this command; its full ID.
    pub fn run(&self, name: &str, options: &[&str], command: &[&str]) -> String {
        let mut args = vec!["run", "--detach", "--name", name];
        args.extend_from_slice(options);
        args.push(IMAGE);
        args.extend_from_slice(command);
        self.ok(&args)
    }

    /// Also serve the API on 127.0.0.1 (a port free a moment ago); the `tcp://` engine.
    pub fn serve_tcp(&mut self) -> String {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let engine = format!("tcp://{addr}");
        self.serve(&engine, "api-tcp.log");
        self.wait_listening("TCP port", || std::net::TcpStream::connect(addr).is_ok());
        self.tcp_engine = Some(engine.clone());
        engine
    }

    fn import_busybox(&self) {
        let rootfs = self.dir().join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(busybox(), bin.join("busybox")).unwrap();
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let tarball = self.dir().join("rootfs.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()
            .expect("tar");
        assert!(out.status.success(), "tar: {}", show(&out));
        self.ok(&["import", "--quiet", &tarball.display().to_string(), IMAGE]);
    }

    /// `podman system service` on this URL (never exiting on its own), its output in
    /// this file of the folder.
    fn serve(&mut self, url: &str, log: &str) {
        let log = std::fs::File::create(self.dir().join(log)).unwrap();
        let child = self
            .command()
            .args(["system", "service", "--time=0", url])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("podman system service");
        self.services.push(child);
    }

    /// Wait until `ready`, failing with the service logs when a service exits or the
    /// wait is too long.
    fn wait_listening(&mut self, what: &str, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + SERVICE_START;
        loop {
            if ready() {
                return;
            }
            let exited = self
                .services
                .iter_mut()
                .find_map(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "podman system service is not listening on its {what} ({}):\n{}",
                    exited.map_or("still starting".to_string(), |s| s.to_string()),
                    self.service_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the API services wrote.
    pub fn service_logs(&self) -> String {
        ["api-unix.log", "api-tcp.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A path as a TOML basic string.
fn toml_string(path: &Path) -> String {
    let s = path.to_str().expect("temporary folder path is UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Drop for Podman {
    fn drop(&mut self) {
        for child in &mut self.services {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Stops (SIGKILL at once) and removes every container with its conmon, and
        // unmounts each container's /dev/shm, so the folder can go.
        let out = self.output(&["rm", "--all", "--force", "--time", "0"]);
        if !out.status.success() {
            eprintln!("podman rm --all failed: {}", show(&out));
        }
        // Each container's conmon, as the container exits, starts `podman container
        // cleanup`, which may still run (and recreate files in the folder) after `rm`
        // returned: wait until no process names the folder on its command line.
        let deadline = Instant::now() + CLEANUP;
        loop {
            let left = processes_naming(self.dir());
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("podman processes still running after cleanup: {left:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Process IDs and command lines of the processes whose command line names this folder.
fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = format!("{}/", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}
