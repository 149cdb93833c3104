//! Small text predicates shared by the crates that screen input.

/// Whether `c` shows nothing: white space, or a Unicode `Default_Ignorable_Code_Point`
/// (rendered as nothing when unsupported: format controls such as ZWSP U+200B, ZWNJ,
/// ZWJ, WORD JOINER U+2060, BOM/ZWNBSP U+FEFF, soft hyphen U+00AD, the bidi controls,
/// variation selectors, tag characters), plus the interlinear annotation controls
/// U+FFF9..U+FFFB and the blank-looking BRAILLE PATTERN BLANK U+2800.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c as u32,
            0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x2800 | 0x3164
            | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// Whether `text` shows nothing: empty, or only white space and invisible characters
/// ([`is_invisible`]). A request like that carries no task however it is spelled.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(is_invisible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_only_text_is_blank_and_text_around_it_is_not() {
        for blank in [
            "",
            " \t\n",
            "\u{200b}\u{200b}\u{feff}",
            "\u{200c}\u{200d}\u{2060}",
            "\u{00ad} \u{034f}",
            "\u{202e}\u{2066}\u{200f}",
            "\u{180e}\u{3164}\u{fe0f}",
            "\u{e0041}\u{e007f}",
            "\u{2800}\u{00a0}\n",
        ] {
            assert!(is_blank(blank), "{:?}", blank.escape_unicode().to_string());
        }
        for text in [
            "a",
            "\u{200b}fix the bug\u{feff}",
            "\u{200d}\u{1f468}\u{200d}\u{1f4bb}",
            "日本",
        ] {
            assert!(!is_blank(text), "{text:?}");
        }
    }
}
