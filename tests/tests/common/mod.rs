//! Helpers the end-to-end tests share: a free local port, waiting for a condition, the
//! system's Chromium.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` every 200 ms until it answers true; fail the test after 90 s, naming `what`.
pub async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The system's Chromium (Debian's `chromium`, installed by `tests/run`) as the absolute
/// path of the first of its usual names on `PATH` that answers `--version`.
pub fn chromium() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|bin| {
            std::process::Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|bin| bin.display().to_string())
}

/// The builder as `kubekuma up` runs it, on a thread of its own: once the agent has
/// written objects under `objects`, it watches them (every 300 ms) and renders the site
/// into `site` with the default theme and `render`, until `true` is sent on the returned
/// sender; join the handle after that.
pub fn spawn_builder(
    objects: std::path::PathBuf,
    site: std::path::PathBuf,
    render: kubekuma_builder::RenderOptions,
) -> (
    tokio::sync::watch::Sender<bool>,
    std::thread::JoinHandle<()>,
) {
    use kubekuma_builder::{BuildOptions, Builder, Theme};
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            while !objects.join("v1").exists() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let source = kubekuma_crds::store::open_store(objects.to_str().unwrap()).unwrap();
            let out = kubekuma_crds::store::open_store(site.to_str().unwrap()).unwrap();
            let opts = BuildOptions {
                render,
                now: None,
                fetch_branding: false,
            };
            let mut b = Builder::new(source, out, Theme::default_theme().unwrap(), opts).unwrap();
            b.watch(Duration::from_millis(300), stop).await;
        });
    });
    (stop_tx, handle)
}
