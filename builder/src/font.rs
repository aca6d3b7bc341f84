//! The badge font, read with `skrifa` (the font reader that usvg itself uses): the
//! horizontal metrics that size a badge's texts, and the glyph outlines that draw them
//! into the PNG renderings without going through a text shaper.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use skrifa::instance::{LocationRef, Size};
use skrifa::outline::{DrawSettings, OutlinePen};
use skrifa::raw::TableProvider;
use skrifa::raw::tables::kern::{Subtable, SubtableKind};
use skrifa::{FontRef, GlyphId, MetadataProvider};

/// One drawing command of a glyph outline, in font units (y up).
#[derive(Clone, Copy, Debug)]
enum Seg {
    Move(f32, f32),
    Line(f32, f32),
    Quad(f32, f32, f32, f32),
    Cubic(f32, f32, f32, f32, f32, f32),
    Close,
}

/// A glyph's outline and the horizontal extent of its points (which bounds its ink).
#[derive(Debug, Default)]
struct Outline {
    segs: Vec<Seg>,
    x_min: f32,
    x_max: f32,
}

impl OutlinePen for Outline {
    fn move_to(&mut self, x: f32, y: f32) {
        self.extend(x);
        self.segs.push(Seg::Move(x, y));
    }
    fn line_to(&mut self, x: f32, y: f32) {
        self.extend(x);
        self.segs.push(Seg::Line(x, y));
    }
    fn quad_to(&mut self, cx0: f32, cy0: f32, x: f32, y: f32) {
        self.extend(cx0);
        self.extend(x);
        self.segs.push(Seg::Quad(cx0, cy0, x, y));
    }
    fn curve_to(&mut self, cx0: f32, cy0: f32, cx1: f32, cy1: f32, x: f32, y: f32) {
        self.extend(cx0);
        self.extend(cx1);
        self.extend(x);
        self.segs.push(Seg::Cubic(cx0, cy0, cx1, cy1, x, y));
    }
    fn close(&mut self) {
        self.segs.push(Seg::Close);
    }
}

impl Outline {
    fn extend(&mut self, x: f32) {
        if self.segs.is_empty() {
            (self.x_min, self.x_max) = (x, x);
        } else {
            self.x_min = self.x_min.min(x);
            self.x_max = self.x_max.max(x);
        }
    }
}

/// A text drawn as one SVG path (`d`), with the horizontal extent of its ink.
#[derive(Debug)]
pub(crate) struct TextPath {
    /// Path data in SVG user units, absolute coordinates.
    pub d: String,
    /// Leftmost and rightmost x any outline point reaches (control points included, so
    /// the ink lies within), or `None` for a text without ink (spaces only).
    pub ink: Option<(f64, f64)>,
}

/// The metrics and outlines of one font face.
pub(crate) struct BadgeFont {
    data: Arc<Vec<u8>>,
    pub units_per_em: u16,
    /// Advance width of each glyph, in font units, indexed by glyph id.
    advances: Vec<u16>,
    /// Glyph ids of U+0000..U+007F, the common case.
    ascii: [u16; 128],
    /// Glyph ids of every other mapped character.
    other: HashMap<u32, u16>,
    /// Pair kerning of the `kern` table, `(left << 16) | right` → font units, sorted.
    pub kerning: Vec<(u32, i16)>,
    /// Outlines, read on first use.
    outlines: Vec<OnceLock<Outline>>,
}

impl BadgeFont {
    /// Reads a TrueType/OpenType font (a single face, not a collection).
    pub fn parse(data: Arc<Vec<u8>>) -> Result<BadgeFont, String> {
        if data.starts_with(b"ttcf") {
            return Err("font collections are not supported".into());
        }
        let font = FontRef::new(&data).map_err(|e| match e {
            skrifa::raw::ReadError::InvalidSfnt(_) => "not a TrueType or OpenType font".into(),
            e => e.to_string(),
        })?;
        let units_per_em = font
            .head()
            .map_err(|e| format!("bad 'head' table: {e}"))?
            .units_per_em();
        if units_per_em == 0 {
            return Err("bad 'head' table: zero units per em".into());
        }
        let glyphs = font
            .maxp()
            .map_err(|e| format!("bad 'maxp' table: {e}"))?
            .num_glyphs();
        let hmtx = font.hmtx().map_err(|e| format!("bad 'hmtx' table: {e}"))?;
        let advances: Vec<u16> = (0..glyphs)
            .map(|g| hmtx.advance(GlyphId::new(u32::from(g))).unwrap_or(0))
            .collect();
        if advances.is_empty() {
            return Err("the font has no glyphs".into());
        }
        font.cmap().map_err(|e| format!("bad 'cmap' table: {e}"))?;
        let charmap = font.charmap();
        if !charmap.has_map() {
            return Err("the 'cmap' table maps no Unicode characters".into());
        }
        let valid = |g: GlyphId| {
            u16::try_from(g.to_u32())
                .ok()
                .filter(|&g| g < glyphs)
                .unwrap_or(0)
        };
        let ascii = std::array::from_fn(|c| charmap.map(c as u32).map_or(0, valid));
        let other = charmap
            .mappings()
            .filter(|&(c, _)| c >= 128)
            .map(|(c, g)| (c, valid(g)))
            .collect();
        let kerning = font.kern().map(read_kern).unwrap_or_default();
        let outlines = (0..glyphs).map(|_| OnceLock::new()).collect();
        Ok(BadgeFont {
            data: data.clone(),
            units_per_em,
            advances,
            ascii,
            other,
            kerning,
            outlines,
        })
    }

