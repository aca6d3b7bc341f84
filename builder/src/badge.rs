//! Status badges: shields.io-style "flat" SVG and PNG, measured and rendered with the
//! theme's own font so that both outputs agree pixel for pixel.
//!
//! The [`BadgeRenderer`] is built once from the font file (`themes/default/fonts/DejaVuSans.ttf`)
//! and reused for every badge: it holds the font's advance and kerning tables, used to size
//! the SVG, and a `usvg` option set with that same font loaded, used to rasterise it. Nothing
//! here reads files or the system's fonts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use resvg::tiny_skia;
use resvg::usvg;
use sha2::{Digest, Sha256};

/// Font size of badge text, in SVG user units (pixels at scale 1).
const FONT_SIZE: f64 = 11.0;
/// Horizontal padding on each side of a text, in pixels.
const PADDING: f64 = 5.0;
/// Height of every badge, in pixels.
const HEIGHT: u32 = 20;
/// Baseline of the text; its shadow sits one pixel lower.
const BASELINE: f64 = 14.0;
/// Fill of the label (left) part.
const LABEL_COLOR: &str = "#555";
/// The `font-family` written into the SVG: the shipped font first, then the fonts
/// browsers are likely to have with similar metrics.
const FONT_FAMILY: &str = "DejaVu Sans,Verdana,Geneva,sans-serif";

/// Errors of badge rendering.
#[derive(Debug, thiserror::Error)]
pub enum BadgeError {
    /// The font file given to [`BadgeRenderer::new`] is not a usable TrueType/OpenType font.
    #[error("badge font does not parse: {0}")]
    Font(String),
    /// The SVG given to [`BadgeRenderer::png`] does not parse.
    #[error("badge svg does not parse: {0}")]
    Svg(#[from] usvg::Error),
    /// The requested PNG size is zero, not finite or too large.
    #[error("badge png size is out of range: {width}x{height} at scale {scale}")]
    Size {
        /// Width of the SVG, in user units.
        width: f32,
        /// Height of the SVG, in user units.
        height: f32,
        /// The requested scale.
        scale: f32,
    },
    /// PNG encoding failed.
    #[error("badge png encoding failed: {0}")]
    Png(String),
}

/// The colour of a badge's message (right) part.
///
/// The named colours are shields.io's, so that a badge looks the same whether it comes
/// from our SVG or from shields' endpoint badge fed with [`shields_endpoint_json`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BadgeColor {
    /// `#4c1` (shields `brightgreen`): up, healthy.
    Green,
    /// `#a4a61d` (shields `yellowgreen`): good but not perfect.
    YellowGreen,
    /// `#dfb317` (shields `yellow`): degraded, flapping.
    Yellow,
    /// `#fe7d37` (shields `orange`): close to failing.
    Orange,
    /// `#e05d44` (shields `red`): down.
    Red,
    /// `#007ec6` (shields `blue`): maintenance.
    Blue,
    /// `#9f9f9f` (shields `lightgrey`): pending, paused, unknown.
    Grey,
    /// A colour given as `#rgb` or `#rrggbb`. Anything else is drawn as [`BadgeColor::Grey`];
    /// build it with [`BadgeColor::from_hex`] to have that decided at once.
    Custom(String),
}

impl BadgeColor {
    /// A custom colour from `#rgb` or `#rrggbb` (case-insensitive, stored lowercase);
    /// anything else gives [`BadgeColor::Grey`].
    pub fn from_hex(hex: &str) -> BadgeColor {
        if is_hex_color(hex) {
            BadgeColor::Custom(hex.to_ascii_lowercase())
        } else {
            BadgeColor::Grey
        }
    }

    /// The colour as written into the SVG: `#` and 3 or 6 lowercase hex digits.
    pub fn hex(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            BadgeColor::Green => "#4c1",
            BadgeColor::YellowGreen => "#a4a61d",
            BadgeColor::Yellow => "#dfb317",
            BadgeColor::Orange => "#fe7d37",
            BadgeColor::Red => "#e05d44",
            BadgeColor::Blue => "#007ec6",
            BadgeColor::Grey => "#9f9f9f",
            BadgeColor::Custom(hex) if is_hex_color(hex) => {
                return Cow::Owned(hex.to_ascii_lowercase());
            }
            BadgeColor::Custom(_) => "#9f9f9f",
        })
    }

    /// The colour as shields.io's endpoint badge takes it: a named colour, or the hex
    /// digits without `#`.
    pub fn shields_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            BadgeColor::Green => "brightgreen",
            BadgeColor::YellowGreen => "yellowgreen",
            BadgeColor::Yellow => "yellow",
            BadgeColor::Orange => "orange",
            BadgeColor::Red => "red",
            BadgeColor::Blue => "blue",
            BadgeColor::Grey => "lightgrey",
            BadgeColor::Custom(hex) if is_hex_color(hex) => {
                return Cow::Owned(hex[1..].to_ascii_lowercase());
            }
            BadgeColor::Custom(_) => "lightgrey",
        })
    }

    /// Whether white text would be hard to read on this colour (perceived brightness
    /// above 0.69); the badge then uses dark text instead.
    fn is_light(&self) -> bool {
        let hex = self.hex();
        let digits = &hex[1..];
        let channel = |i: usize| -> f64 {
            let value = if digits.len() == 3 {
                u8::from_str_radix(&digits[i..=i], 16).map(|v| v * 17)
            } else {
                u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
            };
            f64::from(value.unwrap_or(0)) / 255.0
        };
        0.299 * channel(0) + 0.587 * channel(1) + 0.114 * channel(2) > 0.69
    }
}

