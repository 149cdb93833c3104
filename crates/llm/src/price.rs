//! Token prices and call cost.

use std::collections::BTreeMap;

use genesis_core::{ModelId, Usd};
use serde::{Deserialize, Serialize};

use crate::Usage;

/// The list price of one model, in dollars per million tokens.
///
/// In TOML:
/// ```toml
/// input_per_million = 0.15
/// output_per_million = 0.60
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Dollars per million prompt tokens.
    pub input_per_million: Usd,
    /// Dollars per million generated tokens.
    pub output_per_million: Usd,
}

impl ModelPrice {
    /// Creates a price.
    pub fn new(input_per_million: Usd, output_per_million: Usd) -> Self {
        ModelPrice {
            input_per_million,
            output_per_million,
        }
    }

    /// What `usage` costs at this price.
    pub fn cost(&self, usage: &Usage) -> Usd {
        Usd::per_million_tokens(self.input_per_million, usage.input_tokens)
            + Usd::per_million_tokens(self.output_per_million, usage.output_tokens)
    }

    /// The most output tokens a call with at most `input_tokens` prompt tokens may
    /// generate so that [`ModelPrice::cost`] stays within `limit`: `None` when output
    /// is free (no limit follows from money), `Some(0)` when the prompt alone may cost
    /// `limit` or more.
    ///
    /// ```
    /// use genesis_core::Usd;
    /// use genesis_llm::{ModelPrice, Usage};
    ///
    /// let price = ModelPrice::new(Usd::new(2.5).unwrap(), Usd::new(10.0).unwrap());
    /// let limit = Usd::new(0.01).unwrap();
    /// // 2,000 prompt tokens cost $0.005, which leaves $0.005: 500 output tokens.
    /// assert_eq!(price.output_tokens_within(limit, 2_000), Some(500));
    /// assert!(price.cost(&Usage::new(2_000, 500)).as_f64() <= limit.as_f64());
    /// assert_eq!(price.output_tokens_within(limit, 4_000), Some(0));
    /// ```
    pub fn output_tokens_within(&self, limit: Usd, input_tokens: u64) -> Option<u64> {
        let per_million = self.output_per_million.as_f64();
        if per_million <= 0.0 {
            return None;
        }
        let fits = |out: u64| self.cost(&Usage::new(input_tokens, out)).as_f64() <= limit.as_f64();
        if !fits(0) {
            return Some(0);
        }
        let rest =
            limit.as_f64() - Usd::per_million_tokens(self.input_per_million, input_tokens).as_f64();
        // The float quotient may land a token either side of the exact answer: step
        // down until the cost fits, then up while the next token still fits (the cast
        // saturates, so a huge limit cannot wrap).
        let mut out = (rest * 1_000_000.0 / per_million).floor().max(0.0) as u64;
        while out > 0 && !fits(out) {
            out -= 1;
        }
        for _ in 0..2 {
            if out < u64::MAX && fits(out + 1) {
                out += 1;
            }
        }
        Some(out)
    }
}

/// Prices by model id. Serialises as a plain map, so a TOML file (or section) of
///
/// ```toml
/// ["gpt-4o-mini"]
/// input_per_million = 0.15
/// output_per_million = 0.60
///
/// ["claude-3-5-haiku-latest"]
/// input_per_million = 0.80
/// output_per_million = 4.00
/// ```
///
/// deserialises into a table with two entries.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    prices: BTreeMap<ModelId, ModelPrice>,
}

impl PriceTable {
    /// An empty table.
    pub fn new() -> Self {
        PriceTable::default()
    }

    /// Adds or replaces the price of `model`.
    #[must_use]
    pub fn with(mut self, model: impl Into<ModelId>, price: ModelPrice) -> Self {
        self.insert(model, price);
        self
    }

    /// Adds or replaces the price of `model`, returning the previous one.
    pub fn insert(&mut self, model: impl Into<ModelId>, price: ModelPrice) -> Option<ModelPrice> {
        self.prices.insert(model.into(), price)
    }

    /// The price of `model`, if listed. Falls back to the longest listed id that
    /// `model` starts with followed by `-`, so a dated snapshot such as
    /// `gpt-4o-mini-2024-07-18` finds the `gpt-4o-mini` entry.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(price) = self.prices.get(model) {
            return Some(price);
        }
        self.prices
            .iter()
            .filter(|(id, _)| {
                model.len() > id.as_str().len()
                    && model.starts_with(id.as_str())
                    && model.as_bytes().get(id.as_str().len()) == Some(&b'-')
            })
            .max_by_key(|(id, _)| id.as_str().len())
            .map(|(_, price)| price)
    }

    /// What `usage` on `model` costs, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<Usd> {
        self.get(model).map(|p| p.cost(usage))
    }

    /// The listed models and their prices, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&ModelId, &ModelPrice)> {
        self.prices.iter()
    }

    /// The number of listed models.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// True when no model is listed.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

