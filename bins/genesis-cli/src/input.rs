//! Line-oriented input for `route` and `scan`: JSONL objects or plain text, one item per
//! line, from a file or stdin, with malformed lines skipped or fatal.

use std::io::{BufRead, BufReader};
use std::path::Path;

use clap::ValueEnum;
use serde_json::{Map, Value};

use crate::setup::Failure;

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnError {
    /// Report the line (number and reason) on stderr and carry on.
    Skip,
    /// Stop with exit code 2, naming the line.
    Fail,
}

/// One usable input line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    /// 1-based line number in the input.
    pub(crate) line: usize,
    /// The text to work on.
    pub(crate) text: String,
    /// The JSON object's fields, for JSONL input.
    pub(crate) fields: Option<Map<String, Value>>,
}

impl Item {
    /// The first of `names` that is a string field of the line's JSON object.
    pub(crate) fn field(&self, names: &[&str]) -> Option<&str> {
        let fields = self.fields.as_ref()?;
        names
            .iter()
            .find_map(|n| fields.get(*n).and_then(Value::as_str))
    }
}

/// Opens `path`, or stdin when `path` is `None` or `-`. An unreadable file is rejected
/// input (exit code 2).
pub(crate) fn open(path: Option<&Path>) -> Result<Box<dyn BufRead>, Failure> {
    match path {
        None => Ok(Box::new(BufReader::new(std::io::stdin()))),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(BufReader::new(std::io::stdin()))),
        Some(p) => std::fs::File::open(p)
            .map(|f| Box::new(BufReader::new(f)) as Box<dyn BufRead>)
            .map_err(|e| Failure::rejected(format!("cannot read {}: {e}", p.display()))),
    }
}

/// Parses one raw line: blank → `Ok(None)`; a line starting with `{` must be a JSON
/// object with a string field named in `text_fields`; anything else is the text itself.
pub(crate) fn parse_line(
    line: usize,
    raw: &str,
    text_fields: &[&str],
) -> Result<Option<Item>, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if !trimmed.starts_with('{') {
        return Ok(Some(Item {
            line,
            text: trimmed.to_owned(),
            fields: None,
        }));
    }
    let fields: Map<String, Value> =
        serde_json::from_str(trimmed).map_err(|e| format!("invalid JSON: {e}"))?;
    let text = text_fields
        .iter()
        .find_map(|n| fields.get(*n).and_then(Value::as_str))
        .ok_or_else(|| {
            format!(
                "no text field: expected a string in one of {}",
                text_fields.join(", ")
            )
        })?
        .to_owned();
    Ok(Some(Item {
        line,
        text,
        fields: Some(fields),
    }))
}

/// Counts of what [`for_each`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Items handed to the callback.
    pub(crate) items: usize,
    /// Malformed lines skipped.
    pub(crate) skipped: usize,
}

/// Reads `reader` line by line and calls `each` for every usable item. Malformed lines
/// (bad UTF-8, bad JSON, no text field, or an `Err` from `each`) are reported with their
/// line number and skipped or fatal per `on_error`. `Ok(false)` from `each` stops early
/// (closed stdout).
pub(crate) fn for_each(
    mut reader: impl BufRead,
    text_fields: &[&str],
    on_error: OnError,
    mut each: impl FnMut(&Item) -> Result<bool, String>,
) -> Result<Counts, Failure> {
    let mut counts = Counts::default();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Failure::rejected(format!("cannot read input after line {line}: {e}")))?;
        if n == 0 {
            return Ok(counts);
        }
        line += 1;
        let result = match std::str::from_utf8(&buf) {
            Err(e) => Err(format!("not valid UTF-8: {e}")),
            Ok(raw) => parse_line(line, raw, text_fields),
        };
        let outcome = match result {
            Ok(None) => continue,
            Ok(Some(item)) => each(&item).inspect(|_| counts.items += 1),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => return Ok(counts),
            Err(reason) => match on_error {
                OnError::Fail => {
                    return Err(Failure::rejected(format!("line {line}: {reason}")));
                }
                OnError::Skip => {
                    counts.skipped += 1;
                    eprintln!("warning: line {line} skipped: {reason}");
                }
            },
        }
    }
}

/// Writes one line to stdout. `Ok(false)` when stdout was closed (`| head`).
pub(crate) fn write_line(out: &mut impl std::io::Write, line: &str) -> Result<bool, String> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(format!("cannot write to stdout: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["text", "step_text_masked"];

    #[test]
    fn plain_json_and_blank_lines() {
        assert_eq!(parse_line(1, "   \r\n", FIELDS), Ok(None));
        let item = parse_line(2, "Fix the login bug\r\n", FIELDS)
            .unwrap()
            .unwrap();
        assert_eq!((item.line, item.text.as_str()), (2, "Fix the login bug"));
        assert!(item.fields.is_none());
        let item = parse_line(
            3,
            r#"{"step_text_masked": "book a flight", "gold_tool": "x"}"#,
            FIELDS,
        )
        .unwrap()
        .unwrap();
        assert_eq!(item.text, "book a flight");
        assert_eq!(item.field(&["agent", "gold_tool"]), Some("x"));
    }

    #[test]
    fn malformed_lines_say_why() {
        let e = parse_line(1, "{not json", FIELDS).unwrap_err();
        assert!(e.starts_with("invalid JSON"), "{e}");
        let e = parse_line(1, r#"{"body": "x"}"#, FIELDS).unwrap_err();
        assert!(e.contains("text, step_text_masked"), "{e}");
        let e = parse_line(1, r#"{"text": 5}"#, FIELDS).unwrap_err();
        assert!(e.contains("no text field"), "{e}");
    }

    #[test]
    fn skip_counts_and_fail_names_the_line() {
        let input = "one\n{bad\n\nthree\n";
        let mut seen = Vec::new();
        let counts = for_each(input.as_bytes(), FIELDS, OnError::Skip, |i| {
            seen.push((i.line, i.text.clone()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![(1, "one".to_owned()), (4, "three".to_owned())]);
        assert_eq!(
            counts,
            Counts {
                items: 2,
                skipped: 1
            }
        );

        let bytes: &[u8] = b"one\n\xff\xfe\nthree\n";
        let counts = for_each(bytes, FIELDS, OnError::Skip, |_| Ok(true)).unwrap();
        assert_eq!(
            counts,
            Counts {
                items: 2,
                skipped: 1
            }
        );

        let err = for_each(input.as_bytes(), FIELDS, OnError::Fail, |_| Ok(true)).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(
            err.message.starts_with("line 2: invalid JSON"),
            "{}",
            err.message
        );

        let err = for_each("a\nb\n".as_bytes(), FIELDS, OnError::Fail, |i| {
            if i.line == 2 {
                Err("unknown agent \"z\"".into())
            } else {
                Ok(true)
            }
        })
        .unwrap_err();
        assert_eq!(err.message, "line 2: unknown agent \"z\"");
    }

    #[test]
    fn stops_when_the_callback_says_so() {
        let counts = for_each("a\nb\nc\n".as_bytes(), FIELDS, OnError::Fail, |i| {
            Ok(i.line < 2)
        })
        .unwrap();
        assert_eq!(counts.items, 2);
    }
}
