//! The set of flags: loading, lookup, evaluation and environment overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::FlagError;
use crate::flag::{Evaluation, Flag, Percent, Reason, Strategy};
use crate::time::Timestamp;

/// The built-in defaults: `config/feature_flags.json` at build time.
const DEFAULTS_JSON: &str = include_str!("../../../config/feature_flags.json");

/// The on-disk shape: `{"flags": [ ... ]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagFile {
    flags: Vec<Flag>,
}

/// An immutable-by-convention set of validated flags, keyed by name.
///
/// Evaluation is synchronous and allocation-free; share a store between threads through
/// [`crate::SharedFlags`] (which also hot-reloads it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagStore {
    flags: BTreeMap<String, Flag>,
}

impl FlagStore {
    /// A store from definitions, validating each one.
    ///
    /// # Errors
    /// The first invalid definition ([`Flag::validate`]) or [`FlagError::DuplicateFlag`].
    pub fn from_flags(flags: impl IntoIterator<Item = Flag>) -> Result<Self, FlagError> {
        let mut map = BTreeMap::new();
        for flag in flags {
            flag.validate()?;
            if map.contains_key(&flag.name) {
                return Err(FlagError::DuplicateFlag { name: flag.name });
            }
            map.insert(flag.name.clone(), flag);
        }
        Ok(FlagStore { flags: map })
    }

    /// Parses `{"flags": [...]}` JSON.
    ///
    /// # Errors
    /// [`FlagError::Parse`] for malformed JSON, unknown fields or bad percentages, and the
    /// errors of [`FlagStore::from_flags`].
    pub fn from_json(text: &str) -> Result<Self, FlagError> {
        Self::from_json_with_origin(text, "<string>")
    }

    pub(crate) fn from_json_with_origin(text: &str, origin: &str) -> Result<Self, FlagError> {
        let file: FlagFile = serde_json::from_str(text).map_err(|error| FlagError::Parse {
            origin: origin.to_owned(),
            error,
        })?;
        Self::from_flags(file.flags)
    }

