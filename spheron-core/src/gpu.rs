//! GPU models and hardware classes.
//!
//! The performance catalog (peak rates per dtype, bandwidth, calibrated rates) lives in
//! `spheron-gpu`; the core needs only the identity, memory and class of a model.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Hardware class: what kind of work a GPU is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HardwareClass {
    /// Small-model inference (T4, L4, A10, RTX 4090).
    Entry,
    /// Inference and mixed work (L40S, A100 40G).
    Medium,
    /// Large-model training (H200, H100, A100 80G).
    UltraHigh,
}

/// A GPU model that providers offer and tenants request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum GpuModel {
    /// NVIDIA H200 SXM, 141 GB HBM3e.
    H200,
    /// NVIDIA H100 SXM5, 80 GB HBM3.
    H100Sxm,
    /// NVIDIA H100 PCIe, 80 GB HBM2e.
    H100Pcie,
    /// NVIDIA A100 SXM 80 GB.
    A100_80G,
    /// NVIDIA A100 40 GB.
    A100_40G,
    /// NVIDIA L40S, 48 GB.
    L40S,
    /// NVIDIA L4, 24 GB.
    L4,
    /// NVIDIA A10, 24 GB.
    A10,
    /// NVIDIA GeForce RTX 4090, 24 GB.
    Rtx4090,
    /// NVIDIA T4, 16 GB.
    T4,
}

impl GpuModel {
    /// Every model, fastest first.
    pub const ALL: [GpuModel; 10] = [
        GpuModel::H200,
        GpuModel::H100Sxm,
        GpuModel::H100Pcie,
        GpuModel::A100_80G,
        GpuModel::A100_40G,
        GpuModel::L40S,
        GpuModel::Rtx4090,
        GpuModel::A10,
        GpuModel::L4,
        GpuModel::T4,
    ];

    /// The canonical lower-case name used in specs and on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            GpuModel::H200 => "h200",
            GpuModel::H100Sxm => "h100-sxm",
            GpuModel::H100Pcie => "h100-pcie",
            GpuModel::A100_80G => "a100-80g",
            GpuModel::A100_40G => "a100-40g",
            GpuModel::L40S => "l40s",
            GpuModel::L4 => "l4",
            GpuModel::A10 => "a10",
            GpuModel::Rtx4090 => "rtx4090",
            GpuModel::T4 => "t4",
        }
    }

    /// Memory in GiB (datasheet, rounded down to whole GiB of the marketed GB).
    pub const fn memory_gib(self) -> u32 {
        match self {
            GpuModel::H200 => 141,
            GpuModel::H100Sxm | GpuModel::H100Pcie | GpuModel::A100_80G => 80,
            GpuModel::L40S => 48,
            GpuModel::A100_40G => 40,
            GpuModel::L4 | GpuModel::A10 | GpuModel::Rtx4090 => 24,
            GpuModel::T4 => 16,
        }
    }

    /// The hardware class.
    pub const fn class(self) -> HardwareClass {
        match self {
            GpuModel::H200 | GpuModel::H100Sxm | GpuModel::H100Pcie | GpuModel::A100_80G => {
                HardwareClass::UltraHigh
            }
            GpuModel::A100_40G | GpuModel::L40S => HardwareClass::Medium,
            GpuModel::L4 | GpuModel::A10 | GpuModel::Rtx4090 | GpuModel::T4 => HardwareClass::Entry,
        }
    }

    /// Parses a model name into the models it accepts: a bare `h100` accepts both the SXM and
    /// the PCIe part; any other name accepts exactly its model.
    pub fn parse_family(s: &str) -> Result<Vec<GpuModel>> {
        let bare: String = s
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        if bare == "h100" || bare == "nvidiah100" {
            return Ok(vec![GpuModel::H100Sxm, GpuModel::H100Pcie]);
        }
        Ok(vec![s.parse()?])
    }
}

impl fmt::Display for GpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GpuModel {
    type Err = Error;

