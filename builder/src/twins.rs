//! The one door the agent's dynamic twins of the static outputs (`/status/{slug}`,
//! `/badge/{slug}/{monitor}`, `/uptime/{monitor}`) go through: typed inputs in
//! ([`Inputs`] of [`AgentData`], the objects an agent exports, as values), the site
//! model out ([`Model`]), and from it the answers a build of those inputs would publish:
//! a page's `status.json`, a monitor's badges as SVG, its uptime windows.
//!
//! The model, renderers and site layout behind it stay private to the builder.

use chrono::{DateTime, Utc};

use crate::badge::{BadgeError, BadgeRenderer};
use crate::model::{MonitorView, PageView, Site};
use crate::render::{monitor_badges, status_json};
use crate::theme::{Theme, ThemeError};

pub use crate::model::round2;
pub use crate::source::{AgentData, HISTORY_DAYS, Inputs};

/// Why the twins' badge renderer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TwinsError {
    /// The default theme does not load.
    #[error(transparent)]
    Theme(#[from] ThemeError),
    /// The default theme's badge font is unusable.
    #[error("theme default: badge font: {0}")]
    Font(#[from] BadgeError),
}

/// The site model of some inputs at some time, as a build computes it: only published
/// pages, and only the monitors they show.
#[derive(Debug)]
pub struct Model {
    site: Site,
}

impl Model {
    /// The model of `inputs`, with windows measured against `now`.
    pub fn new(inputs: &Inputs, now: DateTime<Utc>) -> Model {
        Model {
            site: crate::model::site(inputs, now),
        }
    }

    /// The published page with this slug.
    pub fn page(&self, slug: &str) -> Option<Page<'_>> {
        self.site
            .pages
            .iter()
            .find(|p| p.slug == slug)
            .map(|view| Page {
                view,
                data_time: &self.site.data_time,
            })
    }

    /// Every monitor of every published page, page by page (a monitor shown on several
    /// pages comes once per page).
    pub fn monitors(&self) -> impl Iterator<Item = Monitor<'_>> {
        self.site
            .pages
            .iter()
            .flat_map(|p| p.monitors())
            .map(Monitor)
    }

    /// The time of the data (RFC 3339), as `status.json` gives it.
    pub fn data_time(&self) -> &str {
        &self.site.data_time
    }
}

/// A published page of a [`Model`].
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    view: &'a PageView,
    data_time: &'a str,
}

impl<'a> Page<'a> {
    /// Its slug.
    pub fn slug(&self) -> &'a str {
        &self.view.slug
    }

    /// Its `status.json`: the spec's `GET /status/:slug`, as the build publishes it.
    pub fn status_json(&self) -> serde_json::Value {
        status_json(self.view, self.data_time)
    }

    /// Whether the page publishes a badge per monitor (its `badges` scope is `all`).
    pub fn has_monitor_badges(&self) -> bool {
        self.view.badges == Some("all")
    }

    /// The monitors it shows, group by group.
    pub fn monitors(&self) -> impl Iterator<Item = Monitor<'a>> + use<'a> {
        self.view.monitors().map(Monitor)
    }
}

/// A monitor shown on a published page.
#[derive(Clone, Copy, Debug)]
pub struct Monitor<'a>(&'a MonitorView);

impl<'a> Monitor<'a> {
    /// Its namespace.
    pub fn namespace(&self) -> &'a str {
        &self.0.namespace
    }

    /// Its name.
    pub fn name(&self) -> &'a str {
        &self.0.name
    }

    /// `namespace/name`.
    pub fn key(&self) -> &'a str {
        &self.0.key
    }

    /// Its uptime over the last 1, 7, 30 or 90 days in percent, rounded as published
    /// (`None` without results or for another number of days).
    pub fn uptime(&self, days: u32) -> Option<f64> {
        self.0.uptime.for_days(days)
    }
}

/// Renders the badges of monitors as the static site does, with the default theme's
/// font. Build it once and share it.
#[derive(Debug)]
pub struct Badges {
    renderer: BadgeRenderer,
}

impl Badges {
    /// The renderer with the default theme's badge font.
    pub fn new() -> Result<Badges, TwinsError> {
        let theme = Theme::default_theme()?;
        Ok(Badges {
            renderer: BadgeRenderer::new(theme.badge_font)?,
        })
    }

    /// The SVG of `monitor`'s badge of this `kind` (`status`, `uptime-24h`,
    /// `uptime-7d`, `uptime-30d`, `uptime-90d`, `response-time`, `cert`); `None` for any
    /// other kind.
    pub fn svg(&self, monitor: Monitor<'_>, kind: &str) -> Option<String> {
        monitor_badges(monitor.0)
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, badge)| self.renderer.svg(&badge))
    }
}