fn is_hex_color(s: &str) -> bool {
    s.strip_prefix('#').is_some_and(|digits| {
        matches!(digits.len(), 3 | 6) && digits.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Colour for an uptime percentage (0–100): at least 99.9 green, 99 yellow-green, 97 yellow,
/// 95 orange, below that red; no data (or NaN) grey.
pub fn color_for_uptime(percent: Option<f64>) -> BadgeColor {
    match percent {
        Some(p) if p >= 99.9 => BadgeColor::Green,
        Some(p) if p >= 99.0 => BadgeColor::YellowGreen,
        Some(p) if p >= 97.0 => BadgeColor::Yellow,
        Some(p) if p >= 95.0 => BadgeColor::Orange,
        Some(p) if !p.is_nan() => BadgeColor::Red,
        _ => BadgeColor::Grey,
    }
}

/// Colour for a response time in milliseconds: below 200 green, 500 yellow-green, 1000
/// yellow, 2000 orange, from 2000 on red; no data (or NaN) grey.
pub fn color_for_latency(ms: Option<f64>) -> BadgeColor {
    match ms {
        Some(ms) if ms < 200.0 => BadgeColor::Green,
        Some(ms) if ms < 500.0 => BadgeColor::YellowGreen,
        Some(ms) if ms < 1000.0 => BadgeColor::Yellow,
        Some(ms) if ms < 2000.0 => BadgeColor::Orange,
        Some(ms) if !ms.is_nan() => BadgeColor::Red,
        _ => BadgeColor::Grey,
    }
}

/// Colour for the days left before a certificate expires: 30 or more green, 14 or more
/// yellow, 7 or more orange, fewer (or expired, negative) red; unknown grey.
pub fn color_for_cert_days(days: Option<i64>) -> BadgeColor {
    match days {
        None => BadgeColor::Grey,
        Some(d) if d >= 30 => BadgeColor::Green,
        Some(d) if d >= 14 => BadgeColor::Yellow,
        Some(d) if d >= 7 => BadgeColor::Orange,
        Some(_) => BadgeColor::Red,
    }
}

/// One badge: a grey label on the left, a coloured message on the right.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Badge {
    /// The left text, e.g. the monitor's name. When empty, only the message part is drawn.
    pub label: String,
    /// The right text, e.g. `up` or `99.95%`.
    pub message: String,
    /// The colour of the message part.
    pub color: BadgeColor,
    /// The SVG's `<title>` and `aria-label`; `None` gives `"label: message"` (or just the
    /// message when the label is empty).
    pub title: Option<String>,
}

impl Badge {
    /// A badge with the default title.
    pub fn new(label: impl Into<String>, message: impl Into<String>, color: BadgeColor) -> Badge {
        Badge {
            label: label.into(),
            message: message.into(),
            color,
            title: None,
        }
    }
}

/// The badge as shields.io's endpoint badge JSON (schema version 1), for users who prefer
/// `https://img.shields.io/endpoint?url=…` over our own SVG.
pub fn shields_endpoint_json(badge: &Badge) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 1,
        "label": clean_text(&badge.label),
        "message": clean_text(&badge.message),
        "color": badge.color.shields_name(),
    })
}

/// Renders badges with one font: measures text with the font's own metrics, writes the
/// SVG, and rasterises SVG to PNG with the same font loaded into usvg.
///
/// Build it once and share it (it is `Send + Sync`); every method takes `&self`.
pub struct BadgeRenderer {
    metrics: FontMetrics,
    options: usvg::Options<'static>,
}

impl fmt::Debug for BadgeRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BadgeRenderer")
            .field("units_per_em", &self.metrics.units_per_em)
            .field("glyphs", &self.metrics.advances.len())
            .field("kerning_pairs", &self.metrics.kerning.len())
            .finish_non_exhaustive()
    }
}

