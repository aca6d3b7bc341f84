//! The static-site builder: reads agents' objects (`source`), turns them into what
//! pages show (`model`), renders pages, feeds, JSON and badges with a theme (`theme`,
//! `render`, `badge`) and publishes the files incrementally ([`publish`]). [`Builder`]
//! ties them together for one build or a watch loop.
//!
//! Public: [`Builder`] and its options, [`Theme`], the error types, [`twins`] (the
//! narrow door of the agent's dynamic twins), [`bench`], and what an HTTP server of the
//! published site needs from [`publish`]. Everything else is private to the crate.

mod badge;
pub mod bench;
mod brand;
mod digest;
mod follow;
mod font;
mod icon;
mod model;
mod par;
pub mod publish;
mod render;
mod source;
mod text;
mod theme;
pub mod twins;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kubekuma_crds::store::ObjectTarget;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use badge::BadgeError;
pub use par::Cancelled;
pub use publish::{PublishError, PublishReport, WriteError};
pub use render::{RenderError, RenderOptions};
pub use source::SourceError;
pub use theme::{Theme, ThemeError};

use digest::hex;
use par::off_runtime;

/// Why a builder could not be made or a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The theme's badge font is unusable.
    #[error("theme {theme}: badge font: {source}")]
    BadgeFont {
        /// Where the theme came from (`default` or its folder).
        theme: String,
        /// Why.
        source: BadgeError,
    },
    /// The source could not be listed or read (names the key and the store).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Modelling or rendering on the blocking pool was cancelled.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// Publishing failed (names the output).
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// How the builder runs.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Render options (base URL, staleness threshold, PNG badges).
    pub render: RenderOptions,
    /// Measure windows against this clock instead of the time of the data (tests).
    pub now: Option<DateTime<Utc>>,
    /// Fetch `http(s)` logos and favicons and publish them as assets (else they are
    /// left out, since pages make no external requests).
    pub fetch_branding: bool,
}

/// The steps of a build, in order, as [`Builder::with_observer`]'s function is told them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildPhase {
    /// Reading the agents' objects (told on the async task).
    Read,
    /// Computing the site model (told on the blocking pool, where it runs).
    Model,
    /// Rendering pages, feeds, JSON, badges and rasters (told on the blocking pool,
    /// where it runs).
    Render,
    /// Publishing the files (told on the async task).
    Publish,
}

/// Who is told each [`BuildPhase`] of a build (nobody by default).
#[derive(Clone, Default)]
struct Observer(Option<Arc<dyn Fn(BuildPhase) + Send + Sync>>);

impl Observer {
    fn tell(&self, phase: BuildPhase) {
        if let Some(f) = &self.0 {
            f(phase);
        }
    }
}

