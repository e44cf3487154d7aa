//! One struct per event payload (the envelope's `data`), exactly as the contract lists them.
//!
//! Tolerant reader: unknown fields are ignored on input. Money is integer minor units plus an
//! ISO 4217 currency. [`Validate`] checks the values a type system cannot (non-negative amounts,
//! currency and country codes); a payload that fails it is dead-lettered by the consumer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The JSON Schema `pattern` of a text that must not be blank (what [`Problems::non_empty`] checks).
pub const NON_BLANK: &str = r"\S";
/// The JSON Schema `pattern` of an ISO 4217 currency (what [`Problems::currency`] checks).
pub const CURRENCY: &str = "^[A-Z]{3}$";
/// The JSON Schema `pattern` of an ISO 3166-1 alpha-2 country (what [`Problems::country`] checks).
pub const COUNTRY: &str = "^[A-Z]{2}$";

/// Checks of values that serde alone cannot express. Returns every problem found, not only the first.
pub trait Validate {
    fn validate(&self) -> Result<(), Vec<String>>;
}

/// Collects validation problems in order.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub fn non_empty(&mut self, field: &str, value: &str) {
        self.check(!value.trim().is_empty(), || {
            format!("{field} must not be empty")
        });
    }

    pub fn currency(&mut self, field: &str, value: &str) {
        self.check(is_upper_code(value, 3), || {
            format!("{field} must be three capital letters (ISO 4217), got {value:?}")
        });
    }

    pub fn country(&mut self, field: &str, value: &str) {
        self.check(is_upper_code(value, 2), || {
            format!("{field} must be two capital letters (ISO 3166-1 alpha-2), got {value:?}")
        });
    }

    pub fn non_negative(&mut self, field: &str, value: i64) {
        self.check(value >= 0, || {
            format!("{field} must not be negative, got {value}")
        });
    }

    pub fn into_result(self) -> Result<(), Vec<String>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

fn is_upper_code(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_uppercase())
}

/// The most of one SKU a single order may hold.
pub const MAX_QUANTITY: u32 = 1000;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineItem {
    #[schemars(regex(pattern = NON_BLANK))]
    pub sku: String,
    #[schemars(range(min = 1, max = MAX_QUANTITY))]
    pub quantity: u32,
    #[schemars(range(min = 0))]
    pub unit_price_cents: i64,
}

impl LineItem {
    fn check(&self, index: usize, problems: &mut Problems) {
        problems.non_empty(&format!("items[{index}].sku"), &self.sku);
        problems.check((1..=MAX_QUANTITY).contains(&self.quantity), || {
            format!(
                "items[{index}].quantity must be between 1 and {MAX_QUANTITY}, got {}",
                self.quantity
            )
        });
        problems.non_negative(
            &format!("items[{index}].unit_price_cents"),
            self.unit_price_cents,
        );
    }
}

/// Where an order is shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Address {
    #[schemars(regex(pattern = NON_BLANK))]
    pub name: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    #[schemars(regex(pattern = NON_BLANK))]
    pub city: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub postal_code: String,
    #[schemars(regex(pattern = COUNTRY))]
    pub country: String,
}

impl Address {
    /// Adds this address's problems, naming fields under `prefix`.
    pub fn check(&self, prefix: &str, problems: &mut Problems) {
        problems.non_empty(&format!("{prefix}.name"), &self.name);
        problems.non_empty(&format!("{prefix}.line1"), &self.line1);
        problems.non_empty(&format!("{prefix}.city"), &self.city);
        problems.non_empty(&format!("{prefix}.postal_code"), &self.postal_code);
        problems.country(&format!("{prefix}.country"), &self.country);
    }
}

/// Checks a list of items; shared by the HTTP request and the `order.placed` payload.
pub fn check_items(items: &[LineItem], problems: &mut Problems) {
    problems.check(!items.is_empty(), || {
        "items must hold at least one item".to_owned()
    });
    for (index, item) in items.iter().enumerate() {
        item.check(index, problems);
    }
}

/// The sum of `quantity * unit_price_cents`, or `None` if it overflows an `i64`.
pub fn items_total(items: &[LineItem]) -> Option<i64> {
    items.iter().try_fold(0i64, |sum, item| {
        item.unit_price_cents
            .checked_mul(i64::from(item.quantity))
            .and_then(|line| sum.checked_add(line))
    })
}

/// `order.placed`: a customer placed an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub customer_id: String,
    #[schemars(length(min = 1))]
    pub items: Vec<LineItem>,
    #[schemars(range(min = 0))]
    pub total_cents: i64,
    #[schemars(regex(pattern = CURRENCY))]
    pub currency: String,
    pub shipping_address: Address,
}

