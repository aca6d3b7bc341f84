//! Text as the site shows it: what may never reach a page, feed, badge or JSON display
//! field. Characters XML 1.0 forbids (C0 controls but tab, line feed and carriage
//! return; U+FFFE, U+FFFF) would make feeds and SVG invalid; other controls (DEL, C1)
//! show as nothing useful; bidirectional overrides and isolates and zero-width
//! characters can make a name read as another. One of the builder's lowest floors.

use std::borrow::Cow;

/// Whether XML 1.0 forbids `c` in a document (lone surrogates cannot occur in Rust).
pub(crate) fn xml_forbidden(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

/// Whether `c` is a bidirectional embedding, override or isolate, or a zero-width
/// character: U+202A–U+202E, U+2066–U+2069, U+200B–U+200F, U+2060, U+FEFF.
pub(crate) fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{2060}' | '\u{FEFF}'
    )
}

/// Whether `c` is left out of displayed text: XML-forbidden, another control (DEL,
/// C1), or [`invisible`]. Tab, line feed and carriage return are kept.
pub(crate) fn dropped(c: char) -> bool {
    xml_forbidden(c) || matches!(c, '\u{7F}'..='\u{9F}') || invisible(c)
}

/// `text` without the [`dropped`] characters (borrowed when it has none).
pub(crate) fn display(text: &str) -> Cow<'_, str> {
    if text.chars().any(dropped) {
        Cow::Owned(text.chars().filter(|c| !dropped(*c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// Removes the [`dropped`] characters of `text` in place.
pub(crate) fn clean(text: &mut String) {
    if text.chars().any(dropped) {
        text.retain(|c| !dropped(c));
    }
}

/// [`clean`] for an optional text.
pub(crate) fn clean_opt(text: &mut Option<String>) {
    if let Some(t) = text {
        clean(t);
    }
}

/// A rendered XML, HTML or SVG document without the characters XML 1.0 forbids, whatever
/// a theme's templates wrote: the last step of every rendered document.
pub(crate) fn xml_safe(document: String) -> String {
    if document.chars().any(xml_forbidden) {
        document.chars().filter(|c| !xml_forbidden(*c)).collect()
    } else {
        document
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_overrides_and_zero_width_characters_are_dropped() {
        let all: String = (0u32..=0x10FFFF)
            .filter_map(char::from_u32)
            .take(0x3000)
            .collect();
        let shown = display(&all);
        for c in shown.chars() {
            assert!(!dropped(c), "{:04X}", c as u32);
        }
        assert!(shown.contains("\t\n\r"));
        assert_eq!(display("a\u{202E}b\u{200B}c\u{FEFF}d\u{1}\u{FFFF}"), "abcd");
        assert!(matches!(display("plain é ✓"), Cow::Borrowed(_)));
        assert_eq!(xml_safe("a\u{0}\u{202E}b\u{FFFE}".into()), "a\u{202E}b");
    }
}