impl BadgeRenderer {
    /// A renderer for the given TrueType/OpenType font file (a single face, not a
    /// collection). Fails when the font's `head`, `hhea`, `maxp`, `hmtx` or `cmap` table is
    /// missing or malformed, or when usvg's font database does not take the font.
    pub fn new(font_ttf: Vec<u8>) -> Result<Self, BadgeError> {
        let metrics = FontMetrics::parse(&font_ttf).map_err(BadgeError::Font)?;

        let mut options = usvg::Options {
            // Badges never contain images: never let an SVG reach the file system.
            image_href_resolver: usvg::ImageHrefResolver {
                resolve_data: Box::new(|_, _, _| None),
                resolve_string: Box::new(|_, _| None),
            },
            ..usvg::Options::default()
        };
        let db = options.fontdb_mut();
        let ids = db.load_font_source(usvg::fontdb::Source::Binary(Arc::new(font_ttf)));
        let Some(family) = ids
            .first()
            .and_then(|id| db.face(*id))
            .and_then(|face| face.families.first())
            .map(|(name, _)| name.clone())
        else {
            return Err(BadgeError::Font(
                "usvg's font database did not load it".into(),
            ));
        };
        // Whatever family the font has, the SVG's `sans-serif` fallback and usvg's default
        // both resolve to it.
        db.set_sans_serif_family(family.clone());
        options.font_family = family;

        Ok(BadgeRenderer { metrics, options })
    }

    /// The advance width of `text` set at `font_size`, in the same units: the sum of the
    /// glyphs' horizontal advances (`hmtx`) plus the pair kerning of the `kern` table.
    /// Characters missing from the font count as the `.notdef` glyph, as the renderer
    /// draws them.
    ///
    /// This is what usvg's shaper lays out, kerning included, except for ligatures: a
    /// sequence such as DejaVu's `fi` measures a little wider (about 0.08 px at 11 px) than
    /// the ligature drawn in its place. Badges stay correct because every text in the SVG
    /// carries its measured `textLength`.
    pub fn text_width(&self, text: &str, font_size: f64) -> f64 {
        self.metrics.width_units(text) as f64 * font_size / f64::from(self.metrics.units_per_em)
    }

    /// The badge as a standalone SVG document in the "flat" style: 20 pixels high, the
    /// label on `#555` and the message on the badge colour, rounded corners, a faint
    /// vertical gradient, white 11px text with a soft shadow, 5 pixels of padding around
    /// each text. Widths come from [`BadgeRenderer::text_width`], and each text carries a
    /// `textLength` so that viewers using another font still fit it in its box.
    ///
    /// Control characters are dropped and runs of white space collapse to one space (as
    /// SVG would display them anyway); all text is XML-escaped.
    pub fn svg(&self, badge: &Badge) -> String {
        self.write_svg(&self.layout(badge), Part::Whole)
    }

    /// Texts, colours and widths of a badge, shared by the whole SVG and its parts.
    fn layout(&self, badge: &Badge) -> Layout {
        let label = clean_text(&badge.label);
        let message = clean_text(&badge.message);
        let title = match &badge.title {
            Some(title) => clean_text(title),
            None if label.is_empty() => message.clone(),
            None => format!("{label}: {message}"),
        };
        let color = badge.color.hex();
        let (text_fill, shadow_fill) = if badge.color.is_light() {
            ("#333", "#ccc")
        } else {
            ("#fff", "#010101")
        };

        let label_text_width = self.text_width(&label, FONT_SIZE);
        let message_text_width = self.text_width(&message, FONT_SIZE);
        let label_width = if label.is_empty() {
            0.0
        } else {
            (label_text_width + 2.0 * PADDING).ceil()
        };
        let message_width = (message_text_width + 2.0 * PADDING).ceil();

        // Ids are derived from the content, so two different badges inlined into one HTML
        // page never pick up each other's clip path, and the output stays deterministic.
        let mut hasher = Sha256::new();
        for part in [&label, &message, color.as_ref()] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let digest = hasher.finalize();
        let mut id = String::from("kkb");
        for byte in &digest[..4] {
            let _ = write!(id, "{byte:02x}");
        }
        Layout {
            label,
            message,
            title,
            color,
            text_fill,
            shadow_fill,
            label_text_width,
            message_text_width,
            label_width,
            message_width,
            id,
        }
    }