    /// Accepts canonical names and common spellings (`H100`, `h100_sxm`, `NVIDIA H100 80GB HBM3`,
    /// `a100`, `4090`), case-insensitive. Bare `h100` means the SXM part.
    fn from_str(s: &str) -> Result<Self> {
        let norm: String = s
            .to_ascii_lowercase()
            .replace("nvidia", "")
            .replace("geforce", "")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let model = match norm.as_str() {
            "h200" | "h200sxm" | "h200141gb" | "h200sxm141gb" => GpuModel::H200,
            "h100" | "h100sxm" | "h100sxm5" | "h10080gbhbm3" | "h100sxm580gb" => GpuModel::H100Sxm,
            "h100pcie" | "h100pcie80gb" => GpuModel::H100Pcie,
            "a100" | "a10080g" | "a10080gb" | "a100sxm480gb" | "a100sxm80gb" => GpuModel::A100_80G,
            "a10040g" | "a10040gb" | "a100sxm440gb" | "a100pcie40gb" => GpuModel::A100_40G,
            "l40s" => GpuModel::L40S,
            "l4" => GpuModel::L4,
            "a10" | "a10g" => GpuModel::A10,
            "rtx4090" | "4090" => GpuModel::Rtx4090,
            "t4" | "teslat4" => GpuModel::T4,
            _ => return Err(Error::UnknownGpuModel(s.to_string())),
        };
        Ok(model)
    }
}

impl From<GpuModel> for String {
    fn from(m: GpuModel) -> String {
        m.name().to_string()
    }
}

impl TryFrom<String> for GpuModel {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// A point on Earth in degrees, used when no measured round-trip time is known.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lon: f64,
}

impl GeoPoint {
    /// A validated point.
    pub fn new(lat: f64, lon: f64) -> Result<Self> {
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return Err(Error::invalid(
                "location.lat",
                format!("{lat} is outside -90..=90"),
            ));
        }
        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
            return Err(Error::invalid(
                "location.lon",
                format!("{lon} is outside -180..=180"),
            ));
        }
        Ok(GeoPoint { lat, lon })
    }

    /// Great-circle distance in kilometres (haversine, mean Earth radius 6371 km).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (la1, la2) = (self.lat.to_radians(), other.lat.to_radians());
        let dla = la2 - la1;
        let dlo = (other.lon - self.lon).to_radians();
        let a = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().clamp(0.0, 1.0).asin()
    }

    /// A rough round-trip estimate from distance: light in fibre (~200 km/ms) with a 1.5x
    /// routing factor, both ways, plus 2 ms of switching.
    pub fn estimated_rtt_ms(&self, other: &GeoPoint) -> f64 {
        2.0 + 2.0 * 1.5 * self.distance_km(other) / 200.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for m in GpuModel::ALL {
            assert_eq!(m.name().parse::<GpuModel>().unwrap(), m);
        }
        assert_eq!(
            "NVIDIA H100 80GB HBM3".parse::<GpuModel>().unwrap(),
            GpuModel::H100Sxm
        );
        assert_eq!("RTX 4090".parse::<GpuModel>().unwrap(), GpuModel::Rtx4090);
        assert!(
            matches!("b300".parse::<GpuModel>(), Err(Error::UnknownGpuModel(s)) if s == "b300")
        );
    }

    #[test]
    fn classes() {
        assert_eq!(GpuModel::H100Sxm.class(), HardwareClass::UltraHigh);
        assert_eq!(GpuModel::L40S.class(), HardwareClass::Medium);
        assert_eq!(GpuModel::T4.class(), HardwareClass::Entry);
    }

    #[test]
    fn distance_is_sane() {
        let fra = GeoPoint::new(50.11, 8.68).unwrap();
        let ams = GeoPoint::new(52.37, 4.90).unwrap();
        let d = fra.distance_km(&ams);
        assert!((350.0..380.0).contains(&d), "{d}");
        assert!(GeoPoint::new(91.0, 0.0).is_err());
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
    }
}
