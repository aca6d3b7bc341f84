//! The site's `favicon.ico`: a theme's `icon.svg` (the default theme's mark when a theme
//! folder has none) drawn with resvg at [`SIZES`] pixels and packed, as PNG images, in
//! an ICO container (the form every browser and Windows since Vista reads). Drawn once,
//! when the theme loads; an icon that does not draw fails the theme.

use resvg::tiny_skia;
use resvg::usvg;

use crate::badge::{encode_png, sealed_options};

/// The square sizes, in pixels, the ICO holds: tabs, high-density tabs, shortcuts.
pub(crate) const SIZES: [u32; 3] = [16, 32, 48];

/// Why a theme's icon cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum IconError {
    /// The SVG does not parse.
    #[error("icon.svg does not parse: {0}")]
    Parse(String),
    /// The SVG has no usable size.
    #[error("icon.svg has an unusable size {0}x{1}")]
    Size(f32, f32),
    /// A drawn size could not be encoded as PNG.
    #[error("icon.svg at {size}x{size}: {cause}")]
    Encode {
        /// The size in pixels.
        size: u32,
        /// Why.
        cause: String,
    },
}

/// `svg` drawn at each of [`SIZES`] (fitted and centred in the square, its aspect ratio
/// kept), with `font` for any text and no access to files or other URLs, as an ICO file
/// of PNG images.
pub(crate) fn favicon_ico(svg: &[u8], font: &[u8]) -> Result<Vec<u8>, IconError> {
    let (options, _) = sealed_options(std::sync::Arc::new(font.to_vec()));
    let tree = usvg::Tree::from_data(svg, &options).map_err(|e| IconError::Parse(e.to_string()))?;
    let (w, h) = (tree.size().width(), tree.size().height());
    if !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
        return Err(IconError::Size(w, h));
    }
    let mut images = Vec::with_capacity(SIZES.len());
    for size in SIZES {
        let encode = |cause: String| IconError::Encode { size, cause };
        let px = size as f32;
        let scale = (px / w).min(px / h);
        let mut pixmap =
            tiny_skia::Pixmap::new(size, size).ok_or_else(|| encode("no pixmap".into()))?;
        let transform = tiny_skia::Transform::from_scale(scale, scale)
            .post_translate((px - w * scale) / 2.0, (px - h * scale) / 2.0);
        resvg::render(&tree, transform, &mut pixmap.as_mut());
        images.push((size, encode_png(pixmap).map_err(|e| encode(e.to_string()))?));
    }
    Ok(ico(&images))
}

/// An ICO file holding `images` (square PNGs of at most 256 pixels, by size): the
/// 6-byte header, one 16-byte entry per image, then the images.
fn ico(images: &[(u32, Vec<u8>)]) -> Vec<u8> {
    const HEADER: usize = 6;
    const ENTRY: usize = 16;
    let mut out = Vec::new();
    out.extend_from_slice(&0u16.to_le_bytes()); // reserved
    out.extend_from_slice(&1u16.to_le_bytes()); // type: icon
    out.extend_from_slice(&(images.len() as u16).to_le_bytes());
    let mut offset = HEADER + ENTRY * images.len();
    for (size, png) in images {
        // 0 stands for 256.
        let side = if *size >= 256 { 0 } else { *size as u8 };
        out.extend_from_slice(&[side, side, 0, 0]); // width, height, palette, reserved
        out.extend_from_slice(&1u16.to_le_bytes()); // colour planes
        out.extend_from_slice(&32u16.to_le_bytes()); // bits per pixel
        out.extend_from_slice(&(png.len() as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        offset += png.len();
    }
    for (_, png) in images {
        out.extend_from_slice(png);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FONT: &[u8] = include_bytes!("../../themes/default/fonts/DejaVuSans.ttf");
    const MARK: &[u8] = include_bytes!("../../themes/default/icon.svg");

    /// The ICO is read back by its header and entries: three PNGs of the right sizes,
    /// where the entries say, filling the file exactly.
    #[test]
    fn the_default_mark_is_an_ico_of_three_pngs() {
        let ico = favicon_ico(MARK, FONT).unwrap();
        assert_eq!(&ico[..4], &[0, 0, 1, 0]);
        let count = u16::from_le_bytes([ico[4], ico[5]]) as usize;
        assert_eq!(count, SIZES.len());
        let mut end = 6 + 16 * count;
        for (i, size) in SIZES.iter().enumerate() {
            let e = &ico[6 + 16 * i..6 + 16 * (i + 1)];
            assert_eq!((e[0] as u32, e[1] as u32), (*size, *size));
            assert_eq!(u16::from_le_bytes([e[6], e[7]]), 32);
            let len = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as usize;
            let at = u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as usize;
            assert_eq!(at, end, "images follow each other");
            let png = &ico[at..at + len];
            let decoder = png::Decoder::new(std::io::Cursor::new(png));
            let mut reader = decoder.read_info().unwrap();
            assert_eq!((reader.info().width, reader.info().height), (*size, *size));
            let mut rgba = vec![0; reader.output_buffer_size().unwrap()];
            reader.next_frame(&mut rgba).unwrap();
            // Drawn, not blank: the centre pixel is opaque.
            let centre = ((size / 2) * size + size / 2) as usize * 4;
            assert_eq!(rgba[centre + 3], 255, "{size} px");
            end = at + len;
        }
        assert_eq!(end, ico.len());
    }

    #[test]
    fn an_svg_that_does_not_parse_is_refused_naming_the_file() {
        let err = favicon_ico(b"<svg", FONT).unwrap_err().to_string();
        assert!(err.starts_with("icon.svg does not parse"), "{err}");
        let err = favicon_ico(
            b"<svg xmlns='http://www.w3.org/2000/svg' width='0' height='0'/>",
            FONT,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("icon.svg"), "{err}");
    }
}