    /// The SVG of the whole badge, or of one part for [`BadgeRenderer::png_parts`]: a part
    /// keeps every coordinate of the whole badge, including the full-width clip path and
    /// gradient, draws only its own rectangle and texts, and shows only its own columns
    /// through the `viewBox`, so that its pixels are those of the whole badge's.
    fn write_svg(&self, l: &Layout, part: Part) -> String {
        let width = l.label_width + l.message_width;
        let w = num(width);
        let (view_x, view_width) = match part {
            Part::Whole => (0.0, width),
            Part::Label => (0.0, l.label_width),
            Part::Message => (l.label_width, l.message_width),
        };
        // A part is never inlined into a page: a fixed id lets equal parts of different
        // badges have equal SVGs.
        let id = if part == Part::Whole {
            l.id.as_str()
        } else {
            "p"
        };
        let color = &l.color;
        // A part's clip path and gradient cover its own columns and a little beyond
        // (past the other side's rounded corners), so that its layer is no wider than
        // the part.
        let (clip_x, clip_w, grad_x, grad_w) = match part {
            Part::Whole => (String::new(), w.clone(), String::new(), w.clone()),
            Part::Label => (
                String::new(),
                num(l.label_width + 3.0),
                String::new(),
                num(l.label_width),
            ),
            Part::Message => (
                format!(r#" x="{}""#, num(l.label_width - 3.0)),
                num(l.message_width + 3.0),
                format!(r#" x="{}""#, num(l.label_width)),
                num(l.message_width),
            ),
        };
        let mut svg = String::with_capacity(1536);
        if part == Part::Whole {
            let _ = writeln!(
                svg,
                r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{HEIGHT}" viewBox="0 0 {w} {HEIGHT}" role="img" aria-label="{aria}">"##,
                aria = escape(&l.title),
            );
            let _ = writeln!(svg, "<title>{}</title>", escape(&l.title));
        } else {
            let _ = writeln!(
                svg,
                r##"<svg xmlns="http://www.w3.org/2000/svg" width="{vw}" height="{HEIGHT}" viewBox="{vx} 0 {vw} {HEIGHT}">"##,
                vw = num(view_width),
                vx = num(view_x),
            );
        }
        let _ = writeln!(
            svg,
            r##"<linearGradient id="{id}-s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-color="#000" stop-opacity=".1"/></linearGradient>"##
        );
        let _ = writeln!(
            svg,
            r##"<clipPath id="{id}-r"><rect{clip_x} width="{clip_w}" height="{HEIGHT}" rx="3" fill="#fff"/></clipPath>"##
        );
        let _ = writeln!(svg, r##"<g clip-path="url(#{id}-r)">"##);
        if l.label_width > 0.0 && part != Part::Message {
            let _ = writeln!(
                svg,
                r##"<rect width="{}" height="{HEIGHT}" fill="{LABEL_COLOR}"/>"##,
                num(l.label_width)
            );
        }
        if part != Part::Label {
            let _ = writeln!(
                svg,
                r##"<rect x="{}" width="{}" height="{HEIGHT}" fill="{color}"/>"##,
                num(l.label_width),
                num(l.message_width)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect{grad_x} width="{grad_w}" height="{HEIGHT}" fill="url(#{id}-s)"/>"##
        );
        svg.push_str("</g>\n");
        let _ = writeln!(
            svg,
            r##"<g text-anchor="middle" font-family="{FONT_FAMILY}" font-size="{}">"##,
            num(FONT_SIZE)
        );
        let texts = [
            (
                Part::Label,
                &l.label,
                l.label_text_width,
                l.label_width / 2.0,
                "#fff",
                "#010101",
            ),
            (
                Part::Message,
                &l.message,
                l.message_text_width,
                l.label_width + l.message_width / 2.0,
                l.text_fill,
                l.shadow_fill,
            ),
        ];
        for (which, text, text_width, center, fill, shadow) in texts {
            if text.is_empty() || (part != Part::Whole && part != which) {
                continue;
            }
            let (x, length, text) = (num(center), num(text_width), escape(text));
            let _ = writeln!(
                svg,
                r##"<text x="{x}" y="{}" fill="{shadow}" fill-opacity=".3" textLength="{length}">{text}</text>"##,
                num(BASELINE + 1.0)
            );
            let _ = writeln!(
                svg,
                r##"<text x="{x}" y="{}" fill="{fill}" textLength="{length}">{text}</text>"##,
                num(BASELINE)
            );
        }
        svg.push_str("</g>\n</svg>\n");
        svg
    }

    /// The badge's picture in two parts, label and message, each an SVG to rasterise
    /// with [`BadgeRenderer::raster_part`] and join with [`compose_png`]: the PNG is then
    /// the same, pixel for pixel, as [`BadgeRenderer::png`] of [`BadgeRenderer::svg`], but
    /// badges that share a label (the monitor's name) or a message (`up`, `100%`) share
    /// the rasterising of that part. `None` when the badge has no label or its parts do
    /// not fall on whole pixels at `scale`.
    pub fn png_parts(&self, badge: &Badge, scale: f32) -> Option<[String; 2]> {
        let l = self.layout(badge);
        let whole_pixels = |v: f64| {
            let px = v * f64::from(scale);
            px.fract() == 0.0 && px > 0.0
        };
        if !(whole_pixels(l.label_width) && whole_pixels(l.message_width)) {
            return None;
        }
        Some([
            self.write_svg(&l, Part::Label),
            self.write_svg(&l, Part::Message),
        ])
    }

    /// Rasterises one part from [`BadgeRenderer::png_parts`]. `None` when a text's ink
    /// crosses into the other part (a glyph overhanging its box), where only rendering
    /// the whole badge is exact.
    pub fn raster_part(&self, svg: &str, scale: f32) -> Result<Option<BadgePart>, BadgeError> {
        let tree = usvg::Tree::from_str(svg, &self.options)?;
        let size = tree.size();
        if !ink_within(tree.root(), size.width()) {
            return Ok(None);
        }
        self.raster(&tree, scale).map(|p| Some(BadgePart(p)))
    }

    /// [`BadgeRenderer::png`] through [`BadgeRenderer::png_parts`] when the badge splits,
    /// else of the whole SVG: the same bytes either way.
    pub fn png_by_parts(&self, badge: &Badge, scale: f32) -> Result<Vec<u8>, BadgeError> {
        if let Some([label, message]) = self.png_parts(badge, scale)
            && let (Some(label), Some(message)) = (
                self.raster_part(&label, scale)?,
                self.raster_part(&message, scale)?,
            )
        {
            return compose_png(&label, &message);
        }
        self.png(&self.svg(badge), scale)
    }

    fn raster(&self, tree: &usvg::Tree, scale: f32) -> Result<tiny_skia::Pixmap, BadgeError> {
        let size = tree.size();
        let out_of_range = || BadgeError::Size {
            width: size.width(),
            height: size.height(),
            scale,
        };
        let (width, height) = (size.width() * scale, size.height() * scale);
        if !(scale.is_finite() && scale > 0.0 && width <= 16384.0 && height <= 16384.0) {
            return Err(out_of_range());
        }
        let mut pixmap = tiny_skia::Pixmap::new(width.ceil() as u32, height.ceil() as u32)
            .ok_or_else(out_of_range)?;
        resvg::render(
            tree,
            tiny_skia::Transform::from_scale(scale, scale),
            &mut pixmap.as_mut(),
        );
        Ok(pixmap)
    }

    /// Rasterises an SVG (normally one from [`BadgeRenderer::svg`]) to PNG, `scale` device
    /// pixels per SVG pixel (2.0 gives crisp badges on high-density screens). The image is
    /// the SVG's size times `scale`, rounded up. Text is drawn with the renderer's font
    /// only; external images are never loaded.
    pub fn png(&self, svg: &str, scale: f32) -> Result<Vec<u8>, BadgeError> {
        let tree = usvg::Tree::from_str(svg, &self.options)?;
        let pixmap = self.raster(&tree, scale)?;
        encode_png(pixmap).map_err(|e| BadgeError::Png(e.to_string()))
    }

    /// What decides a badge's pixels: everything but its title, which an SVG viewer does
    /// not draw. Badges with the same key have the same PNG.
    pub fn raster_key(badge: &Badge) -> (String, String, String) {
        (
            clean_text(&badge.label),
            clean_text(&badge.message),
            badge.color.hex().into_owned(),
        )
    }
}

/// Which columns of a badge an SVG draws.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    Label,
    Message,
}

/// What [`BadgeRenderer::layout`] works out once per badge.
struct Layout {
    label: String,
    message: String,
    title: String,
    color: Cow<'static, str>,
    text_fill: &'static str,
    shadow_fill: &'static str,
    label_text_width: f64,
    message_text_width: f64,
    label_width: f64,
    message_width: f64,
    id: String,
}

/// One rasterised part of a badge (see [`BadgeRenderer::png_parts`]).
#[derive(Clone, Debug)]
pub struct BadgePart(tiny_skia::Pixmap);

/// The PNG of a badge from its label and message parts, side by side.
pub fn compose_png(label: &BadgePart, message: &BadgePart) -> Result<Vec<u8>, BadgeError> {
    let (l, m) = (&label.0, &message.0);
    let size_error = || BadgeError::Size {
        width: (l.width() + m.width()) as f32,
        height: l.height() as f32,
        scale: 1.0,
    };
    if l.height() != m.height() {
        return Err(size_error());
    }
    let mut whole =
        tiny_skia::Pixmap::new(l.width() + m.width(), l.height()).ok_or_else(size_error)?;
    let (lw, mw) = (l.width() as usize * 4, m.width() as usize * 4);
    for ((row, lrow), mrow) in whole
        .data_mut()
        .chunks_exact_mut(lw + mw)
        .zip(l.data().chunks_exact(lw))
        .zip(m.data().chunks_exact(mw))
    {
        row[..lw].copy_from_slice(lrow);
        row[lw..].copy_from_slice(mrow);
    }
    encode_png(whole).map_err(|e| BadgeError::Png(e.to_string()))
}

/// Whether the ink of every text under `group` lies within the columns `0..=width`.
fn ink_within(group: &usvg::Group, width: f32) -> bool {
    group.children().iter().all(|node| match node {
        usvg::Node::Group(g) => ink_within(g, width),
        usvg::Node::Text(t) => {
            let ink = t.flattened().abs_stroke_bounding_box();
            ink.left() >= 0.0 && ink.right() <= width
        }
        _ => true,
    })
}

/// PNG of a rendered pixmap, with the `png` crate's fast DEFLATE (fdeflate, tuned for
/// PNG): several times faster than the default level on badge-sized images, for files
/// a few percent larger.
fn encode_png(pixmap: tiny_skia::Pixmap) -> Result<Vec<u8>, png::EncodingError> {
    let (width, height) = (pixmap.width(), pixmap.height());
    let data = pixmap.take_demultiplied();
    let mut out = Vec::with_capacity(data.len() / 4);
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&data)?;
    }
    Ok(out)
}

/// Drops control characters (and the XML non-characters U+FFFE, U+FFFF) and collapses
/// white space as SVG displays it: runs become one space, none at either end.
fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            word.chars()
                .filter(|c| !c.is_control() && !matches!(c, '\u{FFFE}' | '\u{FFFF}')),
        );
    }
    out
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
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
    out.into()
}

