//! Themes: minijinja templates plus static assets, from a folder (`--theme DIR`) or the
//! default theme compiled into the binary (`themes/default`).
//!
//! A theme folder holds `templates/` (`index.html`, `page.html`, `rss.xml`, `atom.xml`
//! and any partials they include), `static/` (copied to `assets/` under a name carrying
//! the hash of the content, so they can be cached for a year) and optionally
//! `fonts/DejaVuSans.ttf` (the font badges are measured and rendered with; the default
//! theme's when absent) and `icon.svg` (the site's `favicon.ico` is drawn from it; the
//! default theme's mark when absent). Templates run with strict undefined variables: a misspelt
//! variable is an error, not an empty string. `themes/README.md` lists the variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use sha2::{Digest, Sha256};

use crate::digest::hex;

/// The default theme's badge font, also the font of a theme folder without one.
const DEFAULT_FONT: &[u8] = include_bytes!("../../themes/default/fonts/DejaVuSans.ttf");

/// The default theme's icon (the mark `favicon.ico` is drawn from), also the icon of a
/// theme folder without one.
const DEFAULT_ICON: &[u8] = include_bytes!("../../themes/default/icon.svg");

/// The default theme's files, relative to `themes/default/`.
const DEFAULT_FILES: &[(&str, &[u8])] = &[
    (
        "templates/base.html",
        include_bytes!("../../themes/default/templates/base.html"),
    ),
    (
        "templates/index.html",
        include_bytes!("../../themes/default/templates/index.html"),
    ),
    (
        "templates/page.html",
        include_bytes!("../../themes/default/templates/page.html"),
    ),
    (
        "templates/rss.xml",
        include_bytes!("../../themes/default/templates/rss.xml"),
    ),
    (
        "templates/atom.xml",
        include_bytes!("../../themes/default/templates/atom.xml"),
    ),
    (
        "static/style.css",
        include_bytes!("../../themes/default/static/style.css"),
    ),
    (
        "static/page.js",
        include_bytes!("../../themes/default/static/page.js"),
    ),
    ("fonts/DejaVuSans.ttf", DEFAULT_FONT),
    ("icon.svg", DEFAULT_ICON),
];

/// Templates every theme must have.
pub const REQUIRED_TEMPLATES: &[&str] = &["index.html", "page.html", "rss.xml", "atom.xml"];

/// What went wrong loading a theme.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// A file could not be read.
    #[error("theme {dir}: cannot read {file}: {cause}")]
    Read {
        /// The theme folder.
        dir: String,
        /// The file.
        file: String,
        /// Why.
        cause: String,
    },
    /// A required template is missing.
    #[error("theme {dir}: templates/{template} is missing (a theme needs {})", REQUIRED_TEMPLATES.join(", "))]
    Missing {
        /// The theme folder.
        dir: String,
        /// The template.
        template: String,
    },
    /// A template does not parse.
    #[error("theme {dir}: {cause}")]
    Template {
        /// The theme folder.
        dir: String,
        /// The parser's message (names the template and line).
        cause: String,
    },
    /// The icon does not draw.
    #[error("theme {dir}: {source}")]
    Icon {
        /// The theme folder (`default` for the compiled-in theme).
        dir: String,
        /// Why.
        source: crate::icon::IconError,
    },
    /// A template failed while rendering (an undefined variable, a failing filter).
    #[error("theme {dir}: {cause}")]
    Render {
        /// The theme folder (`default` for the compiled-in theme).
        dir: String,
        /// The engine's message with its causes (names the template and line).
        cause: String,
    },
}

/// A static file of a theme, published under a content-hashed name.
#[derive(Clone, Debug)]
pub struct Asset {
    /// Where it is published (`assets/style.1a2b3c4d5e.css`).
    pub path: String,
    /// The content.
    pub bytes: Vec<u8>,
}

/// A loaded theme.
pub struct Theme {
    /// Where it came from (`default` or the folder).
    pub origin: String,
    env: Environment<'static>,
    /// Static assets by name.
    pub(crate) assets: BTreeMap<String, Asset>,
    /// The badge font (TrueType).
    pub(crate) badge_font: Vec<u8>,
    /// `favicon.ico`, drawn from the theme's `icon.svg`.
    pub(crate) favicon: Vec<u8>,
    /// SHA-256 of every file of the theme (path and content), part of a build's
    /// fingerprint.
    pub(crate) digest: String,
}

