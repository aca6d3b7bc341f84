//! Status badges: shields.io-style "flat" SVG and PNG, measured and rendered with the
//! theme's own font so that both outputs agree pixel for pixel.
//!
//! The [`BadgeRenderer`] is built once from the font file (`themes/default/fonts/DejaVuSans.ttf`)
//! and reused for every badge: it holds the font read with skrifa ([`crate::font`]: advances
//! and kerning size the SVG, glyph outlines draw the PNG renderings' texts as paths) and a
//! `usvg` option set with that same font loaded, used to rasterise any SVG given to
//! [`BadgeRenderer::png`]. Nothing here reads files or the system's fonts.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use resvg::tiny_skia;
use resvg::usvg;
use sha2::{Digest, Sha256};

use crate::font::{BadgeFont, TextPath};

/// Font size of badge text, in SVG user units (pixels at scale 1).
const FONT_SIZE: f64 = 11.0;
/// Horizontal padding on each side of a text, in pixels.
const PADDING: f64 = 5.0;
/// Height of every badge, in pixels.
const HEIGHT: u32 = 20;
/// Baseline of the text; its shadow sits one pixel lower.
const BASELINE: f64 = 14.0;
/// Widest a label or a message is drawn, in pixels at scale 1: a longer text ends in
/// `…` at this width, so that no name makes a badge too wide to rasterise (or to show).
pub(crate) const MAX_TEXT_WIDTH: f64 = 360.0;
/// Most characters of a badge's title (`<title>`, `aria-label`); a longer one ends in `…`.
const MAX_TITLE_CHARS: usize = 300;
/// Largest side of a PNG badge, in pixels: beyond it rasterising is refused.
const MAX_PNG_PX: f32 = 16384.0;
/// What ends a shortened text.
const ELLIPSIS: char = '\u{2026}';
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
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "no page sets a custom colour yet; tests draw them"
        )
    )]
    Custom(String),
}

impl BadgeColor {
    /// A custom colour from `#rgb` or `#rrggbb` (case-insensitive, stored lowercase);
    /// anything else gives [`BadgeColor::Grey`].
    #[cfg(test)]
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
/// SVG, and rasterises the same picture (texts as glyph paths) to PNG through resvg.
///
/// Build it once and share it (it is `Send + Sync`); every method takes `&self`.
pub struct BadgeRenderer {
    font: BadgeFont,
    options: usvg::Options<'static>,
    /// Largest PNG side, in pixels.
    max_px: f32,
}

impl fmt::Debug for BadgeRenderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BadgeRenderer")
            .field("units_per_em", &self.font.units_per_em)
            .field("glyphs", &self.font.glyph_count())
            .field("kerning_pairs", &self.font.kerning.len())
            .finish_non_exhaustive()
    }
}

/// usvg options that never let an SVG reach the file system or another URL (badges
/// never contain images; a logo's are refused) and draw every text with `font`: whatever
/// family it has, the SVG's generic families and usvg's default resolve to it. The flag
/// says whether usvg's font database took the font (without it, texts are left out).
pub(crate) fn sealed_options(font: Arc<Vec<u8>>) -> (usvg::Options<'static>, bool) {
    let mut options = usvg::Options {
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(|_, _, _| None),
            resolve_string: Box::new(|_, _| None),
        },
        ..usvg::Options::default()
    };
    let db = options.fontdb_mut();
    let ids = db.load_font_source(usvg::fontdb::Source::Binary(font));
    let Some(family) = ids
        .first()
        .and_then(|id| db.face(*id))
        .and_then(|face| face.families.first())
        .map(|(name, _)| name.clone())
    else {
        return (options, false);
    };
    db.set_sans_serif_family(family.clone());
    db.set_serif_family(family.clone());
    db.set_monospace_family(family.clone());
    options.font_family = family;
    (options, true)
}

impl BadgeRenderer {
    /// A renderer for the given TrueType/OpenType font file (a single face, not a
    /// collection). Fails when the font's `head`, `hhea`, `maxp`, `hmtx` or `cmap` table is
    /// missing or malformed, or when usvg's font database does not take the font.
    pub fn new(font_ttf: Vec<u8>) -> Result<Self, BadgeError> {
        let font = BadgeFont::parse(Arc::new(font_ttf)).map_err(BadgeError::Font)?;

        let (options, true) = sealed_options(font.data()) else {
            return Err(BadgeError::Font(
                "usvg's font database did not load it".into(),
            ));
        };
        Ok(BadgeRenderer {
            font,
            options,
            max_px: MAX_PNG_PX,
        })
    }

