//! Money. Amounts are US dollars held as a finite, non-negative `f64` on the
//! nano-dollar grid.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Mul, Sub};

use serde::{Deserialize, Serialize};

/// An amount of US dollars: finite and never negative (`-0.0` is stored as `0.0`, so it
/// never prints as `$-0.0000`).
///
/// Every amount below a million dollars is a whole number of nano-dollars (1e-9 USD):
/// constructors and arithmetic round to the nearest one, so sums of small costs are
/// exact (`0.001 + 0.008` is `0.009`, not `0.009000000000000001`), a budget compares
/// with what was spent without binary-fraction noise, and an amount prints and
/// serialises as written. The grid is far below any price (a token of the cheapest
/// catalogued model costs about 1e-8 USD). Larger amounts are kept as they are.
///
/// Serialises as a plain JSON number (`0.0125`); any finite, non-negative number
/// deserialises (values written before the rounding included, rounded to the grid),
/// and a serialised amount reads back equal. Subtraction saturates at zero, so a
/// remaining budget can never go negative.
#[derive(Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usd(f64);

/// Amounts below this (a million dollars) are rounded to the nano-dollar. Below it an
/// `f64` is finer than 1e-9 by a wide margin (its spacing is at most about 1.2e-10), so
/// the `f64` nearest a whole number of nano-dollars is unique and rounding it again
/// keeps it: it prints with at most nine decimals and reads back as itself.
const ROUNDED_BELOW: f64 = 1.0e6;

/// Nano-dollars per dollar.
const NANO: f64 = 1e9;

/// `v` (finite, not negative) on the nano-dollar grid; `+0.0` for zero.
fn on_grid(v: f64) -> f64 {
    if v < ROUNDED_BELOW {
        // Round half up through an integer: `v * NANO` is below 1e15, so the cast is
        // exact, and it is one instruction where `f64::round` is a libm call on the
        // baseline x86-64 target (the planner prices every task this way).
        let nanos = (v * NANO + 0.5) as i64 as f64;
        nanos / NANO
    } else {
        v
    }
}

/// A value that cannot be a [`Usd`] amount.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("invalid usd amount {value}: must be finite and not negative")]
pub struct InvalidUsd {
    /// The rejected value.
    pub value: f64,
}

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0.0);

    /// Creates an amount, rounded to the nearest nano-dollar; `-0.0` becomes `0.0`.
    ///
    /// # Errors
    /// [`InvalidUsd`] when `value` is negative, NaN or infinite.
    pub fn new(value: f64) -> Result<Self, InvalidUsd> {
        if value.is_finite() && value >= 0.0 {
            // `-0.0 >= 0.0` holds: `on_grid` turns it into `+0.0`.
            Ok(Usd(on_grid(value)))
        } else {
            Err(InvalidUsd { value })
        }
    }

    /// Creates an amount, clamping invalid input to zero (NaN, negatives) or `f64::MAX`,
    /// rounded to the nearest nano-dollar.
    pub fn saturating(value: f64) -> Self {
        if value.is_nan() || value <= 0.0 {
            Usd(0.0)
        } else if value.is_infinite() {
            Usd(f64::MAX)
        } else {
            Usd(on_grid(value))
        }
    }

    /// The cost of `tokens` at `per_million` dollars per million tokens.
    pub fn per_million_tokens(per_million: Usd, tokens: u64) -> Self {
        Usd::saturating(per_million.0 * tokens as f64 / 1_000_000.0)
    }

    /// The amount as dollars.
    pub fn as_f64(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Usd::new(v).map_err(serde::de::Error::custom)
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, rhs: Usd) -> Usd {
        Usd::saturating(self.0 + rhs.0)
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, rhs: Usd) {
        *self = *self + rhs;
    }
}

impl Sub for Usd {
    type Output = Usd;
    fn sub(self, rhs: Usd) -> Usd {
        Usd::saturating(self.0 - rhs.0)
    }
}