    /// The font file.
    pub fn data(&self) -> Arc<Vec<u8>> {
        self.data.clone()
    }

    /// Number of glyphs.
    pub fn glyph_count(&self) -> usize {
        self.advances.len()
    }

    /// The glyph of `c`; `.notdef` (0) when the font lacks it.
    fn glyph(&self, c: char) -> u16 {
        match self.ascii.get(c as usize) {
            Some(&g) => g,
            None => self.other.get(&u32::from(c)).copied().unwrap_or(0),
        }
    }

    fn kern(&self, left: u16, right: u16) -> i64 {
        let key = (u32::from(left) << 16) | u32::from(right);
        self.kerning
            .binary_search_by_key(&key, |&(k, _)| k)
            .map_or(0, |i| i64::from(self.kerning[i].1))
    }

    /// The advance width of `text`, in font units: glyph advances plus pair kerning.
    pub fn width_units(&self, text: &str) -> i64 {
        let mut width = 0i64;
        let mut previous: Option<u16> = None;
        for c in text.chars() {
            let glyph = self.glyph(c);
            width += i64::from(self.advances[usize::from(glyph)]);
            if let Some(left) = previous {
                width += self.kern(left, glyph);
            }
            previous = Some(glyph);
        }
        width
    }

    fn outline(&self, glyph: u16) -> &Outline {
        self.outlines[usize::from(glyph)].get_or_init(|| {
            let mut pen = Outline::default();
            if let Ok(font) = FontRef::new(&self.data)
                && let Some(g) = font.outline_glyphs().get(GlyphId::new(u32::from(glyph)))
            {
                let settings = DrawSettings::unhinted(Size::unscaled(), LocationRef::default());
                if g.draw(settings, &mut pen).is_err() {
                    pen = Outline::default();
                }
            }
            pen
        })
    }

    /// `text` laid out from `x` on the baseline `y` at `font_size`, glyph by glyph with
    /// the same advances and kerning as [`BadgeFont::width_units`], as one path.
    pub fn text_path(&self, text: &str, x: f64, y: f64, font_size: f64) -> TextPath {
        let scale = font_size / f64::from(self.units_per_em);
        let mut d = String::with_capacity(text.len() * 160);
        let mut ink: Option<(f64, f64)> = None;
        let mut pen_x = 0i64;
        let mut previous: Option<u16> = None;
        for c in text.chars() {
            let glyph = self.glyph(c);
            if let Some(left) = previous {
                pen_x += self.kern(left, glyph);
            }
            let outline = self.outline(glyph);
            if !outline.segs.is_empty() {
                let ox = x + pen_x as f64 * scale;
                let px = |v: f32| ox + f64::from(v) * scale;
                let py = |v: f32| y - f64::from(v) * scale;
                let (l, r) = (px(outline.x_min), px(outline.x_max));
                ink = Some(ink.map_or((l, r), |(a, b)| (a.min(l), b.max(r))));
                for seg in &outline.segs {
                    match *seg {
                        Seg::Move(x, y) => point(&mut d, 'M', &[px(x), py(y)]),
                        Seg::Line(x, y) => point(&mut d, 'L', &[px(x), py(y)]),
                        Seg::Quad(a, b, x, y) => {
                            point(&mut d, 'Q', &[px(a), py(b), px(x), py(y)]);
                        }
                        Seg::Cubic(a, b, c, e, x, y) => {
                            point(&mut d, 'C', &[px(a), py(b), px(c), py(e), px(x), py(y)]);
                        }
                        Seg::Close => d.push('Z'),
                    }
                }
            }
            pen_x += i64::from(self.advances[usize::from(glyph)]);
            previous = Some(glyph);
        }
        TextPath { d, ink }
    }
}

/// Appends a path command with its coordinates, three decimals (a thousandth of a pixel).
fn point(d: &mut String, command: char, values: &[f64]) {
    d.push(command);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            d.push(' ');
        }
        let milli = (v * 1000.0).round() as i64;
        let sign = if milli < 0 { "-" } else { "" };
        let milli = milli.unsigned_abs();
        let _ = write!(d, "{sign}{}.{:03}", milli / 1000, milli % 1000);
    }
}

/// The horizontal format 0 subtables of a (Microsoft-style) `kern` table, as sorted
/// pairs. Kerning is a refinement: what cannot be read is skipped rather than an error.
fn read_kern(kern: skrifa::raw::tables::kern::Kern<'_>) -> Vec<(u32, i16)> {
    let mut pairs: HashMap<u32, i16> = HashMap::new();
    for subtable in kern.subtables().flatten() {
        let Subtable::Ot(ot) = &subtable else {
            continue;
        };
        // horizontal, not minimum values, not cross-stream
        let coverage = ot.coverage();
        if coverage & 0x07 != 0x01 {
            continue;
        }
        let replace = coverage & 0x08 != 0;
        let Ok(SubtableKind::Format0(table)) = subtable.kind() else {
            continue;
        };
        for pair in table.pairs() {
            let key = (u32::from(pair.left().to_u16()) << 16) | u32::from(pair.right().to_u16());
            let value = pair.value();
            let entry = pairs.entry(key).or_insert(0);
            *entry = if replace {
                value
            } else {
                entry.saturating_add(value)
            };
        }
    }
    let mut pairs: Vec<(u32, i16)> = pairs.into_iter().filter(|&(_, v)| v != 0).collect();
    pairs.sort_unstable_by_key(|&(k, _)| k);
    pairs
}