    /// Reads and parses a flag file. This is the one file read below the facade; the
    /// caller decides the path.
    ///
    /// # Errors
    /// [`FlagError::Read`] when the file cannot be read, otherwise as [`FlagStore::from_json`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FlagError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FlagError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json_with_origin(&text, &path.display().to_string())
    }

    /// The defaults shipped in `config/feature_flags.json`, compiled in so an embedded
    /// orchestrator has flags without any file.
    ///
    /// # Errors
    /// Only if the shipped file is invalid (a test guards against that).
    pub fn builtin_defaults() -> Result<Self, FlagError> {
        Self::from_json_with_origin(DEFAULTS_JSON, "built-in config/feature_flags.json")
    }

    /// The definitions as pretty JSON in the file format, e.g. for the CLI to persist a
    /// rollout step.
    ///
    /// # Errors
    /// [`FlagError::Serialize`] (not expected in practice).
    pub fn to_json_pretty(&self) -> Result<String, FlagError> {
        let file = FlagFile {
            flags: self.flags.values().cloned().collect(),
        };
        serde_json::to_string_pretty(&file).map_err(|source| FlagError::Serialize { source })
    }

    /// `original` (the text of a flags file) with flag `name` changed to its definition
    /// in this store, every other byte kept: only the fields of that flag whose values
    /// differ are rewritten (on one line, `{ "type": "all" }` style), so a rollout step
    /// is a one-line change to a file kept in version control. When the flag's set of
    /// fields changed, its whole object is rewritten in place, indented like the original.
    ///
    /// # Errors
    /// [`FlagError::Parse`] when `original` is not a flags file, [`FlagError::UnknownFlag`]
    /// when either side lacks the flag, [`FlagError::Serialize`] (not expected).
    pub fn splice_into_json(&self, original: &str, name: &str) -> Result<String, FlagError> {
        use std::collections::HashMap;

        use serde_json::value::RawValue;

        #[derive(Deserialize)]
        struct RawFile<'a> {
            #[serde(borrow)]
            flags: Vec<&'a RawValue>,
        }
        type Fields<'a> = HashMap<String, &'a RawValue>;
        let parse = |error| FlagError::Parse {
            origin: "<flags file>".to_owned(),
            error,
        };
        let unknown = || FlagError::UnknownFlag {
            name: name.to_owned(),
        };
        let flag = self.get(name).ok_or_else(unknown)?;
        let new_text =
            serde_json::to_string(flag).map_err(|source| FlagError::Serialize { source })?;
        let new_fields: Fields<'_> = serde_json::from_str(&new_text).map_err(parse)?;
        let file: RawFile<'_> = serde_json::from_str(original).map_err(parse)?;
        // Byte offset of a slice of `original` (every raw value borrows from it).
        let offset = |raw: &RawValue| raw.get().as_ptr() as usize - original.as_ptr() as usize;
        for raw in file.flags {
            let fields: Fields<'_> = serde_json::from_str(raw.get()).map_err(parse)?;
            let is_it = fields
                .get("name")
                .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
                .is_some_and(|n| n == name);
            if !is_it {
                continue;
            }
            // The fields whose values changed, compared as parsed flags (so a field left
            // out of the file at its default is unchanged when it stays at the default).
            let old_flag = FlagStore::from_json(original)?;
            let old_flag = old_flag.get(name).ok_or_else(unknown)?;
            let as_map = |f: &Flag| match serde_json::to_value(f) {
                Ok(serde_json::Value::Object(map)) => Ok(map),
                Ok(_) => Ok(serde_json::Map::new()),
                Err(source) => Err(FlagError::Serialize { source }),
            };
            let (old_values, new_values) = (as_map(old_flag)?, as_map(flag)?);
            let changed: Vec<&String> = new_values
                .iter()
                .filter(|(k, v)| old_values.get(*k) != Some(*v))
                .map(|(k, _)| k)
                .collect();
            let in_place = old_values.keys().all(|k| new_values.contains_key(k))
                && changed.iter().all(|k| fields.contains_key(*k));
            // (start, end, replacement), applied back to front.
            let mut edits: Vec<(usize, usize, String)> = Vec::new();
            if in_place {
                for key in changed {
                    let (old, new) = (fields[key], new_fields[key]);
                    let start = offset(old);
                    edits.push((start, start + old.get().len(), spaced(new.get())));
                }
            } else {
                let start = offset(raw);
                let line_start = original[..start].rfind('\n').map_or(0, |i| i + 1);
                let indent: String = original[line_start..start]
                    .chars()
                    .take_while(|c| c.is_whitespace())
                    .collect();
                let pretty = serde_json::to_string_pretty(flag)
                    .map_err(|source| FlagError::Serialize { source })?;
                let text = pretty.replace('\n', &format!("\n{indent}"));
                edits.push((start, start + raw.get().len(), text));
            }
            edits.sort_by_key(|e| std::cmp::Reverse(e.0));
            let mut out = original.to_owned();
            for (start, end, text) in edits {
                out.replace_range(start..end, &text);
            }
            return Ok(out);
        }
        Err(unknown())
    }

    /// The flag called `name`.
    pub fn get(&self, name: &str) -> Option<&Flag> {
        self.flags.get(name)
    }

    /// All flags, in name order.
    pub fn flags(&self) -> impl Iterator<Item = &Flag> {
        self.flags.values()
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// True when no flag is defined.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Adds or replaces a flag.
    ///
    /// # Errors
    /// As [`Flag::validate`].
    pub fn upsert(&mut self, flag: Flag) -> Result<(), FlagError> {
        flag.validate()?;
        self.flags.insert(flag.name.clone(), flag);
        Ok(())
    }

    /// Evaluates `name` for `subject` at `now`.
    ///
    /// # Errors
    /// [`FlagError::UnknownFlag`] when the store does not define `name`.
    pub fn try_evaluate(
        &self,
        name: &str,
        subject: &str,
        now: SystemTime,
    ) -> Result<Evaluation, FlagError> {
        self.flags
            .get(name)
            .map(|flag| flag.evaluate(subject, Timestamp::from(now)))
            .ok_or_else(|| FlagError::UnknownFlag {
                name: name.to_owned(),
            })
    }

    /// Evaluates `name` for `subject` at `now`. An unknown flag is *off*, with reason
    /// [`Reason::UnknownFlag`] (fail closed: a typo never switches a feature on).
    pub fn evaluate(&self, name: &str, subject: &str, now: SystemTime) -> Evaluation {
        match self.flags.get(name) {
            Some(flag) => flag.evaluate(subject, Timestamp::from(now)),
            None => Evaluation::new(false, Reason::UnknownFlag),
        }
    }

    /// Whether `name` is on for `subject` at `now`; `false` for an unknown flag.
    pub fn is_enabled(&self, name: &str, subject: &str, now: SystemTime) -> bool {
        self.evaluate(name, subject, now).enabled
    }

    /// Reads overrides from `(name, value)` pairs (the facade passes `std::env::vars()`):
    /// a variable named like a flag in upper case (`EMERGENCY_SHUTDOWN`) overrides it.
    /// Other variables are ignored. Nothing is changed; see [`FlagStore::apply_overrides`].
    ///
    /// Values: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` (any case) force the flag on
    /// for everyone or off; a percentage such as `25%` makes it a sticky 25 % rollout.
    ///
    /// # Errors
    /// [`FlagError::InvalidOverride`] naming the first variable with an invalid value.
    pub fn parse_env_overrides(
        &self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<FlagOverride>, FlagError> {
        let mut overrides = Vec::new();
        for (var, value) in vars {
            // Flag names are lower-case ASCII, so only all-upper variables can match.
            if var.bytes().any(|b| b.is_ascii_lowercase()) {
                continue;
            }
            let name = var.to_ascii_lowercase();
            if !self.flags.contains_key(&name) {
                continue;
            }
            let parsed =
                OverrideValue::parse(&value).ok_or_else(|| FlagError::InvalidOverride {
                    var: var.clone(),
                    value: value.clone(),
                })?;
            overrides.push(FlagOverride {
                var,
                flag: name,
                value: parsed,
            });
        }
        overrides.sort_by(|a, b| a.flag.cmp(&b.flag));
        Ok(overrides)
    }

    /// Applies parsed overrides, all or nothing.
    ///
    /// # Errors
    /// [`FlagError::OverriddenFlagMissing`] when an override names a flag this store lacks
    /// (possible after a reload removed it); the store is then unchanged.
    pub fn apply_overrides(&mut self, overrides: &[FlagOverride]) -> Result<(), FlagError> {
        if let Some(missing) = overrides.iter().find(|o| !self.flags.contains_key(&o.flag)) {
            return Err(FlagError::OverriddenFlagMissing {
                var: missing.var.clone(),
                flag: missing.flag.clone(),
            });
        }
        for o in overrides {
            if let Some(flag) = self.flags.get_mut(&o.flag) {
                o.value.apply(flag);
            }
        }
        Ok(())
    }

    /// [`FlagStore::parse_env_overrides`] then [`FlagStore::apply_overrides`]; returns what
    /// was applied (log it). On error nothing is applied.
    ///
    /// # Errors
    /// [`FlagError::InvalidOverride`] naming the variable and its value.
    pub fn apply_env_overrides(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<FlagOverride>, FlagError> {
        let overrides = self.parse_env_overrides(vars)?;
        self.apply_overrides(&overrides)?;
        Ok(overrides)
    }

    /// Points flag `name` at `percent` (see [`Flag::set_rollout_percent`]); this is how a
    /// [`crate::RolloutState`] reaches the flag.
    ///
    /// # Errors
    /// [`FlagError::UnknownFlag`].
    pub fn set_rollout_percent(&mut self, name: &str, percent: Percent) -> Result<(), FlagError> {
        let flag = self
            .flags
            .get_mut(name)
            .ok_or_else(|| FlagError::UnknownFlag {
                name: name.to_owned(),
            })?;
        flag.set_rollout_percent(percent);
        Ok(())
    }
}

/// One environment override, parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagOverride {
    /// The variable, e.g. `EMERGENCY_SHUTDOWN`.
    pub var: String,
    /// The flag it overrides, e.g. `emergency_shutdown`.
    pub flag: String,
    /// What it sets.
    pub value: OverrideValue,
}

impl fmt::Display for FlagOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={} (flag {})", self.var, self.value, self.flag)
    }
}

