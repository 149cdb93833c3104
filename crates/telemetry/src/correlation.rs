//! Correlation ids: one random 128-bit id per request, carried in logs, spans and the
//! `x-correlation-id` header.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::TelemetryError;

/// The span and log field name that carries the id.
pub const CORRELATION_ID_FIELD: &str = "correlation_id";

/// The HTTP header that carries the id in and out of the server.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

/// A random 128-bit id, printed as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CorrelationId([u8; 16]);

impl CorrelationId {
    /// A fresh id from the operating system's CSPRNG (`ring::rand::SystemRandom`).
    ///
    /// # Errors
    /// [`TelemetryError::Random`] if the OS generator fails (practically never).
    pub fn generate() -> Result<Self, TelemetryError> {
        Self::generate_with(&SystemRandom::new())
    }

    /// A fresh id from `rng` (share one `SystemRandom` on hot paths).
    ///
    /// # Errors
    /// [`TelemetryError::Random`] if the generator fails.
    pub fn generate_with(rng: &dyn SecureRandom) -> Result<Self, TelemetryError> {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(|_| TelemetryError::Random)?;
        Ok(CorrelationId(bytes))
    }

    /// An id from its raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        CorrelationId(bytes)
    }

    /// The raw bytes (usable as an OpenTelemetry trace id).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses 32 hex digits, or a UUID with dashes (either case).
    ///
    /// # Errors
    /// [`TelemetryError::InvalidCorrelationId`] naming the value.
    pub fn parse(value: &str) -> Result<Self, TelemetryError> {
        let invalid = || TelemetryError::InvalidCorrelationId {
            value: value.chars().take(64).collect(),
        };
        let trimmed = value.trim();
        let dashed = trimmed.len() == 36
            && [8, 13, 18, 23]
                .iter()
                .all(|&i| trimmed.as_bytes().get(i) == Some(&b'-'));
        let mut nibbles = trimmed
            .bytes()
            .enumerate()
            .filter(|(i, _)| !(dashed && [8, 13, 18, 23].contains(i)))
            .map(|(_, b)| (b as char).to_digit(16));
        let mut bytes = [0u8; 16];
        for byte in &mut bytes {
            let hi = nibbles.next().flatten().ok_or_else(invalid)?;
            let lo = nibbles.next().flatten().ok_or_else(invalid)?;
            *byte = u8::try_from(hi * 16 + lo).map_err(|_| invalid())?;
        }
        if nibbles.next().is_some() {
            return Err(invalid());
        }
        Ok(CorrelationId(bytes))
    }

    /// The id from an incoming header when it is valid, otherwise a fresh one (an invalid
    /// client-supplied id is replaced, never trusted into logs).
    ///
    /// # Errors
    /// [`TelemetryError::Random`] if a fresh id cannot be generated.
    pub fn from_header_or_generate(header: Option<&str>) -> Result<Self, TelemetryError> {
        match header.map(Self::parse) {
            Some(Ok(id)) => Ok(id),
            _ => Self::generate(),
        }
    }

    /// A span for one request carrying this id: `request{correlation_id}`. Enter it (or
    /// `.instrument()` the request future with it) so every log line and child span of the
    /// request carries the id.
    pub fn request_span(&self) -> tracing::Span {
        tracing::info_span!("request", correlation_id = %self)
    }

    /// Records this id on `span`, which must declare the field, e.g.
    /// `info_span!("orchestrate", run_id = %id, correlation_id = tracing::field::Empty)`.
    pub fn record_on(&self, span: &tracing::Span) {
        span.record(CORRELATION_ID_FIELD, tracing::field::display(self));
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({self})")
    }
}

impl FromStr for CorrelationId {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for CorrelationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CorrelationId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_and_distinct() {
        let a = CorrelationId::generate().unwrap();
        let b = CorrelationId::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(CorrelationId::parse(&text).unwrap(), a);
    }

    #[test]
    fn parses_uuid_and_upper_case() {
        let id = CorrelationId::parse("0123456789ABCDEF0123456789abcdef").unwrap();
        assert_eq!(id.to_string(), "0123456789abcdef0123456789abcdef");
        let uuid = CorrelationId::parse("01234567-89ab-cdef-0123-456789abcdef").unwrap();
        assert_eq!(uuid, id);
    }

    #[test]
    fn rejects_bad_ids_naming_them() {
        for bad in [
            "",
            "xyz",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
            "01234567-89ab-cdef-0123-456789abcde-",
        ] {
            let err = CorrelationId::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        // An invalid header is replaced by a fresh id.
        let fresh = CorrelationId::from_header_or_generate(Some("<script>")).unwrap();
        assert_eq!(fresh.to_string().len(), 32);
    }

    #[test]
    fn serde_as_hex_string() {
        let id = CorrelationId::from_bytes([0xab; 16]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<CorrelationId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<CorrelationId>("\"nope\"").is_err());
    }

    proptest::proptest! {
        #[test]
        fn display_parse_round_trip(bytes in proptest::array::uniform16(proptest::num::u8::ANY)) {
            let id = CorrelationId::from_bytes(bytes);
            proptest::prop_assert_eq!(CorrelationId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
