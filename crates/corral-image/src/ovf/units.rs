//! OVF allocation units: the DMTF programmatic form (`byte * 2^20`, `byte*1024`) and the
//! names older producers write (`MegaBytes`, `MB`, `GigaBytes`).

/// The number of bytes one unit of `units` stands for, or `None` when corral does not know the
/// unit (a count of something other than bytes, a typo).
pub fn bytes_per_unit(units: &str) -> Option<u64> {
    let compact: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    match compact.as_str() {
        "" | "byte" | "bytes" | "b" => return Some(1),
        "kilobytes" | "kb" | "kib" => return Some(1 << 10),
        "megabytes" | "mb" | "mib" => return Some(1 << 20),
        "gigabytes" | "gb" | "gib" => return Some(1 << 30),
        "terabytes" | "tb" | "tib" => return Some(1 << 40),
        _ => {}
    }
    let factor = compact
        .strip_prefix("bytes*")
        .or_else(|| compact.strip_prefix("byte*"))?;
    match factor.split_once('^') {
        Some((base, exponent)) => {
            let base: u64 = base.parse().ok()?;
            let exponent: u32 = exponent.parse().ok()?;
            base.checked_pow(exponent)
        }
        None => factor.parse().ok(),
    }
}

/// `quantity` of `units` in bytes, or `None` when the unit is unknown or the product overflows.
pub fn to_bytes(quantity: u64, units: &str) -> Option<u64> {
    bytes_per_unit(units)?.checked_mul(quantity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_producers_write_are_read() {
        assert_eq!(to_bytes(512, "byte * 2^20"), Some(512 << 20));
        assert_eq!(to_bytes(2, "byte*2^30"), Some(2 << 30));
        assert_eq!(to_bytes(3, "byte * 1024"), Some(3 << 10));
        assert_eq!(to_bytes(4, "byte * 10^3"), Some(4000));
        assert_eq!(to_bytes(256, "MegaBytes"), Some(256 << 20));
        assert_eq!(to_bytes(1, "GigaBytes"), Some(1 << 30));
        assert_eq!(to_bytes(7, "bytes"), Some(7));
        assert_eq!(to_bytes(7, ""), Some(7));
    }

    #[test]
    fn unknown_units_and_overflow_are_refused() {
        assert_eq!(to_bytes(1, "hertz * 10^6"), None);
        assert_eq!(to_bytes(1, "byte * 2^64"), None);
        assert_eq!(to_bytes(u64::MAX, "byte * 2^20"), None);
        assert_eq!(to_bytes(1, "byte * x"), None);
    }
}