/// What an override sets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverrideValue {
    /// On for everyone (`enabled = true`, strategy `all`) or off (`enabled = false`).
    Enabled(bool),
    /// On, as a sticky percentage rollout.
    Percent(Percent),
}

impl OverrideValue {
    /// Parses an override value; `None` when it is not one of the accepted spellings.
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(OverrideValue::Enabled(true)),
            "false" | "0" | "no" | "off" => Some(OverrideValue::Enabled(false)),
            _ => {
                let number = v.strip_suffix('%')?.trim_end();
                let parsed: f64 = number.parse().ok()?;
                Percent::try_new(parsed).ok().map(OverrideValue::Percent)
            }
        }
    }

    fn apply(self, flag: &mut Flag) {
        match self {
            OverrideValue::Enabled(true) => {
                flag.enabled = true;
                flag.strategy = Strategy::All;
            }
            OverrideValue::Enabled(false) => flag.enabled = false,
            OverrideValue::Percent(percent) => {
                flag.enabled = true;
                flag.strategy = Strategy::Percentage { percent };
            }
        }
    }
}

impl fmt::Display for OverrideValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverrideValue::Enabled(b) => write!(f, "{b}"),
            OverrideValue::Percent(p) => write!(f, "{p}"),
        }
    }
}

/// Compact JSON with a space after `:` and `,` and inside non-empty `{ }` — the one-line
/// style of `config/feature_flags.json` (`{ "type": "percentage", "percent": 5.0 }`).
fn spaced(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = compact.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            ':' | ',' => {
                out.push(c);
                out.push(' ');
            }
            '{' if chars.peek() != Some(&'}') => out.push_str("{ "),
            '}' if !out.ends_with('{') => out.push_str(" }"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// A rollout step rewrites only the flag's changed field, in the file's own style;
    /// a flag whose set of fields changed is rewritten whole, indented like the rest.
    #[test]
    fn splicing_a_flag_keeps_every_other_byte() {
        let original = "{\n  \"flags\": [\n    {\n      \"name\": \"b\",\n      \"enabled\": true,\n      \"strategy\": { \"type\": \"off\" }\n    },\n    {\n      \"name\": \"a\",\n      \"enabled\": true,\n      \"strategy\": { \"type\": \"all\" }\n    }\n  ]\n}\n";
        let mut store = FlagStore::from_json(original).unwrap();
        store
            .set_rollout_percent("b", Percent::try_new(5.0).unwrap())
            .unwrap();
        let text = store.splice_into_json(original, "b").unwrap();
        let changed: Vec<(&str, &str)> = original
            .lines()
            .zip(text.lines())
            .filter(|(x, y)| x != y)
            .collect();
        assert_eq!(original.lines().count(), text.lines().count(), "{text}");
        assert_eq!(changed.len(), 1, "{text}");
        assert!(
            changed[0]
                .1
                .starts_with("      \"strategy\": { \"type\": \"percentage\", "),
            "{text}"
        );
        assert_eq!(FlagStore::from_json(&text).unwrap(), store);
        // Nothing changed: the same bytes.
        let same = FlagStore::from_json(original).unwrap();
        assert_eq!(same.splice_into_json(original, "a").unwrap(), original);
        // A field set appears (a description): the object is rewritten in place.
        let mut flags: Vec<Flag> = store.flags().cloned().collect();
        for f in &mut flags {
            if f.name == "a" {
                f.description = "now described".to_owned();
            }
        }
        let described = FlagStore::from_flags(flags).unwrap();
        let text = described.splice_into_json(original, "a").unwrap();
        assert_eq!(
            FlagStore::from_json(&text).unwrap().get("a"),
            described.get("a")
        );
        assert!(
            text.starts_with("{\n  \"flags\": [\n    {\n      \"name\": \"b\""),
            "{text}"
        );
        assert!(
            matches!(
                same.splice_into_json(original, "zzz"),
                Err(FlagError::UnknownFlag { .. })
            ),
            "unknown flag"
        );
        assert!(same.splice_into_json("not json", "a").is_err());
    }

    #[test]
    fn spacing_matches_the_shipped_file_style() {
        assert_eq!(spaced(r#"{"type":"all"}"#), r#"{ "type": "all" }"#);
        assert_eq!(
            spaced(r#"{"type":"percentage","percent":5.0}"#),
            r#"{ "type": "percentage", "percent": 5.0 }"#
        );
        assert_eq!(spaced(r#""a,b:{c}\"""#), r#""a,b:{c}\"""#);
        assert_eq!(spaced("{}"), "{}");
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn store() -> FlagStore {
        FlagStore::from_flags([
            Flag::new("orchestration_enabled", true),
            Flag::new("emergency_shutdown", false),
            Flag::new("halo_routing", true),
        ])
        .unwrap()
    }

    #[test]
    fn builtin_defaults_parse_and_ship_required_flags() {
        let store = FlagStore::builtin_defaults().unwrap();
        for name in [
            "orchestration_enabled",
            "llm_integration_enabled",
            "htdag_decomposition",
            "halo_routing",
            "aop_validation",
            "daao_cost_routing",
            "tumix_early_stopping",
            "emergency_shutdown",
            "maintenance_mode",
            "read_only_mode",
            "new_router_rollout",
        ] {
            assert!(store.get(name).is_some(), "missing {name}");
        }
        for kill in ["emergency_shutdown", "maintenance_mode", "read_only_mode"] {
            assert!(!store.is_enabled(kill, "anyone", UNIX_EPOCH), "{kill}");
        }
        assert!(matches!(
            store.get("new_router_rollout").unwrap().strategy,
            Strategy::Progressive { .. }
        ));
    }

    #[test]
    fn unknown_flag_is_off_or_an_error() {
        let s = store();
        let e = s.evaluate("nope", "u", UNIX_EPOCH);
        assert!(!e.enabled);
        assert_eq!(e.reason, Reason::UnknownFlag);
        let err = s.try_evaluate("nope", "u", UNIX_EPOCH).unwrap_err();
        assert_eq!(err.to_string(), "unknown flag \"nope\"");
    }

    #[test]
    fn duplicates_rejected() {
        let err = FlagStore::from_flags([Flag::new("a", true), Flag::new("a", false)]).unwrap_err();
        assert!(matches!(err, FlagError::DuplicateFlag { name } if name == "a"));
    }

    #[test]
    fn env_overrides_switch_flags() {
        let mut s = store();
        let applied = s
            .apply_env_overrides(vars(&[
                ("ORCHESTRATION_ENABLED", "false"),
                ("EMERGENCY_SHUTDOWN", " TRUE "),
                ("HALO_ROUTING", "25%"),
                ("PATH", "/usr/bin"),
                ("halo_routing", "false"),
            ]))
            .unwrap();
        assert_eq!(applied.len(), 3);
        assert!(!s.is_enabled("orchestration_enabled", "u", UNIX_EPOCH));
        assert!(s.is_enabled("emergency_shutdown", "u", UNIX_EPOCH));
        assert_eq!(
            s.get("halo_routing").unwrap().strategy,
            Strategy::Percentage {
                percent: Percent::try_new(25.0).unwrap()
            }
        );
    }

    #[test]
    fn env_override_spellings() {
        for (v, want) in [
            ("1", Some(OverrideValue::Enabled(true))),
            ("On", Some(OverrideValue::Enabled(true))),
            ("yes", Some(OverrideValue::Enabled(true))),
            ("0", Some(OverrideValue::Enabled(false))),
            ("OFF", Some(OverrideValue::Enabled(false))),
            ("no", Some(OverrideValue::Enabled(false))),
            (
                "12.5 %",
                Some(OverrideValue::Percent(Percent::try_new(12.5).unwrap())),
            ),
            ("", None),
            ("enable", None),
            ("150%", None),
            ("25", None),
            ("-1%", None),
        ] {
            assert_eq!(OverrideValue::parse(v), want, "{v:?}");
        }
    }

    #[test]
    fn invalid_env_override_names_var_and_value_and_changes_nothing() {
        let mut s = store();
        let before = s.clone();
        let err = s
            .apply_env_overrides(vars(&[
                ("EMERGENCY_SHUTDOWN", "true"),
                ("ORCHESTRATION_ENABLED", "maybe"),
            ]))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ORCHESTRATION_ENABLED"), "{msg}");
        assert!(msg.contains("\"maybe\""), "{msg}");
        assert_eq!(s, before);
    }

    #[test]
    fn json_round_trip() {
        let s = FlagStore::builtin_defaults().unwrap();
        let again = FlagStore::from_json(&s.to_json_pretty().unwrap()).unwrap();
        assert_eq!(s, again);
    }

    #[test]
    fn parse_errors_carry_origin() {
        let err = FlagStore::from_json(r#"{"flags":[{"name":"a","enabled":"yes"}]}"#).unwrap_err();
        assert!(err.to_string().contains("<string>"), "{err}");
        let err = FlagStore::from_json(r#"{"flags":[{"name":"a","enabled":true,"colour":1}]}"#)
            .unwrap_err();
        assert!(matches!(err, FlagError::Parse { .. }));
    }

    #[test]
    fn set_rollout_percent_requires_known_flag() {
        let mut s = store();
        assert!(matches!(
            s.set_rollout_percent("ghost", Percent::HUNDRED),
            Err(FlagError::UnknownFlag { .. })
        ));
        s.set_rollout_percent("halo_routing", Percent::ZERO)
            .unwrap();
        assert!(!s.is_enabled("halo_routing", "u", UNIX_EPOCH));
    }
}