impl std::fmt::Debug for Theme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Theme")
            .field("origin", &self.origin)
            .field("assets", &self.assets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Theme {
    /// The default theme, compiled in.
    pub fn default_theme() -> Result<Theme, ThemeError> {
        let files = DEFAULT_FILES
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()))
            .collect();
        Theme::from_files("default", files)
    }

    /// A theme folder.
    pub fn load(dir: &Path) -> Result<Theme, ThemeError> {
        let origin = dir.display().to_string();
        let mut files = BTreeMap::new();
        for sub in ["templates", "static", "fonts"] {
            let base = dir.join(sub);
            if !base.exists() {
                continue;
            }
            for path in walk(&base).map_err(|e| ThemeError::Read {
                dir: origin.clone(),
                file: sub.into(),
                cause: e.to_string(),
            })? {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let bytes = std::fs::read(&path).map_err(|e| ThemeError::Read {
                    dir: origin.clone(),
                    file: rel.clone(),
                    cause: e.to_string(),
                })?;
                files.insert(rel, bytes);
            }
        }
        let icon = dir.join("icon.svg");
        if icon.exists() {
            let bytes = std::fs::read(&icon).map_err(|e| ThemeError::Read {
                dir: origin.clone(),
                file: "icon.svg".into(),
                cause: e.to_string(),
            })?;
            files.insert("icon.svg".into(), bytes);
        }
        files
            .entry("fonts/DejaVuSans.ttf".into())
            .or_insert_with(|| DEFAULT_FONT.to_vec());
        files
            .entry("icon.svg".into())
            .or_insert_with(|| DEFAULT_ICON.to_vec());
        Theme::from_files(&origin, files)
    }

    fn from_files(origin: &str, files: BTreeMap<String, Vec<u8>>) -> Result<Theme, ThemeError> {
        let digest = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for (rel, bytes) in &files {
                h.update((rel.len() as u64).to_le_bytes());
                h.update(rel.as_bytes());
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            crate::digest::hex(&h.finalize())
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") || name.ends_with(".xml") || name.ends_with(".svg") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.add_filter("percent", |v: Option<f64>| match v {
            Some(v) => crate::model::percent_text(v),
            None => "–".to_string(),
        });
        env.add_filter("duration", |secs: i64| crate::model::duration_text(secs));
        env.add_filter("date", |iso: String| {
            chrono::DateTime::parse_from_rfc3339(&iso)
                .map(|t| {
                    t.with_timezone(&chrono::Utc)
                        .format("%b %-d, %Y %H:%M UTC")
                        .to_string()
                })
                .unwrap_or(iso)
        });
        env.add_filter("rfc2822", |iso: String| {
            chrono::DateTime::parse_from_rfc3339(&iso)
                .map(|t| t.to_rfc2822())
                .unwrap_or(iso)
        });

        let mut assets = BTreeMap::new();
        let mut font = None;
        let mut icon = None;
        for (rel, bytes) in files {
            if let Some(name) = rel.strip_prefix("templates/") {
                let source = String::from_utf8(bytes).map_err(|_| ThemeError::Read {
                    dir: origin.into(),
                    file: rel.clone(),
                    cause: "not UTF-8 text".into(),
                })?;
                env.add_template_owned(name.to_string(), source)
                    .map_err(|e| ThemeError::Template {
                        dir: origin.into(),
                        cause: describe(&e),
                    })?;
            } else if let Some(name) = rel.strip_prefix("static/") {
                let path = hashed_name(name, &bytes);
                assets.insert(name.to_string(), Asset { path, bytes });
            } else if rel == "fonts/DejaVuSans.ttf" {
                font = Some(bytes);
            } else if rel == "icon.svg" {
                icon = Some(bytes);
            }
        }
        for t in REQUIRED_TEMPLATES {
            if env.get_template(t).is_err() {
                return Err(ThemeError::Missing {
                    dir: origin.into(),
                    template: (*t).into(),
                });
            }
        }
        let badge_font = font.unwrap_or_default();
        let favicon =
            crate::icon::favicon_ico(icon.as_deref().unwrap_or(DEFAULT_ICON), &badge_font)
                .map_err(|source| ThemeError::Icon {
                    dir: origin.into(),
                    source,
                })?;
        Ok(Theme {
            origin: origin.into(),
            env,
            assets,
            badge_font,
            favicon,
            digest,
        })
    }

    /// Render a template with a context.
    pub(crate) fn render(
        &self,
        template: &str,
        ctx: minijinja::Value,
    ) -> Result<String, ThemeError> {
        let failed = |e: minijinja::Error| ThemeError::Render {
            dir: self.origin.clone(),
            cause: describe(&e),
        };
        self.env
            .get_template(template)
            .map_err(failed)?
            .render(ctx)
            .map_err(failed)
    }

    /// Asset paths by name, as templates see them (`assets["style.css"]`).
    pub(crate) fn asset_paths(&self) -> BTreeMap<String, String> {
        self.assets
            .iter()
            .map(|(n, a)| (n.clone(), a.path.clone()))
            .collect()
    }
}

/// `assets/<stem>.<10 hex of sha256>.<ext>`.
pub fn hashed_name(name: &str, bytes: &[u8]) -> String {
    let digest = hex(&Sha256::digest(bytes));
    let short = &digest[..10];
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("assets/{stem}.{short}.{ext}"),
        _ => format!("assets/{name}.{short}"),
    }
}

/// A minijinja error with its causes, template name and line.
fn describe(e: &minijinja::Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
