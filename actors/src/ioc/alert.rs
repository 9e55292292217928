//! Alerts from detection products: a JSON object naming the product, the alert and its
//! indicators, e.g.
//!
//! ```json
//! {"product": "edr", "id": "A-1042", "title": "miner seen",
//!  "indicators": [{"type": "sha256", "value": "9f2c…"}, {"type": "ip", "value": "203.0.113.66"}]}
//! ```
//!
//! Indicators of kinds endpoints cannot look for are kept as skipped; a value that is not
//! what its kind says refuses the whole alert.

use serde::Deserialize;

use super::{Imported, typed};

/// The largest alert read.
pub const MAX_ALERT_BYTES: usize = 1 << 20;
/// The most indicators one alert may carry.
pub const MAX_ALERT_INDICATORS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndicator {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct RawAlert {
    product: String,
    id: String,
    #[serde(default)]
    title: String,
    indicators: Vec<RawIndicator>,
}

/// An alert as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The product that sent it.
    pub product: String,
    /// Its id there.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its indicators.
    pub imported: Imported,
}

fn short(s: &str, max: usize) -> Result<String, String> {
    if s.len() > max {
        return Err(format!("a field is over {max} bytes"));
    }
    Ok(s.chars().filter(|c| !c.is_control()).collect())
}

/// Reads an alert.
pub fn parse_alert(bytes: &[u8]) -> Result<Alert, String> {
    if bytes.len() > MAX_ALERT_BYTES {
        return Err(format!("the alert is over {} KiB", MAX_ALERT_BYTES >> 10));
    }
    let raw: RawAlert = serde_json::from_slice(bytes).map_err(|e| format!("not an alert: {e}"))?;
    if raw.indicators.is_empty() {
        return Err("the alert carries no indicators".into());
    }
    if raw.indicators.len() > MAX_ALERT_INDICATORS {
        return Err(format!("more than {MAX_ALERT_INDICATORS} indicators"));
    }
    let product = short(&raw.product, 64)?;
    if product.is_empty() {
        return Err("the alert names no product".into());
    }
    let mut imported = Imported::default();
    for (n, i) in raw.indicators.iter().enumerate() {
        match typed(&i.kind, &i.value).map_err(|why| format!("indicator {n}: {why}"))? {
            Ok(ind) => imported.push(ind).map_err(|e| e.to_string())?,
            Err(why) => imported.skip(short(&i.value, 256)?, why),
        }
    }
    Ok(Alert {
        product,
        id: short(&raw.id, 128)?,
        title: short(&raw.title, 512)?,
        imported,
    })
}
