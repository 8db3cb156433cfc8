//! Money: integer base units of a token, never floats.
//!
//! Prices are quoted per hour; cost accrues per whole second, rounded down, so a
//! settlement never charges for a second that has not fully elapsed.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of a token in its base units (for SPHN, 10^-18 SPHN; for a 6-decimal stable token, 10^-6).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(pub u128);

impl Amount {
    /// Zero base units.
    pub const ZERO: Amount = Amount(0);

    /// The raw base units.
    pub const fn units(self) -> u128 {
        self.0
    }

    /// `self + rhs`, or [`Error::Overflow`].
    pub fn checked_add(self, rhs: Amount) -> Result<Amount> {
        self.0
            .checked_add(rhs.0)
            .map(Amount)
            .ok_or(Error::Overflow { what: "amount sum" })
    }

    /// `self - rhs`, or [`Error::InsufficientFunds`] when `rhs > self`.
    pub fn checked_sub(self, rhs: Amount) -> Result<Amount> {
        self.0
            .checked_sub(rhs.0)
            .map(Amount)
            .ok_or(Error::InsufficientFunds {
                needed: rhs,
                available: self,
            })
    }

    /// `self * n`, or [`Error::Overflow`].
    pub fn checked_mul(self, n: u128) -> Result<Amount> {
        self.0.checked_mul(n).map(Amount).ok_or(Error::Overflow {
            what: "amount product",
        })
    }

    /// `self * num / den` rounded down, computed without intermediate overflow where the
    /// result fits. `den` must be non-zero.
    pub fn mul_div_floor(self, num: u128, den: u128) -> Result<Amount> {
        if den == 0 {
            return Err(Error::invalid("denominator", "must not be zero"));
        }
        // (q*den + r) * num / den = q*num + r*num/den
        let q = self.0 / den;
        let r = self.0 % den;
        let a = q
            .checked_mul(num)
            .ok_or(Error::Overflow { what: "mul_div" })?;
        let b = r
            .checked_mul(num)
            .ok_or(Error::Overflow { what: "mul_div" })?
            / den;
        a.checked_add(b)
            .map(Amount)
            .ok_or(Error::Overflow { what: "mul_div" })
    }

    /// Rejects zero with [`Error::ZeroAmount`] naming `field`.
    pub fn non_zero(self, field: &'static str) -> Result<Amount> {
        if self.0 == 0 {
            Err(Error::ZeroAmount { field })
        } else {
            Ok(self)
        }
    }

    /// `min(self, other)`.
    pub fn min(self, other: Amount) -> Amount {
        Amount(self.0.min(other.0))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

/// A token: symbol and decimals, for display and for parsing human amounts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token {
    /// Ticker, e.g. `SPHN` or `USDS`.
    pub symbol: String,
    /// Base units per whole token, as a power of ten.
    pub decimals: u8,
}

impl Token {
    /// The native token: 18 decimals, pays no protocol fee.
    pub fn sphn() -> Self {
        Token {
            symbol: "SPHN".into(),
            decimals: 18,
        }
    }

    /// A 6-decimal stable token (USD-pegged), as used for prices in examples.
    pub fn usd() -> Self {
        Token {
            symbol: "USDS".into(),
            decimals: 6,
        }
    }

    /// Parses a human decimal string (`"2.5"`) into base units exactly, rejecting more
    /// fractional digits than the token has, negatives, and overflow.
    pub fn parse(&self, field: &'static str, s: &str) -> Result<Amount> {
        let s = s.trim();
        if s.starts_with('-') {
            return Err(Error::invalid(field, format!("`{s}` is negative")));
        }
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() && frac.is_empty() || !all_digits(int) || !all_digits(frac) {
            return Err(Error::invalid(
                field,
                format!("`{s}` is not a decimal amount"),
            ));
        }
        if frac.len() > self.decimals as usize {
            return Err(Error::invalid(
                field,
                format!(
                    "`{s}` has more than {} decimals for {}",
                    self.decimals, self.symbol
                ),
            ));
        }
        let scale = 10u128.pow(u32::from(self.decimals));
        let int_units = if int.is_empty() {
            0
        } else {
            int.parse::<u128>()
                .map_err(|_| Error::Overflow { what: field })?
        };
        let mut frac_units = 0u128;
        if !frac.is_empty() {
            frac_units = frac
                .parse::<u128>()
                .map_err(|_| Error::Overflow { what: field })?
                * 10u128.pow((self.decimals as usize - frac.len()) as u32);
        }
        int_units
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac_units))
            .map(Amount)
            .ok_or(Error::Overflow { what: field })
    }

    /// Formats base units as a decimal string with the symbol, trimming trailing zeros.
    pub fn format(&self, amount: Amount) -> String {
        let scale = 10u128.pow(u32::from(self.decimals));
        let int = amount.0 / scale;
        let frac = amount.0 % scale;
        if frac == 0 {
            return format!("{int} {}", self.symbol);
        }
        let mut f = format!("{frac:0width$}", width = self.decimals as usize);
        while f.ends_with('0') {
            f.pop();
        }
        format!("{int}.{f} {}", self.symbol)
    }
}

/// Seconds in an hour: prices are per hour, accrual per second.
pub const SECS_PER_HOUR: u128 = 3600;

/// Cost of `gpus` GPUs at `price_per_gpu_hour` for `secs` whole seconds, rounded down.
pub fn accrued_cost(price_per_gpu_hour: Amount, gpus: u32, secs: u64) -> Result<Amount> {
    price_per_gpu_hour
        .checked_mul(u128::from(gpus))?
        .mul_div_floor(u128::from(secs), SECS_PER_HOUR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let usd = Token::usd();
        assert_eq!(usd.parse("p", "2.5").unwrap(), Amount(2_500_000));
        assert_eq!(usd.format(Amount(2_500_000)), "2.5 USDS");
        assert_eq!(usd.format(Amount(3_000_000)), "3 USDS");
        assert!(matches!(
            usd.parse("p", "1.0000001"),
            Err(Error::InvalidField { field: "p", .. })
        ));
        assert!(usd.parse("p", "-1").is_err());
        assert!(usd.parse("p", "abc").is_err());
        assert!(usd.parse("p", ".").is_err());
        assert!(matches!(
            Token::sphn().parse("p", &"9".repeat(40)),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn accrual_is_per_whole_second_and_exact() {
        // 3.6 units per GPU-hour = 0.001 per second
        let p = Amount(3_600_000);
        assert_eq!(accrued_cost(p, 1, 1).unwrap(), Amount(1000));
        assert_eq!(accrued_cost(p, 2, 3600).unwrap(), Amount(7_200_000));
        assert_eq!(accrued_cost(Amount(1), 1, 3599).unwrap(), Amount(0));
        assert!(accrued_cost(Amount(u128::MAX), 2, 1).is_err());
    }

    #[test]
    fn mul_div_avoids_intermediate_overflow() {
        let big = Amount(u128::MAX / 2);
        assert_eq!(big.mul_div_floor(3600, 3600).unwrap(), big);
        assert!(Amount(1).mul_div_floor(1, 0).is_err());
    }
}
