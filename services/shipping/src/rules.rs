//! Shipping's decision, pure: dispatch to a serviceable country, fail otherwise.

use serde::{Deserialize, Deserializer};

/// The countries shipped to unless configured otherwise.
pub const DEFAULT_COUNTRIES: &str = "AT,BE,CA,DE,DK,ES,FI,FR,GB,IE,IT,NL,NO,PL,PT,SE,US";
/// The carrier named on dispatched shipments unless configured otherwise.
pub const DEFAULT_CARRIER: &str = "choreo-post";
/// The reason of a shipment to a country not served.
pub const UNSERVICEABLE_COUNTRY: &str = "unserviceable_country";

/// The configurable business rules of shipping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShippingRules {
    /// Two-letter country codes shipped to (comma-separated in settings).
    #[serde(deserialize_with = "country_list")]
    pub countries: Vec<String>,
    pub carrier: String,
}

fn country_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(text
        .split(',')
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .collect())
}

/// What to do with a paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shipment {
    Dispatch { carrier: String },
    Fail(&'static str),
}

pub fn decide(country: &str, rules: &ShippingRules) -> Shipment {
    if rules.countries.iter().any(|c| c == country) {
        Shipment::Dispatch {
            carrier: rules.carrier.clone(),
        }
    } else {
        Shipment::Fail(UNSERVICEABLE_COUNTRY)
    }
}

/// A tracking number: the carrier's prefix and twelve random digits.
pub fn tracking_number() -> String {
    use rand::Rng;
    format!(
        "CP{:012}",
        rand::thread_rng().gen_range(0..1_000_000_000_000u64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ShippingRules {
        let countries = DEFAULT_COUNTRIES.split(',').map(str::to_owned).collect();
        ShippingRules {
            countries,
            carrier: DEFAULT_CARRIER.into(),
        }
    }

    #[test]
    fn a_listed_country_is_dispatched() {
        assert_eq!(
            decide("AT", &rules()),
            Shipment::Dispatch {
                carrier: "choreo-post".into()
            }
        );
        assert_eq!(
            decide("US", &rules()),
            Shipment::Dispatch {
                carrier: "choreo-post".into()
            }
        );
    }

    #[test]
    fn an_unlisted_country_fails_as_unserviceable() {
        assert_eq!(
            decide("AQ", &rules()),
            Shipment::Fail("unserviceable_country")
        );
        assert_eq!(
            decide("at", &rules()),
            Shipment::Fail("unserviceable_country")
        );
    }

    #[test]
    fn the_country_list_setting_is_trimmed_and_upper_cased() {
        let parsed: ShippingRules =
            serde_json::from_value(serde_json::json!({"countries": " at, de ,,", "carrier": "x"}))
                .expect("parses");
        assert_eq!(parsed.countries, vec!["AT", "DE"]);
    }
}