/// What one build did.
#[derive(Clone, Debug, Default)]
pub struct BuildReport {
    /// Pages rendered.
    pub pages: usize,
    /// What publishing did.
    pub publish: PublishReport,
    /// Problems that did not stop the build (unreadable objects, unfetchable logos).
    pub warnings: Vec<String>,
    /// Parts of the site that could not be rendered (a page with its feeds, a badge's
    /// PNG, the index), each naming the part and the cause. Everything else was
    /// published; of these, what the output held before was kept.
    pub failures: Vec<String>,
    /// Time spent reading, modelling, rendering and publishing, then the parts of
    /// rendering (pages, badges and the steps of badges).
    pub timings: Vec<(&'static str, Duration)>,
    /// Nothing was modelled, rendered or published: the build's fingerprint (inputs,
    /// theme, options, fetched logos, builder version) equals the one recorded with the
    /// output by the last complete build, so the output is already what this build
    /// would publish.
    pub skipped: bool,
    /// Files not rendered again because their inputs had not changed since the last
    /// build (pages and badges this builder rendered before, PNGs of unchanged SVGs).
    pub reused: usize,
}

/// Bumped whenever the builder's output for the same inputs, theme and options changes
/// (with the crate version, part of a build's fingerprint).
const OUTPUT_FORMAT: u32 = 1;

/// A builder with its theme, badge renderer and output, reusable across builds.
///
/// Its CPU-heavy steps (parsing, modelling, rendering, hashing) run on tokio's blocking
/// pool, so a build of thousands of monitors never holds up the runtime's other tasks;
/// its futures are `Send`, so a rebuild loop can be a task of its own.
pub struct Builder {
    source: ObjectTarget,
    theme: Arc<Theme>,
    badges: Arc<badge::BadgeRenderer>,
    publisher: publish::Publisher,
    opts: BuildOptions,
    observer: Observer,
    brand_cache: BTreeMap<String, Result<(String, Vec<u8>), String>>,
    brand_limits: brand::FetchLimits,
    brand_svg: Arc<brand::SvgRasteriser>,
    http: Option<reqwest::Client>,
    /// What the last build rendered, so that the next renders only what changed.
    rendered: render::RenderCache,
    /// History objects parsed by the last build, so that the next reads only what changed.
    read: source::ReadCache,
    /// Histories merged by the last build, so that the next merges only what changed.
    modelled: model::ModelCache,
}

impl Builder {
    /// A builder reading `source` and writing `out` with `theme`.
    pub fn new(
        source: ObjectTarget,
        out: ObjectTarget,
        theme: Theme,
        opts: BuildOptions,
    ) -> Result<Builder, BuildError> {
        let badges = badge::BadgeRenderer::new(theme.badge_font.clone()).map_err(|source| {
            BuildError::BadgeFont {
                theme: theme.origin.clone(),
                source,
            }
        })?;
        let brand_svg = Arc::new(brand::SvgRasteriser::new(&theme.badge_font));
        Ok(Builder {
            source,
            brand_svg,
            brand_limits: brand::FetchLimits::default(),
            theme: Arc::new(theme),
            badges: Arc::new(badges),
            publisher: publish::Publisher::new(out),
            opts,
            observer: Observer::default(),
            brand_cache: BTreeMap::new(),
            http: None,
            rendered: render::RenderCache::default(),
            read: source::ReadCache::default(),
            modelled: model::ModelCache::default(),
        })
    }

    /// Tell `f` each [`BuildPhase`] of every build as it starts, on the thread that runs
    /// it. `f` must return at once for [`BuildPhase::Read`] and [`BuildPhase::Publish`]
    /// (told on the async task); for [`BuildPhase::Model`] and [`BuildPhase::Render`]
    /// (told on the blocking pool) holding it holds only the build, which is how a test
    /// keeps a build in progress while it looks at what else goes on.
    pub fn with_observer(mut self, f: impl Fn(BuildPhase) + Send + Sync + 'static) -> Builder {
        self.observer = Observer(Some(Arc::new(f)));
        self
    }

    /// One build: read, model, render (both on the blocking pool), publish.
    pub async fn build(&mut self) -> Result<BuildReport, BuildError> {
        let t0 = std::time::Instant::now();
        let observer = self.observer.clone();
        observer.tell(BuildPhase::Read);
        let listed = source::list(&self.source)
            .await
            .map_err(SourceError::from)?;
        let listing = source::listing_digest(&listed);
        if self.publisher.fingerprint().await?.as_deref() == Some(&*self.fingerprint(&listing)) {
            return Ok(BuildReport {
                skipped: true,
                timings: vec![("read", t0.elapsed())],
                ..BuildReport::default()
            });
        }
        let inputs = source::load(&self.source, &listed, self.opts.now, &mut self.read).await?;
        let t_read = t0.elapsed();
        let data_time = self.opts.now.or_else(|| inputs.data_time());
        let now = data_time.unwrap_or_else(Utc::now);
        let told = observer.clone();
        // Taken for the model (a cancelled one leaves an empty cache).
        let mut modelled = std::mem::take(&mut self.modelled);
        let (mut site, modelled) = off_runtime(move || {
            told.tell(BuildPhase::Model);
            let site = model::site_cached(&inputs, now, &mut modelled);
            (site, modelled)
        })
        .await?;
        self.modelled = modelled;
        let mut warnings = std::mem::take(&mut site.warnings);
        let extra = self.resolve_branding(&mut site, &mut warnings).await;
        // Recorded only if the output is a function of what it covers: not when the
        // pages show the wall clock (no data and no fixed clock).
        let fingerprint = data_time.map(|_| self.fingerprint(&listing));
        let t_model = t0.elapsed();
        let previous = self.publisher.previous().await?;
        let (theme, badges, opts) = (
            self.theme.clone(),
            self.badges.clone(),
            self.opts.render.clone(),
        );
        let told = observer.clone();
        // Taken for the render (a cancelled render leaves an empty one).
        let mut cache = std::mem::take(&mut self.rendered);
        let (pages, files, render_timings, failures, cache) = off_runtime(move || {
            told.tell(BuildPhase::Render);
            let mut timings = Vec::new();
            let mut failures = Vec::new();
            let files = render::render_site(
                &site,
                &theme,
                &badges,
                &extra,
                &opts,
                &previous,
                &mut cache,
                &mut timings,
                &mut failures,
            );
            (site.pages.len(), files, timings, failures, cache)
        })
        .await?;
        self.rendered = cache;
        let reused = files
            .iter()
            .filter(|f| f.bytes.is_empty() && f.keep.is_some())
            .count();
        let t_render = t0.elapsed();
        observer.tell(BuildPhase::Publish);
        // A part that failed to render kept the old output: the next build tries again.
        let fingerprint = fingerprint.filter(|_| failures.is_empty());
        let complete = failures.is_empty();
        let publish = self.publisher.publish(files, fingerprint).await?;
        if complete {
            // The manifest now records every hash the render cache holds.
            self.rendered.published();
        }
        let t_publish = t0.elapsed();
        Ok(BuildReport {
            pages,
            publish,
            warnings: warnings
                .iter()
                .map(|w| text::display(w).into_owned())
                .collect(),
            failures: failures
                .iter()
                .map(|w| text::display(w).into_owned())
                .collect(),
            timings: vec![
                ("read", t_read),
                ("model", t_model - t_read),
                ("render", t_render - t_model),
                ("publish", t_publish - t_render),
            ]
            .into_iter()
            .chain(render_timings)
            .collect(),
            skipped: false,
            reused,
        })
    }