impl Validate for OrderPlaced {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.non_empty("customer_id", &self.customer_id);
        check_items(&self.items, &mut p);
        p.non_negative("total_cents", self.total_cents);
        p.check(items_total(&self.items) == Some(self.total_cents), || {
            "total_cents must equal the sum of quantity * unit_price_cents".to_owned()
        });
        p.currency("currency", &self.currency);
        self.shipping_address.check("shipping_address", &mut p);
        p.into_result()
    }
}

/// `payment.captured`: billing charged the order's total.
///
/// `shipping_address` is an addition to the contract's field list (tolerant readers ignore it):
/// shipping binds only `payment.captured`, so billing carries the address forward from
/// `order.placed` (event-carried state transfer) instead of shipping calling orders over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCaptured {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub payment_id: String,
    #[schemars(range(min = 0))]
    pub amount_cents: i64,
    #[schemars(regex(pattern = CURRENCY))]
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
}

impl Validate for PaymentCaptured {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.non_empty("payment_id", &self.payment_id);
        p.non_negative("amount_cents", self.amount_cents);
        p.currency("currency", &self.currency);
        if let Some(address) = &self.shipping_address {
            address.check("shipping_address", &mut p);
        }
        p.into_result()
    }
}

/// `payment.declined`: billing refused to charge the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentDeclined {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
    #[schemars(range(min = 0))]
    pub amount_cents: i64,
    #[schemars(regex(pattern = CURRENCY))]
    pub currency: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub reason: String,
}

impl Validate for PaymentDeclined {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.non_negative("amount_cents", self.amount_cents);
        p.currency("currency", &self.currency);
        p.non_empty("reason", &self.reason);
        p.into_result()
    }
}

/// `payment.refunded`: billing gave a captured payment back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRefunded {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub payment_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub refund_id: String,
    #[schemars(range(min = 0))]
    pub amount_cents: i64,
    #[schemars(regex(pattern = CURRENCY))]
    pub currency: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub reason: String,
}

impl Validate for PaymentRefunded {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.non_empty("payment_id", &self.payment_id);
        p.non_empty("refund_id", &self.refund_id);
        p.non_negative("amount_cents", self.amount_cents);
        p.currency("currency", &self.currency);
        p.non_empty("reason", &self.reason);
        p.into_result()
    }
}

/// `shipment.dispatched`: shipping handed the order to a carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentDispatched {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub shipment_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub carrier: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub tracking_number: String,
}

impl Validate for ShipmentDispatched {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.non_empty("shipment_id", &self.shipment_id);
        p.non_empty("carrier", &self.carrier);
        p.non_empty("tracking_number", &self.tracking_number);
        p.into_result()
    }
}

/// `shipment.failed`: shipping cannot ship the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentFailed {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub reason: String,
}

impl Validate for ShipmentFailed {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.non_empty("reason", &self.reason);
        p.into_result()
    }
}

/// `order.completed`: the order reached `completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCompleted {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
}

impl Validate for OrderCompleted {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.into_result()
    }
}

/// `order.cancelled`: the order reached `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    #[schemars(regex(pattern = NON_BLANK))]
    pub order_id: String,
    #[schemars(regex(pattern = NON_BLANK))]
    pub reason: String,
}

impl Validate for OrderCancelled {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.non_empty("order_id", &self.order_id);
        p.non_empty("reason", &self.reason);
        p.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(quantity: u32, unit_price_cents: i64) -> LineItem {
        LineItem {
            sku: "SKU-1".into(),
            quantity,
            unit_price_cents,
        }
    }

    #[test]
    fn the_total_is_the_sum_of_the_lines_and_overflow_is_caught() {
        assert_eq!(items_total(&[item(2, 150), item(1, 100)]), Some(400));
        assert_eq!(items_total(&[item(2, i64::MAX)]), None);
    }

    #[test]
    fn a_currency_must_be_three_capital_letters() {
        let mut p = Problems::default();
        p.currency("currency", "EUR");
        p.currency("currency", "eur");
        p.currency("currency", "EURO");
        assert_eq!(p.into_result().unwrap_err().len(), 2);
    }

    #[test]
    fn an_item_quantity_outside_one_to_a_thousand_is_a_problem() {
        let mut p = Problems::default();
        check_items(&[item(0, 1), item(1000, 1), item(1001, 1)], &mut p);
        assert_eq!(p.into_result().unwrap_err().len(), 2);
    }
}
