//! Sizes written the way people write them: `256M`, `1G`, `512MiB` (binary units), for guest
//! memory, disks and limits alike.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A size in bytes, written like `256M`, `1G` or `512MiB` (binary units: K, M, G, T).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemorySize(pub u64);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: write a number with a unit, like 256M or 1G (units K, M, G, T)")]
pub struct MemorySizeError(String);

impl FromStr for MemorySize {
    type Err = MemorySizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || MemorySizeError(text.to_owned());
        let trimmed = text.trim();
        let digits_end = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let (number, unit) = trimmed.split_at(digits_end);
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(invalid()),
        };
        number
            .checked_mul(1 << shift)
            .map(MemorySize)
            .ok_or_else(invalid)
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, unit) in UNITS {
            if self.0 >= 1 << shift && self.0 % (1 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

impl Serialize for MemorySize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// In the API's OpenAPI document: the string [`FromStr`] reads.
impl utoipa::PartialSchema for MemorySize {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(MEMORY_SIZE_PATTERN))
            .examples([serde_json::json!("512M")])
            .description(Some(
                "A size with a binary unit: K, M, G or T (KB/KiB ... too)",
            ))
            .into()
    }
}

impl utoipa::ToSchema for MemorySize {}

/// What [`FromStr`] takes: digits, then a unit (spaces around allowed, any case).
const MEMORY_SIZE_PATTERN: &str = r"^\s*[0-9]+\s*([KkMmGgTt]([Ii]?[Bb])?)\s*$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_with_binary_units() {
        assert_eq!("256M".parse(), Ok(MemorySize(256 << 20)));
        assert_eq!("1G".parse(), Ok(MemorySize(1 << 30)));
        assert_eq!("512MiB".parse(), Ok(MemorySize(512 << 20)));
        assert_eq!("64k".parse(), Ok(MemorySize(64 << 10)));
        assert!("256".parse::<MemorySize>().is_err());
        assert!("M".parse::<MemorySize>().is_err());
        assert!("1.5G".parse::<MemorySize>().is_err());
        assert!("99999999999T".parse::<MemorySize>().is_err());
        assert_eq!(MemorySize(1 << 30).to_string(), "1G");
        assert_eq!(MemorySize(1536 << 20).to_string(), "1536M");
    }

    #[test]
    fn the_documented_pattern_is_what_parses() {
        let pattern = regex_lite::Regex::new(MEMORY_SIZE_PATTERN).unwrap();
        for text in [
            "256M", "1G", "512MiB", "64k", " 2 GB ", "256", "M", "1.5G", "2X",
        ] {
            assert_eq!(
                pattern.is_match(text),
                text.parse::<MemorySize>().is_ok(),
                "{text:?}"
            );
        }
    }
}
