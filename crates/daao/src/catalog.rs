//! The model catalogue: what models exist, what they can do, what they cost.

use genesis_core::{ModelId, Usd};
use serde::{Deserialize, Serialize};

/// One model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The provider's model name.
    pub id: ModelId,
    /// Which provider serves it (`openai`, `anthropic`, or any OpenAI-compatible name).
    pub provider: String,
    /// The hardest task difficulty (in `[0, 1]`) this model handles reliably.
    pub capability: f64,
    /// Dollars per million input tokens.
    pub input_per_million: Usd,
    /// Dollars per million output tokens.
    pub output_per_million: Usd,
    /// Context window in tokens: the most a task's exchange (prompt plus answer) may
    /// hold. The selector skips models whose window is smaller than a task's estimated
    /// tokens (see [`ModelSpec::fits`]). Default 128000; must be positive.
    #[serde(default = "default_context")]
    pub context_window: u32,
    /// An optional human label for the tier (`small`, `frontier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

fn default_context() -> u32 {
    128_000
}

impl ModelSpec {
    /// The cost of `input` and `output` tokens on this model.
    pub fn cost(&self, input: u64, output: u64) -> Usd {
        Usd::per_million_tokens(self.input_per_million, input)
            + Usd::per_million_tokens(self.output_per_million, output)
    }

    /// The price per million tokens of a task whose tokens are split as the selector
    /// prices them ([`OUTPUT_SHARE`] output, the rest input), used to order the catalogue
    /// from cheapest to most expensive. It is the selector's own cost estimate per token,
    /// so the catalogue's "cheapest" is the cheapest by that estimate.
    pub fn blended_price(&self) -> f64 {
        (1.0 - OUTPUT_SHARE) * self.input_per_million.as_f64()
            + OUTPUT_SHARE * self.output_per_million.as_f64()
    }

    /// Whether a task of `tokens` estimated tokens (prompt plus answer) fits in this
    /// model's context window.
    pub fn fits(&self, tokens: u64) -> bool {
        u64::from(self.context_window) >= tokens
    }
}

/// The share of a task's estimated tokens assumed to be output (the answer): 40%. The
/// selector prices tasks with it and the catalogue orders models by it.
pub const OUTPUT_SHARE: f64 = 0.4;

/// Splits a task's estimated `tokens` into `(input, output)` at [`OUTPUT_SHARE`]: the
/// split every cost estimate uses.
pub fn split_tokens(tokens: u64) -> (u64, u64) {
    let output = ((tokens as f64 * OUTPUT_SHARE).round() as u64).min(tokens);
    (tokens - output, output)
}

/// Why a catalogue was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The TOML did not parse or did not match the schema. The message carries the
    /// parser's, which names the key or value, and the position: ``invalid model
    /// catalogue: invalid value: -1.0, expected a non-negative amount at line 5 column 21``.
    #[error("invalid model catalogue: {}{}", genesis_core::text::one_line(.error.message()), genesis_core::text::at_position(*.line, *.column))]
    Parse {
        /// The parser's error. Its text is in this error's message, so it is not
        /// repeated as [`std::error::Error::source`] (a chain printer shows it once).
        error: toml::de::Error,
        /// 1-based line of the offending key or value; `None` when the parser gives
        /// no position.
        line: Option<usize>,
        /// 1-based column (in characters), set with `line`.
        column: Option<usize>,
    },
    /// No model was defined.
    #[error("model catalogue is empty (rule: at_least_one_model)")]
    Empty,
    /// A model id appears twice.
    #[error("model {id} is defined twice (rule: unique_model_ids)")]
    Duplicate {
        /// The repeated id.
        id: ModelId,
    },
    /// A context window of zero tokens: no task would fit.
    #[error("model {id} has context_window 0, no task fits (rule: context_window_positive)")]
    ContextWindow {
        /// The model.
        id: ModelId,
    },
    /// A capability outside `[0, 1]`.
    #[error("model {id} has capability {value}, outside [0, 1] (rule: capability_range)")]
    Capability {
        /// The model.
        id: ModelId,
        /// The rejected value.
        value: f64,
    },
}