impl Mul<f64> for Usd {
    type Output = Usd;
    fn mul(self, rhs: f64) -> Usd {
        Usd::saturating(self.0 * rhs)
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, Add::add)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0.0 && self.0 < 0.01 {
            write!(f, "${:.6}", self.0)
        } else {
            write!(f, "${:.4}", self.0)
        }
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usd({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_negative_and_nan() {
        assert!(Usd::new(-0.01).is_err());
        assert!(Usd::new(f64::NAN).is_err());
        assert!(Usd::new(f64::INFINITY).is_err());
        assert!(serde_json::from_str::<Usd>("-1.0").is_err());
        assert_eq!(
            serde_json::from_str::<Usd>("1.5").unwrap(),
            Usd::new(1.5).unwrap()
        );
    }

    #[test]
    fn subtraction_saturates() {
        let a = Usd::new(1.0).unwrap();
        let b = Usd::new(3.0).unwrap();
        assert_eq!(a - b, Usd::ZERO);
    }

    #[test]
    fn token_pricing() {
        let price = Usd::new(0.15).unwrap();
        let cost = Usd::per_million_tokens(price, 2_000_000);
        assert!((cost.as_f64() - 0.30).abs() < 1e-12);
        assert_eq!(cost.to_string(), "$0.3000");
        assert_eq!(Usd::new(0.0001).unwrap().to_string(), "$0.000100");
    }

    /// Review R6: `-0.0` passed the "not negative" check (`-0.0 >= 0.0`), from code or
    /// JSON, and printed as a negative amount.
    #[test]
    fn negative_zero_is_zero() {
        let from_json: Usd = serde_json::from_str("-0.0").unwrap();
        assert_eq!(from_json.to_string(), "$0.0000");
        assert!(from_json.as_f64().is_sign_positive());
        assert_eq!(serde_json::to_string(&from_json).unwrap(), "0.0");
        let from_code = Usd::new(-0.0).unwrap();
        assert!(from_code.as_f64().is_sign_positive());
        assert_eq!(from_code.to_string(), "$0.0000");
        assert!(Usd::saturating(-0.0).as_f64().is_sign_positive());
        assert!((Usd::ZERO * -1.0).as_f64().is_sign_positive());
        assert_eq!(Usd::new(1.5).unwrap().as_f64().to_bits(), 1.5f64.to_bits());
    }

    fn json(v: Usd) -> String {
        serde_json::to_string(&v).unwrap()
    }

    /// Audit G1 item 6: a run's cost serialised as `0.009000000000000001`.
    #[test]
    fn money_serialises_without_float_noise() {
        let usd = |v| Usd::new(v).unwrap();
        assert_eq!(usd(0.001) + usd(0.008), usd(0.009));
        assert_eq!((usd(0.001) + usd(0.008)).as_f64(), 0.009);
        assert_eq!(json(usd(0.001) + usd(0.008)), "0.009");
        // A budget of 0.3 holds exactly 0.1 + 0.2.
        assert!(usd(0.1) + usd(0.2) <= usd(0.3));
        assert_eq!(usd(0.3) - usd(0.1), usd(0.2));
        assert_eq!(json(usd(0.1) + usd(0.2)), "0.3");
        assert_eq!(json(Usd::ZERO), "0.0");
        assert_eq!(json(usd(2.5)), "2.5");
        // Nano-dollars are kept; below them is rounding.
        assert_eq!(json(usd(0.000_000_123)), "1.23e-7");
        assert_eq!(json(usd(0.000_000_000_4)), "0.0");
        // Old, noisy values still read, and write back clean.
        let old: Usd = serde_json::from_str("0.009000000000000001").unwrap();
        assert_eq!(json(old), "0.009");
        // Large amounts are written as they are.
        assert_eq!(json(usd(1.0e7 + 0.25)), "10000000.25");
        assert_eq!(json(usd(999_999.123_456_789_1)), "999999.123456789");
        assert_eq!(
            json(Usd::saturating(f64::INFINITY)),
            serde_json::to_string(&f64::MAX).unwrap()
        );
    }

    proptest::proptest! {
        /// Serialise, deserialise: the same amount (and the same text again), within
        /// half a nano-dollar of the number it was made from, printed with at most
        /// nine decimals.
        #[test]
        fn serialisation_round_trips(v in 0.0f64..1.0e7) {
            let usd = Usd::new(v).unwrap();
            let text = json(usd);
            let back: Usd = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(back, usd);
            proptest::prop_assert_eq!(json(back), text.clone());
            proptest::prop_assert!((back.as_f64() - v).abs() <= 5e-10 + v * 1e-15, "{} -> {}", v, text);
            if v < 1.0e6 && !text.contains('e') {
                let decimals = text.split('.').nth(1).map_or(0, str::len);
                proptest::prop_assert!(decimals <= 9, "{} -> {}", v, text);
            }
        }

        /// A sum of many small costs (whole micro-dollars) prints as the exact decimal
        /// sum, without binary-fraction noise.
        #[test]
        fn sums_of_small_costs_print_without_noise(micros in 1u64..20_000, n in 1u64..2_000) {
            let cost = Usd::new(micros as f64 / 1e6).unwrap();
            let total: Usd = std::iter::repeat_n(cost, n as usize).sum();
            let exact = (micros * n) as f64 / 1e6;
            proptest::prop_assert_eq!(json(total), serde_json::to_string(&exact).unwrap());
            // And a budget of exactly that much holds them.
            proptest::prop_assert_eq!(total, Usd::new(exact).unwrap());
            proptest::prop_assert!(total <= Usd::new(exact).unwrap());
        }
    }
}
