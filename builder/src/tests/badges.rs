//! Badge rendering: golden SVGs, text metrics checked against the font and against usvg's
//! own text layout, escaping, and PNGs that really show the text.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;

use crate::badge::{
    Badge, BadgeColor, BadgeError, BadgeRenderer, color_for_cert_days, color_for_latency,
    color_for_uptime, shields_endpoint_json,
};
use pretty_assertions::assert_eq;
use resvg::{tiny_skia, usvg};
use serde_json::json;

const FONT_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../themes/default/fonts/DejaVuSans.ttf"
);

fn font() -> Vec<u8> {
    std::fs::read(FONT_PATH).expect("the theme font is in the repository")
}

/// One renderer shared by every test, as the builder shares it between threads.
static RENDERER: LazyLock<BadgeRenderer> =
    LazyLock::new(|| BadgeRenderer::new(font()).expect("the theme font parses"));

/// usvg options with the theme font, built here independently of the renderer.
static USVG_OPTIONS: LazyLock<usvg::Options<'static>> = LazyLock::new(|| {
    let mut options = usvg::Options {
        font_family: "DejaVu Sans".into(),
        ..usvg::Options::default()
    };
    options.fontdb_mut().load_font_data(font());
    options
});

fn fixtures() -> Vec<(&'static str, Badge)> {
    vec![
        ("status_up", Badge::new("status", "up", BadgeColor::Green)),
        ("status_down", Badge::new("status", "down", BadgeColor::Red)),
        (
            "uptime",
            Badge::new("uptime 30d", "99.95%", color_for_uptime(Some(99.95))),
        ),
        (
            "latency",
            Badge::new("latency", "123 ms", color_for_latency(Some(123.0))),
        ),
        (
            "cert_days",
            Badge::new("certificate", "12 days", color_for_cert_days(Some(12))),
        ),
        (
            "message_only",
            Badge::new("", "maintenance", BadgeColor::Blue),
        ),
    ]
}

fn svg_of(name: &str) -> String {
    let (_, badge) = fixtures()
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("fixture exists");
    RENDERER.svg(&badge)
}

fn parse(svg: &str) -> usvg::Tree {
    usvg::Tree::from_str(svg, &USVG_OPTIONS).expect("badge svg parses")
}

/// Every text node and every filled path (the rects) of a tree, in document order.
fn texts_and_paths(tree: &usvg::Tree) -> (Vec<usvg::Text>, Vec<usvg::Path>) {
    fn walk(group: &usvg::Group, texts: &mut Vec<usvg::Text>, paths: &mut Vec<usvg::Path>) {
        for node in group.children() {
            match node {
                usvg::Node::Group(g) => walk(g, texts, paths),
                usvg::Node::Text(t) => texts.push((**t).clone()),
                usvg::Node::Path(p) => paths.push((**p).clone()),
                usvg::Node::Image(_) => {}
            }
        }
    }
    let (mut texts, mut paths) = (Vec::new(), Vec::new());
    walk(tree.root(), &mut texts, &mut paths);
    (texts, paths)
}

/// The advance width usvg's own shaper gives `text` in the theme font at `size`: with
/// `text-anchor="end"` at x = 2000 the first glyph starts at 2000 − width.
fn usvg_layout_width(text: &str, size: f64) -> f64 {
    let text = text.replace('&', "&amp;").replace('<', "&lt;");
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="3000" height="100"><text x="2000" y="50" text-anchor="end" font-family="DejaVu Sans" font-size="{size}">{text}</text></svg>"#
    );
    let (texts, _) = texts_and_paths(&parse(&svg));
    let first = &texts[0].layouted()[0].positioned_glyphs[0];
    2000.0 - f64::from(first.transform().tx)
}

