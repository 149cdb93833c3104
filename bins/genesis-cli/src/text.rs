//! Text from models, agents and the user made safe for a terminal.
//!
//! `genesis run` prints an LLM's answer and agents' error reasons, and `genesis plan`
//! echoes the request: a control character in them (ESC, BEL, a carriage return, a C1
//! code) would drive the terminal: set its title, colour the rest of the screen, hide
//! text. [`visible`] escapes them as `\u{1b}` so they are seen, not obeyed. JSON output
//! needs none of this: JSON already escapes control characters.

/// `s` with every control character except newline and tab (C0, DEL, C1) written as a
/// Rust-style escape, `\u{1b}` for ESC; `s` itself (no copy) when it has none.
pub(crate) fn visible(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn control_characters_are_escaped_newline_and_tab_kept() {
        assert_eq!(
            visible("DONE \u{1b}]0;pwned\u{7}\u{1b}[31mRED"),
            "DONE \\u{1b}]0;pwned\\u{7}\\u{1b}[31mRED"
        );
        assert_eq!(
            visible("a\tb\nc\rd\u{9b}e\u{7f}"),
            "a\tb\nc\\u{d}d\\u{9b}e\\u{7f}"
        );
        assert!(matches!(
            visible("plain, ünïcode ✓\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
