//! Resource quantities (`100m`, `1.5Gi`, `2e3`), parsed exactly.
//!
//! A quantity is held as an exact rational `digits × 10^exp10 × 2^exp2`; conversion to integer
//! millicores or bytes rounds up, as Kubernetes does, so `0.1m` CPU is `1` millicore.

use std::fmt;
use std::str::FromStr;

/// Why a quantity string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The numeric part is not a number (e.g. `1.5.3Gi`).
    #[error("quantity {input:?}: invalid number")]
    InvalidNumber {
        /// The rejected input.
        input: String,
    },
    /// The suffix is not one Kubernetes accepts (e.g. `12x`).
    #[error(
        "quantity {input:?}: unknown suffix {suffix:?} (expected one of n u m k M G T P E Ki Mi Gi Ti Pi Ei or an exponent)"
    )]
    UnknownSuffix {
        /// The rejected input.
        input: String,
        /// The suffix that was not recognised.
        suffix: String,
    },
    /// The value does not fit in a signed 64-bit integer of the requested unit.
    #[error("quantity {input:?} is out of range")]
    OutOfRange {
        /// The rejected input.
        input: String,
    },
}

/// A parsed resource quantity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity {
    input: String,
    negative: bool,
    digits: u128,
    exp10: i32,
    exp2: u32,
}

const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Parses a quantity in Kubernetes' syntax.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        if input.is_empty() {
            return Err(QuantityError::Empty);
        }
        let invalid = || QuantityError::InvalidNumber {
            input: input.to_string(),
        };
        let (negative, rest) = match input.as_bytes()[0] {
            b'-' => (true, &input[1..]),
            b'+' => (false, &input[1..]),
            _ => (false, input),
        };
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(invalid());
        }
        let all_digits = format!("{int_part}{frac_part}");
        let significant = all_digits.trim_start_matches('0');
        if significant.len() > MAX_DIGITS {
            return Err(QuantityError::OutOfRange {
                input: input.to_string(),
            });
        }
        let digits: u128 = if significant.is_empty() {
            0
        } else {
            significant.parse().map_err(|_| invalid())?
        };
        let mut exp10 = -(frac_part.len() as i32);
        let mut exp2 = 0;
        let unknown = || QuantityError::UnknownSuffix {
            input: input.to_string(),
            suffix: suffix.to_string(),
        };
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            s if s.starts_with(['e', 'E']) => {
                let exponent = &s[1..];
                let body = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unknown());
                }
                let e: i32 = exponent.parse().map_err(|_| QuantityError::OutOfRange {
                    input: input.to_string(),
                })?;
                if e.unsigned_abs() > 1000 {
                    return Err(QuantityError::OutOfRange {
                        input: input.to_string(),
                    });
                }
                exp10 += e;
            }
            _ => return Err(unknown()),
        }
        Ok(Self {
            input: input.to_string(),
            negative,
            digits,
            exp10,
            exp2,
        })
    }

    /// The value scaled by `10^scale` and rounded up: `scale = 3` gives milli-units.
    pub fn scaled_value(&self, scale: i32) -> Result<i64, QuantityError> {
        let out_of_range = || QuantityError::OutOfRange {
            input: self.input.clone(),
        };
        if self.digits == 0 {
            return Ok(0);
        }
        let exp = self.exp10 + scale;
        let mut numerator = self
            .digits
            .checked_mul(1u128.checked_shl(self.exp2).ok_or_else(out_of_range)?)
            .ok_or_else(out_of_range)?;
        let mut denominator: u128 = 1;
        if exp >= 0 {
            let factor = 10u128.checked_pow(exp as u32).ok_or_else(out_of_range)?;
            numerator = numerator.checked_mul(factor).ok_or_else(out_of_range)?;
        } else {
            match 10u128.checked_pow(exp.unsigned_abs()) {
                Some(d) => denominator = d,
                // Smaller than any representable unit: rounds to the smallest step.
                None => return Ok(if self.negative { 0 } else { 1 }),
            }
        }
        let quotient = numerator / denominator;
        let exact = numerator % denominator == 0;
        // Round towards positive infinity, as resource.Quantity does.
        let magnitude = i64::try_from(quotient).map_err(|_| out_of_range())?;
        Ok(match (self.negative, exact) {
            (false, true) => magnitude,
            (false, false) => magnitude.checked_add(1).ok_or_else(out_of_range)?,
            (true, _) => -magnitude,
        })
    }

    /// The value in milli-units, rounded up (CPU in millicores).
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        self.scaled_value(3)
    }

    /// The value in whole units, rounded up (memory and storage in bytes, counts).
    pub fn value(&self) -> Result<i64, QuantityError> {
        self.scaled_value(0)
    }

    /// The string this quantity was parsed from.
    pub fn as_str(&self) -> &str {
        &self.input
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.input)
    }
}

/// Parses a CPU quantity into millicores (`"250m"` → 250, `"1.5"` → 1500).
pub fn parse_millicores(input: &str) -> Result<i64, QuantityError> {
    Quantity::parse(input)?.milli_value()
}

/// Parses a memory or storage quantity into bytes (`"1Gi"` → 1073741824, `"1k"` → 1000).
pub fn parse_bytes(input: &str) -> Result<i64, QuantityError> {
    Quantity::parse(input)?.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suffix_parses_exactly() {
        let cases: &[(&str, i64)] = &[
            ("1", 1000),
            ("100m", 100),
            ("0.1", 100),
            (".5", 500),
            ("1.", 1000),
            ("+2", 2000),
            ("-250m", -250),
            ("1k", 1_000_000),
            ("1M", 1_000_000_000),
            ("1Ki", 1_024_000),
            ("500u", 1),
            ("1n", 1),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("0", 0),
        ];
        for (input, milli) in cases {
            assert_eq!(parse_millicores(input), Ok(*milli), "{input}");
        }
        let bytes: &[(&str, i64)] = &[
            ("1Ki", 1024),
            ("1Mi", 1 << 20),
            ("1.5Gi", 3 << 29),
            ("1Ti", 1 << 40),
            ("1Pi", 1 << 50),
            ("1Ei", 1 << 60),
            ("1G", 1_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("123Mi", 128_974_848),
            ("0.5", 1),
        ];
        for (input, b) in bytes {
            assert_eq!(parse_bytes(input), Ok(*b), "{input}");
        }
    }

    #[test]
    fn bad_quantities_are_typed_errors() {
        assert!(matches!(
            Quantity::parse("1.5.3Gi"),
            Err(QuantityError::InvalidNumber { .. })
        ));
        assert_eq!(
            Quantity::parse("12x"),
            Err(QuantityError::UnknownSuffix {
                input: "12x".into(),
                suffix: "x".into()
            })
        );
        assert_eq!(Quantity::parse(""), Err(QuantityError::Empty));
        for bad in ["Gi", "-", ".", "1 Gi", "1gi", "1e", "1e+", "1KiB", " 1"] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            parse_bytes("100Ei"),
            Err(QuantityError::OutOfRange { .. })
        ));
    }
}
