//! Money. Amounts are US dollars held as a finite, non-negative `f64`.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Mul, Sub};

use serde::{Deserialize, Serialize};

/// An amount of US dollars: finite and never negative (`-0.0` is stored as `0.0`, so it
/// never prints as `$-0.0000`).
///
/// Serialises as a plain JSON number (`0.0125`). Subtraction saturates at zero, so a
/// remaining budget can never go negative.
#[derive(Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
pub struct Usd(f64);

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

    /// Creates an amount; `-0.0` becomes `0.0`.
    ///
    /// # Errors
    /// [`InvalidUsd`] when `value` is negative, NaN or infinite.
    pub fn new(value: f64) -> Result<Self, InvalidUsd> {
        if value.is_finite() && value >= 0.0 {
            // `-0.0 >= 0.0` holds: adding `+0.0` turns it into `+0.0`, other values keep
            // their bits.
            Ok(Usd(value + 0.0))
        } else {
            Err(InvalidUsd { value })
        }
    }

    /// Creates an amount, clamping invalid input to zero (NaN, negatives) or `f64::MAX`.
    pub fn saturating(value: f64) -> Self {
        if value.is_nan() || value <= 0.0 {
            Usd(0.0)
        } else if value.is_infinite() {
            Usd(f64::MAX)
        } else {
            Usd(value)
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
}
