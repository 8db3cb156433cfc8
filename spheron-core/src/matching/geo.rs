//! Great-circle distance that is bit-identical on every machine.
//!
//! Platform `sin`/`cos`/`asin` (libm) may differ in the last bit between C libraries and
//! CPUs, which would let two operators disagree on a tie. Everything here uses only IEEE-754
//! `+ - * / sqrt`, which are correctly rounded everywhere, in a fixed order (Rust never
//! fuses a multiply and an add on its own).

use crate::gpu::GeoPoint;
use std::f64::consts::{FRAC_PI_2, PI};

/// Mean Earth radius in metres.
const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// `sin(x)` for `x` in `[-PI, PI]`, Taylor series after folding into `[-PI/2, PI/2]`
/// (error below 1e-15).
fn sin(x: f64) -> f64 {
    let x = if x > FRAC_PI_2 {
        PI - x
    } else if x < -FRAC_PI_2 {
        -PI - x
    } else {
        x
    };
    let x2 = x * x;
    // Horner form of x - x^3/3! + x^5/5! - ... + x^23/23!
    let mut acc = 0.0;
    let mut k = 23u32;
    while k > 1 {
        // term ratio: -x^2 / ((k-1) k)
        acc = 1.0 - x2 / f64::from((k - 1) * k) * acc;
        k -= 2;
    }
    x * acc
}

/// `cos(x)` for `x` in `[-PI, PI]`.
fn cos(x: f64) -> f64 {
    sin(FRAC_PI_2 - x.abs())
}

/// `atan(t)` for `t` in `[0, 1]`: two half-angle reductions, then a series.
fn atan_unit(t: f64) -> f64 {
    // atan(t) = 2 atan(t / (1 + sqrt(1 + t^2)))
    let t1 = t / (1.0 + (1.0 + t * t).sqrt());
    let t2 = t1 / (1.0 + (1.0 + t1 * t1).sqrt());
    // |t2| <= tan(PI/16) < 0.2: 16 terms reach 1e-23.
    let t2sq = t2 * t2;
    let mut acc = 0.0;
    let mut k = 31u32;
    loop {
        acc = 1.0 / f64::from(k) - t2sq * acc;
        if k == 1 {
            break;
        }
        k -= 2;
    }
    4.0 * t2 * acc
}

/// `atan2(y, x)` for `y, x >= 0`.
fn atan2_pos(y: f64, x: f64) -> f64 {
    if y <= x {
        if x == 0.0 { 0.0 } else { atan_unit(y / x) }
    } else {
        FRAC_PI_2 - atan_unit(x / y)
    }
}

/// A point on the unit sphere.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Unit(pub [f64; 3]);

impl Unit {
    /// The unit vector of a location, or `None` when it is off the globe or not finite.
    pub(crate) fn of(p: &GeoPoint) -> Option<Unit> {
        if !(p.lat.is_finite()
            && p.lon.is_finite()
            && (-90.0..=90.0).contains(&p.lat)
            && (-180.0..=180.0).contains(&p.lon))
        {
            return None;
        }
        let lat = p.lat * (PI / 180.0);
        let lon = p.lon * (PI / 180.0);
        let cl = cos(lat);
        Some(Unit([cl * cos(lon), cl * sin(lon), sin(lat)]))
    }
}

/// Great-circle distance in whole metres for a chord of length `chord` on the unit sphere.
pub(crate) fn chord_to_metres(chord: f64) -> u64 {
    let h = (chord * 0.5).clamp(0.0, 1.0);
    let angle = 2.0 * atan2_pos(h, (1.0 - h * h).max(0.0).sqrt());
    (EARTH_RADIUS_M * angle).round() as u64
}

/// A cheap lower bound of [`chord_to_metres`]: the arc is never shorter than its chord
/// (`2 asin(c/2) >= c`), less a relative 1e-12 and one metre for rounding.
pub(crate) fn metres_lower_bound(chord: f64) -> u64 {
    let m = EARTH_RADIUS_M * chord * (1.0 - 1e-12);
    if m >= 1.0 { m as u64 - 1 } else { 0 }
}

