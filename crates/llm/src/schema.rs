//! A validator for the subset of JSON Schema that structured LLM output needs.
//!
//! Supported keywords: `type` (a name or a list), `properties`, `required`,
//! `additionalProperties` (`false`, `true` or a schema), `items` (one schema), `enum`,
//! `const`, `minItems`/`maxItems`, `minLength`/`maxLength`, `minimum`/`maximum`, and the
//! boolean schemas `true`/`false`. Annotations (`title`, `description`, `default`,
//! `examples`, `format`, `$schema`, `$id`, `$comment`, `deprecated`, `readOnly`,
//! `writeOnly`) are ignored. Every other keyword (`$ref`, `anyOf`, `pattern`, ...) is
//! rejected when the schema is compiled, so a constraint is never silently skipped.
//!
//! Keywords apply only to values of their type, as in JSON Schema: `properties` says
//! nothing about a string. Paths are JSON pointers (RFC 6901); the root is `""`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::LlmError;

/// The most violations [`JsonSchema::violations`] reports.
pub const MAX_VIOLATIONS: usize = 16;

/// A JSON type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "null" => JsonType::Null,
            "boolean" => JsonType::Boolean,
            "integer" => JsonType::Integer,
            "number" => JsonType::Number,
            "string" => JsonType::String,
            "array" => JsonType::Array,
            "object" => JsonType::Object,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Boolean => "boolean",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::String => "string",
            JsonType::Array => "array",
            JsonType::Object => "object",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match (self, value) {
            (JsonType::Null, Value::Null)
            | (JsonType::Boolean, Value::Bool(_))
            | (JsonType::Number, Value::Number(_))
            | (JsonType::String, Value::String(_))
            | (JsonType::Array, Value::Array(_))
            | (JsonType::Object, Value::Object(_)) => true,
            (JsonType::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Additional {
    Allowed,
    Forbidden,
    Schema(Box<Node>),
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    /// `false` schema: nothing matches.
    never: bool,
    types: Option<Vec<JsonType>>,
    properties: BTreeMap<String, Node>,
    required: Vec<String>,
    additional: Additional,
    items: Option<Box<Node>>,
    allowed: Option<Vec<Value>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    minimum: Option<f64>,
    maximum: Option<f64>,
}

impl Node {
    fn any() -> Self {
        Node {
            never: false,
            types: None,
            properties: BTreeMap::new(),
            required: Vec::new(),
            additional: Additional::Allowed,
            items: None,
            allowed: None,
            min_items: None,
            max_items: None,
            min_length: None,
            max_length: None,
            minimum: None,
            maximum: None,
        }
    }
}

/// A compiled schema. Compile once, validate many values.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSchema {
    root: Node,
}

/// One way a value fails a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the failing value (`/tags/2`; `""` is the root).
    pub path: String,
    /// The rule and the offending value (`expected string, got number 3`).
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.reason)
    }
}

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
];

fn invalid(path: &str, reason: impl Into<String>) -> LlmError {
    let path = if path.is_empty() {
        "(root)".to_owned()
    } else {
        path.to_owned()
    };
    LlmError::InvalidSchema {
        path,
        reason: reason.into(),
    }
}

fn pointer_push(path: &str, token: &str) -> String {
    let escaped = token.replace('~', "~0").replace('/', "~1");
    format!("{path}/{escaped}")
}

/// A short rendering of a value for error messages (at most ~60 characters).
fn excerpt(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() <= 60 {
        s
    } else {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    }
}

fn count_keyword(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<usize>, LlmError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    path,
                    format!("{key} must be a non-negative integer, got {}", excerpt(v)),
                )
            }),
    }
}

fn number_keyword(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<f64>, LlmError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(path, format!("{key} must be a number, got {}", excerpt(v)))),
    }
}

