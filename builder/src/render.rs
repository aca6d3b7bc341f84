//! From the site model to output files: pages and feeds through the theme, JSON and
//! badges in Rust. Nothing is written here; [`crate::publish`] does that.
//!
//! Site layout (relative to the output root):
//!
//! | path | what |
//! |---|---|
//! | `index.html` | the list of published pages |
//! | `_headers` | security headers for hosts that read the file (Netlify, Cloudflare Pages) |
//! | `favicon.ico` | the theme's icon (pages link it unless they have a favicon of their own) |
//! | `robots.txt` | everything may be crawled; names the sitemap when there is one |
//! | `sitemap.xml` | the index and every published page, only with an absolute `http(s)` base URL |
//! | `assets/<name>.<hash>.<ext>` | theme assets, pages' accent stylesheets (`accent.<hash>.css`) and fetched logos (cached for a year) |
//! | `<slug>/index.html` | a status page |
//! | `<slug>/status.json` | the page as the spec's `GET /status/:slug` |
//! | `<slug>/api/v2/summary.json` | Statuspage-compatible summary |
//! | `<slug>/feed.rss`, `<slug>/feed.atom` | incidents |
//! | `<slug>/badges/status.{svg,png,json}` | the whole page's badge |
//! | `<slug>/badges/<ns>/<name>/<kind>.{svg,png,json}` | per monitor: `status`, `uptime-24h`, `uptime-7d`, `uptime-30d`, `uptime-90d`, `response-time`, `cert` |
//! | `uptime/<ns>/<name>.json` | `[{monitor, days, uptime}]` for 1, 7, 30 and 90 days |
//! | `uptime/<ns>/<name>/<days>.json` | the spec's `GET /uptime/:monitor?days=N` |

use std::collections::{BTreeMap, HashMap, HashSet};

use minijinja::Value;
use serde_json::json;
use sha2::Digest;

use crate::badge::{
    Badge, BadgeColor, BadgeError, BadgePart, BadgeRenderer, color_for_cert_days,
    color_for_latency, color_for_uptime, compose_png, shields_endpoint_json,
};
use crate::digest::hex;
use crate::model::{MonitorView, PageView, Site, UptimeView, overall_name, percent_text};
use crate::par::par_map;
pub use crate::publish::{OutFile, Stage};
use crate::theme::{Theme, ThemeError};

/// Why the site could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed.
    #[error(transparent)]
    Theme(#[from] ThemeError),
    /// A part (label or message) of a PNG badge could not be rasterised.
    #[error("badge part: {0}")]
    BadgePart(String),
    /// A PNG badge could not be rendered.
    #[error("badge {badge}: {source}")]
    Badge {
        /// The badge, as its fields.
        badge: String,
        /// Why.
        source: BadgeError,
    },
}

/// What the last build of a builder rendered, by the inputs it came from, so that its
/// next build renders only the pages and badges whose inputs changed. It holds hashes,
/// not content: an entry is used only while the output's manifest still records those
/// hashes. Valid for one theme, badge renderer and set of options (one `Builder`'s): a
/// watching builder keeps it across builds; a fresh process starts without one.
#[derive(Default)]
pub struct RenderCache {
    /// By page slug.
    pages: HashMap<String, CachedPage>,
    /// By badge file stem.
    badges: HashMap<String, CachedBadge>,
    /// By monitor key: the uptime windows its uptime JSON showed, and those files'
    /// paths and SHA-256.
    uptime: HashMap<String, (UptimeView, Vec<(String, String)>)>,
    /// Everything recorded here was published, and the output's manifest records exactly
    /// it (set by [`RenderCache::published`] after a complete publication, cleared by the
    /// next render): the next render need not look each hash up in the manifest.
    published: bool,
}

impl RenderCache {
    /// Record that what the last render produced was published whole, so that the output's
    /// manifest holds every hash recorded here.
    pub fn published(&mut self) {
        self.published = true;
    }
}

/// A page rendered before: its inputs and what came of it.
struct CachedPage {
    /// The page's model (its large parts shared with the model cache, so keeping it
    /// costs little and comparing an unchanged one is mostly comparing pointers).
    page: PageView,
    /// The data time.
    data_time: String,
    /// Its accent stylesheet.
    accent_css: String,
    /// Its files: path, stage, SHA-256.
    files: Vec<(String, Stage, String)>,
    /// Its badges to render.
    badges: Vec<(String, Badge)>,
    /// The page as a template value (for the index).
    value: Value,
}

/// A badge rendered before and the SHA-256 of its files.
#[derive(Clone)]
struct CachedBadge {
    badge: Badge,
    svg: String,
    json: String,
    /// With PNG badges on.
    png: Option<String>,
}

/// SHA-256 as lowercase hex.
fn sha_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// A file whose hash is known and which the output holds as it is.
fn kept(path: impl Into<String>, stage: Stage, hash: &str) -> OutFile {
    OutFile {
        path: path.into(),
        bytes: Vec::new(),
        stage,
        keep: Some(hash.to_string()),
    }
}

/// `file` with its hash computed (done here, on all cores, rather than by the publisher).
fn hashed(mut file: OutFile) -> OutFile {
    if file.keep.is_none() {
        file.keep = Some(sha_hex(&file.bytes));
    }
    file
}