/// A coordinate with at most two decimals and no trailing zeros.
fn num(value: f64) -> String {
    let mut s = format!("{:.2}", value);
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    if s == "-0" { "0".into() } else { s }
}

/// The horizontal metrics of one font face, read from its `head`, `hhea`, `maxp`, `hmtx`,
/// `cmap` and (optional) `kern` tables.
struct FontMetrics {
    units_per_em: u16,
    /// Advance width of each glyph, in font units, indexed by glyph id.
    advances: Vec<u16>,
    /// Glyph ids of U+0000..U+007F, the common case, looked up without the cmap.
    ascii: [u16; 128],
    /// The character map: sorted, non-overlapping ranges of code points.
    cmap: Vec<CmapRange>,
    /// Glyph ids referenced by [`CmapRange::Array`] ranges.
    glyph_ids: Vec<u16>,
    /// Pair kerning, `(left << 16) | right` → adjustment in font units, sorted by key.
    kerning: Vec<(u32, i16)>,
}

#[derive(Clone, Copy)]
struct CmapRange {
    start: u32,
    end: u32,
    map: CmapMap,
}

#[derive(Clone, Copy)]
enum CmapMap {
    /// glyph = (code point + delta) mod 65536 (cmap format 4 without a glyph array).
    Delta16(u16),
    /// glyph = glyph of `start` + (code point − start) (cmap format 12).
    Sequential(u32),
    /// glyph = `glyph_ids[index + code point − start]` (cmap format 4 with a glyph array).
    Array(usize),
}