/// The chord between two unit vectors.
pub(crate) fn chord(a: &Unit, b: &Unit) -> f64 {
    let dx = a.0[0] - b.0[0];
    let dy = a.0[1] - b.0[1];
    let dz = a.0[2] - b.0[2];
    (dx * dx + dy * dy + dz * dz).sqrt()
}

/// A lower bound of the chord from `a` to any point inside the box `[lo, hi]` (per axis).
///
/// Every step is monotone under IEEE rounding, so for a point `p` in the box
/// `chord_to_box(a, lo, hi) <= chord(a, p)` holds exactly in floating point.
pub(crate) fn chord_to_box(a: &Unit, lo: &[f64; 3], hi: &[f64; 3]) -> f64 {
    let mut sum = 0.0;
    for i in 0..3 {
        let d = if a.0[i] < lo[i] {
            lo[i] - a.0[i]
        } else if a.0[i] > hi[i] {
            a.0[i] - hi[i]
        } else {
            0.0
        };
        sum += d * d;
    }
    sum.sqrt()
}

/// The estimated round trip for a distance, in microseconds: light in fibre (~200 km/ms)
/// with a 1.5x routing factor, both ways, plus 2 ms of switching, as
/// [`GeoPoint::estimated_rtt_ms`] does (15 µs per km).
pub(crate) fn rtt_us_for_metres(m: u64) -> u64 {
    2_000 + m.saturating_mul(15) / 1_000
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trig_matches_libm_closely() {
        let mut x = -PI;
        while x <= PI {
            assert!((sin(x) - x.sin()).abs() < 1e-14, "sin {x}");
            assert!((cos(x) - x.cos()).abs() < 1e-14, "cos {x}");
            x += 0.001;
        }
        let mut t = 0.0;
        while t <= 1.0 {
            assert!((atan_unit(t) - t.atan()).abs() < 1e-14, "atan {t}");
            t += 0.0005;
        }
    }

    #[test]
    fn distance_matches_haversine() {
        let pts = [
            GeoPoint {
                lat: 50.1,
                lon: 8.7,
            },
            GeoPoint {
                lat: 40.7,
                lon: -74.0,
            },
            GeoPoint {
                lat: -33.9,
                lon: 151.2,
            },
            GeoPoint {
                lat: 90.0,
                lon: 0.0,
            },
            GeoPoint {
                lat: -90.0,
                lon: 180.0,
            },
            GeoPoint {
                lat: 0.0,
                lon: 180.0,
            },
            GeoPoint {
                lat: 0.0,
                lon: -180.0,
            },
        ];
        for a in &pts {
            for b in &pts {
                let ours =
                    chord_to_metres(chord(&Unit::of(a).unwrap(), &Unit::of(b).unwrap())) as f64;
                let libm = a.distance_km(b) * 1000.0;
                assert!((ours - libm).abs() < 2.0, "{a:?} {b:?}: {ours} vs {libm}");
            }
        }
        assert_eq!(
            Unit::of(&GeoPoint {
                lat: 91.0,
                lon: 0.0
            }),
            None
        );
        assert_eq!(
            Unit::of(&GeoPoint {
                lat: f64::NAN,
                lon: 0.0
            }),
            None
        );
    }

    #[test]
    fn box_bound_never_exceeds_the_chord() {
        let a = Unit::of(&GeoPoint {
            lat: 48.0,
            lon: 2.0,
        })
        .unwrap();
        let ps: Vec<Unit> = [(50.1, 8.7), (52.5, 13.4), (40.4, -3.7)]
            .iter()
            .map(|&(lat, lon)| Unit::of(&GeoPoint { lat, lon }).unwrap())
            .collect();
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for p in &ps {
            for i in 0..3 {
                lo[i] = lo[i].min(p.0[i]);
                hi[i] = hi[i].max(p.0[i]);
            }
        }
        let b = chord_to_box(&a, &lo, &hi);
        for p in &ps {
            assert!(b <= chord(&a, p));
            assert!(metres_lower_bound(b) <= chord_to_metres(chord(&a, p)));
        }
        let mut c = 0.0;
        while c <= 2.0 {
            assert!(metres_lower_bound(c) <= chord_to_metres(c), "{c}");
            c += 1e-4;
        }
    }
}