    /// The renderer with a smaller largest PNG side (tests: badges that cannot be
    /// rasterised).
    #[cfg(test)]
    pub fn with_max_png_px(mut self, px: f32) -> Self {
        self.max_px = px;
        self
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
        self.font.width_units(text) as f64 * font_size / f64::from(self.font.units_per_em)
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
        self.write_svg(&self.layout(badge))
    }

    /// The badge as [`BadgeRenderer::svg`] draws it, with every text as a path of the
    /// font's glyph outlines instead of a `<text>`: what the PNG renderings rasterise.
    /// The glyphs are placed with the advances and kerning that size the badge, so the
    /// picture is the SVG's (without ligatures), and rasterising needs no text shaping,
    /// which is most of the cost of a `<text>` in usvg.
    pub fn raster_svg(&self, badge: &Badge) -> String {
        let l = self.layout(badge);
        let paths = self.text_paths(&l);
        self.write_raster(&l, Part::Whole, &paths)
    }

    /// The label's and the message's paths, each `None` when the text is empty.
    fn text_paths(&self, l: &Layout) -> [Option<TextPath>; 2] {
        let path = |text: &str, width: f64, center: f64| {
            (!text.is_empty()).then(|| {
                self.font
                    .text_path(text, center - width / 2.0, BASELINE, FONT_SIZE)
            })
        };
        [
            path(&l.label, l.label_text_width, l.label_width / 2.0),
            path(
                &l.message,
                l.message_text_width,
                l.label_width + l.message_width / 2.0,
            ),
        ]
    }

