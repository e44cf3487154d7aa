//! Shipping's decision, pure: dispatch to a serviceable country, fail otherwise; and the event
//! that says which.

use choreo_events::Event;
use choreo_events::payloads::{PaymentCaptured, ShipmentDispatched, ShipmentFailed};
use serde::Deserialize;

/// The countries shipped to unless configured otherwise.
pub const DEFAULT_COUNTRIES: &[&str] = &[
    "AT", "BE", "CA", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IT", "NL", "NO", "PL", "PT", "SE",
    "US",
];
/// The carrier named on dispatched shipments unless configured otherwise.
pub const DEFAULT_CARRIER: &str = "choreo-post";
/// The reason of a shipment to a country not served.
pub const UNSERVICEABLE_COUNTRY: &str = "unserviceable_country";

/// The configurable business rules of shipping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingRules {
    /// Two-letter country codes shipped to (comma-separated in `CHOREO_COUNTRIES`).
    pub countries: Vec<String>,
    pub carrier: String,
}

impl ShippingRules {
    /// The rules with the countries upper-cased, or why they cannot be used: a country that is
    /// not two letters (`CHOREO_COUNTRIES=DE;FR`), or none at all (a shipping service that
    /// fails every order is a typo, not a policy).
    pub fn checked(mut self) -> Result<Self, String> {
        let refused = |what: &str| {
            choreo_host::settings::refused(
                "shipping",
                "countries",
                what,
                "two-letter country codes, comma-separated, at least one",
            )
            .to_string()
        };
        for country in &mut self.countries {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(refused(&format!("{country:?}")));
            }
            country.make_ascii_uppercase();
        }
        if self.countries.is_empty() {
            return Err(refused("empty"));
        }
        Ok(self)
    }
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

/// The state of a shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentState {
    Dispatched,
    Failed,
}

impl ShipmentState {
    /// Every state, for the API's schema.
    pub const ALL: [ShipmentState; 2] = [ShipmentState::Dispatched, ShipmentState::Failed];

    /// The state as the API and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentState::Dispatched => "dispatched",
            ShipmentState::Failed => "failed",
        }
    }
}

/// A shipment decided: what to record, and the event that announces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shipped {
    pub state: ShipmentState,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub reason: Option<&'static str>,
    pub event: Event,
}

/// What `payment.captured` to `country` does: shipment `shipment_id` dispatched with
/// `tracking_number`, or failed.
pub fn ship(
    captured: &PaymentCaptured,
    country: &str,
    shipment_id: &str,
    tracking_number: String,
    rules: &ShippingRules,
) -> Shipped {
    match decide(country, rules) {
        Shipment::Dispatch { carrier } => Shipped {
            state: ShipmentState::Dispatched,
            event: Event::ShipmentDispatched(ShipmentDispatched {
                order_id: captured.order_id.clone(),
                shipment_id: shipment_id.to_owned(),
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
            }),
            carrier: Some(carrier),
            tracking_number: Some(tracking_number),
            reason: None,
        },
        Shipment::Fail(reason) => Shipped {
            state: ShipmentState::Failed,
            carrier: None,
            tracking_number: None,
            reason: Some(reason),
            event: Event::ShipmentFailed(ShipmentFailed {
                order_id: captured.order_id.clone(),
                reason: reason.to_owned(),
            }),
        },
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
        let countries = DEFAULT_COUNTRIES.iter().map(|c| (*c).to_owned()).collect();
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
    fn a_shipment_decision_carries_its_event() {
        let captured = PaymentCaptured {
            order_id: "o-1".into(),
            payment_id: "p-1".into(),
            amount_cents: 100,
            currency: "EUR".into(),
            shipping_address: None,
        };
        let shipped = ship(&captured, "AT", "s-1", "CP1".into(), &rules());
        assert_eq!(shipped.state, ShipmentState::Dispatched);
        assert_eq!(shipped.tracking_number.as_deref(), Some("CP1"));
        assert!(
            matches!(shipped.event, Event::ShipmentDispatched(ref d) if d.shipment_id == "s-1" && d.tracking_number == "CP1")
        );

        let failed = ship(&captured, "ZZ", "s-2", "CP2".into(), &rules());
        assert_eq!(failed.state, ShipmentState::Failed);
        assert_eq!(failed.reason, Some(UNSERVICEABLE_COUNTRY));
        assert!(
            matches!(failed.event, Event::ShipmentFailed(ref f) if f.reason == UNSERVICEABLE_COUNTRY)
        );
    }

    #[test]
    fn the_country_list_is_upper_cased_and_a_bad_or_empty_one_is_refused_by_name() {
        let rules = |countries: &[&str]| ShippingRules {
            countries: countries.iter().map(|c| (*c).to_owned()).collect(),
            carrier: "x".into(),
        };

        let checked = rules(&["at", "De"]).checked().expect("valid");
        let bad = rules(&["DE", "Germany"]).checked().expect_err("refused");
        let empty = rules(&[]).checked().expect_err("refused");

        assert_eq!(checked.countries, vec!["AT", "DE"]);
        assert!(
            bad.contains("CHOREO_COUNTRIES") && bad.contains("\"Germany\""),
            "{bad}"
        );
        assert!(
            empty.contains("CHOREO_COUNTRIES") && empty.contains("empty"),
            "{empty}"
        );
    }
}