fn compile_node(schema: &Value, path: &str, depth: usize) -> Result<Node, LlmError> {
    if depth > 64 {
        return Err(invalid(path, "schema is nested deeper than 64 levels"));
    }
    let obj = match schema {
        Value::Bool(true) => return Ok(Node::any()),
        Value::Bool(false) => {
            return Ok(Node {
                never: true,
                ..Node::any()
            });
        }
        Value::Object(obj) => obj,
        other => {
            return Err(invalid(
                path,
                format!(
                    "a schema must be an object or a boolean, got {}",
                    type_of(other)
                ),
            ));
        }
    };
    let mut node = Node::any();
    for (key, value) in obj {
        match key.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(list) if !list.is_empty() => list.iter().collect(),
                    Value::String(_) => vec![value],
                    other => {
                        return Err(invalid(
                            path,
                            format!(
                                "type must be a name or a non-empty list, got {}",
                                excerpt(other)
                            ),
                        ));
                    }
                };
                let mut types = Vec::with_capacity(names.len());
                for name in names {
                    let t = name
                        .as_str()
                        .and_then(JsonType::parse)
                        .ok_or_else(|| invalid(path, format!("unknown type {}", excerpt(name))))?;
                    types.push(t);
                }
                node.types = Some(types);
            }
            "properties" => {
                let props = value.as_object().ok_or_else(|| {
                    invalid(
                        path,
                        format!("properties must be an object, got {}", type_of(value)),
                    )
                })?;
                let props_path = pointer_push(path, "properties");
                for (name, sub) in props {
                    let sub_path = pointer_push(&props_path, name);
                    node.properties
                        .insert(name.clone(), compile_node(sub, &sub_path, depth + 1)?);
                }
            }
            "required" => {
                let list = value.as_array().ok_or_else(|| {
                    invalid(
                        path,
                        format!("required must be a list of names, got {}", excerpt(value)),
                    )
                })?;
                for name in list {
                    let name = name.as_str().ok_or_else(|| {
                        invalid(
                            path,
                            format!("required must list strings, got {}", excerpt(name)),
                        )
                    })?;
                    node.required.push(name.to_owned());
                }
            }
            "additionalProperties" => {
                node.additional = match value {
                    Value::Bool(true) => Additional::Allowed,
                    Value::Bool(false) => Additional::Forbidden,
                    sub => Additional::Schema(Box::new(compile_node(
                        sub,
                        &pointer_push(path, "additionalProperties"),
                        depth + 1,
                    )?)),
                };
            }
            "items" => {
                if value.is_array() {
                    return Err(invalid(
                        path,
                        "items as a list (tuple validation) is not supported",
                    ));
                }
                node.items = Some(Box::new(compile_node(
                    value,
                    &pointer_push(path, "items"),
                    depth + 1,
                )?));
            }
            "enum" => {
                let list = value.as_array().ok_or_else(|| {
                    invalid(path, format!("enum must be a list, got {}", excerpt(value)))
                })?;
                node.allowed = Some(list.clone());
            }
            "const" => node.allowed = Some(vec![value.clone()]),
            "minItems" => node.min_items = count_keyword(obj, key, path)?,
            "maxItems" => node.max_items = count_keyword(obj, key, path)?,
            "minLength" => node.min_length = count_keyword(obj, key, path)?,
            "maxLength" => node.max_length = count_keyword(obj, key, path)?,
            "minimum" => node.minimum = number_keyword(obj, key, path)?,
            "maximum" => node.maximum = number_keyword(obj, key, path)?,
            k if ANNOTATIONS.contains(&k) => {}
            other => {
                return Err(invalid(path, format!("unsupported keyword {other:?}")));
            }
        }
    }
    if obj.contains_key("enum") && obj.contains_key("const") {
        return Err(invalid(path, "enum and const together are not supported"));
    }
    Ok(node)
}

/// JSON equality where `1` equals `1.0`, as JSON Schema requires for `enum`/`const`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

struct Checker {
    out: Vec<Violation>,
}

impl Checker {
    fn full(&self) -> bool {
        self.out.len() >= MAX_VIOLATIONS
    }

    fn fail(&mut self, path: &str, reason: String) {
        if !self.full() {
            self.out.push(Violation {
                path: path.to_owned(),
                reason,
            });
        }
    }

