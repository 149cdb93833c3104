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

/// The longest input line `route` and `scan` accept, in bytes (1 MiB, newline
/// excluded). A longer line is a malformed line (skipped or fatal per `--on-error`) and
/// is never held in memory whole: past the limit its bytes are counted and dropped.
pub(crate) const MAX_LINE_BYTES: usize = 1 << 20;

/// Opens `path`, or stdin when `path` is `None` or `-`. An unreadable file (or a
/// directory) is rejected input (exit code 2).
pub(crate) fn open(path: Option<&Path>) -> Result<Box<dyn BufRead>, Failure> {
    match path {
        None => Ok(Box::new(BufReader::new(std::io::stdin()))),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(BufReader::new(std::io::stdin()))),
        Some(p) if p.is_dir() => Err(Failure::rejected(format!(
            "cannot read {}: it is a directory",
            p.display()
        ))),
        Some(p) => std::fs::File::open(p)
            .map(|f| Box::new(BufReader::new(f)) as Box<dyn BufRead>)
            .map_err(|e| Failure::rejected(format!("cannot read {}: {e}", p.display()))),
    }
}

/// How [`for_each`] and the messages name an input: its path, or `stdin`.
pub(crate) fn source_name(path: Option<&Path>) -> String {
    match path {
        Some(p) if p.as_os_str() != "-" => p.display().to_string(),
        _ => "stdin".to_owned(),
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
    let text = match text_fields
        .iter()
        .find_map(|n| fields.get(*n).map(|v| (*n, v)))
    {
        Some((_, Value::String(text))) => text.clone(),
        // Audit H11 L5: `{"text": 123}` has a text field, of the wrong type.
        Some((name, other)) => {
            return Err(format!(
                "field {name:?} is not a string (got {}): the text must be a string",
                json_type(other)
            ));
        }
        None => {
            return Err(format!(
                "no text field: expected a string in one of {}",
                text_fields.join(", ")
            ));
        }
    };
    Ok(Some(Item {
        line,
        text,
        fields: Some(fields),
    }))
}

/// The JSON type of a value, for messages ("a number").
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Counts of what [`for_each`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Items handed to the callback.
    pub(crate) items: usize,
    /// Malformed lines skipped.
    pub(crate) skipped: usize,
}

/// Why the callback of [`for_each`] did not take an item.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The line is malformed (an unknown agent, a bad `kind`): skipped or fatal per
    /// `--on-error`, like a line that does not parse.
    Bad(String),
    /// Not the line's fault (stdout cannot be written): stops the command at once,
    /// whatever `--on-error` says.
    Fatal(Failure),
}

impl From<String> for LineError {
    fn from(reason: String) -> Self {
        LineError::Bad(reason)
    }
}

/// One raw line read by [`read_line_bounded`].
enum Raw {
    /// End of input.
    End,
    /// A line (in the buffer), newline included when there was one.
    Line,
    /// A line longer than the limit: its length in bytes, newline excluded; only the
    /// first bytes were kept.
    TooLong(usize),
}

/// Reads one line into `buf` (cleared first), keeping at most `max` bytes plus the
/// newline: the rest of a longer line is consumed and counted, not stored.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Raw> {
    buf.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..=i], true),
            None => (chunk, false),
        };
        let used = part.len();
        let content = if done { used - 1 } else { used };
        if len <= max {
            let room = (max + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&part[..used.min(room)]);
        }
        len = len.saturating_add(content);
        reader.consume(used);
        if done {
            break;
        }
    }
    Ok(match (any, len > max) {
        (false, _) => Raw::End,
        (true, true) => Raw::TooLong(len),
        (true, false) => Raw::Line,
    })
}

/// Reads `reader` (named `source` in warnings) line by line and calls `each` for every
/// usable item. Malformed lines (bad UTF-8, bad JSON, no text field, longer than
/// [`MAX_LINE_BYTES`], or a [`LineError::Bad`] from `each`) are reported with their
/// line number and skipped or fatal (exit code 2) per `on_error`. A
/// [`LineError::Fatal`] from `each` (stdout cannot be written) ends the command with
/// its failure; `Ok(false)` from `each` stops early (closed stdout).
pub(crate) fn for_each(
    reader: impl BufRead,
    source: &str,
    text_fields: &[&str],
    on_error: OnError,
    each: impl FnMut(&Item) -> Result<bool, LineError>,
) -> Result<Counts, Failure> {
    for_each_limited(
        reader,
        source,
        text_fields,
        on_error,
        Blank::Skip,
        MAX_LINE_BYTES,
        each,
    )
}

/// [`for_each`] for task input, where every line is a task: an empty or blank line is
/// a malformed line, not silently passed over (audit H11 H2).
pub(crate) fn for_each_task(
    reader: impl BufRead,
    source: &str,
    text_fields: &[&str],
    on_error: OnError,
    each: impl FnMut(&Item) -> Result<bool, LineError>,
) -> Result<Counts, Failure> {
    for_each_limited(
        reader,
        source,
        text_fields,
        on_error,
        Blank::Malformed,
        MAX_LINE_BYTES,
        each,
    )
}

/// What an empty or blank line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blank {
    /// Passed over without a word.
    Skip,
    /// A malformed line (skipped with a warning or fatal per `--on-error`).
    Malformed,
}

