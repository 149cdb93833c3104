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
    /// Context window in tokens.
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

    /// A blended price per million tokens (input and output weighted 3:1), used to order
    /// models by cost.
    pub fn blended_price(&self) -> f64 {
        (3.0 * self.input_per_million.as_f64() + self.output_per_million.as_f64()) / 4.0
    }
}

/// Why a catalogue was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The TOML did not parse or did not match the schema.
    #[error("invalid model catalogue")]
    Parse {
        /// The parser's error (it names the key and line).
        #[source]
        source: toml::de::Error,
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
    /// A capability outside `[0, 1]`.
    #[error("model {id} has capability {value}, outside [0, 1] (rule: capability_range)")]
    Capability {
        /// The model.
        id: ModelId,
        /// The rejected value.
        value: f64,
    },
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
            if models[..i].iter().any(|o| o.id == m.id) {
                return Err(CatalogError::Duplicate { id: m.id.clone() });
            }
        }
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
        let file: CatalogFile =
            toml::from_str(text).map_err(|source| CatalogError::Parse { source })?;
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
