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

    /// `self * num / den` rounded down, exact for every input whose result fits (the
    /// product is taken in 256 bits, see [`mul_div_floor_wide`]). `den` must be non-zero.
    pub fn mul_div_floor(self, num: u128, den: u128) -> Result<Amount> {
        if den == 0 {
            return Err(Error::invalid("denominator", "must not be zero"));
        }
        mul_div_floor_wide(self.0, num, den)
            .map(Amount)
            .ok_or(Error::Overflow { what: "mul_div" })
    }

    /// `self * bps / 10 000` rounded down, for `bps <= 10 000` (larger shares are capped
    /// at the whole): never above `self`, never an error.
    pub fn share_bps(self, bps: u32) -> Amount {
        let bps = u128::from(bps.min(10_000));
        // (q*10^4 + r) * bps / 10^4 = q*bps + r*bps/10^4, each term at most `self`.
        Amount(self.0 / 10_000 * bps + self.0 % 10_000 * bps / 10_000)
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

const LOW: u128 = u64::MAX as u128;

/// `a * b` as a 256-bit number `(high, low)`.
pub(crate) fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    // At most 3 * (2^64 - 1): fits.
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let low = (p00 & LOW) | (mid << 64);
    let high = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (high, low)
}

/// `floor(a * b / c)` with a 256-bit intermediate product, so it is exact for every input
/// whose result fits in `u128`. `None` when `c` is zero or the result does not fit.
///
/// The one mul-div of the crate: money ([`Amount::mul_div_floor`]), the matcher's fixed
/// point scores and the reward splits all use it.
pub fn mul_div_floor_wide(a: u128, b: u128, c: u128) -> Option<u128> {
    if c == 0 {
        return None;
    }
    let (high, low) = mul_wide(a, b);
    if high == 0 {
        return Some(low / c);
    }
    if high >= c {
        return None;
    }
    // Long division of (high, low) by c, one bit at a time; the remainder stays below c.
    let (mut rem, mut q) = (high, 0u128);
    for i in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((low >> i) & 1);
        q <<= 1;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            q |= 1;
        }
    }
    Some(q)
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
        // The product passes u128; the result fits.
        assert_eq!(
            Amount(u128::MAX)
                .mul_div_floor(u128::MAX, u128::MAX)
                .unwrap(),
            Amount(u128::MAX)
        );
        assert!(Amount(u128::MAX).mul_div_floor(2, 1).is_err());
    }

    #[test]
    fn wide_mul_div_is_exact() {
        assert_eq!(
            mul_div_floor_wide(u128::MAX, 3, 4),
            Some(u128::MAX / 4 * 3 + 2)
        );
        assert_eq!(mul_div_floor_wide(7, 3, 2), Some(10));
        assert_eq!(mul_div_floor_wide(1, 1, 0), None);
    }

    #[test]
    fn a_share_never_exceeds_the_whole() {
        assert_eq!(Amount(u128::MAX).share_bps(10_000), Amount(u128::MAX));
        assert_eq!(Amount(u128::MAX).share_bps(20_000), Amount(u128::MAX));
        assert_eq!(Amount(10_001).share_bps(5_000), Amount(5_000));
        assert_eq!(Amount(9_999).share_bps(1), Amount(0));
        assert_eq!(Amount(0).share_bps(10_000), Amount(0));
    }
}