fn for_each_limited(
    mut reader: impl BufRead,
    source: &str,
    text_fields: &[&str],
    on_error: OnError,
    blank: Blank,
    max_line: usize,
    mut each: impl FnMut(&Item) -> Result<bool, LineError>,
) -> Result<Counts, Failure> {
    let mut counts = Counts::default();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        let raw = read_line_bounded(&mut reader, &mut buf, max_line).map_err(|e| {
            Failure::rejected(format!("cannot read {source} after line {line}: {e}"))
        })?;
        let result = match raw {
            Raw::End => return Ok(counts),
            Raw::TooLong(len) => {
                line += 1;
                Err(format!(
                    "line is {len} bytes, longer than the limit of {max_line} bytes \
                     (rule: max_line_bytes)"
                ))
            }
            Raw::Line => {
                line += 1;
                match std::str::from_utf8(&buf) {
                    Err(e) => Err(format!("not valid UTF-8: {e}")),
                    // A byte-order mark opens some files written on Windows (audit H11
                    // M3): without this, a JSONL first line would be taken as plain text.
                    Ok(raw) => {
                        let raw = if line == 1 {
                            raw.strip_prefix('\u{feff}').unwrap_or(raw)
                        } else {
                            raw
                        };
                        match parse_line(line, raw, text_fields) {
                            Ok(None) if blank == Blank::Malformed => {
                                Err("empty line: no task description (rule: empty_task)".to_owned())
                            }
                            other => other,
                        }
                    }
                }
            }
        };
        let outcome = match result {
            Ok(None) => continue,
            Ok(Some(item)) => each(&item).inspect(|_| counts.items += 1),
            Err(e) => Err(LineError::Bad(e)),
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => return Ok(counts),
            Err(LineError::Fatal(failure)) => return Err(failure),
            Err(LineError::Bad(reason)) => match on_error {
                OnError::Fail => {
                    return Err(Failure::rejected(format!(
                        "{source}: line {line}: {reason}"
                    )));
                }
                OnError::Skip => {
                    counts.skipped += 1;
                    eprintln!("warning: {source}: line {line} skipped: {reason}");
                }
            },
        }
    }
}

/// Writes one line to stdout. `Ok(false)` when stdout was closed (`| head`); any other
/// write error is fatal (exit code 1): the output is incomplete, and that is not the
/// input line's fault.
pub(crate) fn write_line(out: &mut impl std::io::Write, line: &str) -> Result<bool, LineError> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(LineError::Fatal(Failure::internal(format!(
            "cannot write to stdout: {e}"
        )))),
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
        // Audit H11 L5: the field is there, of the wrong type.
        let e = parse_line(1, r#"{"text": 5}"#, FIELDS).unwrap_err();
        assert_eq!(
            e,
            "field \"text\" is not a string (got a number): the text must be a string"
        );
        let e = parse_line(1, r#"{"step_text_masked": ["x"]}"#, FIELDS).unwrap_err();
        assert!(
            e.starts_with("field \"step_text_masked\" is not a string (got an array)"),
            "{e}"
        );
    }

    #[test]
    fn skip_counts_and_fail_names_the_line() {
        let input = "one\n{bad\n\nthree\n";
        let mut seen = Vec::new();
        let counts = for_each(input.as_bytes(), "in", FIELDS, OnError::Skip, |i| {
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
        let counts = for_each(bytes, "in", FIELDS, OnError::Skip, |_| Ok(true)).unwrap();
        assert_eq!(
            counts,
            Counts {
                items: 2,
                skipped: 1
            }
        );

        let err =
            for_each(input.as_bytes(), "in", FIELDS, OnError::Fail, |_| Ok(true)).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(
            err.message.starts_with("in: line 2: invalid JSON"),
            "{}",
            err.message
        );

        let err = for_each("a\nb\n".as_bytes(), "in", FIELDS, OnError::Fail, |i| {
            if i.line == 2 {
                Err(LineError::Bad("unknown agent \"z\"".into()))
            } else {
                Ok(true)
            }
        })
        .unwrap_err();
        assert_eq!(err.message, "in: line 2: unknown agent \"z\"");
    }

    #[test]
    fn stops_when_the_callback_says_so() {
        let counts = for_each("a\nb\nc\n".as_bytes(), "in", FIELDS, OnError::Fail, |i| {
            Ok(i.line < 2)
        })
        .unwrap();
        assert_eq!(counts.items, 2);
    }

    #[test]
    fn long_lines_are_refused_without_being_stored() {
        let long = "x".repeat(100);
        let input = format!("short\n{long}\n{}\nlast", "y".repeat(16));
        let mut seen = Vec::new();
        let counts = for_each_limited(
            input.as_bytes(),
            "in",
            FIELDS,
            OnError::Skip,
            Blank::Skip,
            16,
            |i| {
                seen.push(i.text.clone());
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(seen, ["short", &"y".repeat(16), "last"]);
        assert_eq!(counts.skipped, 1);
        let err = for_each_limited(
            input.as_bytes(),
            "in",
            FIELDS,
            OnError::Fail,
            Blank::Skip,
            16,
            |_| Ok(true),
        )
        .unwrap_err();
        assert_eq!(err.code, 2);
        assert!(
            err.message
                .contains("line 2: line is 100 bytes, longer than the limit of 16 bytes"),
            "{}",
            err.message
        );
        // The buffer never holds more than the limit and a newline.
        let mut buf = Vec::new();
        let mut reader = std::io::BufReader::with_capacity(4, long.as_bytes());
        assert!(matches!(
            read_line_bounded(&mut reader, &mut buf, 16).unwrap(),
            Raw::TooLong(100)
        ));
        assert!(buf.len() <= 17, "{}", buf.len());
    }

    #[test]
    fn a_fatal_callback_error_stops_at_once_whatever_on_error_says() {
        let mut calls = 0;
        let err = for_each("a\nb\nc\n".as_bytes(), "in", FIELDS, OnError::Skip, |_| {
            calls += 1;
            Err(LineError::Fatal(Failure::internal(
                "cannot write to stdout: full",
            )))
        })
        .unwrap_err();
        assert_eq!((err.code, calls), (1, 1));
        assert_eq!(err.message, "cannot write to stdout: full");
    }
}