    /// The fingerprint of a build of the source listed as `listing` (its
    /// [`source::listing_digest`]): the builder's version and output format, the theme's
    /// files, every option that shapes the output, the fixed clock if any (otherwise the
    /// clock is the time of the data, which the listing covers), and every logo fetched
    /// by this process (a fresh process has fetched none, so a site with remote logos is
    /// rebuilt, and the logos fetched again, once per process).
    fn fingerprint(&self, listing: &str) -> String {
        self.fingerprint_as(env!("CARGO_PKG_VERSION"), OUTPUT_FORMAT, listing)
    }

    /// [`Builder::fingerprint`] as a builder of `version` and output `format` makes it.
    fn fingerprint_as(&self, version: &str, format: u32, listing: &str) -> String {
        let BuildOptions {
            render,
            now,
            fetch_branding,
        } = &self.opts;
        let RenderOptions {
            base_url,
            stale_after_seconds,
            png_badges,
        } = render;
        let mut h = Sha256::new();
        let mut part = |name: &str, value: &[u8]| {
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value);
        };
        part("version", version.as_bytes());
        part("format", &format.to_le_bytes());
        part("theme", self.theme.digest.as_bytes());
        part("base_url", base_url.as_bytes());
        part("stale_after", &stale_after_seconds.to_le_bytes());
        part("png", &[u8::from(*png_badges)]);
        part(
            "now",
            now.map(|t| t.to_rfc3339()).unwrap_or_default().as_bytes(),
        );
        part("fetch_branding", &[u8::from(*fetch_branding)]);
        part("source", listing.as_bytes());
        for (url, got) in &self.brand_cache {
            part("logo", url.as_bytes());
            match got {
                Ok((path, bytes)) => {
                    part("path", path.as_bytes());
                    part("bytes", bytes);
                }
                Err(cause) => part("error", cause.as_bytes()),
            }
        }
        hex(&h.finalize())
    }

    /// Build whenever the source changes (checked every `every`: a HEAD of each agent's
    /// `state.json`, a full listing at most every minute, see [`follow`]), until
    /// `shutdown` turns true. Failed builds are logged and retried at the next change or
    /// after a minute.
    pub async fn watch(&mut self, every: Duration, shutdown: watch::Receiver<bool>) {
        self.watch_reporting(every, shutdown, |_, _| {}).await
    }