    /// `text` as drawn, with its width: at most [`MAX_TEXT_WIDTH`] wide, else its
    /// longest beginning that fits with a `…` after it.
    fn fit(&self, text: String) -> (String, f64) {
        let width = self.text_width(&text, FONT_SIZE);
        if width <= MAX_TEXT_WIDTH {
            return (text, width);
        }
        let ends: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let shortened = |n: usize| {
            let mut s = text[..ends[n]].trim_end().to_string();
            s.push(ELLIPSIS);
            let width = self.text_width(&s, FONT_SIZE);
            (s, width)
        };
        // The most characters (0..n) whose shortened text fits: widths grow with the
        // length (kerning aside), so a binary search finds it.
        let (mut lo, mut hi) = (0usize, ends.len() - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if shortened(mid).1 <= MAX_TEXT_WIDTH {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        shortened(lo)
    }

    /// The badge with its label and message as drawn ([`BadgeRenderer::fit`]): what
    /// [`shields_endpoint_json`] should be given, so that shields.io draws the same texts.
    pub fn fitted(&self, badge: &Badge) -> Badge {
        Badge {
            label: self.fit(clean_text(&badge.label)).0,
            message: self.fit(clean_text(&badge.message)).0,
            color: badge.color.clone(),
            title: badge.title.clone(),
        }
    }

    /// Texts, colours and widths of a badge, shared by the whole SVG and its parts.
    fn layout(&self, badge: &Badge) -> Layout {
        let full_label = clean_text(&badge.label);
        let full_message = clean_text(&badge.message);
        let title = match &badge.title {
            Some(title) => clean_text(title),
            None if full_label.is_empty() => full_message.clone(),
            None => format!("{full_label}: {full_message}"),
        };
        let title = match title.char_indices().nth(MAX_TITLE_CHARS) {
            Some((end, _)) => format!("{}{ELLIPSIS}", title[..end].trim_end()),
            None => title,
        };
        let (label, label_text_width) = self.fit(full_label);
        let (message, message_text_width) = self.fit(full_message);
        let color = badge.color.hex();
        let (text_fill, shadow_fill) = if badge.color.is_light() {
            ("#333", "#ccc")
        } else {
            ("#fff", "#010101")
        };

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

    /// The SVG of the whole badge, as published.
    fn write_svg(&self, l: &Layout) -> String {
        let w = num(l.label_width + l.message_width);
        let (id, color) = (&l.id, &l.color);
        let mut svg = String::with_capacity(1536);
        let _ = writeln!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{HEIGHT}" viewBox="0 0 {w} {HEIGHT}" role="img" aria-label="{aria}">"##,
            aria = escape(&l.title),
        );
        let _ = writeln!(svg, "<title>{}</title>", escape(&l.title));
        let _ = writeln!(
            svg,
            r##"<linearGradient id="{id}-s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-color="#000" stop-opacity=".1"/></linearGradient>"##
        );
        let _ = writeln!(
            svg,
            r##"<clipPath id="{id}-r"><rect width="{w}" height="{HEIGHT}" rx="3" fill="#fff"/></clipPath>"##
        );
        let _ = writeln!(svg, r##"<g clip-path="url(#{id}-r)">"##);
        if l.label_width > 0.0 {
            let _ = writeln!(
                svg,
                r##"<rect width="{}" height="{HEIGHT}" fill="{LABEL_COLOR}"/>"##,
                num(l.label_width)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{}" width="{}" height="{HEIGHT}" fill="{color}"/>"##,
            num(l.label_width),
            num(l.message_width)
        );
        let _ = writeln!(
            svg,
            r##"<rect width="{w}" height="{HEIGHT}" fill="url(#{id}-s)"/>"##
        );
        svg.push_str("</g>\n");
        let _ = writeln!(
            svg,
            r##"<g text-anchor="middle" font-family="{FONT_FAMILY}" font-size="{}">"##,
            num(FONT_SIZE)
        );
        let texts = [
            (
                &l.label,
                l.label_text_width,
                l.label_width / 2.0,
                "#fff",
                "#010101",
            ),
            (
                &l.message,
                l.message_text_width,
                l.label_width + l.message_width / 2.0,
                l.text_fill,
                l.shadow_fill,
            ),
        ];
        for (text, text_width, center, fill, shadow) in texts {
            if text.is_empty() {
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

    /// The picture of the whole badge, or of one part for [`BadgeRenderer::png_parts`],
    /// as rasterised: texts are paths (`paths`, from [`BadgeRenderer::text_paths`]), and
    /// the rounded corners are drawn as rounded shapes rather than through a clip path
    /// (which resvg renders as a separate layer and mask). A part keeps every coordinate
    /// of the whole badge, draws only its own shapes and texts, and shows only its own
    /// columns through the `viewBox`, so that its pixels are those of the whole badge's.
    fn write_raster(&self, l: &Layout, part: Part, paths: &[Option<TextPath>; 2]) -> String {
        let width = l.label_width + l.message_width;
        let (view_x, view_width) = match part {
            Part::Whole => (0.0, width),
            Part::Label => (0.0, l.label_width),
            Part::Message => (l.label_width, l.message_width),
        };
        let mut svg = String::with_capacity(4096);
        let _ = writeln!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{vw}" height="{HEIGHT}" viewBox="{vx} 0 {vw} {HEIGHT}">"##,
            vw = num(view_width),
            vx = num(view_x),
        );
        let _ = writeln!(
            svg,
            r##"<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-color="#000" stop-opacity=".1"/></linearGradient>"##
        );
        let label = l.label_width > 0.0;
        if label && part != Part::Message {
            let _ = writeln!(
                svg,
                r##"<path fill="{LABEL_COLOR}" d="{}"/>"##,
                rounded(0.0, l.label_width, true, false)
            );
        }
        if part != Part::Label {
            let _ = writeln!(
                svg,
                r##"<path fill="{}" d="{}"/>"##,
                l.color,
                rounded(l.label_width, width, !label, true)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path fill="url(#s)" d="{}"/>"##,
            rounded(0.0, width, true, true)
        );
        let fills = [("#fff", "#010101"), (l.text_fill, l.shadow_fill)];
        for ((which, path), (fill, shadow)) in [Part::Label, Part::Message]
            .into_iter()
            .zip(paths)
            .zip(fills)
        {
            let Some(path) = path else { continue };
            if path.d.is_empty() || (part != Part::Whole && part != which) {
                continue;
            }
            let _ = writeln!(
                svg,
                r##"<path transform="translate(0 1)" fill="{shadow}" fill-opacity=".3" d="{}"/>"##,
                path.d
            );
            let _ = writeln!(svg, r##"<path fill="{fill}" d="{}"/>"##, path.d);
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// The badge's picture in two parts, label and message, each an SVG to rasterise
    /// with [`BadgeRenderer::raster_part`] and join with [`compose_png`]: the PNG is then
    /// the same, pixel for pixel, as [`BadgeRenderer::png_whole`], but badges that share
    /// a label (the monitor's name) or a message (`up`, `100%`) share the rasterising of
    /// that part. `None` when the badge has no label, its parts do not fall on whole
    /// pixels at `scale`, or a text's ink crosses into the other part (a glyph overhanging
    /// its box), where only rendering the whole badge is exact.
    pub fn png_parts(&self, badge: &Badge, scale: f32) -> Option<[String; 2]> {
        let l = self.layout(badge);
        let whole_pixels = |v: f64| {
            let px = v * f64::from(scale);
            px.fract() == 0.0 && px > 0.0
        };
        if !(whole_pixels(l.label_width) && whole_pixels(l.message_width)) {
            return None;
        }
        let paths = self.text_paths(&l);
        let width = l.label_width + l.message_width;
        let within = |path: &Option<TextPath>, from: f64, to: f64| {
            path.as_ref()
                .and_then(|p| p.ink)
                .is_none_or(|(left, right)| left >= from && right <= to)
        };
        if !(within(&paths[0], 0.0, l.label_width) && within(&paths[1], l.label_width, width)) {
            return None;
        }
        Some([
            self.write_raster(&l, Part::Label, &paths),
            self.write_raster(&l, Part::Message, &paths),
        ])
    }

    /// Rasterises one part from [`BadgeRenderer::png_parts`].
    pub fn raster_part(&self, svg: &str, scale: f32) -> Result<BadgePart, BadgeError> {
        let tree = usvg::Tree::from_str(svg, &self.options)?;
        self.raster(&tree, scale).map(BadgePart)
    }

    /// [`BadgeRenderer::png_whole`] through [`BadgeRenderer::png_parts`] when the badge
    /// splits: the same bytes either way (what tests compare a build's PNGs with).
    #[cfg(test)]
    pub fn png_by_parts(&self, badge: &Badge, scale: f32) -> Result<Vec<u8>, BadgeError> {
        if let Some([label, message]) = self.png_parts(badge, scale) {
            return compose_png(
                &self.raster_part(&label, scale)?,
                &self.raster_part(&message, scale)?,
            );
        }
        self.png_whole(badge, scale)
    }

    /// The badge's PNG: [`BadgeRenderer::raster_svg`] rasterised at `scale`.
    pub fn png_whole(&self, badge: &Badge, scale: f32) -> Result<Vec<u8>, BadgeError> {
        self.png(&self.raster_svg(badge), scale)
    }

    fn raster(&self, tree: &usvg::Tree, scale: f32) -> Result<tiny_skia::Pixmap, BadgeError> {
        let size = tree.size();
        let out_of_range = || BadgeError::Size {
            width: size.width(),
            height: size.height(),
            scale,
        };
        let (width, height) = (size.width() * scale, size.height() * scale);
        if !(scale.is_finite() && scale > 0.0 && width <= self.max_px && height <= self.max_px) {
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

/// PNG of a rendered pixmap, with the `png` crate's fast DEFLATE (fdeflate, tuned for
/// PNG): several times faster than the default level on badge-sized images, for files
/// a few percent larger.
pub(crate) fn encode_png(pixmap: tiny_skia::Pixmap) -> Result<Vec<u8>, png::EncodingError> {
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

/// Drops control characters, the XML non-characters U+FFFE and U+FFFF, bidirectional
/// overrides and zero-width characters ([`crate::text::dropped`]), and collapses white
/// space as SVG displays it: runs become one space, none at either end.
fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        let word: String = word
            .chars()
            .filter(|c| !c.is_control() && !crate::text::dropped(*c))
            .collect();
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word);
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

/// A badge-high rectangle from `x0` to `x1`, its left and/or right corners rounded
/// with a 3-pixel radius, as path data.
fn rounded(x0: f64, x1: f64, left: bool, right: bool) -> String {
    const R: f64 = 3.0;
    let h = f64::from(HEIGHT);
    let mut d = String::with_capacity(96);
    if left {
        let _ = write!(d, "M{} 0", num(x0 + R));
    } else {
        let _ = write!(d, "M{} 0", num(x0));
    }
    if right {
        let _ = write!(
            d,
            "H{}A{R} {R} 0 0 1 {} {R}V{}A{R} {R} 0 0 1 {} {h}",
            num(x1 - R),
            num(x1),
            num(h - R),
            num(x1 - R)
        );
    } else {
        let _ = write!(d, "H{}V{h}", num(x1));
    }
    if left {
        let _ = write!(
            d,
            "H{}A{R} {R} 0 0 1 {} {}V{R}A{R} {R} 0 0 1 {} 0Z",
            num(x0 + R),
            num(x0),
            num(h - R),
            num(x0 + R)
        );
    } else {
        let _ = write!(d, "H{}Z", num(x0));
    }
    d
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
