//! What a tenant asks for: [`GpuRequest`], built with a typed builder or parsed from YAML.

use crate::gpu::{GeoPoint, GpuModel};
use crate::ids::ProviderId;
use crate::money::{Amount, Token};
use crate::provider::TrustTier;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Most GPUs one request may ask for (one node's worth is the usual limit; 64 leaves room).
pub const MAX_GPUS: u32 = 64;
/// Longest lease one request may ask for: 90 days.
pub const MAX_DURATION_SECS: u64 = 90 * 24 * 3600;

/// A validated request for GPUs. Build with [`GpuRequest::builder`] or [`GpuRequest::from_yaml`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuRequest {
    /// Acceptable models (any of them). Empty means "any model with at least `min_memory_gib`".
    pub models: Vec<GpuModel>,
    /// Minimum GPU memory in GiB.
    pub min_memory_gib: u32,
    /// GPUs wanted, all on one node.
    pub count: u32,
    /// Lease length in seconds.
    pub duration_secs: u64,
    /// Price ceiling per GPU-hour, in base units.
    pub max_price_per_gpu_hour: Amount,
    /// Regions allowed (empty: any).
    pub regions: Vec<String>,
    /// Regions refused.
    pub deny_regions: Vec<String>,
    /// The tenant's location, for the latency criterion.
    pub location: Option<GeoPoint>,
    /// Maximum acceptable round-trip time in ms.
    pub max_latency_ms: Option<u32>,
    /// Lowest acceptable trust tier.
    pub min_tier: TrustTier,
    /// Only these providers (empty: any).
    pub allow_providers: Vec<ProviderId>,
    /// Never these providers.
    pub deny_providers: Vec<ProviderId>,
    /// Spend cap of this lease in base units: the most it may ever cost. The escrow locks at
    /// most this much and the lease ends with
    /// [`CloseReason::SpendCapReached`](crate::CloseReason::SpendCapReached) once it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spend: Option<Amount>,
    /// Idle timeout in seconds: the lease stops with
    /// [`CloseReason::Idle`](crate::CloseReason::Idle) after this long with no new log output
    /// and no GPU activity (see [`crate::cost`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

impl GpuRequest {
    /// A builder with no defaults for the required fields (`gpu`, `hours`/`duration_secs`,
    /// `max_price_per_gpu_hour`); `count` defaults to 1.
    pub fn builder() -> GpuRequestBuilder {
        GpuRequestBuilder::default()
    }

    /// The budget locked in escrow: ceiling x count x hours (per second, exact).
    pub fn budget(&self) -> Result<Amount> {
        crate::money::accrued_cost(self.max_price_per_gpu_hour, self.count, self.duration_secs)
    }

    /// What the escrow locks: the [`budget`](Self::budget), capped at
    /// [`max_spend`](Self::max_spend).
    pub fn locked_amount(&self) -> Result<Amount> {
        let budget = self.budget()?;
        Ok(self.max_spend.map_or(budget, |cap| cap.min(budget)))
    }

    /// The longest lease whose [`budget`](Self::budget) at the price ceiling stays within
    /// [`max_spend`](Self::max_spend) (the ordered duration without a cap). A chain that
    /// locks ceiling x count x duration is sent this duration, so its lock never exceeds the
    /// cap.
    pub fn spend_limited_secs(&self) -> u64 {
        match self.max_spend {
            None => self.duration_secs,
            Some(cap) => crate::cost::seconds_within(cap, self.max_price_per_gpu_hour, self.count)
                .min(self.duration_secs),
        }
    }

    /// The idle timeout, when set.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        self.idle_timeout_secs.map(std::time::Duration::from_secs)
    }

    /// Whether `model` satisfies the model and memory constraints.
    pub fn accepts_model(&self, model: GpuModel) -> bool {
        (self.models.is_empty() || self.models.contains(&model))
            && model.memory_gib() >= self.min_memory_gib
    }

    /// Parses a YAML spec. Prices are decimal strings in `token`'s units (`"2.50"`).
    ///
    /// ```yaml
    /// gpu: h100            # or a list: [h100, a100-80g]
    /// count: 2
    /// duration: 2h         # 90m, 3600s, 1h30m
    /// max_price_per_gpu_hour: "3.00"
    /// regions: [eu-west]
    /// min_tier: 3
    /// max_spend: "12.5"    # the lease's spend cap; "12.5 USDS" names the token too
    /// idle_timeout: 10m    # stop after 10 minutes without output or GPU activity
    /// ```
    pub fn from_yaml(yaml: &str, token: &Token) -> Result<Self> {
        let spec: SpecFile =
            serde_yaml_ng::from_str(yaml).map_err(|e| Error::MalformedSpec(e.to_string()))?;
        let mut b = GpuRequest::builder();
        match spec.gpu {
            Some(OneOrMany::One(g)) => b = b.gpu(&g),
            Some(OneOrMany::Many(gs)) => {
                for g in gs {
                    b = b.gpu(&g);
                }
            }
            None => {}
        }
        if let Some(m) = spec.min_memory_gib {
            b = b.min_memory_gib(m);
        }
        if let Some(c) = spec.count {
            b = b.count(c);
        }
        if let Some(h) = spec.hours {
            b = b.hours(h);
        }
        if let Some(d) = spec.duration {
            b.duration_secs = Some(parse_duration(&d)?);
        }
        if let Some(p) = spec.max_price_per_gpu_hour {
            b = b.max_price_per_gpu_hour(token.parse("max_price_per_gpu_hour", &p)?);
        }
        b.regions = spec.regions;
        b.deny_regions = spec.deny_regions;
        if let Some(loc) = spec.location {
            b.location = Some(GeoPoint::new(loc.lat, loc.lon)?);
        }
        b.max_latency_ms = spec.max_latency_ms;
        if let Some(t) = spec.min_tier {
            b.min_tier = Some(t);
        }
        for p in spec.allow_providers {
            b.allow_providers
                .push(AccountIdOrErr::parse(&p, "allow_providers")?);
        }
        for p in spec.deny_providers {
            b.deny_providers
                .push(AccountIdOrErr::parse(&p, "deny_providers")?);
        }
        if let Some(m) = spec.max_spend {
            b = b.max_spend(parse_spend(token, &m)?);
        }
        if let Some(t) = spec.idle_timeout {
            b.idle_timeout_secs = Some(parse_duration(&t).map_err(|_| {
                Error::invalid(
                    "idle_timeout",
                    format!("`{t}` is not a duration like 10m, 90s or 1h"),
                )
            })?);
        }
        b.build()
    }
}