impl FontMetrics {
    fn parse(data: &[u8]) -> Result<FontMetrics, String> {
        let font = Reader(data);
        let version = font.u32(0).ok_or("file is too short")?;
        match version {
            0x0001_0000 | 0x7472_7565 /* true */ | 0x4F54_544F /* OTTO */ => {}
            0x7474_6366 /* ttcf */ => return Err("font collections are not supported".into()),
            _ => return Err("not a TrueType or OpenType font".into()),
        }
        let num_tables = font.u16(4).ok_or("truncated table directory")?;
        let table = |tag: &[u8; 4]| -> Option<Reader<'_>> {
            (0..usize::from(num_tables)).find_map(|i| {
                let record = 12 + 16 * i;
                if data.get(record..record + 4)? != tag {
                    return None;
                }
                let offset = font.u32(record + 8)? as usize;
                let length = font.u32(record + 12)? as usize;
                data.get(offset..offset.checked_add(length)?).map(Reader)
            })
        };
        let required = |tag: &'static str| {
            let mut bytes = [b' '; 4];
            bytes.copy_from_slice(tag.as_bytes());
            table(&bytes).ok_or_else(|| format!("missing or truncated '{}' table", tag.trim_end()))
        };

        let head = required("head")?;
        let units_per_em = head.u16(18).filter(|&u| u > 0).ok_or("bad 'head' table")?;
        let num_glyphs = required("maxp")?.u16(4).ok_or("bad 'maxp' table")?;
        let num_h_metrics = required("hhea")?
            .u16(34)
            .filter(|&n| n > 0 && n <= num_glyphs)
            .ok_or("bad 'hhea' table")?;

        let hmtx = required("hmtx")?;
        let mut advances = Vec::with_capacity(usize::from(num_glyphs));
        for i in 0..usize::from(num_h_metrics) {
            advances.push(hmtx.u16(4 * i).ok_or("truncated 'hmtx' table")?);
        }
        let last = advances[advances.len() - 1];
        advances.resize(usize::from(num_glyphs), last);

        let (cmap, glyph_ids) = parse_cmap(required("cmap")?).ok_or("bad 'cmap' table")?;
        let kerning = table(b"kern").map(parse_kern).unwrap_or_default();

        let mut metrics = FontMetrics {
            units_per_em,
            advances,
            ascii: [0; 128],
            cmap,
            glyph_ids,
            kerning,
        };
        metrics.ascii = std::array::from_fn(|c| metrics.lookup(c as u32));
        Ok(metrics)
    }

    fn lookup(&self, c: u32) -> u16 {
        let i = self.cmap.partition_point(|r| r.end < c);
        let Some(range) = self.cmap.get(i).filter(|r| r.start <= c) else {
            return 0;
        };
        let offset = c - range.start;
        let glyph = match range.map {
            CmapMap::Delta16(delta) => u32::from((c as u16).wrapping_add(delta)),
            CmapMap::Sequential(first) => first.saturating_add(offset),
            CmapMap::Array(index) => self
                .glyph_ids
                .get(index + offset as usize)
                .map_or(0, |&g| u32::from(g)),
        };
        u16::try_from(glyph)
            .ok()
            .filter(|&g| usize::from(g) < self.advances.len())
            .unwrap_or(0)
    }

    fn glyph(&self, c: char) -> u16 {
        match self.ascii.get(c as usize) {
            Some(&glyph) => glyph,
            None => self.lookup(u32::from(c)),
        }
    }

    fn width_units(&self, text: &str) -> i64 {
        let mut width = 0i64;
        let mut previous: Option<u16> = None;
        for c in text.chars() {
            let glyph = self.glyph(c);
            width += i64::from(self.advances[usize::from(glyph)]);
            if let Some(left) = previous {
                let key = (u32::from(left) << 16) | u32::from(glyph);
                if let Ok(i) = self.kerning.binary_search_by_key(&key, |&(k, _)| k) {
                    width += i64::from(self.kerning[i].1);
                }
            }
            previous = Some(glyph);
        }
        width
    }
}