/// Options of rendering.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Absolute URL of the output root (for feeds), ending in `/`; empty for relative links.
    pub base_url: String,
    /// Seconds after which a visitor sees the "status data may be stale" notice.
    pub stale_after_seconds: u64,
    /// Render PNG copies of badges.
    pub png_badges: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            base_url: String::new(),
            stale_after_seconds: 900,
            png_badges: true,
        }
    }
}

/// The Content-Security-Policy the default theme's pages work under (no inline script or
/// style, images only from the site or `data:`), as the `_headers` file gives it.
pub const SITE_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
script-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The `_headers` file (Netlify, Cloudflare Pages): the security headers a static host
/// should send with every file of the site, since an object store cannot.
fn headers_file() -> String {
    format!(
        "# Security headers for hosts that read this file (Netlify, Cloudflare Pages).\n\
         # Elsewhere, set them on the CDN in front of the site.\n\
         /*\n  Content-Security-Policy: {SITE_CSP}\n  X-Content-Type-Options: nosniff\n  \
         X-Frame-Options: DENY\n  Referrer-Policy: no-referrer\n"
    )
}

/// A page's accent stylesheet: `--accent` as given, and the colours links take from
/// it, adjusted only as far as WCAG AA's 4.5:1 for text needs: `--accent-text` on light
/// backgrounds, `--accent-text-dark` on dark ones (see [`readable`]).
fn accent_css(accent: &str) -> String {
    let mut css = format!(":root {{ --accent: {accent};");
    if let Some(rgb) = parse_hex(accent) {
        let light = readable(rgb, [0, 0, 0], LIGHT_REFERENCE, 4.8);
        let dark = readable(rgb, [255, 255, 255], DARK_REFERENCE, 4.5);
        css.push_str(&format!(
            " --accent-text: {}; --accent-text-dark: {};",
            hex_rgb(light),
            hex_rgb(dark)
        ));
    }
    css.push_str(" }\n");
    css
}

/// White: a link colour with 4.8:1 on it has 4.5:1 on any background down to `#f8fafc`
/// (the default theme's page background).
const LIGHT_REFERENCE: [u8; 3] = [255, 255, 255];
/// `#1e293b`: a link colour with 4.5:1 on it has as much on any darker background (the
/// default theme's dark cards and page).
const DARK_REFERENCE: [u8; 3] = [0x1e, 0x29, 0x3b];

/// `rgb` mixed toward `toward` in steps of 5% until its contrast with `background` is at
/// least `ratio` (unchanged when it already is).
fn readable(rgb: [u8; 3], toward: [u8; 3], background: [u8; 3], ratio: f64) -> [u8; 3] {
    let bg = luminance(background);
    for step in 0..=20u8 {
        let t = f64::from(step) / 20.0;
        let mixed: [u8; 3] = std::array::from_fn(|i| {
            (f64::from(rgb[i]) * (1.0 - t) + f64::from(toward[i]) * t).round() as u8
        });
        if contrast(luminance(mixed), bg) >= ratio {
            return mixed;
        }
    }
    toward
}

/// WCAG's contrast ratio of two relative luminances.
fn contrast(a: f64, b: f64) -> f64 {
    (a.max(b) + 0.05) / (a.min(b) + 0.05)
}

/// WCAG's relative luminance of an sRGB colour.
fn luminance(rgb: [u8; 3]) -> f64 {
    let channel = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2])
}

/// `#rgb` or `#rrggbb` as its three channels.
fn parse_hex(color: &str) -> Option<[u8; 3]> {
    let hex = color.strip_prefix('#')?;
    let digit = |i: usize, len: usize| u8::from_str_radix(hex.get(i..i + len)?, 16).ok();
    match hex.len() {
        3 => Some([digit(0, 1)? * 17, digit(1, 1)? * 17, digit(2, 1)? * 17]),
        6 => Some([digit(0, 2)?, digit(2, 2)?, digit(4, 2)?]),
        _ => None,
    }
}

fn hex_rgb(rgb: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2])
}

/// `base_url` when it is an absolute `http(s)` URL (a sitemap and the robots.txt line
/// naming it need one), else `None`.
fn absolute_base(base_url: &str) -> Option<&str> {
    reqwest::Url::parse(base_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .map(|_| base_url)
}

/// The site's host names as JSON ([`kubekuma_crds::objects::SiteHosts`]): each host of a
/// published page (DNS names only; the first page in slug order keeps a host two name);
/// `None` when no page has one.
fn site_hosts(site: &Site) -> Option<String> {
    let mut out = kubekuma_crds::objects::SiteHosts::default();
    for p in &site.pages {
        for h in &p.hosts {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let dns = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if dns {
                out.hosts.entry(h).or_insert_with(|| p.slug.clone());
            }
        }
    }
    if out.hosts.is_empty() {
        return None;
    }
    serde_json::to_string_pretty(&out).ok()
}

/// `robots.txt`: every path may be crawled (the site holds only published pages), and
/// the sitemap's absolute URL when there is one.
fn robots_txt(sitemap_base: Option<&str>) -> String {
    let mut out = String::from("User-agent: *\nAllow: /\n");
    if let Some(base) = sitemap_base {
        out.push_str(&format!("\nSitemap: {base}sitemap.xml\n"));
    }
    out
}

/// `sitemap.xml` (sitemaps.org 0.9): the index and every published page under `base`,
/// modified at the time of the data. Unpublished pages are not in the model, so never
/// here.
fn sitemap_xml(site: &Site, base: &str) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    let lastmod = xml_escape(&site.data_time);
    let urls =
        std::iter::once(String::new()).chain(site.pages.iter().map(|p| format!("{}/", p.slug)));
    for path in urls {
        out.push_str(&format!(
            "  <url><loc>{}</loc><lastmod>{lastmod}</lastmod></url>\n",
            xml_escape(&format!("{base}{path}"))
        ));
    }
    out.push_str("</urlset>\n");
    out
}