impl<M: Into<ModelId>> FromIterator<(M, ModelPrice)> for PriceTable {
    /// Builds a table from `(model, price)` pairs, e.g. from a model catalogue whose
    /// entries carry prices among other fields. Later duplicates win.
    fn from_iter<I: IntoIterator<Item = (M, ModelPrice)>>(iter: I) -> Self {
        let mut table = PriceTable::new();
        table.extend(iter);
        table
    }
}

impl<M: Into<ModelId>> Extend<(M, ModelPrice)> for PriceTable {
    fn extend<I: IntoIterator<Item = (M, ModelPrice)>>(&mut self, iter: I) {
        for (model, price) in iter {
            self.insert(model, price);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(v: f64) -> Usd {
        Usd::new(v).unwrap()
    }

    #[test]
    fn cost_is_per_million_tokens() {
        let price = ModelPrice::new(usd(0.15), usd(0.60));
        let cost = price.cost(&Usage::new(1_000_000, 500_000));
        assert!((cost.as_f64() - 0.45).abs() < 1e-12, "{cost:?}");
    }

    #[test]
    fn loads_from_toml_and_rejects_unknown_fields() {
        let table: PriceTable = toml::from_str(
            r#"
            ["gpt-4o-mini"]
            input_per_million = 0.15
            output_per_million = 0.60

            ["claude-3-5-haiku-latest"]
            input_per_million = 0.8
            output_per_million = 4.0
            "#,
        )
        .unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.get("gpt-4o-mini").unwrap().output_per_million,
            usd(0.6)
        );
        let bad = toml::from_str::<PriceTable>(
            "[m]\ninput_per_million = 1.0\noutput_per_million = 1.0\ncached = 0.5\n",
        );
        assert!(bad.unwrap_err().to_string().contains("cached"));
        let negative = toml::from_str::<PriceTable>(
            "[m]\ninput_per_million = -1.0\noutput_per_million = 1.0\n",
        );
        assert!(negative.is_err());
    }

    #[test]
    fn dated_snapshots_fall_back_to_the_longest_prefix() {
        let table = PriceTable::new()
            .with("gpt-4o", ModelPrice::new(usd(2.5), usd(10.0)))
            .with("gpt-4o-mini", ModelPrice::new(usd(0.15), usd(0.6)));
        assert_eq!(
            table
                .get("gpt-4o-mini-2024-07-18")
                .unwrap()
                .input_per_million,
            usd(0.15)
        );
        assert_eq!(
            table.get("gpt-4o-2024-08-06").unwrap().input_per_million,
            usd(2.5)
        );
        assert!(table.get("gpt-4").is_none());
        let collected: PriceTable = table.iter().map(|(id, p)| (id.clone(), *p)).collect();
        assert_eq!(collected, table);
        assert!(table.get("gpt-4omni").is_none());
        assert_eq!(table.cost("unknown", &Usage::new(1, 1)), None);
    }

    proptest! {
        #[test]
        fn cost_is_monotonic_in_tokens(a in 0u64..10_000_000, b in 0u64..10_000_000, extra in 0u64..1_000_000) {
            let price = ModelPrice::new(usd(3.0), usd(15.0));
            let base = price.cost(&Usage::new(a, b));
            prop_assert!(price.cost(&Usage::new(a + extra, b)) >= base);
            prop_assert!(price.cost(&Usage::new(a, b + extra)) >= base);
        }

        /// The output allowance is exact: its cost fits the limit, one token more
        /// does not.
        #[test]
        fn output_tokens_within_is_the_most_that_fits(
            input_milli in 0u32..100_000,
            output_milli in 1u32..200_000,
            limit_micro in 0u32..5_000_000,
            prompt in 0u64..2_000_000,
        ) {
            let price = ModelPrice::new(
                usd(f64::from(input_milli) / 1000.0),
                usd(f64::from(output_milli) / 1000.0),
            );
            let limit = usd(f64::from(limit_micro) / 1_000_000.0);
            let out = price.output_tokens_within(limit, prompt).unwrap();
            let cost = |o: u64| price.cost(&Usage::new(prompt, o)).as_f64();
            if cost(0) <= limit.as_f64() {
                prop_assert!(cost(out) <= limit.as_f64(), "{out}: {} > {limit}", cost(out));
                prop_assert!(cost(out + 1) > limit.as_f64(), "{out} is not the most");
            } else {
                prop_assert_eq!(out, 0);
            }
        }
    }

    #[test]
    fn free_output_has_no_token_limit() {
        let price = ModelPrice::new(usd(1.0), Usd::ZERO);
        assert_eq!(price.output_tokens_within(usd(0.0), 10), None);
    }
}