    fn check(&mut self, node: &Node, value: &Value, path: &str) {
        if self.full() {
            return;
        }
        if node.never {
            self.fail(
                path,
                format!("no value is allowed here, got {}", excerpt(value)),
            );
            return;
        }
        if let Some(types) = &node.types
            && !types.iter().any(|t| t.matches(value))
        {
            let expected: Vec<&str> = types.iter().map(|t| t.name()).collect();
            self.fail(
                path,
                format!(
                    "expected {}, got {} {}",
                    expected.join(" or "),
                    type_of(value),
                    excerpt(value)
                ),
            );
            return;
        }
        if let Some(allowed) = &node.allowed
            && !allowed.iter().any(|a| json_eq(a, value))
        {
            let list: Vec<String> = allowed.iter().map(excerpt).collect();
            self.fail(
                path,
                format!("{} is not one of [{}]", excerpt(value), list.join(", ")),
            );
        }
        match value {
            Value::String(s) => {
                let len = s.chars().count();
                if let Some(min) = node.min_length.filter(|&m| len < m) {
                    self.fail(
                        path,
                        format!("string has {len} characters, fewer than minLength {min}"),
                    );
                }
                if let Some(max) = node.max_length.filter(|&m| len > m) {
                    self.fail(
                        path,
                        format!("string has {len} characters, more than maxLength {max}"),
                    );
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = node.minimum.filter(|&m| x < m) {
                    self.fail(path, format!("{n} is less than minimum {min}"));
                }
                if let Some(max) = node.maximum.filter(|&m| x > m) {
                    self.fail(path, format!("{n} is greater than maximum {max}"));
                }
            }
            Value::Array(items) => {
                if let Some(min) = node.min_items.filter(|&m| items.len() < m) {
                    self.fail(
                        path,
                        format!("array has {} items, fewer than minItems {min}", items.len()),
                    );
                }
                if let Some(max) = node.max_items.filter(|&m| items.len() > m) {
                    self.fail(
                        path,
                        format!("array has {} items, more than maxItems {max}", items.len()),
                    );
                }
                if let Some(item_schema) = &node.items {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &pointer_push(path, &i.to_string()));
                    }
                }
            }
            Value::Object(map) => {
                for name in &node.required {
                    if !map.contains_key(name) {
                        self.fail(
                            &pointer_push(path, name),
                            format!("required property {name:?} is missing"),
                        );
                    }
                }
                for (name, v) in map {
                    let sub_path = pointer_push(path, name);
                    if let Some(sub) = node.properties.get(name) {
                        self.check(sub, v, &sub_path);
                    } else {
                        match &node.additional {
                            Additional::Allowed => {}
                            Additional::Forbidden => {
                                self.fail(&sub_path, format!("property {name:?} is not allowed (additionalProperties is false)"));
                            }
                            Additional::Schema(sub) => self.check(sub, v, &sub_path),
                        }
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

impl JsonSchema {
    /// Compiles a schema.
    ///
    /// # Errors
    /// [`LlmError::InvalidSchema`] naming the schema path and the unsupported or
    /// malformed keyword.
    pub fn compile(schema: &Value) -> Result<Self, LlmError> {
        Ok(JsonSchema {
            root: compile_node(schema, "", 0)?,
        })
    }

    /// Up to [`MAX_VIOLATIONS`] ways `value` fails the schema, in document order;
    /// empty when it conforms.
    pub fn violations(&self, value: &Value) -> Vec<Violation> {
        let mut checker = Checker { out: Vec::new() };
        checker.check(&self.root, value, "");
        checker.out
    }

    /// Checks `value`.
    ///
    /// # Errors
    /// The first [`Violation`].
    pub fn validate(&self, value: &Value) -> Result<(), Violation> {
        match self.violations(value).into_iter().next() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn schema() -> JsonSchema {
        JsonSchema::compile(&json!({
            "type": "object",
            "description": "a plan",
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": 10},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
                "kind": {"enum": ["a", "b"]},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "count": {"type": ["integer", "null"]},
                "meta": {"type": "object", "additionalProperties": {"type": "boolean"}}
            },
            "required": ["title", "tags"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    /// One table-driven helper: (value, expected first path, substring of the reason).
    fn check(value: Value, expect: Option<(&str, &str)>) {
        let got = schema().validate(&value);
        match (got, expect) {
            (Ok(()), None) => {}
            (Err(v), Some((path, needle))) => {
                assert_eq!(v.path, path, "{value} -> {v}");
                assert!(v.reason.contains(needle), "{value} -> {v}");
            }
            (got, expect) => panic!("{value}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn validates_the_supported_subset() {
        check(json!({"title": "t", "tags": ["x"]}), None);
        check(
            json!({"title": "t", "tags": ["x"], "count": 3.0, "meta": {"ok": true}}),
            None,
        );
        check(
            json!({"title": "t", "tags": ["x"], "count": null, "kind": "b", "score": 1}),
            None,
        );
        check(json!([]), Some(("", "expected object, got array")));
        check(
            json!({"tags": ["x"]}),
            Some(("/title", "required property \"title\" is missing")),
        );
        check(
            json!({"title": "t", "tags": ["x", 3]}),
            Some(("/tags/1", "expected string, got number 3")),
        );
        check(
            json!({"title": "t", "tags": []}),
            Some(("/tags", "fewer than minItems 1")),
        );
        check(
            json!({"title": "t", "tags": ["a", "b", "c", "d"]}),
            Some(("/tags", "more than maxItems 3")),
        );
        check(
            json!({"title": "t", "tags": ["x"], "kind": "c"}),
            Some(("/kind", "\"c\" is not one of [\"a\", \"b\"]")),
        );
        check(
            json!({"title": "t", "tags": ["x"], "extra": 1}),
            Some(("/extra", "additionalProperties is false")),
        );
        check(
            json!({"title": "t", "tags": ["x"], "count": 1.5}),
            Some(("/count", "expected integer or null")),
        );
        check(
            json!({"title": "t", "tags": ["x"], "score": 1.5}),
            Some(("/score", "greater than maximum 1")),
        );
        check(
            json!({"title": "", "tags": ["x"]}),
            Some(("/title", "fewer than minLength 1")),
        );
        check(
            json!({"title": "t", "tags": ["x"], "meta": {"a/b": 1}}),
            Some(("/meta/a~1b", "expected boolean")),
        );
    }

    #[test]
    fn reports_several_violations_in_order() {
        let v = schema().violations(&json!({"tags": [1, 2], "extra": true}));
        let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["/title", "/extra", "/tags/0", "/tags/1"]);
    }

    #[test]
    fn boolean_schemas_and_const() {
        let s = JsonSchema::compile(
            &json!({"properties": {"no": false, "yes": true, "one": {"const": 1}}}),
        )
        .unwrap();
        assert!(s.validate(&json!({"yes": [1, 2], "one": 1.0})).is_ok());
        assert_eq!(s.validate(&json!({"no": 1})).unwrap_err().path, "/no");
        assert_eq!(s.validate(&json!({"one": 2})).unwrap_err().path, "/one");
    }

    #[test]
    fn rejects_unsupported_or_malformed_keywords() {
        for (schema, path, needle) in [
            (
                json!({"anyOf": []}),
                "(root)",
                "unsupported keyword \"anyOf\"",
            ),
            (
                json!({"properties": {"x": {"$ref": "#/a"}}}),
                "/properties/x",
                "$ref",
            ),
            (json!({"type": "float"}), "(root)", "unknown type \"float\""),
            (
                json!({"minItems": -1}),
                "(root)",
                "minItems must be a non-negative integer, got -1",
            ),
            (json!({"items": [{"type": "string"}]}), "(root)", "tuple"),
            (
                json!({"required": "x"}),
                "(root)",
                "required must be a list",
            ),
            (json!(3), "(root)", "got number"),
        ] {
            match JsonSchema::compile(&schema) {
                Err(LlmError::InvalidSchema { path: p, reason }) => {
                    assert_eq!(p, path, "{schema}");
                    assert!(reason.contains(needle), "{schema}: {reason}");
                }
                other => panic!("{schema}: {other:?}"),
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|i| json!(i)),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn violation_paths_point_into_the_value(value in arb_json()) {
            for v in schema().violations(&value) {
                // Every reported path resolves in the value, except a missing required
                // property, whose parent must exist instead.
                if v.reason.starts_with("required property") {
                    let parent = &v.path[..v.path.rfind('/').unwrap()];
                    prop_assert!(value.pointer(parent).is_some(), "{}", v);
                } else {
                    prop_assert!(value.pointer(&v.path).is_some(), "{}", v);
                }
            }
        }

        #[test]
        fn the_empty_schema_accepts_everything(value in arb_json()) {
            let any = JsonSchema::compile(&json!({})).unwrap();
            prop_assert!(any.validate(&value).is_ok());
        }
    }
}
