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

/// The 1-based line and column (in characters) where the byte offset `start` of `text`
/// falls (a parser error's span start, moved back to a character boundary): for
/// messages that point into a configuration document.
pub fn line_column(text: &str, start: usize) -> (usize, usize) {
    let mut start = start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// ` at line L column C`, or nothing without a position.
pub fn at_position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line} column {column}"),
        _ => String::new(),
    }
}

/// A parser message on one line: its non-empty lines, trimmed, joined with "; ".
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        // "x" is the 7th character of line 2 (é is one character, two bytes).
        assert_eq!(line_column(text, text.find('x').unwrap()), (2, 7));
        // Inside a multi-byte character: its start; past the end: the end.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 999), (3, 1));
        assert_eq!(at_position(Some(2), Some(7)), " at line 2 column 7");
        assert_eq!(at_position(None, Some(7)), "");
        assert_eq!(
            one_line("expected `=`\n  |\n  | x\n"),
            "expected `=`; |; | x"
        );
    }

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