/// Big-endian reads that return `None` past the end instead of panicking.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u16(&self, at: usize) -> Option<u16> {
        let bytes = self.0.get(at..at.checked_add(2)?)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i16(&self, at: usize) -> Option<i16> {
        self.u16(at).map(|v| v as i16)
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let bytes = self.0.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn from(&self, at: usize) -> Option<Reader<'a>> {
        self.0.get(at..).map(Reader)
    }
}

/// Reads the best Unicode subtable of a `cmap`: full-repertoire format 12 if present,
/// else BMP format 4.
fn parse_cmap(cmap: Reader<'_>) -> Option<(Vec<CmapRange>, Vec<u16>)> {
    let count = usize::from(cmap.u16(2)?);
    let mut best: Option<(u8, Reader<'_>)> = None;
    for i in 0..count {
        let record = 4 + 8 * i;
        let (platform, encoding) = (cmap.u16(record)?, cmap.u16(record + 2)?);
        let Some(subtable) = cmap.from(cmap.u32(record + 4)? as usize) else {
            continue;
        };
        let unicode = matches!((platform, encoding), (0, _) | (3, 1) | (3, 10));
        let rank = match subtable.u16(0) {
            Some(12) if unicode => 2,
            Some(4) if unicode => 1,
            _ => continue,
        };
        if best.is_none_or(|(r, _)| rank > r) {
            best = Some((rank, subtable));
        }
    }
    let (_, subtable) = best?;
    let mut glyph_ids = Vec::new();
    let mut ranges = Vec::new();
    if subtable.u16(0)? == 12 {
        let groups = subtable.u32(12)? as usize;
        for i in 0..groups {
            let group = 16 + 12 * i;
            let (start, end) = (subtable.u32(group)?, subtable.u32(group + 4)?);
            if start <= end {
                let first = subtable.u32(group + 8)?;
                ranges.push(CmapRange {
                    start,
                    end,
                    map: CmapMap::Sequential(first),
                });
            }
        }
    } else {
        let segments = usize::from(subtable.u16(6)? / 2);
        let ends = 14;
        let starts = ends + 2 * segments + 2;
        let deltas = starts + 2 * segments;
        let range_offsets = deltas + 2 * segments;
        for i in 0..segments {
            let end = subtable.u16(ends + 2 * i)?;
            let start = subtable.u16(starts + 2 * i)?;
            let delta = subtable.u16(deltas + 2 * i)?;
            let range_offset = usize::from(subtable.u16(range_offsets + 2 * i)?);
            // Segments must ascend without overlap; skipping any that do not also bounds
            // the glyph array below to one entry per code point of the BMP.
            let after_previous = ranges
                .last()
                .is_none_or(|r: &CmapRange| u32::from(start) > r.end);
            if start > end || start == 0xFFFF || !after_previous {
                continue;
            }
            let map = if range_offset == 0 {
                CmapMap::Delta16(delta)
            } else {
                // The glyph array is addressed relative to this idRangeOffset entry.
                let index = glyph_ids.len();
                let base = range_offsets + 2 * i + range_offset;
                for k in 0..=usize::from(end - start) {
                    let glyph = subtable.u16(base + 2 * k).unwrap_or(0);
                    glyph_ids.push(if glyph == 0 {
                        0
                    } else {
                        glyph.wrapping_add(delta)
                    });
                }
                CmapMap::Array(index)
            };
            ranges.push(CmapRange {
                start: u32::from(start),
                end: u32::from(end),
                map,
            });
        }
    }
    ranges.sort_by_key(|r| r.start);
    Some((ranges, glyph_ids))
}

/// Reads the horizontal format 0 subtables of a (Microsoft-style, version 0) `kern` table.
/// Kerning is a refinement: what it cannot read is skipped rather than an error.
fn parse_kern(kern: Reader<'_>) -> Vec<(u32, i16)> {
    let mut pairs = HashMap::new();
    let read = |pairs: &mut HashMap<u32, i16>| -> Option<()> {
        if kern.u16(0)? != 0 {
            return None;
        }
        let mut at = 4;
        for _ in 0..kern.u16(2)? {
            let length = usize::from(kern.u16(at + 2)?);
            let coverage = kern.u16(at + 4)?;
            let format = coverage >> 8;
            let n_pairs = usize::from(kern.u16(at + 6)?);
            // horizontal, not minimum values, not cross-stream
            if format == 0 && coverage & 0x07 == 0x01 {
                let replace = coverage & 0x08 != 0;
                for p in 0..n_pairs {
                    let pair = at + 14 + 6 * p;
                    let key = kern.u32(pair)?;
                    let value = kern.i16(pair + 4)?;
                    let entry = pairs.entry(key).or_insert(0i16);
                    *entry = if replace {
                        value
                    } else {
                        entry.saturating_add(value)
                    };
                }
                // The 16-bit length overflows for big subtables; the pair count does not.
                at += 14 + 6 * n_pairs;
            } else {
                at += length;
            }
        }
        Some(())
    };
    let _ = read(&mut pairs);
    let mut pairs: Vec<(u32, i16)> = pairs.into_iter().filter(|&(_, v)| v != 0).collect();
    pairs.sort_unstable_by_key(|&(k, _)| k);
    pairs
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Not a test: `cargo test --release -p kubekuma-builder --lib png_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn png_speed() {
        let font = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../themes/default/fonts/DejaVuSans.ttf"
        ))
        .unwrap();
        let r = BadgeRenderer::new(font).unwrap();
        let n = 300;
        let svgs: Vec<String> = (0..n)
            .map(|i| {
                r.svg(&Badge::new(
                    format!("monitor number {i}"),
                    format!("{}.{}%", 90 + i % 10, i % 100),
                    BadgeColor::from_hex("4c1"),
                ))
            })
            .collect();
        let t = std::time::Instant::now();
        for s in &svgs {
            usvg::Tree::from_str(s, &r.options).unwrap();
        }
        let parse = t.elapsed() / n;
        let t = std::time::Instant::now();
        for s in &svgs {
            r.png(s, 2.0).unwrap();
        }
        let all = t.elapsed() / n;
        let trees: Vec<usvg::Tree> = svgs
            .iter()
            .map(|s| usvg::Tree::from_str(s, &r.options).unwrap())
            .collect();
        let t = std::time::Instant::now();
        let mut pixmaps = Vec::new();
        for tree in &trees {
            let size = tree.size();
            let mut pixmap = tiny_skia::Pixmap::new(
                (size.width() * 2.0).ceil() as u32,
                (size.height() * 2.0).ceil() as u32,
            )
            .unwrap();
            resvg::render(
                tree,
                tiny_skia::Transform::from_scale(2.0, 2.0),
                &mut pixmap.as_mut(),
            );
            pixmaps.push(pixmap);
        }
        let render = t.elapsed() / n;
        let t = std::time::Instant::now();
        for p in &pixmaps {
            encode_png(p.clone()).unwrap();
        }
        let encode = t.elapsed() / n;
        println!(
            "parse {parse:?}, render {render:?}, encode {encode:?}; png total {all:?} per badge ({}x{})",
            pixmaps[0].width(),
            pixmaps[0].height()
        );
    }
}