/// `text` with XML's five special characters escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Every file of the site. `extra_assets` (fetched logos) are published as assets.
///
/// A part that cannot be rendered (a page with its feeds, a badge's PNG, the index) never
/// stops the others: it goes to `failures`, naming the part and the cause, and what the
/// output held of it before (`previous`) is kept as it was.
#[allow(clippy::too_many_arguments)]
pub fn render_site(
    site: &Site,
    theme: &Theme,
    badges: &BadgeRenderer,
    extra_assets: &BTreeMap<String, Vec<u8>>,
    opts: &RenderOptions,
    previous: &BTreeMap<String, String>,
    cache: &mut RenderCache,
    timings: &mut Vec<(&'static str, std::time::Duration)>,
    failures: &mut Vec<String>,
) -> Vec<OutFile> {
    let started = std::time::Instant::now();
    // Whether the output surely holds what the cache records (else each file is looked
    // up in the manifest: the last publication may have stopped half-way).
    let trusted = std::mem::take(&mut cache.published);
    let mut out = Vec::new();
    for a in theme.assets.values() {
        out.push(OutFile {
            path: a.path.clone(),
            bytes: a.bytes.clone(),
            stage: Stage::Asset,
            keep: None,
        });
    }
    for (path, bytes) in extra_assets {
        out.push(OutFile {
            path: path.clone(),
            bytes: bytes.clone(),
            stage: Stage::Asset,
            keep: None,
        });
    }
    // Each page's accent colour as a stylesheet of its own (pages carry no inline
    // style), one per colour.
    let mut accents: BTreeMap<&str, String> = BTreeMap::new();
    for page in &site.pages {
        let accent = page.branding.accent.as_str();
        if !accents.contains_key(accent) {
            let css = accent_css(accent);
            let path = crate::theme::hashed_name("accent.css", css.as_bytes());
            out.push(OutFile {
                path: path.clone(),
                bytes: css.into_bytes(),
                stage: Stage::Asset,
                keep: None,
            });
            accents.insert(accent, path);
        }
    }
    out.push(file("_headers".into(), headers_file(), Stage::Data));
    out.push(OutFile {
        path: "favicon.ico".into(),
        bytes: theme.favicon.clone(),
        stage: Stage::Data,
        keep: None,
    });
    let sitemap_base = absolute_base(&opts.base_url);
    out.push(file(
        "robots.txt".into(),
        robots_txt(sitemap_base),
        Stage::Data,
    ));
    if let Some(hosts) = site_hosts(site) {
        out.push(file(crate::publish::HOSTS.into(), hosts, Stage::Data));
    }
    if let Some(base) = sitemap_base {
        // After the pages it lists.
        out.push(file(
            "sitemap.xml".into(),
            sitemap_xml(site, base),
            Stage::Index,
        ));
    }
    let assets = theme.asset_paths();
    let assets_value = template_value(&assets);
    // Pages, feeds and page JSON on all cores, one page per task; a page whose inputs
    // are those of the last build (and whose files the output still holds) is not
    // rendered again.
    let rendered = par_map(&site.pages, |page| {
        let accent_css = accents
            .get(page.branding.accent.as_str())
            .map(String::as_str)
            .unwrap_or_default();
        if let Some(c) = cache.pages.get(&page.slug).filter(|c| {
            c.page == *page
                && c.data_time == site.data_time
                && c.accent_css == accent_css
                && (trusted || c.files.iter().all(|(p, _, h)| previous.get(p) == Some(h)))
        }) {
            let files: Vec<OutFile> = c.files.iter().map(|(p, st, h)| kept(p, *st, h)).collect();
            return Ok((files, c.badges.clone(), c.value.clone(), accent_css));
        }
        render_page(page, site, theme, opts, &assets_value, accent_css).map(
            |(files, badges, value)| {
                (
                    files.into_iter().map(hashed).collect(),
                    badges,
                    value,
                    accent_css,
                )
            },
        )
    });
    let mut pages_cache = HashMap::new();
    let mut uptime_written = std::collections::BTreeSet::new();
    let mut uptime_cache = HashMap::new();
    let mut badge_jobs: Vec<(String, Badge)> = Vec::new();
    let mut page_values: Vec<Value> = Vec::with_capacity(site.pages.len());
    for (page, r) in site.pages.iter().zip(rendered) {
        match r {
            Ok((files, page_badges, page_value, accent_css)) => {
                let hashes = files
                    .iter()
                    .filter_map(|f| Some((f.path.clone(), f.stage, f.keep.clone()?)))
                    .collect();
                pages_cache.insert(
                    page.slug.clone(),
                    CachedPage {
                        page: page.clone(),
                        data_time: site.data_time.clone(),
                        accent_css: accent_css.to_string(),
                        files: hashes,
                        badges: page_badges.clone(),
                        value: page_value.clone(),
                    },
                );
                out.extend(files);
                badge_jobs.extend(page_badges);
                page_values.push(page_value);
            }
            Err(e) => {
                let prefix = format!("{}/", page.slug);
                let kept = keep_previous(previous, |p| p.starts_with(&prefix));
                failures.push(format!(
                    "page {}: {e}; {}",
                    page.slug,
                    if kept.is_empty() {
                        "it is not published"
                    } else {
                        "its previously published files are kept"
                    }
                ));
                if previous.contains_key(&format!("{prefix}index.html")) {
                    page_values.push(template_value(page));
                }
                out.extend(kept);
            }
        }
        for m in page.monitors() {
            if !uptime_written.insert(m.key.clone()) {
                continue;
            }
            // The same windows as last time, published whole: the same files.
            if let Some((_, files)) = cache.uptime.remove(&m.key).filter(|(u, files)| {
                *u == m.uptime && (trusted || files.iter().all(|(p, h)| previous.get(p) == Some(h)))
            }) {
                out.extend(files.iter().map(|(p, h)| kept(p, Stage::Data, h)));
                uptime_cache.insert(m.key.clone(), (m.uptime.clone(), files));
                continue;
            }
            let all: Vec<_> = [1u32, 7, 30, 90]
                .iter()
                .map(|d| uptime_json(m, *d))
                .collect();
            let mut files: Vec<OutFile> = [1u32, 7, 30, 90]
                .iter()
                .zip(&all)
                .map(|(d, v)| json_file(format!("uptime/{}/{}/{d}.json", m.namespace, m.name), v))
                .collect();
            files.push(json_file(
                format!("uptime/{}/{}.json", m.namespace, m.name),
                &serde_json::Value::Array(all),
            ));
            let files: Vec<OutFile> = files.into_iter().map(hashed).collect();
            let hashes = files
                .iter()
                .filter_map(|f| Some((f.path.clone(), f.keep.clone()?)))
                .collect();
            uptime_cache.insert(m.key.clone(), (m.uptime.clone(), hashes));
            out.extend(files);
        }
    }

    cache.pages = pages_cache;
    cache.uptime = uptime_cache;
    timings.push(("pages", started.elapsed()));
    let started = std::time::Instant::now();
    out.extend(render_badges(
        badges,
        &badge_jobs,
        opts,
        previous,
        (&mut cache.badges, trusted),
        timings,
        failures,
    ));
    timings.push(("badges", started.elapsed()));

    // The index gets the pages as the template values already built for them.
    let index_ctx = minijinja::context! {
        pages => Value::from(page_values),
        root => "",
        assets => assets_value,
        data_time => &site.data_time,
        stale_after_seconds => opts.stale_after_seconds,
    };
    match theme.render("index.html", index_ctx) {
        Ok(html) => out.push(file("index.html".into(), html, Stage::Index)),
        Err(e) => {
            let kept = keep_previous(previous, |p| p == "index.html");
            failures.push(format!(
                "index.html: {e}; {}",
                if kept.is_empty() {
                    "it is not published"
                } else {
                    "the previously published index is kept"
                }
            ));
            out.extend(kept);
        }
    }
    out
}

/// The files of the previous build whose paths `which` selects, kept as they are.
fn keep_previous(
    previous: &BTreeMap<String, String>,
    which: impl Fn(&str) -> bool,
) -> Vec<OutFile> {
    previous
        .iter()
        .filter(|(p, _)| which(p))
        .map(|(p, h)| OutFile {
            path: p.clone(),
            bytes: Vec::new(),
            stage: if p.ends_with(".html") {
                Stage::Page
            } else {
                Stage::Data
            },
            keep: Some(h.clone()),
        })
        .collect()
}

/// What one page contributes: its files (page, feeds, page JSON), its badges to
/// render, and the page as a template value (for the index).
type PageOutput = (Vec<OutFile>, Vec<(String, Badge)>, Value);

fn render_page(
    page: &PageView,
    site: &Site,
    theme: &Theme,
    opts: &RenderOptions,
    assets_value: &Value,
    accent_css: &str,
) -> Result<PageOutput, RenderError> {
    let mut files = Vec::new();
    let mut page_badges = Vec::new();
    let base = format!("{}/", page.slug);
    // The page is turned into a template value once, for the page and both feeds.
    let page_value = template_value(page);
    let ctx = minijinja::context! {
        page => page_value.clone(),
        root => "../",
        assets => assets_value.clone(),
        data_time => &site.data_time,
        stale_after_seconds => opts.stale_after_seconds,
        base_url => &opts.base_url,
        feed_rss => "feed.rss",
        feed_atom => "feed.atom",
        badge_base => if page.badges.is_some() { "badges/" } else { "" },
        accent_css => accent_css,
    };
    let html = theme.render("page.html", ctx)?;
    files.push(file(format!("{base}index.html"), html, Stage::Page));

    let incidents = template_value(
        page.active_incidents
            .iter()
            .chain(page.past_incidents.iter())
            .collect::<Vec<_>>(),
    );
    for (tpl, name) in [("rss.xml", "feed.rss"), ("atom.xml", "feed.atom")] {
        let feed_ctx = minijinja::context! {
            page => page_value.clone(),
            data_time => &site.data_time,
            base_url => &opts.base_url,
            page_url => format!("{}{}", opts.base_url, base),
            self_url => format!("{}{}{}", opts.base_url, base, name),
            incidents => incidents.clone(),
        };
        files.push(file(
            format!("{base}{name}"),
            theme.render(tpl, feed_ctx)?,
            Stage::Data,
        ));
    }

    files.push(json_file(
        format!("{base}status.json"),
        &status_json(page, &site.data_time),
    ));
    files.push(json_file(
        format!("{base}api/v2/summary.json"),
        &summary_json(page, &opts.base_url),
    ));

    if page.badges.is_some() {
        let overall = Badge {
            label: page.title.clone(),
            message: page.overall_text.to_lowercase(),
            color: overall_color(page),
            title: None,
        };
        page_badges.push((format!("{base}badges/status"), overall));
    }
    if page.badges == Some("all") {
        for m in page.monitors() {
            for (kind, badge) in monitor_badges(m) {
                page_badges.push((
                    format!("{base}badges/{}/{}/{kind}", m.namespace, m.name),
                    badge,
                ));
            }
        }
    }
    Ok((files, page_badges, page_value))
}

/// A rendered document as a file, without the characters XML forbids
/// ([`crate::text::xml_safe`]) whatever the theme wrote.
fn file(path: String, text: String, stage: Stage) -> OutFile {
    OutFile {
        path,
        bytes: crate::text::xml_safe(text).into_bytes(),
        stage,
        keep: None,
    }
}

fn json_file(path: String, v: &serde_json::Value) -> OutFile {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
    bytes.push(b'\n');
    OutFile {
        path,
        bytes,
        stage: Stage::Data,
        keep: None,
    }
}

/// Takes out of the badge cache the entries of badges no longer rendered (their monitor
/// or page is gone). Every job's stem is in the cache unless its PNG failed (`removed`
/// of them), so when the counts agree nothing is stale and the scan is skipped.
fn drop_stale_badges(
    cache: &mut HashMap<String, CachedBadge>,
    jobs: &[(String, Badge)],
    removed: usize,
) {
    if cache.len() + removed == jobs.len() {
        return;
    }
    let live: HashSet<&str> = jobs.iter().map(|(stem, _)| stem.as_str()).collect();
    cache.retain(|stem, _| live.contains(stem.as_str()));
}

/// SVG, PNG and shields JSON of every badge. PNG rasterising is the most expensive part
/// of a build, so:
///
/// - a PNG is not rendered again when its SVG did not change since the previous build;
/// - each distinct picture is rendered once (badges that differ only in their title look
///   the same: every "uptime 24h | 100%" badge of a page is one PNG);
/// - a picture is rasterised as two parts, label and message
///   ([`BadgeRenderer::png_parts`]), and equal parts (equal part SVGs) are rasterised
///   once: the 1,000 status badges "<name> | up" of 1,000 monitors need 1,000 label
///   parts but only one "up" part per label width;
/// - all of it runs on every core.
fn render_badges(
    renderer: &BadgeRenderer,
    jobs: &[(String, Badge)],
    opts: &RenderOptions,
    previous: &BTreeMap<String, String>,
    (cache, trusted): (&mut HashMap<String, CachedBadge>, bool),
    timings: &mut Vec<(&'static str, std::time::Duration)>,
    failures: &mut Vec<String>,
) -> Vec<OutFile> {
    let started = std::time::Instant::now();
    type Key = (String, String, String);
    // A badge equal to the one of the last build, whose files the output still holds,
    // is not rendered again.
    let reusable = |stem: &str, badge: &Badge| {
        cache.get(stem).filter(|c| {
            c.badge == *badge
                && opts.png_badges == c.png.is_some()
                && (trusted
                    || (previous.get(&format!("{stem}.svg")) == Some(&c.svg)
                        && previous.get(&format!("{stem}.json")) == Some(&c.json)
                        && c.png
                            .as_ref()
                            .is_none_or(|h| previous.get(&format!("{stem}.png")) == Some(h))))
        })
    };
    // SVG and shields JSON of every other badge, on all cores.
    let rendered: Vec<Option<(String, OutFile, String)>> = par_map(jobs, |(stem, badge)| {
        if reusable(stem, badge).is_some() {
            return None;
        }
        let svg = renderer.svg(badge);
        let svg_hash = sha_hex(svg.as_bytes());
        Some((
            svg,
            hashed(json_file(
                format!("{stem}.json"),
                &shields_endpoint_json(&renderer.fitted(badge)),
            )),
            svg_hash,
        ))
    });
    let mut out = Vec::with_capacity(jobs.len() * 3);
    // The cache is updated in place: an unchanged badge's entry stays where it is.
    // Entries whose PNG failed are taken out; `removed` counts them.
    let mut removed = 0usize;
    // (stem, index into `todo`) of the PNGs to render.
    let mut wanted: Vec<(&str, usize)> = Vec::new();
    let mut distinct: HashMap<Key, usize> = HashMap::new();
    // One representative badge per distinct picture.
    let mut todo: Vec<&Badge> = Vec::new();
    for ((stem, badge), r) in jobs.iter().zip(rendered) {
        let Some((svg, json, svg_hash)) = r else {
            // Found reusable above; its cache entry stays as it is.
            if let Some(c) = cache.get(stem) {
                out.push(kept(format!("{stem}.svg"), Stage::Data, &c.svg));
                out.push(kept(format!("{stem}.json"), Stage::Data, &c.json));
                if let Some(png) = &c.png {
                    out.push(kept(format!("{stem}.png"), Stage::Data, png));
                }
            }
            continue;
        };
        let svg_path = format!("{stem}.svg");
        let mut entry = CachedBadge {
            badge: badge.clone(),
            svg: svg_hash.clone(),
            json: json.keep.clone().unwrap_or_default(),
            png: None,
        };
        if opts.png_badges {
            let png_path = format!("{stem}.png");
            let kept_png = (previous.get(&svg_path) == Some(&svg_hash))
                .then(|| previous.get(&png_path).cloned())
                .flatten();
            match kept_png {
                Some(hash) => {
                    entry.png = Some(hash.clone());
                    out.push(OutFile {
                        path: png_path,
                        bytes: Vec::new(),
                        stage: Stage::Data,
                        keep: Some(hash),
                    });
                }
                None => {
                    let key = BadgeRenderer::raster_key(badge);
                    let next = todo.len();
                    let i = *distinct.entry(key).or_insert(next);
                    if i == next {
                        todo.push(badge);
                    }
                    wanted.push((stem, i));
                }
            }
        }
        out.push(json);
        out.push(OutFile {
            keep: Some(svg_hash),
            ..file(svg_path, svg, Stage::Data)
        });
        cache.insert(stem.clone(), entry);
    }
    if wanted.is_empty() {
        drop_stale_badges(cache, jobs, removed);
        return out;
    }

    timings.push(("badge svg", started.elapsed()));
    let started = std::time::Instant::now();
    // The parts of the distinct pictures, each distinct part rasterised once.
    let split: Vec<Option<[String; 2]>> =
        par_map(&todo, |badge| renderer.png_parts(badge, PNG_SCALE));
    let mut part_index: HashMap<&str, usize> = HashMap::new();
    let mut parts: Vec<&str> = Vec::new();
    let halves: Vec<Option<[usize; 2]>> = split
        .iter()
        .map(|s| {
            s.as_ref().map(|pair| {
                pair.each_ref().map(|svg| {
                    *part_index.entry(svg.as_str()).or_insert_with(|| {
                        parts.push(svg.as_str());
                        parts.len() - 1
                    })
                })
            })
        })
        .collect();
    let rasters: Vec<Result<BadgePart, BadgeError>> =
        par_map(&parts, |svg| renderer.raster_part(svg, PNG_SCALE));
    timings.push(("badge parts", started.elapsed()));
    let started = std::time::Instant::now();
    let indices: Vec<usize> = (0..todo.len()).collect();
    let pngs: Vec<Result<Vec<u8>, RenderError>> = par_map(&indices, |&i| {
        let badge = todo[i];
        match halves[i] {
            Some([l, m]) => match (&rasters[l], &rasters[m]) {
                (Ok(l), Ok(m)) => compose_png(l, m),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(RenderError::BadgePart(e.to_string()));
                }
            },
            None => renderer.png_whole(badge, PNG_SCALE),
        }
        .map_err(|source| RenderError::Badge {
            badge: format!("{badge:?}"),
            source,
        })
    });
    timings.push(("badge png", started.elapsed()));
    tracing::debug!(
        pictures = todo.len(),
        parts = parts.len(),
        files = wanted.len(),
        "badges rasterised"
    );
    // A picture that failed is reported once, with how many files show it; their
    // previous PNGs are kept.
    let mut reported = vec![false; todo.len()];
    let mut failed_files = vec![0usize; todo.len()];
    for (_, i) in &wanted {
        if pngs[*i].is_err() {
            failed_files[*i] += 1;
        }
    }
    let png_hashes: Vec<Option<String>> =
        par_map(&pngs, |png| png.as_ref().ok().map(|b| sha_hex(b)));
    for (stem, i) in wanted {
        let png_path = format!("{stem}.png");
        match &pngs[i] {
            Ok(bytes) => {
                if let Some(entry) = cache.get_mut(stem) {
                    entry.png = png_hashes[i].clone();
                }
                out.push(OutFile {
                    path: png_path,
                    bytes: bytes.clone(),
                    stage: Stage::Data,
                    keep: png_hashes[i].clone(),
                })
            }
            Err(e) => {
                if cache.remove(stem).is_some() {
                    removed += 1;
                }
                if !reported[i] {
                    reported[i] = true;
                    failures.push(format!(
                        "badge {png_path}{}: {e}; previously published PNGs are kept",
                        match failed_files[i] {
                            1 => String::new(),
                            n => format!(" (and {} more with the same picture)", n - 1),
                        }
                    ));
                }
                out.extend(keep_previous(previous, |p| p == png_path));
            }
        }
    }
    drop_stale_badges(cache, jobs, removed);
    out
}

/// PNG badges are rendered at twice the SVG size, for high-density screens.
pub const PNG_SCALE: f32 = 2.0;

/// The badges of one monitor, by file stem.
pub fn monitor_badges(m: &MonitorView) -> Vec<(&'static str, Badge)> {
    let name = m.display_name.clone();
    let mut v = vec![(
        "status",
        Badge {
            label: name.clone(),
            message: m.state_text.to_lowercase(),
            color: state_color(m.state),
            title: None,
        },
    )];
    for (kind, days, label) in [
        ("uptime-24h", 1, "24h"),
        ("uptime-7d", 7, "7d"),
        ("uptime-30d", 30, "30d"),
        ("uptime-90d", 90, "90d"),
    ] {
        let u = m.uptime.for_days(days);
        v.push((
            kind,
            Badge {
                label: format!("uptime {label}"),
                message: u.map(percent_text).unwrap_or_else(|| "no data".into()),
                color: color_for_uptime(u),
                title: Some(format!(
                    "{name}: uptime over {label}: {}",
                    u.map(percent_text).unwrap_or_else(|| "no data".into())
                )),
            },
        ));
    }
    let latency = m.chart.avg_ms.or(m.latency_ms);
    v.push((
        "response-time",
        Badge {
            label: "response time".into(),
            message: latency
                .map(|l| format!("{l} ms"))
                .unwrap_or_else(|| "no data".into()),
            color: color_for_latency(latency.map(|l| l as f64)),
            title: Some(format!(
                "{name}: average response time over 24h: {}",
                latency
                    .map(|l| format!("{l} ms"))
                    .unwrap_or_else(|| "no data".into())
            )),
        },
    ));
    v.push((
        "cert",
        Badge {
            label: "certificate".into(),
            message: match m.cert_days_left {
                Some(d) if d < 0 => "expired".into(),
                Some(1) => "1 day left".into(),
                Some(d) => format!("{d} days left"),
                None => "no data".into(),
            },
            color: color_for_cert_days(m.cert_days_left),
            title: None,
        },
    ));
    v
}

fn state_color(state: &str) -> BadgeColor {
    match state {
        "up" => BadgeColor::Green,
        "down" => BadgeColor::Red,
        "flapping" => BadgeColor::Yellow,
        "maintenance" => BadgeColor::Blue,
        _ => BadgeColor::Grey,
    }
}

fn overall_color(page: &PageView) -> BadgeColor {
    match overall_name(page.overall) {
        "operational" => BadgeColor::Green,
        "degraded" => BadgeColor::Yellow,
        "partialOutage" => BadgeColor::Orange,
        "majorOutage" => BadgeColor::Red,
        _ => BadgeColor::Blue,
    }
}

/// `status.json`: the spec's `GET /status/:slug`, plus the time of the data and uptime.
pub fn status_json(page: &PageView, data_time: &str) -> serde_json::Value {
    let mut branding = serde_json::Map::new();
    if let Some(l) = &page.branding.logo {
        branding.insert("logoUrl".into(), json!(l));
    }
    if let Some(f) = &page.branding.favicon {
        branding.insert("faviconUrl".into(), json!(f));
    }
    branding.insert(
        "theme".into(),
        json!({"primaryColor": page.branding.accent, "darkMode": page.branding.dark_mode}),
    );
    json!({
        "slug": page.slug,
        "title": page.title,
        "description": page.description,
        "overallStatus": overall_name(page.overall),
        "generatedAt": data_time,
        "groups": page.groups.iter().map(|g| json!({
            "name": g.name,
            "description": g.description,
            "monitors": g.monitors.iter().map(|m| json!({
                "namespace": m.namespace,
                "name": m.name,
                "displayName": m.display_name,
                "status": m.state,
                "latency": m.latency_ms,
                "uptime": {"24h": m.uptime.d1, "7d": m.uptime.d7, "30d": m.uptime.d30, "90d": m.uptime.d90},
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "activeIncidents": page.active_incidents.iter().map(|i| json!({
            "id": i.id, "monitor": i.monitor, "title": i.title, "startedAt": i.started_at,
            "updates": i.updates.iter().map(|u| json!({"at": u.at, "message": u.message})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "branding": branding,
    })
}

/// `uptime/<ns>/<name>/<days>.json`: the spec's `GET /uptime/:monitor?days=N`.
pub fn uptime_json(m: &MonitorView, days: u32) -> serde_json::Value {
    json!({"monitor": m.key, "days": days, "uptime": m.uptime.for_days(days)})
}

/// `api/v2/summary.json` in the shape of Atlassian Statuspage's public summary.
pub fn summary_json(page: &PageView, base_url: &str) -> serde_json::Value {
    let (indicator, description) = match overall_name(page.overall) {
        "operational" => ("none", "All Systems Operational"),
        "degraded" => ("minor", "Degraded Performance"),
        "partialOutage" => ("major", "Partial System Outage"),
        "majorOutage" => ("critical", "Major System Outage"),
        _ => ("maintenance", "Service Under Maintenance"),
    };
    let mut components = Vec::new();
    let mut position = 1;
    for g in &page.groups {
        let group_id = format!("group-{}", position);
        let ids: Vec<String> = g.monitors.iter().map(|m| m.key.clone()).collect();
        components.push(json!({
            "id": group_id, "name": g.name, "status": group_status(&g.monitors),
            "created_at": page.data_time, "updated_at": page.data_time, "position": position,
            "description": g.description, "showcase": false, "start_date": null,
            "group_id": null, "page_id": page.slug, "group": true,
            "only_show_if_degraded": false, "components": ids,
        }));
        position += 1;
        for m in &g.monitors {
            components.push(json!({
                "id": m.key, "name": m.display_name, "status": component_status(m.state),
                "created_at": page.data_time, "updated_at": m.checked_at.as_deref().unwrap_or(&page.data_time),
                "position": position, "description": m.description, "showcase": true,
                "start_date": null, "group_id": group_id, "page_id": page.slug,
                "group": false, "only_show_if_degraded": false,
            }));
            position += 1;
        }
    }
    let incidents: Vec<_> = page
        .active_incidents
        .iter()
        .map(|i| {
            let updates: Vec<_> = i
                .updates
                .iter()
                .enumerate()
                .rev()
                .map(|(n, u)| {
                    json!({
                        "id": format!("{}-{}", i.id, n + 1), "status": "identified", "body": u.message,
                        "incident_id": i.id, "created_at": u.at, "updated_at": u.at, "display_at": u.at,
                    })
                })
                .collect();
            json!({
                "id": i.id, "name": i.title,
                "status": if i.updates.is_empty() { "investigating" } else { "identified" },
                "created_at": i.started_at,
                "updated_at": i.updates.last().map(|u| u.at.as_str()).unwrap_or(&i.started_at),
                "monitoring_at": null, "resolved_at": null, "impact": "major",
                "shortlink": format!("{base_url}{}/#incident-{}", page.slug, i.id),
                "started_at": i.started_at, "page_id": page.slug,
                "incident_updates": updates,
                "components": [{"id": i.monitor, "name": i.monitor_name}],
            })
        })
        .collect();
    let maintenances: Vec<_> = page
        .maintenance
        .iter()
        .map(|mw| {
            json!({
                "id": mw.name, "name": mw.name,
                "status": if mw.active { "in_progress" } else { "scheduled" },
                "scheduled_for": mw.starts_at, "scheduled_until": mw.ends_at,
                "impact": "maintenance", "page_id": page.slug,
                "incident_updates": mw.description.iter().map(|d| json!({"body": d})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "page": {
            "id": page.slug, "name": page.title,
            "url": format!("{base_url}{}/", page.slug),
            "time_zone": "Etc/UTC", "updated_at": page.data_time,
        },
        "status": {"indicator": indicator, "description": description},
        "components": components,
        "incidents": incidents,
        "scheduled_maintenances": maintenances,
    })
}

fn component_status(state: &str) -> &'static str {
    match state {
        "down" => "major_outage",
        "flapping" => "degraded_performance",
        "maintenance" => "under_maintenance",
        _ => "operational",
    }
}

fn group_status(monitors: &[MonitorView]) -> &'static str {
    let statuses: Vec<_> = monitors.iter().map(|m| component_status(m.state)).collect();
    let down = statuses.iter().filter(|s| **s == "major_outage").count();
    if down > 0 && down == statuses.len() {
        "major_outage"
    } else if down > 0 {
        "partial_outage"
    } else if statuses.contains(&"degraded_performance") {
        "degraded_performance"
    } else if statuses.contains(&"under_maintenance") {
        "under_maintenance"
    } else {
        "operational"
    }
}

/// A template context from any serializable value.
/// Any serialisable value as a template value, without an intermediate JSON tree.
fn template_value<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links in the accent colour are readable on the default theme's backgrounds
    /// whatever the accent (a sweep of the colour cube), and an accent that already is
    /// stays as it is.
    #[test]
    fn link_colours_from_any_accent_meet_wcag_aa() {
        let light_bg = luminance([0xf8, 0xfa, 0xfc]);
        let dark_bgs = [[0x0b, 0x11, 0x20], [0x11, 0x18, 0x27], [0x1e, 0x29, 0x3b]];
        let steps = [0u8, 51, 102, 153, 204, 255];
        for r in steps {
            for g in steps {
                for b in steps {
                    let css = accent_css(&hex_rgb([r, g, b]));
                    let var = |name: &str| {
                        let at = css.find(&format!("--{name}: ")).unwrap() + name.len() + 4;
                        parse_hex(&css[at..at + 7]).unwrap()
                    };
                    let text = luminance(var("accent-text"));
                    assert!(contrast(text, light_bg) >= 4.5, "{css}");
                    let dark = luminance(var("accent-text-dark"));
                    for bg in dark_bgs {
                        assert!(contrast(dark, luminance(bg)) >= 4.5, "{css}");
                    }
                }
            }
        }
        assert_eq!(
            accent_css("#2563eb"),
            ":root { --accent: #2563eb; --accent-text: #2563eb; --accent-text-dark: #6692f1; }\n"
        );
        // The demo's accent is too light for text on the light background.
        let demo = accent_css("#3B82F6");
        assert!(demo.contains("--accent-text: #326fd1;"), "{demo}");
        assert_eq!(parse_hex("#38f"), Some([0x33, 0x88, 0xff]));
        assert_eq!(parse_hex("#38"), None);
        assert_eq!(parse_hex("#zzzzzz"), None);
    }
}