/// Parses a spend cap: a decimal amount of `token`, optionally followed by its symbol
/// (`"12.5"`, `"12.5 SPHN"`); another symbol is refused.
pub fn parse_spend(token: &Token, s: &str) -> Result<Amount> {
    let s = s.trim();
    let number = match s.split_once(char::is_whitespace) {
        Some((n, sym)) if sym.trim().eq_ignore_ascii_case(&token.symbol) => n,
        Some((_, sym)) => {
            return Err(Error::invalid(
                "max_spend",
                format!(
                    "`{s}` is in {}, but this market pays in {}",
                    sym.trim(),
                    token.symbol
                ),
            ));
        }
        None => s,
    };
    token.parse("max_spend", number)
}

struct AccountIdOrErr;
impl AccountIdOrErr {
    fn parse(s: &str, field: &'static str) -> Result<ProviderId> {
        ProviderId::parse(s)
            .map_err(|_| Error::invalid(field, format!("`{s}` is not a 20-byte hex address")))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct SpecLocation {
    lat: f64,
    lon: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    gpu: Option<OneOrMany>,
    min_memory_gib: Option<u32>,
    count: Option<u32>,
    duration: Option<String>,
    hours: Option<u64>,
    max_price_per_gpu_hour: Option<String>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    deny_regions: Vec<String>,
    location: Option<SpecLocation>,
    max_latency_ms: Option<u32>,
    min_tier: Option<u8>,
    #[serde(default)]
    allow_providers: Vec<String>,
    #[serde(default)]
    deny_providers: Vec<String>,
    max_spend: Option<String>,
    idle_timeout: Option<String>,
}

/// Parses `2h`, `90m`, `3600s`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let bad = || {
        Error::invalid(
            "duration",
            format!("`{s}` is not a duration like 2h, 90m, 1h30m or 3600s"),
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or(Error::Overflow { what: "duration" })?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Builder for [`GpuRequest`]; validation happens once, in [`GpuRequestBuilder::build`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct GpuRequestBuilder {
    gpus: Vec<String>,
    min_memory_gib: Option<u32>,
    count: Option<u32>,
    duration_secs: Option<u64>,
    max_price: Option<Amount>,
    regions: Vec<String>,
    deny_regions: Vec<String>,
    location: Option<GeoPoint>,
    max_latency_ms: Option<u32>,
    min_tier: Option<u8>,
    allow_providers: Vec<ProviderId>,
    deny_providers: Vec<ProviderId>,
    max_spend: Option<Amount>,
    idle_timeout_secs: Option<u64>,
}

impl GpuRequestBuilder {
    /// Adds an acceptable GPU model by name (`"h100"`, `"a100-80g"`, ...).
    pub fn gpu(mut self, name: &str) -> Self {
        self.gpus.push(name.to_string());
        self
    }
    /// Adds an acceptable GPU model.
    pub fn model(mut self, model: GpuModel) -> Self {
        self.gpus.push(model.name().to_string());
        self
    }
    /// Minimum GPU memory in GiB.
    pub fn min_memory_gib(mut self, gib: u32) -> Self {
        self.min_memory_gib = Some(gib);
        self
    }
    /// Number of GPUs (default 1).
    pub fn count(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }
    /// Lease length in whole hours.
    pub fn hours(mut self, h: u64) -> Self {
        self.duration_secs = Some(h.saturating_mul(3600));
        self
    }
    /// Lease length in seconds.
    pub fn duration_secs(mut self, s: u64) -> Self {
        self.duration_secs = Some(s);
        self
    }
    /// Price ceiling per GPU-hour in base units.
    pub fn max_price_per_gpu_hour(mut self, p: Amount) -> Self {
        self.max_price = Some(p);
        self
    }
    /// Allows a region (call repeatedly for several).
    pub fn region(mut self, r: &str) -> Self {
        self.regions.push(r.to_string());
        self
    }
    /// Refuses a region.
    pub fn deny_region(mut self, r: &str) -> Self {
        self.deny_regions.push(r.to_string());
        self
    }
    /// The tenant's location.
    pub fn location(mut self, p: GeoPoint) -> Self {
        self.location = Some(p);
        self
    }
    /// Maximum round-trip time in ms.
    pub fn max_latency_ms(mut self, ms: u32) -> Self {
        self.max_latency_ms = Some(ms);
        self
    }
    /// Lowest acceptable trust tier (0..=7).
    pub fn min_tier(mut self, t: u8) -> Self {
        self.min_tier = Some(t);
        self
    }
    /// Only these providers.
    pub fn allow_provider(mut self, p: ProviderId) -> Self {
        self.allow_providers.push(p);
        self
    }
    /// Never this provider.
    pub fn deny_provider(mut self, p: ProviderId) -> Self {
        self.deny_providers.push(p);
        self
    }

    /// Spend cap of the lease in base units (see [`GpuRequest::max_spend`]).
    pub fn max_spend(mut self, cap: Amount) -> Self {
        self.max_spend = Some(cap);
        self
    }
    /// Idle timeout (see [`GpuRequest::idle_timeout_secs`]); whole seconds, at least 1.
    pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.idle_timeout_secs = Some(timeout.as_secs());
        self
    }

    /// Validates and builds the request. Every error names the field.
    pub fn build(self) -> Result<GpuRequest> {
        let mut models = Vec::new();
        for g in &self.gpus {
            for m in GpuModel::parse_family(g)? {
                if !models.contains(&m) {
                    models.push(m);
                }
            }
        }
        let min_memory_gib = self.min_memory_gib.unwrap_or(0);
        if models.is_empty() && min_memory_gib == 0 {
            return Err(Error::invalid(
                "gpu",
                "name a GPU model or a minimum memory",
            ));
        }
        if let Some(m) = models.iter().find(|m| m.memory_gib() < min_memory_gib) {
            return Err(Error::invalid(
                "min_memory_gib",
                format!(
                    "{min_memory_gib} GiB is more than {m} has ({} GiB)",
                    m.memory_gib()
                ),
            ));
        }
        let count = self.count.unwrap_or(1);
        if count == 0 || count > MAX_GPUS {
            return Err(Error::invalid(
                "count",
                format!("{count} is outside 1..={MAX_GPUS}"),
            ));
        }
        let duration_secs = self
            .duration_secs
            .ok_or_else(|| Error::invalid("hours", "a lease length is required"))?;
        if duration_secs == 0 || duration_secs > MAX_DURATION_SECS {
            return Err(Error::invalid(
                "hours",
                format!("{duration_secs} s is outside 1 s..=90 days"),
            ));
        }
        let max_price_per_gpu_hour = self
            .max_price
            .ok_or_else(|| Error::invalid("max_price_per_gpu_hour", "a price ceiling is required"))?
            .non_zero("max_price_per_gpu_hour")?;
        let min_tier = TrustTier::new(self.min_tier.unwrap_or(0))?;
        if let Some(0) = self.max_latency_ms {
            return Err(Error::invalid(
                "max_latency_ms",
                "must be greater than zero",
            ));
        }
        let req = GpuRequest {
            models,
            min_memory_gib,
            count,
            duration_secs,
            max_price_per_gpu_hour,
            regions: self.regions,
            deny_regions: self.deny_regions,
            location: self.location,
            max_latency_ms: self.max_latency_ms,
            min_tier,
            allow_providers: self.allow_providers,
            deny_providers: self.deny_providers,
            max_spend: self.max_spend,
            idle_timeout_secs: self.idle_timeout_secs,
        };
        // The budget must be representable.
        req.budget()?;
        if let Some(cap) = req.max_spend {
            cap.non_zero("max_spend")?;
            if req.spend_limited_secs() == 0 {
                return Err(Error::invalid(
                    "max_spend",
                    format!(
                        "{cap} buys less than one second of {} GPU(s) at the ceiling of {} per GPU-hour",
                        req.count, req.max_price_per_gpu_hour
                    ),
                ));
            }
        }
        if let Some(t) = req.idle_timeout_secs
            && (t == 0 || t > MAX_DURATION_SECS)
        {
            return Err(Error::invalid(
                "idle_timeout",
                format!("{t} s is outside 1 s..=90 days"),
            ));
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Token {
        Token::usd()
    }

    #[test]
    fn builder_happy_path() {
        let r = GpuRequest::builder()
            .gpu("h100")
            .count(8)
            .hours(2)
            .max_price_per_gpu_hour(Amount(3_000_000))
            .region("eu-west")
            .build()
            .unwrap();
        assert_eq!(r.models, vec![GpuModel::H100Sxm, GpuModel::H100Pcie]);
        assert_eq!(r.budget().unwrap(), Amount(48_000_000));
    }

    #[test]
    fn yaml_spec_parses() {
        let r = GpuRequest::from_yaml(
            "gpu: [h100-sxm, a100-80g]\ncount: 2\nduration: 1h30m\nmax_price_per_gpu_hour: \"2.5\"\nmin_tier: 3\n",
            &usd(),
        )
        .unwrap();
        assert_eq!(r.duration_secs, 5400);
        assert_eq!(r.max_price_per_gpu_hour, Amount(2_500_000));
        assert_eq!(r.min_tier, TrustTier(3));
        assert_eq!(r.models.len(), 2);
    }

    #[test]
    fn cost_controls_parse_and_validate() {
        let yaml = |extra: &str| {
            GpuRequest::from_yaml(
                &format!("gpu: h100\nduration: 2h\nmax_price_per_gpu_hour: \"3\"\n{extra}"),
                &usd(),
            )
        };
        let r = yaml("max_spend: \"1.5 USDS\"\nidle_timeout: 10m\n").unwrap();
        assert_eq!(r.max_spend, Some(Amount(1_500_000)));
        assert_eq!(r.idle_timeout_secs, Some(600));
        assert_eq!(r.locked_amount().unwrap(), Amount(1_500_000));
        // 1.5 at a 3-per-hour ceiling buys half an hour.
        assert_eq!(r.spend_limited_secs(), 1800);
        assert_eq!(
            yaml("max_spend: \"12.5\"\n")
                .unwrap()
                .locked_amount()
                .unwrap(),
            Amount(6_000_000)
        );
        assert_eq!(
            field_of(yaml("max_spend: \"1 SPHN\"\n").unwrap_err()),
            "max_spend"
        );
        assert_eq!(
            field_of(yaml("max_spend: \"0\"\n").unwrap_err()),
            "max_spend"
        );
        // Less than a second's worth.
        assert_eq!(
            field_of(yaml("max_spend: \"0.000001\"\n").unwrap_err()),
            "max_spend"
        );
        assert_eq!(
            field_of(yaml("idle_timeout: soon\n").unwrap_err()),
            "idle_timeout"
        );
        assert_eq!(
            field_of(yaml("idle_timeout: 0s\n").unwrap_err()),
            "idle_timeout"
        );
        // Without a cap nothing changes.
        let plain = yaml("").unwrap();
        assert_eq!(plain.locked_amount().unwrap(), plain.budget().unwrap());
        assert_eq!(plain.spend_limited_secs(), plain.duration_secs);
    }

    fn field_of(e: Error) -> &'static str {
        match e {
            Error::InvalidField { field, .. } => field,
            Error::ZeroAmount { field } => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let base = || {
            GpuRequest::builder()
                .gpu("h100")
                .hours(1)
                .max_price_per_gpu_hour(Amount(1))
        };
        assert_eq!(field_of(base().count(0).build().unwrap_err()), "count");
        assert_eq!(
            field_of(base().duration_secs(0).build().unwrap_err()),
            "hours"
        );
        assert_eq!(
            field_of(base().min_tier(9).build().unwrap_err()),
            "min_tier"
        );
        assert_eq!(
            field_of(
                base()
                    .max_price_per_gpu_hour(Amount(0))
                    .build()
                    .unwrap_err()
            ),
            "max_price_per_gpu_hour"
        );
        assert!(matches!(
            base()
                .max_price_per_gpu_hour(Amount(u128::MAX))
                .count(64)
                .build(),
            Err(Error::Overflow { .. })
        ));
        assert!(matches!(
            GpuRequest::builder()
                .gpu("b9000")
                .hours(1)
                .max_price_per_gpu_hour(Amount(1))
                .build(),
            Err(Error::UnknownGpuModel(_))
        ));
    }

    #[test]
    fn malformed_yaml_is_typed() {
        assert!(matches!(
            GpuRequest::from_yaml("gpu: [h100\n", &usd()),
            Err(Error::MalformedSpec(_))
        ));
        assert!(matches!(
            GpuRequest::from_yaml("gpu: h100\ngpus: 2\n", &usd()),
            Err(Error::MalformedSpec(m)) if m.contains("gpus")
        ));
        assert_eq!(
            field_of(
                GpuRequest::from_yaml(
                    "gpu: h100\nduration: 2x\nmax_price_per_gpu_hour: \"1\"\n",
                    &usd()
                )
                .unwrap_err()
            ),
            "duration"
        );
        assert_eq!(
            field_of(
                GpuRequest::from_yaml(
                    "gpu: h100\nduration: 2h\nmax_price_per_gpu_hour: \"-1\"\n",
                    &usd()
                )
                .unwrap_err()
            ),
            "max_price_per_gpu_hour"
        );
    }
}
