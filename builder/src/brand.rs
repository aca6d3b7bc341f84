//! Logos and favicons of pages fetched from `http(s)` URLs, made safe to republish on
//! the site's origin: the download is streamed with a size limit, a connect and a total
//! timeout and few redirects; raster images (PNG, JPEG, GIF, WebP, ICO) are recognised
//! by their bytes, never by the server's Content-Type; SVG is rasterised to PNG with
//! resvg (so its scripts, event handlers, links and foreign objects never reach the
//! site); anything else is refused.

use std::time::Duration;

use resvg::tiny_skia;
use resvg::usvg;
use sha2::{Digest, Sha256};

use crate::badge::{encode_png, sealed_options};
use crate::digest::hex;

/// Largest logo or favicon the builder downloads: the download stops at one byte more.
pub(crate) const MAX_BRAND_BYTES: usize = 2 * 1024 * 1024;
/// An SVG logo is rasterised to fit in a square of this many pixels.
pub(crate) const MAX_RASTER_PX: u32 = 512;

/// How a logo download is bounded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FetchLimits {
    /// Time to connect (TCP and TLS).
    pub connect: Duration,
    /// Time for the whole download: connecting, redirects, headers and body.
    pub total: Duration,
    /// Redirects followed at most.
    pub redirects: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(15),
            redirects: 3,
        }
    }
}

impl FetchLimits {
    /// An HTTP client with these limits.
    pub(crate) fn client(&self) -> Result<reqwest::Client, BrandError> {
        reqwest::Client::builder()
            .connect_timeout(self.connect)
            .timeout(self.total)
            .redirect(reqwest::redirect::Policy::limited(self.redirects))
            .build()
            .map_err(|e| BrandError::Unreachable(e.without_url()))
    }
}

/// Why a logo or favicon was not published. Never names the URL, which may carry
/// credentials.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrandError {
    /// No answer in time, too many redirects, or the body could not be read.
    #[error("unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// An answer other than 2xx.
    #[error("the server answered {0}")]
    Status(reqwest::StatusCode),
    /// Larger than [`MAX_BRAND_BYTES`] (the download was stopped there).
    #[error("the image is larger than {MAX_BRAND_BYTES} bytes")]
    TooLarge,
    /// Not a PNG, JPEG, GIF, WebP, ICO or SVG image, by its bytes.
    #[error("not a PNG, JPEG, GIF, WebP, ICO or SVG image")]
    NotAnImage,
    /// An SVG that does not parse or cannot be rasterised.
    #[error("the SVG image cannot be rasterised: {0}")]
    Svg(String),
}

/// Download `url` with `client` (see [`FetchLimits::client`]), reading the body chunk by
/// chunk and stopping as soon as it exceeds [`MAX_BRAND_BYTES`]: never more than that is
/// held in memory.
pub(crate) async fn download(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, BrandError> {
    let unreachable = |e: reqwest::Error| BrandError::Unreachable(e.without_url());
    let mut resp = client.get(url).send().await.map_err(unreachable)?;
    if !resp.status().is_success() {
        return Err(BrandError::Status(resp.status()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BRAND_BYTES as u64)
    {
        return Err(BrandError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_BRAND_BYTES {
            return Err(BrandError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The kinds of image published as they are, by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Raster {
    Png,
    Jpeg,
    Gif,
    Webp,
    Ico,
}

impl Raster {
    /// The kind of `bytes`, from their signature.
    pub(crate) fn sniff(bytes: &[u8]) -> Option<Raster> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Raster::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(Raster::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Raster::Gif)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(Raster::Webp)
        } else if bytes.len() >= 6 && bytes.starts_with(&[0, 0, 1, 0]) && bytes[4..6] != [0, 0] {
            Some(Raster::Ico)
        } else {
            None
        }
    }

    /// The file extension it is published with (which decides its Content-Type).
    pub(crate) fn ext(self) -> &'static str {
        match self {
            Raster::Png => "png",
            Raster::Jpeg => "jpg",
            Raster::Gif => "gif",
            Raster::Webp => "webp",
            Raster::Ico => "ico",
        }
    }
}

/// Rasterises SVG logos: resvg with the theme's font for texts and no access to files,
/// other URLs or embedded images.
pub(crate) struct SvgRasteriser {
    options: usvg::Options<'static>,
}

impl SvgRasteriser {
    /// A rasteriser drawing texts with `font` (TrueType/OpenType).
    pub(crate) fn new(font: &[u8]) -> SvgRasteriser {
        let (options, _) = sealed_options(std::sync::Arc::new(font.to_vec()));
        SvgRasteriser { options }
    }

    /// The SVG `text` as a PNG that fits in [`MAX_RASTER_PX`] × [`MAX_RASTER_PX`], its
    /// aspect ratio kept.
    pub(crate) fn png(&self, text: &str) -> Result<Vec<u8>, BrandError> {
        let tree = usvg::Tree::from_str(text, &self.options)
            .map_err(|e| BrandError::Svg(e.to_string()))?;
        let size = tree.size();
        let (w, h) = (size.width(), size.height());
        let max = MAX_RASTER_PX as f32;
        let scale = (max / w).min(max / h);
        if !(scale.is_finite() && scale > 0.0) {
            return Err(BrandError::Svg(format!("its size {w}x{h} is unusable")));
        }
        let px = |v: f32| ((v * scale).round() as u32).clamp(1, MAX_RASTER_PX);
        let mut pixmap = tiny_skia::Pixmap::new(px(w), px(h))
            .ok_or_else(|| BrandError::Svg(format!("its size {w}x{h} is unusable")))?;
        resvg::render(
            &tree,
            tiny_skia::Transform::from_scale(scale, scale),
            &mut pixmap.as_mut(),
        );
        encode_png(pixmap).map_err(|e| BrandError::Svg(e.to_string()))
    }
}

/// What of a downloaded image is published: a raster image as it is (with the extension
/// its bytes call for), an SVG as a PNG, anything else refused.
pub(crate) fn publishable(
    bytes: Vec<u8>,
    svg: &SvgRasteriser,
) -> Result<(&'static str, Vec<u8>), BrandError> {
    if let Some(kind) = Raster::sniff(&bytes) {
        return Ok((kind.ext(), bytes));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| BrandError::NotAnImage)?;
    let start = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if !start.starts_with('<') || !text.contains("<svg") {
        return Err(BrandError::NotAnImage);
    }
    Ok(("png", svg.png(text)?))
}

/// The asset path of a published image: `assets/brand.<hash>.<ext>`.
pub(crate) fn asset_path(bytes: &[u8], ext: &str) -> String {
    let digest = hex(&Sha256::digest(bytes));
    format!("assets/brand.{}.{ext}", &digest[..10])
}