/// The 1-based line and column (in characters) of `error`'s span in `text`, the
/// document it was parsed from: `(None, None)` when the parser gives no position.
fn toml_position(error: &toml::de::Error, text: &str) -> (Option<usize>, Option<usize>) {
    error.span().map_or((None, None), |span| {
        let (line, column) = genesis_core::text::line_column(text, span.start);
        (Some(line), Some(column))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    model: Vec<ModelSpec>,
}

/// Models ordered from cheapest to most expensive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCatalog {
    models: Vec<ModelSpec>,
}

impl ModelCatalog {
    /// Builds a catalogue from specs.
    ///
    /// # Errors
    /// Empty catalogue, duplicate ids, capability outside `[0, 1]`.
    pub fn new(mut models: Vec<ModelSpec>) -> Result<Self, CatalogError> {
        if models.is_empty() {
            return Err(CatalogError::Empty);
        }
        for (i, m) in models.iter().enumerate() {
            if !(0.0..=1.0).contains(&m.capability) {
                return Err(CatalogError::Capability {
                    id: m.id.clone(),
                    value: m.capability,
                });
            }
            if m.context_window == 0 {
                return Err(CatalogError::ContextWindow { id: m.id.clone() });
            }
            if models[..i].iter().any(|o| o.id == m.id) {
                return Err(CatalogError::Duplicate { id: m.id.clone() });
            }
        }
        // Stable: models at the same price and capability keep the file's order.
        models.sort_by(|a, b| {
            a.blended_price()
                .total_cmp(&b.blended_price())
                .then(b.capability.total_cmp(&a.capability))
        });
        Ok(ModelCatalog { models })
    }

    /// Parses `[[model]]` tables (the format of `config/models.toml`).
    ///
    /// # Errors
    /// Parse errors and the rules of [`ModelCatalog::new`].
    pub fn from_toml_str(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|error| {
            let (line, column) = toml_position(&error, text);
            CatalogError::Parse {
                error,
                line,
                column,
            }
        })?;
        ModelCatalog::new(file.model)
    }

    /// Models from cheapest to most expensive.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// The model with this id.
    pub fn get(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id.as_str() == id)
    }

    /// The models for which `keep` holds, in the same order: e.g. only the models a
    /// configured provider serves.
    ///
    /// # Errors
    /// [`CatalogError::Empty`] when `keep` holds for no model.
    pub fn filtered(
        &self,
        mut keep: impl FnMut(&ModelSpec) -> bool,
    ) -> Result<ModelCatalog, CatalogError> {
        let models: Vec<ModelSpec> = self.models.iter().filter(|m| keep(m)).cloned().collect();
        if models.is_empty() {
            return Err(CatalogError::Empty);
        }
        // Already validated and ordered.
        Ok(ModelCatalog { models })
    }

    /// The most capable model (the most expensive among equals).
    pub fn strongest(&self) -> &ModelSpec {
        // `new` guarantees at least one model.
        let mut best = &self.models[0];
        for m in &self.models {
            if m.capability >= best.capability {
                best = m;
            }
        }
        best
    }

    /// The cheapest model.
    pub fn cheapest(&self) -> &ModelSpec {
        &self.models[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_catalogues() {
        assert!(matches!(
            ModelCatalog::from_toml_str(""),
            Err(CatalogError::Empty)
        ));
        let dup = r#"
[[model]]
id = "a"
provider = "openai"
capability = 0.5
input_per_million = 1.0
output_per_million = 1.0
[[model]]
id = "a"
provider = "openai"
capability = 0.5
input_per_million = 1.0
output_per_million = 1.0
"#;
        let err = ModelCatalog::from_toml_str(dup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model a is defined twice (rule: unique_model_ids)"
        );
        let bad = dup.replacen("\"a\"", "\"b\"", 1).replacen("0.5", "1.5", 1);
        assert!(matches!(
            ModelCatalog::from_toml_str(&bad),
            Err(CatalogError::Capability { .. })
        ));
        let unknown = "[[model]]\nid = \"a\"\nprovider = \"x\"\ncapability = 0.5\ninput_per_million = 1.0\noutput_per_million = 1.0\nspeed = 3\n";
        assert!(matches!(
            ModelCatalog::from_toml_str(unknown),
            Err(CatalogError::Parse { .. })
        ));
        let negative = "[[model]]\nid = \"a\"\nprovider = \"x\"\ncapability = 0.5\ninput_per_million = -1.0\noutput_per_million = 1.0\n";
        assert!(ModelCatalog::from_toml_str(negative).is_err());
    }
}