    /// [`Builder::watch`], telling `on_build` how long each build took and whether it
    /// succeeded (the agent's `kubekuma_build_duration_seconds`).
    pub async fn watch_reporting(
        &mut self,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
        mut on_build: impl FnMut(Duration, bool),
    ) {
        let mut last: Option<String> = None;
        let mut last_attempt = tokio::time::Instant::now();
        let mut follower = follow::Follower::new();
        loop {
            if *shutdown.borrow() {
                return;
            }
            match follower.check(&self.source).await {
                Ok(fp) => {
                    let retry = last.is_none() && last_attempt.elapsed() >= Duration::from_secs(60);
                    if last.as_ref() != Some(&fp) || retry {
                        last_attempt = tokio::time::Instant::now();
                        let built = self.build().await;
                        on_build(
                            last_attempt.elapsed(),
                            built.as_ref().is_ok_and(|r| r.failures.is_empty()),
                        );
                        match built {
                            Ok(r) => {
                                for w in &r.warnings {
                                    tracing::warn!("{w}");
                                }
                                for f in &r.failures {
                                    tracing::error!("{f}");
                                }
                                if !r.publish.written.is_empty() || !r.publish.removed.is_empty() {
                                    tracing::info!(
                                        pages = r.pages,
                                        written = r.publish.written.len(),
                                        removed = r.publish.removed.len(),
                                        unchanged = r.publish.unchanged,
                                        "site rebuilt"
                                    );
                                }
                                last = Some(fp);
                            }
                            Err(e) => {
                                tracing::error!("build failed: {e:#}");
                                last = None;
                                follower.relist();
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot look at the source: {e}");
                    follower.relist();
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Make logos and favicons local: `http(s)` ones are fetched (once per process) and
    /// published as assets, `data:image/…` and relative paths are kept, anything else
    /// is dropped with a warning.
    async fn resolve_branding(
        &mut self,
        site: &mut model::Site,
        warnings: &mut Vec<String>,
    ) -> BTreeMap<String, Vec<u8>> {
        let mut extra = BTreeMap::new();
        for page in &mut site.pages {
            let slug = page.slug.clone();
            for (what, slot) in [
                ("logo", &mut page.branding.logo),
                ("favicon", &mut page.branding.favicon),
            ] {
                let Some(url) = slot.clone() else { continue };
                let lower = url.to_ascii_lowercase();
                if lower.starts_with("http://") || lower.starts_with("https://") {
                    if !self.opts.fetch_branding {
                        *slot = None;
                        continue;
                    }
                    match self.fetch_brand(&url).await {
                        Ok((path, bytes)) => {
                            extra.insert(path.clone(), bytes);
                            *slot = Some(format!("../{path}"));
                        }
                        Err(cause) => {
                            warnings.push(format!("page {slug}: the {what} is left out: {cause}"));
                            *slot = None;
                        }
                    }
                } else if lower.starts_with("data:image/")
                    || (!lower.contains(':') && !lower.starts_with("//"))
                {
                    // Kept as given.
                } else {
                    warnings.push(format!(
                        "page {slug}: the {what} is neither http(s), data:image nor a relative path; left out"
                    ));
                    *slot = None;
                }
            }
        }
        extra
    }

    /// A logo or favicon as an asset path and bytes, or why not (never naming the URL,
    /// which may carry credentials); fetched once per process.
    async fn fetch_brand(&mut self, url: &str) -> Result<(String, Vec<u8>), String> {
        if let Some(hit) = self.brand_cache.get(url) {
            return hit.clone();
        }
        let got = match self.fetch_checked(url).await {
            Ok((ext, bytes)) => Ok((brand::asset_path(&bytes, ext), bytes)),
            Err(e) => Err(e.to_string()),
        };
        self.brand_cache.insert(url.to_string(), got.clone());
        got
    }

    /// Download an image within [`brand::FetchLimits`] and make it publishable (an SVG is
    /// rasterised on the blocking pool).
    async fn fetch_checked(
        &mut self,
        url: &str,
    ) -> Result<(&'static str, Vec<u8>), brand::BrandError> {
        let client = match &self.http {
            Some(c) => c.clone(),
            None => {
                let c = self.brand_limits.client()?;
                self.http = Some(c.clone());
                c
            }
        };
        let bytes = brand::download(&client, url).await?;
        let svg = self.brand_svg.clone();
        off_runtime(move || brand::publishable(bytes, &svg))
            .await
            .map_err(|e| brand::BrandError::Svg(e.to_string()))?
    }
}