/// The glyph ids usvg's shaper picks for `text` (so the test does not share the renderer's
/// cmap code).
fn usvg_glyph_ids(text: &str) -> Vec<u32> {
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="300" height="100"><text x="0" y="50" font-family="DejaVu Sans" font-size="11">{text}</text></svg>"#
    );
    let (texts, _) = texts_and_paths(&parse(&svg));
    texts[0]
        .layouted()
        .iter()
        .flat_map(|span| span.positioned_glyphs.iter().map(|g| g.id.0))
        .collect()
}

/// (unitsPerEm, advance of each glyph) read straight from the font's head/hhea/hmtx tables.
fn hmtx_advances(font: &[u8]) -> (u16, Vec<u16>) {
    let be16 = |at: usize| u16::from_be_bytes([font[at], font[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes(font[at..at + 4].try_into().unwrap()) as usize;
    let table = |tag: &[u8]| {
        (0..usize::from(be16(4)))
            .map(|i| 12 + 16 * i)
            .find(|&record| &font[record..record + 4] == tag)
            .map(|record| be32(record + 8))
            .expect("table present")
    };
    let units_per_em = be16(table(b"head") + 18);
    let metrics = be16(table(b"hhea") + 34);
    let hmtx = table(b"hmtx");
    let advances = (0..usize::from(metrics))
        .map(|i| be16(hmtx + 4 * i))
        .collect();
    (units_per_em, advances)
}

fn attribute<'a>(svg: &'a str, element_start: &str, name: &str) -> &'a str {
    let element = &svg[svg.find(element_start).expect("element present")..];
    let value = &element[element
        .find(&format!(" {name}=\""))
        .expect("attribute present")
        + name.len()
        + 3..];
    &value[..value.find('"').expect("closing quote")]
}

fn decode(png: &[u8]) -> tiny_skia::Pixmap {
    tiny_skia::Pixmap::decode_png(png).expect("png decodes")
}

#[test]
fn renderer_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BadgeRenderer>();
    let svgs: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| RENDERER.svg(&Badge::new("status", "up", BadgeColor::Green))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(svgs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn new_rejects_bytes_that_are_not_a_font() {
    let err = BadgeRenderer::new(b"<html>not a font</html>".to_vec()).unwrap_err();
    assert!(matches!(err, BadgeError::Font(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "badge font does not parse: not a TrueType or OpenType font"
    );

    let truncated = font()[..2000].to_vec();
    let err = BadgeRenderer::new(truncated).unwrap_err();
    assert!(matches!(err, BadgeError::Font(_)), "{err:?}");

    assert!(matches!(
        BadgeRenderer::new(Vec::new()),
        Err(BadgeError::Font(_))
    ));

    // Cut anywhere, the font gives an error or a renderer, never a panic.
    let font = font();
    for cut in (0..font.len()).step_by(4099) {
        if let Ok(renderer) = BadgeRenderer::new(font[..cut].to_vec()) {
            renderer.text_width("status: up", 11.0);
        }
    }
}

#[test]
fn text_width_is_the_hmtx_sum() {
    let (units_per_em, advances) = hmtx_advances(&font());
    // No kerning pair in DejaVu Sans applies inside these strings.
    for text in ["up", "down", "status", "99.95%", "123 ms"] {
        let glyphs = usvg_glyph_ids(text);
        assert_eq!(glyphs.len(), text.chars().count(), "{text}");
        let units: u32 = glyphs
            .iter()
            .map(|&g| u32::from(advances[(g as usize).min(advances.len() - 1)]))
            .sum();
        let expected = f64::from(units) * 11.0 / f64::from(units_per_em);
        assert_eq!(RENDERER.text_width(text, 11.0), expected, "{text}");
    }
    // DejaVu Sans: 'u' advances 1298 and 'p' 1300 of 2048 units per em.
    assert_eq!(RENDERER.text_width("up", 2048.0), 2598.0);
    assert_eq!(RENDERER.text_width("", 11.0), 0.0);
}

#[test]
fn text_width_agrees_with_usvg_layout() {
    // Kerning pairs (AV, To, LT, P.), accents, a combining mark, characters missing from
    // the font (drawn as .notdef), markup characters.
    let exact = [
        "up",
        "AVATAR",
        "To Wa",
        "LT",
        "P.V.A.",
        "Kubernetes API",
        "the quick brown fox jumps over the lazy dog",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "<script>alert(1)</script>",
        "ÄÖÜ äöü é ß",
        "a\u{301}b",
        "日本",
        "😀",
        "k8s.io/api v1.33",
    ];
    for text in exact {
        for size in [11.0, 110.0] {
            let ours = RENDERER.text_width(text, size);
            let theirs = usvg_layout_width(text, size);
            assert!(
                (ours - theirs).abs() < 1e-3 * size,
                "{text:?} at {size}: ours {ours}, usvg {theirs}"
            );
        }
    }
    // usvg applies DejaVu's f-ligatures, which the advance sum does not know: the sum
    // is then a little wider, never narrower, so the text still fits its box.
    for text in ["fi fl ffi", "office flow"] {
        let ours = RENDERER.text_width(text, 11.0);
        let theirs = usvg_layout_width(text, 11.0);
        assert!(
            ours >= theirs && ours - theirs < 0.5,
            "{text:?}: ours {ours}, usvg {theirs}"
        );
    }
}

#[test]
fn wider_strings_are_wider() {
    let width = |s: &str| RENDERER.text_width(s, 11.0);
    assert!(width("iiii") < width("WWWW"));
    assert!(width("up") < width("down"));
    let sentence = "certificate expires in 12 days";
    let mut previous = 0.0;
    for end in 1..=sentence.len() {
        let w = width(&sentence[..end]);
        assert!(w > previous, "{:?}", &sentence[..end]);
        previous = w;
    }
    assert_eq!(
        RENDERER.text_width("status", 22.0),
        2.0 * RENDERER.text_width("status", 11.0)
    );
}

#[test]
fn svg_status_up() {
    insta::assert_snapshot!(svg_of("status_up"));
}

#[test]
fn svg_status_down() {
    insta::assert_snapshot!(svg_of("status_down"));
}

#[test]
fn svg_uptime() {
    insta::assert_snapshot!(svg_of("uptime"));
}

#[test]
fn svg_latency() {
    insta::assert_snapshot!(svg_of("latency"));
}

#[test]
fn svg_cert_days() {
    insta::assert_snapshot!(svg_of("cert_days"));
}

#[test]
fn svg_message_only() {
    insta::assert_snapshot!(svg_of("message_only"));
}

#[test]
fn svg_sizes_come_from_the_font() {
    let badge = Badge::new("status", "up", BadgeColor::Green);
    let svg = RENDERER.svg(&badge);
    let label = (RENDERER.text_width("status", 11.0) + 10.0).ceil();
    let message = (RENDERER.text_width("up", 11.0) + 10.0).ceil();
    assert_eq!(
        attribute(&svg, "<svg", "width"),
        (label + message).to_string()
    );
    assert_eq!(attribute(&svg, "<svg", "height"), "20");
    assert_eq!(
        attribute(&svg, "<rect x=", "x"),
        label.to_string(),
        "message rect starts where the label rect ends"
    );
    assert_eq!(attribute(&svg, "<rect x=", "width"), message.to_string());
}

#[test]
fn title_is_the_first_child_and_names_the_badge() {
    let svg = RENDERER.svg(&Badge::new("api", "up", BadgeColor::Green));
    assert_eq!(attribute(&svg, "<svg", "role"), "img");
    assert_eq!(attribute(&svg, "<svg", "aria-label"), "api: up");
    let after_root = &svg[svg.find('>').unwrap() + 1..];
    assert!(
        after_root
            .trim_start()
            .starts_with("<title>api: up</title>")
    );

    let titled = Badge {
        title: Some("API is up".into()),
        ..Badge::new("api", "up", BadgeColor::Green)
    };
    let svg = RENDERER.svg(&titled);
    assert_eq!(attribute(&svg, "<svg", "aria-label"), "API is up");
    assert!(svg.contains("<title>API is up</title>"));

    let svg = RENDERER.svg(&Badge::new("", "maintenance", BadgeColor::Blue));
    assert_eq!(attribute(&svg, "<svg", "aria-label"), "maintenance");
    assert!(!svg.contains("#555"), "no label part without a label");
}

#[test]
fn text_is_escaped() {
    let badge = Badge {
        title: Some("</title><script>alert(2)</script>".into()),
        ..Badge::new(
            "<script>alert(1)</script>",
            "a & b \"c\" 'd' ]]>",
            BadgeColor::Red,
        )
    };
    let svg = RENDERER.svg(&badge);
    assert!(!svg.contains("<script"), "{svg}");
    assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(svg.contains("a &amp; b &quot;c&quot; &apos;d&apos; ]]&gt;"));

    // It parses, and the texts read back exactly as given.
    let (texts, _) = texts_and_paths(&parse(&svg));
    let shown: Vec<&str> = texts.iter().map(|t| t.chunks()[0].text()).collect();
    assert_eq!(
        shown,
        [
            "<script>alert(1)</script>",
            "<script>alert(1)</script>",
            "a & b \"c\" 'd' ]]>",
            "a & b \"c\" 'd' ]]>",
        ]
    );
    let doc = usvg::roxmltree::Document::parse(&svg).expect("well-formed xml");
    let title = doc
        .descendants()
        .find(|n| n.has_tag_name("title"))
        .and_then(|n| n.text());
    assert_eq!(title, Some("</title><script>alert(2)</script>"));
}

#[test]
fn control_characters_and_white_space_are_cleaned() {
    let svg = RENDERER.svg(&Badge::new(
        "  my\u{0}\u{7} \t api\n",
        "up\u{FFFF}",
        BadgeColor::Green,
    ));
    usvg::roxmltree::Document::parse(&svg).expect("well-formed xml");
    let (texts, _) = texts_and_paths(&parse(&svg));
    assert_eq!(texts[0].chunks()[0].text(), "my api");
    assert_eq!(texts[2].chunks()[0].text(), "up");
    assert_eq!(attribute(&svg, "<svg", "aria-label"), "my api: up");
}

#[test]
fn custom_colors_are_validated() {
    assert_eq!(
        BadgeColor::from_hex("#ABC"),
        BadgeColor::Custom("#abc".into())
    );
    assert_eq!(
        BadgeColor::from_hex("#00ff7f"),
        BadgeColor::Custom("#00ff7f".into())
    );
    for bad in ["red", "#12", "#1234", "#ggg", "abc", "", "#abc\"/><script>"] {
        assert_eq!(BadgeColor::from_hex(bad), BadgeColor::Grey, "{bad:?}");
    }
    // Built directly, an invalid colour is drawn grey rather than written out.
    let sneaky = BadgeColor::Custom("url(#x)\"/><script>".into());
    assert_eq!(sneaky.hex(), "#9f9f9f");
    let svg = RENDERER.svg(&Badge::new("a", "b", sneaky));
    assert!(!svg.contains("url(#x)\""));
    assert!(svg.contains(r##"fill="#9f9f9f""##));
}

#[test]
fn light_colors_get_dark_text() {
    let svg = RENDERER.svg(&Badge::new("a", "b", BadgeColor::from_hex("#fff")));
    assert!(svg.contains(r##"fill="#333""##), "{svg}");
    for color in [BadgeColor::Green, BadgeColor::Yellow, BadgeColor::Grey] {
        let svg = RENDERER.svg(&Badge::new("a", "b", color));
        assert!(!svg.contains("#333"), "{svg}");
    }
}

#[test]
fn ids_depend_on_the_content() {
    let up = RENDERER.svg(&Badge::new("status", "up", BadgeColor::Green));
    let down = RENDERER.svg(&Badge::new("status", "down", BadgeColor::Red));
    assert_ne!(
        attribute(&up, "<clipPath", "id"),
        attribute(&down, "<clipPath", "id")
    );
    assert_eq!(
        up,
        RENDERER.svg(&Badge::new("status", "up", BadgeColor::Green))
    );
}

#[test]
fn every_badge_renders_to_a_png_of_the_expected_size() {
    for (name, badge) in fixtures() {
        let svg = RENDERER.svg(&badge);
        let width: u32 = attribute(&svg, "<svg", "width").parse().expect(name);
        for scale in [1.0f32, 2.0, 3.0] {
            let png = RENDERER.png(&svg, scale).expect(name);
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}");
            let pixmap = decode(&png);
            let s = scale as u32;
            assert_eq!(
                (pixmap.width(), pixmap.height()),
                (width * s, 20 * s),
                "{name} at {scale}"
            );
        }
    }
}

/// The text really is drawn (the font reached usvg): removing only the message's text
/// from an SVG changes the message area of the PNG, and the label's likewise.
#[test]
fn png_shows_the_text() {
    let svg = RENDERER.svg(&Badge::new("status", "up", BadgeColor::Green));
    let label_width = (RENDERER.text_width("status", 11.0) + 10.0).ceil() as u32;
    let total: u32 = attribute(&svg, "<svg", "width").parse().unwrap();
    let without = |text: &str| svg.replace(&format!(">{text}</text>"), "></text>");

    let full = decode(&RENDERER.png(&svg, 2.0).unwrap());
    let no_message = decode(&RENDERER.png(&without("up"), 2.0).unwrap());
    let no_label = decode(&RENDERER.png(&without("status"), 2.0).unwrap());

    let differing = |other: &tiny_skia::Pixmap, x0: u32, x1: u32| {
        let mut count = 0;
        for y in 0..40 {
            for x in 2 * x0..2 * x1 {
                if full.pixel(x, y) != other.pixel(x, y) {
                    count += 1;
                }
            }
        }
        count
    };
    // "up" at 11px covers well over 50 device pixels at scale 2.
    assert!(differing(&no_message, label_width, total) > 50);
    assert_eq!(differing(&no_message, 0, label_width), 0);
    assert!(differing(&no_label, 0, label_width) > 100);
    assert_eq!(differing(&no_label, label_width, total), 0);

    // And the text is white on the green: near-white pixels exist only with text.
    let whites = |p: &tiny_skia::Pixmap| {
        p.pixels()
            .iter()
            .filter(|c| c.alpha() == 255 && c.red() > 220 && c.green() > 220 && c.blue() > 220)
            .count()
    };
    assert!(whites(&full) > 20);
    assert_eq!(
        whites(&decode(
            &RENDERER
                .png(&without("up").replace(">status</text>", "></text>"), 2.0)
                .unwrap()
        )),
        0
    );
}

/// What resvg draws stays inside its box: every text's ink lies within its own rect, at
/// least 3 pixels from the edge (the padding is 5), for the fixtures and awkward strings.
#[test]
fn text_stays_inside_its_box() {
    let mut badges: Vec<Badge> = fixtures().into_iter().map(|(_, b)| b).collect();
    for (label, message) in [
        ("WWWWWWWW", "jjjj"),
        ("AVATAR To", "office flow"),
        ("日本 😀", "ÄÖÜ ß"),
        ("a very long label for a monitor", "Tj,"),
    ] {
        badges.push(Badge::new(label, message, BadgeColor::Yellow));
    }
    for badge in badges {
        let svg = RENDERER.svg(&badge);
        let tree = parse(&svg);
        let (texts, paths) = texts_and_paths(&tree);
        // The clip group holds the label rect (if any), the message rect and the overlay.
        let rects: Vec<_> = paths[..paths.len() - 1]
            .iter()
            .map(|p| p.abs_bounding_box())
            .collect();
        for text in &texts {
            let ink = text.abs_bounding_box();
            let center = (ink.left() + ink.right()) / 2.0;
            let rect = rects
                .iter()
                .find(|r| r.left() <= center && center <= r.right())
                .expect("text sits over a rect");
            assert!(
                ink.left() >= rect.left() + 3.0 && ink.right() <= rect.right() - 3.0,
                "{badge:?}: ink {ink:?} in {rect:?}"
            );
            assert!(
                ink.top() >= 0.0 && ink.bottom() <= 20.0,
                "{badge:?}: {ink:?}"
            );
        }
        assert_eq!(texts.len(), if badge.label.is_empty() { 2 } else { 4 });
    }
}

#[test]
fn png_rejects_bad_input() {
    assert!(matches!(
        RENDERER.png("not an svg", 2.0),
        Err(BadgeError::Svg(_))
    ));
    let svg = svg_of("status_up");
    for scale in [0.0, -1.0, f32::NAN, f32::INFINITY, 10_000.0] {
        assert!(
            matches!(RENDERER.png(&svg, scale), Err(BadgeError::Size { .. })),
            "{scale}"
        );
    }
}

#[test]
fn png_never_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("red.png");
    let mut red = tiny_skia::Pixmap::new(10, 10).unwrap();
    red.fill(tiny_skia::Color::from_rgba8(255, 0, 0, 255));
    red.save_png(&image).unwrap();
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><image width="10" height="10" href="{}"/></svg>"#,
        image.display()
    );

    // usvg's default options would load the file ...
    let tree = usvg::Tree::from_str(&svg, &USVG_OPTIONS).unwrap();
    let mut pixmap = tiny_skia::Pixmap::new(10, 10).unwrap();
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    assert!(pixmap.pixels().iter().all(|c| c.alpha() == 255));

    // ... the renderer does not.
    let pixmap = decode(&RENDERER.png(&svg, 1.0).unwrap());
    assert!(pixmap.pixels().iter().all(|c| c.alpha() == 0));
}

#[test]
fn shields_endpoint_json_shape() {
    assert_eq!(
        shields_endpoint_json(&Badge::new("status", "up", BadgeColor::Green)),
        json!({"schemaVersion": 1, "label": "status", "message": "up", "color": "brightgreen"})
    );
    let cases = [
        (BadgeColor::YellowGreen, "yellowgreen"),
        (BadgeColor::Yellow, "yellow"),
        (BadgeColor::Orange, "orange"),
        (BadgeColor::Red, "red"),
        (BadgeColor::Blue, "blue"),
        (BadgeColor::Grey, "lightgrey"),
        (BadgeColor::from_hex("#ABCDEF"), "abcdef"),
        (BadgeColor::Custom("nope".into()), "lightgrey"),
    ];
    for (color, name) in cases {
        let value = shields_endpoint_json(&Badge::new("l", "m", color));
        assert_eq!(value["color"], name);
    }
    insta::assert_json_snapshot!(shields_endpoint_json(&Badge::new(
        "cert <example.org>",
        "12 days",
        color_for_cert_days(Some(12))
    )));
}

#[test]
fn colors_follow_the_documented_thresholds() {
    use BadgeColor::*;
    let uptime = [
        (None, Grey),
        (Some(f64::NAN), Grey),
        (Some(100.0), Green),
        (Some(99.9), Green),
        (Some(99.89), YellowGreen),
        (Some(99.0), YellowGreen),
        (Some(98.99), Yellow),
        (Some(97.0), Yellow),
        (Some(96.0), Orange),
        (Some(95.0), Orange),
        (Some(94.99), Red),
        (Some(0.0), Red),
    ];
    for (input, color) in uptime {
        assert_eq!(color_for_uptime(input), color, "uptime {input:?}");
    }
    let latency = [
        (None, Grey),
        (Some(f64::NAN), Grey),
        (Some(0.0), Green),
        (Some(199.9), Green),
        (Some(200.0), YellowGreen),
        (Some(499.0), YellowGreen),
        (Some(500.0), Yellow),
        (Some(1000.0), Orange),
        (Some(1999.0), Orange),
        (Some(2000.0), Red),
        (Some(f64::INFINITY), Red),
    ];
    for (input, color) in latency {
        assert_eq!(color_for_latency(input), color, "latency {input:?}");
    }
    let cert = [
        (None, Grey),
        (Some(365), Green),
        (Some(30), Green),
        (Some(29), Yellow),
        (Some(14), Yellow),
        (Some(13), Orange),
        (Some(7), Orange),
        (Some(6), Red),
        (Some(0), Red),
        (Some(-3), Red),
    ];
    for (input, color) in cert {
        assert_eq!(color_for_cert_days(input), color, "cert days {input:?}");
    }
}

#[test]
fn png_from_parts_is_the_png_of_the_whole_svg() {
    let labels = [
        "svc-00001",
        "svc-00777",
        "uptime 24h",
        "response time",
        "certificate",
        "Bench page 12",
        "Wide WWWWWWWWWW name",
        "ff fi ffl ligatures",
        "AVA Ty kerning",
        "日本語 and émoji ✓",
        "x",
    ];
    let messages = [
        ("up", BadgeColor::Green),
        ("down", BadgeColor::Red),
        ("99.95%", BadgeColor::YellowGreen),
        ("100%", BadgeColor::Green),
        ("maintenance", BadgeColor::Blue),
        ("42 ms", BadgeColor::Green),
        ("1 day left", BadgeColor::Red),
        ("light", BadgeColor::from_hex("#eeeeee")),
        ("no data", BadgeColor::Grey),
    ];
    let mut split = 0;
    for label in labels {
        for (message, color) in &messages {
            let badge = Badge::new(label, *message, color.clone());
            for scale in [1.0, 2.0, 3.0] {
                let whole = RENDERER.png_whole(&badge, scale).unwrap();
                let parts = RENDERER.png_by_parts(&badge, scale).unwrap();
                assert!(whole == parts, "{label} | {message} at {scale}");
                if RENDERER.png_parts(&badge, scale).is_some() {
                    split += 1;
                }
            }
        }
    }
    // Widths of every kind: generated names against generated percentages.
    for i in 0..120u32 {
        let label = format!(
            "svc-{:05} {}",
            i * 7919 % 100_000,
            "Wmi".repeat((i % 7) as usize)
        );
        let message = format!("{}.{:02}%", 90 + i % 10, i * 37 % 100);
        let badge = Badge::new(
            label,
            message,
            color_for_uptime(Some(f64::from(90 + i % 10))),
        );
        let whole = RENDERER.png_whole(&badge, 2.0).unwrap();
        assert!(
            whole == RENDERER.png_by_parts(&badge, 2.0).unwrap(),
            "{badge:?}"
        );
    }
    // Ordinary badges really are rendered in parts (all of them at scale 2 and 1).
    assert!(split >= 2 * labels.len() * messages.len(), "{split}");
    // A badge without a label has one part only: it is rendered whole.
    let badge = Badge::new("", "up", BadgeColor::Green);
    assert!(RENDERER.png_parts(&badge, 2.0).is_none());
    assert_eq!(
        RENDERER.png_by_parts(&badge, 2.0).unwrap(),
        RENDERER.png_whole(&badge, 2.0).unwrap()
    );
}

/// The PNG is rasterised from [`BadgeRenderer::raster_svg`], where texts are paths of the
/// font's glyph outlines and corners rounded shapes: it must look like the published
/// SVG rendered by resvg with its `<text>` and clip path. Compared pixel by pixel, only
/// anti-aliased edge pixels may differ, and by little; a misplaced, flipped or missing
/// glyph would change whole strokes.
#[test]
fn png_of_the_raster_form_looks_like_the_svg() {
    let badges = [
        Badge::new("status", "up", BadgeColor::Green),
        Badge::new("uptime 24h", "99.95%", BadgeColor::YellowGreen),
        Badge::new("AVA Ty kerning", "down", BadgeColor::Red),
        Badge::new("svc-00042 Wmi", "42 ms", BadgeColor::from_hex("#eeeeee")),
        Badge::new("", "maintenance", BadgeColor::Blue),
        Badge::new("certificate", "1 day left", BadgeColor::Orange),
    ];
    for badge in badges {
        for scale in [1.0f32, 2.0] {
            let text = decode(&RENDERER.png(&RENDERER.svg(&badge), scale).unwrap());
            let raster = decode(&RENDERER.png_whole(&badge, scale).unwrap());
            assert_eq!(
                (text.width(), text.height()),
                (raster.width(), raster.height()),
                "{badge:?}"
            );
            let (mut off, mut worst) = (0usize, 0u8);
            for (a, b) in text.pixels().iter().zip(raster.pixels()) {
                let d = [
                    a.red().abs_diff(b.red()),
                    a.green().abs_diff(b.green()),
                    a.blue().abs_diff(b.blue()),
                    a.alpha().abs_diff(b.alpha()),
                ]
                .into_iter()
                .max()
                .unwrap_or(0);
                worst = worst.max(d);
                if d > 24 {
                    off += 1;
                }
            }
            let total = text.pixels().len();
            assert!(
                off * 100 <= total,
                "{badge:?} at {scale}: {off} of {total} pixels differ by more than 24 (worst {worst})"
            );
        }
    }
    // And the comparison can fail: a badge with another message is far off.
    let a = decode(
        &RENDERER
            .png_whole(&Badge::new("status", "up", BadgeColor::Green), 2.0)
            .unwrap(),
    );
    let b = decode(
        &RENDERER
            .png_whole(&Badge::new("status", "ok", BadgeColor::Green), 2.0)
            .unwrap(),
    );
    let off = a
        .pixels()
        .iter()
        .zip(b.pixels())
        .filter(|(a, b)| a.red().abs_diff(b.red()) > 24)
        .count();
    assert!(off * 100 > a.pixels().len(), "{off}");
}

/// A label or message wider than `MAX_TEXT_WIDTH` ends in `…` at the longest beginning
/// that fits; shorter ones are drawn whole; the SVG, PNG and shields JSON agree.
#[test]
fn long_texts_end_in_an_ellipsis_within_the_width_limit() {
    use crate::badge::MAX_TEXT_WIDTH;
    let r = &*RENDERER;
    for n in [1usize, 20, 29, 30, 31, 60, 550] {
        let label = "Wi ".repeat(n);
        let fitted = r.fitted(&Badge::new(label.clone(), "up", BadgeColor::Green));
        let width = r.text_width(&fitted.label, 11.0);
        assert!(width <= MAX_TEXT_WIDTH, "{n}: {width}");
        if r.text_width(label.trim_end(), 11.0) <= MAX_TEXT_WIDTH {
            assert_eq!(fitted.label, label.trim_end());
            continue;
        }
        let kept = fitted.label.strip_suffix('\u{2026}').unwrap();
        assert!(label.starts_with(kept) && !kept.ends_with(' '), "{kept:?}");
        // One more character would not fit.
        let more: String = label.chars().take(kept.chars().count() + 2).collect();
        assert!(r.text_width(&format!("{}\u{2026}", more.trim_end()), 11.0) > MAX_TEXT_WIDTH);
        let svg = r.svg(&Badge::new(label.clone(), "up", BadgeColor::Green));
        assert!(svg.contains(&format!(">{kept}\u{2026}</text>")), "{svg}");
        let png = r
            .png_by_parts(&Badge::new(label, "up", BadgeColor::Green), 2.0)
            .unwrap();
        let tree = usvg::Tree::from_str(&svg, &USVG_OPTIONS).unwrap();
        assert_eq!(
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            (tree.size().width() * 2.0).ceil() as u32
        );
    }
}
