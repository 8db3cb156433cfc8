//! Reward pools: exact proportional splits in integer money.

use crate::ids::AccountId;
use crate::money::Amount;
pub use crate::money::mul_div_floor_wide;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A pool split among accounts in proportion to weights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSplit {
    /// The pool that was split.
    pub pool: Amount,
    /// Each account with a positive weight and its share (rounded down), in input order.
    pub payouts: Vec<(AccountId, Amount)>,
    /// The sum of the payouts.
    pub paid: Amount,
    /// What rounding (or the absence of any weight) left over: `pool - paid`, to carry into
    /// the next pool.
    pub carried: Amount,
}

/// Splits `pool` among `weights`: each account gets `floor(pool * weight / total)`; the
/// remainder is returned as [`PoolSplit::carried`], so `paid + carried == pool` exactly.
///
/// Errors with [`Error::Overflow`] when the weights sum past `u128`.
pub fn split_pool(pool: Amount, weights: &[(AccountId, u128)]) -> Result<PoolSplit> {
    let total = weights
        .iter()
        .try_fold(0u128, |acc, (_, w)| acc.checked_add(*w))
        .ok_or(Error::Overflow {
            what: "reward weights",
        })?;
    if total == 0 {
        return Ok(PoolSplit {
            pool,
            payouts: Vec::new(),
            paid: Amount::ZERO,
            carried: pool,
        });
    }
    let mut payouts = Vec::new();
    let mut paid = 0u128;
    for (account, w) in weights.iter().filter(|(_, w)| *w > 0) {
        // w <= total, so the share is at most the pool and always fits.
        let share = mul_div_floor_wide(pool.0, *w, total).unwrap_or(0);
        paid += share;
        payouts.push((*account, Amount(share)));
    }
    Ok(PoolSplit {
        pool,
        payouts,
        paid: Amount(paid),
        carried: Amount(pool.0 - paid),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::money::mul_wide;
    use proptest::prelude::*;

    #[test]
    fn wide_division_is_exact() {
        assert_eq!(
            mul_div_floor_wide(u128::MAX, u128::MAX, u128::MAX),
            Some(u128::MAX)
        );
        assert_eq!(
            mul_div_floor_wide(u128::MAX, 3, 4),
            Some(u128::MAX / 4 * 3 + 2)
        );
        assert_eq!(mul_div_floor_wide(u128::MAX, 2, 1), None);
        assert_eq!(mul_div_floor_wide(1, 1, 0), None);
        assert_eq!(mul_div_floor_wide(7, 5, 3), Some(11));
    }

    #[test]
    fn split_carries_the_remainder() {
        let a = AccountId([1; 20]);
        let b = AccountId([2; 20]);
        let s = split_pool(Amount(10), &[(a, 1), (b, 2)]).unwrap();
        assert_eq!(s.payouts, vec![(a, Amount(3)), (b, Amount(6))]);
        assert_eq!((s.paid, s.carried), (Amount(9), Amount(1)));
        let none = split_pool(Amount(10), &[(a, 0)]).unwrap();
        assert_eq!((none.paid, none.carried), (Amount(0), Amount(10)));
        assert!(split_pool(Amount(1), &[(a, u128::MAX), (b, 1)]).is_err());
    }

    proptest! {
        #[test]
        fn wide_matches_narrow(a in any::<u64>(), b in any::<u64>(), c in 1u128..) {
            let exact = u128::from(a) * u128::from(b) / c;
            prop_assert_eq!(mul_div_floor_wide(u128::from(a), u128::from(b), c), Some(exact));
        }

        #[test]
        fn wide_is_a_floor(a in any::<u128>(), b in any::<u128>(), c in 1u128..) {
            // q = floor(a*b/c)  ⇔  q*c <= a*b < (q+1)*c, checked in 256 bits.
            if let Some(q) = mul_div_floor_wide(a, b, c) {
                let le = |x: (u128, u128), y: (u128, u128)| x.0 < y.0 || (x.0 == y.0 && x.1 <= y.1);
                let ab = mul_wide(a, b);
                let qc = mul_wide(q, c);
                prop_assert!(le(qc, ab));
                let (h, l) = qc;
                let (l2, carry) = l.overflowing_add(c);
                // (q+1)*c past 2^256 is certainly above a*b.
                if let Some(h2) = h.checked_add(u128::from(carry)) {
                    prop_assert!(!le((h2, l2), ab));
                }
            } else {
                prop_assert!(mul_wide(a, b).0 >= c);
            }
        }
    }
}
