//! Traces of the saga, by OpenTelemetry: one trace per order, across the services.
//!
//! A *unit of work* that may create events (an HTTP request, a handled message) gets a span: a
//! SERVER span for a request, parented to its `traceparent` header, or a CONSUMER `process`
//! span for a message, parented to the context in its envelope's `traceparent`. Each event it
//! creates gets a PRODUCER `publish` span, its child, and the event's envelope carries *that*
//! span's trace id and span id, so the spans of whoever handles the event parent to it.
//!
//! The envelope is written to the outbox inside a transaction that may roll back (and, in a
//! consumer's batch, run again), so a producer span is not started when its envelope is
//! stamped: the unit keeps its span id and start time, and records the span only once the unit
//! of work committed ([`Unit::end`] with [`Outcome::Handled`]). A rolled-back envelope never
//! shows up as a span.
//!
//! Off (no `CHOREO_OTLP_ENDPOINT`), [`Traces`] holds nothing, a [`Unit`] is `None` and stamping
//! leaves an envelope as [`Envelope::root`] / [`Envelope::caused_by`] made it: no span, no
//! allocation, no lock. The one thing done when off is reading a request's `traceparent` header,
//! so that events still carry the caller's trace id.
//!
//! Each service has its own tracer (and provider: `choreo-host` builds it), passed here
//! explicitly; nothing is global, so three services in one process keep their own
//! `service.name`. Attributes follow OpenTelemetry's messaging semantic conventions.

use crate::Outcome;
use crate::origin::Origin;
use choreo_events::Envelope;
use lapin::message::Delivery;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A service's tracer, or nothing when traces are off. Cheap to clone.
#[derive(Clone, Default)]
pub struct Traces(Option<Arc<Tracing>>);

struct Tracing {
    tracer: BoxedTracer,
    /// The exchange the service publishes to, as named on the broker (with the prefix).
    exchange: String,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Traces(off)"),
            Some(on) => write!(f, "Traces(on, publishing to {})", on.exchange),
        }
    }
}

impl Traces {
    /// Traces off: every unit is a no-op.
    pub fn off() -> Self {
        Traces(None)
    }

    /// Traces on: spans of units of work go to `tracer`; events are published to `exchange`.
    pub fn new(tracer: BoxedTracer, exchange: String) -> Self {
        Traces(Some(Arc::new(Tracing { tracer, exchange })))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The SERVER span of an HTTP request that may create events (`method` and `route`, as in
    /// `POST /orders`), parented to the request's W3C `traceparent` header when it is well
    /// formed, else a new trace. Off, the unit only remembers the header's trace id.
    pub fn request(&self, method: &str, route: &str, traceparent: Option<&str>) -> Unit {
        let parent = traceparent.and_then(parse_traceparent);
        let Some(on) = &self.0 else {
            return Unit(parent.map(|parent| Arc::new(Active::Parented(parent))));
        };
        let parent_cx = parent.map_or_else(Context::new, |sc| {
            Context::new().with_remote_span_context(sc)
        });
        let builder = SpanBuilder::from_name(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("http.route", route.to_owned()),
            ]);
        Unit::started(on, builder, &parent_cx)
    }

    /// The CONSUMER `process` span of a delivered message, parented to its envelope's
    /// `traceparent` (a new trace when it has none).
    pub(crate) fn process(
        &self,
        delivery: &Delivery,
        origin: &Origin,
        envelope: &Envelope,
    ) -> Unit {
        let Some(on) = &self.0 else {
            return Unit(None);
        };
        let parent_cx = envelope
            .traceparent
            .as_deref()
            .and_then(parse_traceparent)
            .map_or_else(Context::new, |sc| {
                Context::new().with_remote_span_context(sc)
            });
        let builder = SpanBuilder::from_name(format!("process {}", envelope.event_type))
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                // Where it was first published, also for a message back from a delay queue or the DLQ.
                KeyValue::new("messaging.destination.name", origin.exchange.clone()),
                KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    origin.routing_key.clone(),
                ),
                KeyValue::new(
                    "messaging.rabbitmq.message.delivery_tag",
                    delivery.delivery_tag as i64,
                ),
                KeyValue::new("messaging.message.id", envelope.id.clone()),
                KeyValue::new(
                    "messaging.message.conversation_id",
                    envelope.correlationid.clone(),
                ),
                KeyValue::new("cloudevents.event_source", envelope.source.clone()),
            ]);
        Unit::started(on, builder, &parent_cx)
    }
}

/// The trace of one unit of work: its span, and the events it created. `None` when traces are
/// off and there is no parent to follow. Clones share the unit.
#[derive(Debug, Clone, Default)]
pub struct Unit(Option<Arc<Active>>);

#[derive(Debug)]
enum Active {
    /// Traces are off, but the request named a trace: its events join it.
    Parented(SpanContext),
    /// Traces are on: the unit's span, and the events stamped since the last [`Unit::attempt`].
    Recording {
        tracing: Arc<Tracing>,
        cx: Context,
        produced: Mutex<Vec<Produced>>,
    },
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

/// An event stamped by a unit of work: its PRODUCER span, to be recorded if the unit commits.
#[derive(Debug)]
struct Produced {
    span_id: SpanId,
    event_id: String,
    event_type: String,
    correlation_id: String,
    at: SystemTime,
}

impl Unit {
    /// No trace at all.
    pub fn none() -> Self {
        Unit(None)
    }

    fn started(on: &Arc<Tracing>, builder: SpanBuilder, parent_cx: &Context) -> Unit {
        let span = on.tracer.build_with_context(builder, parent_cx);
        Unit(Some(Arc::new(Active::Recording {
            tracing: on.clone(),
            cx: Context::new().with_span(span),
            produced: Mutex::new(Vec::new()),
        })))
    }

    /// Sets `envelope.traceparent` to the PRODUCER span of the event inside it (a child of
    /// this unit's span), which is recorded if the unit commits. Off and without a parent, the
    /// envelope is left as it was made.
    pub fn stamp(&self, mut envelope: Envelope) -> Envelope {
        let Some(active) = &self.0 else {
            return envelope;
        };
        let span_id = new_span_id();
        let parent = match &**active {
            Active::Parented(parent) => parent.clone(),
            Active::Recording { cx, produced, .. } => {
                let parent = cx.span().span_context().clone();
                if parent.is_sampled() {
                    lock(produced).push(Produced {
                        span_id,
                        event_id: envelope.id.clone(),
                        event_type: envelope.event_type.clone(),
                        correlation_id: envelope.correlationid.clone(),
                        at: SystemTime::now(),
                    });
                }
                parent
            }
        };
        envelope.traceparent = Some(format_traceparent(
            parent.trace_id(),
            span_id,
            parent.trace_flags(),
        ));
        envelope
    }

    /// The trace id and span id for this unit's log lines (lowercase hex): its span's while
    /// traces are on; only the trace id of the request's `traceparent` while they are off; none
    /// without either.
    fn log_ids(&self) -> (Option<String>, Option<String>) {
        match self.0.as_deref() {
            Some(Active::Recording { cx, .. }) => {
                let span = cx.span();
                let context = span.span_context();
                (
                    Some(context.trace_id().to_string()),
                    Some(context.span_id().to_string()),
                )
            }
            Some(Active::Parented(parent)) => (Some(parent.trace_id().to_string()), None),
            None => (None, None),
        }
    }

    /// Records this unit's trace id and span id on `span` (declared with `trace_id` and
    /// `span_id` fields), so that every log line inside it carries them; `fallback` gives the
    /// trace id when the unit has none (an envelope's `traceparent`).
    pub fn record_ids(&self, span: &tracing::Span, fallback: Option<&str>) {
        let (trace_id, span_id) = self.log_ids();
        if let Some(trace_id) = trace_id.or_else(|| fallback.and_then(trace_id_of)) {
            span.record("trace_id", trace_id);
        }
        if let Some(span_id) = span_id {
            span.record("span_id", span_id);
        }
    }

    /// The unit of work starts (again): events stamped by an earlier run, rolled back, are
    /// forgotten.
    pub fn attempt(&self) {
        if let Some(Active::Recording { produced, .. }) = self.0.as_deref() {
            lock(produced).clear();
        }
    }

    /// The HTTP status of a request's answer (an error status from 500 up).
    pub fn set_http_status(&self, status: u16) {
        if let Some(Active::Recording { cx, .. }) = self.0.as_deref() {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(format!("HTTP {status}")));
            }
        }
    }

    /// Ends the unit's span; if it committed, records the PRODUCER span of every event it
    /// stamped (from its stamping to now, the commit). A unit dropped without `end` (a request
    /// answered early, a session lost mid-batch) ends its span and records no event.
    pub fn end(&self, outcome: &Outcome) {
        let Some(Active::Recording {
            tracing,
            cx,
            produced,
        }) = self.0.as_deref()
        else {
            return;
        };
        let span = cx.span();
        let produced = std::mem::take(&mut *lock(produced));
        match outcome {
            Outcome::Handled(_) => {
                for event in produced {
                    tracing.producer(event, cx);
                }
            }
            Outcome::Duplicate => span.set_attribute(KeyValue::new("choreo.duplicate", true)),
            Outcome::Unchanged => {}
            Outcome::DeadLettered(reason) | Outcome::Retried(reason) => {
                span.set_attribute(KeyValue::new("choreo.outcome", outcome.label()));
                span.set_status(Status::error(reason.clone()));
            }
        }
        span.end();
    }
}

impl Tracing {
    /// Records the PRODUCER span of an event committed to the outbox, under `parent_cx`.
    fn producer(&self, event: Produced, parent_cx: &Context) {
        let builder = SpanBuilder::from_name(format!("publish {}", event.event_type))
            .with_kind(SpanKind::Producer)
            .with_span_id(event.span_id)
            .with_start_time(event.at)
            .with_attributes([
                KeyValue::new("messaging.system", "rabbitmq"),
                // `create`: the message is created here, in the unit of work that writes the
                // outbox; the relay sends it to the broker later, batched with others.
                KeyValue::new("messaging.operation.type", "create"),
                KeyValue::new("messaging.operation.name", "publish"),
                KeyValue::new("messaging.destination.name", self.exchange.clone()),
                KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    event.event_type,
                ),
                KeyValue::new("messaging.message.id", event.event_id),
                KeyValue::new("messaging.message.conversation_id", event.correlation_id),
            ]);
        self.tracer.build_with_context(builder, parent_cx).end();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves a plain list behind: still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A W3C `traceparent` (version 00, or a later version read as 00), as a remote span context;
/// `None` when malformed or all-zero.
/// The trace id of a well-formed `traceparent`, as lowercase hex.
fn trace_id_of(traceparent: &str) -> Option<String> {
    parse_traceparent(traceparent).map(|context| context.trace_id().to_string())
}

fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !hex(version, 2) || version == "ff" || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !hex(trace_id, 32) || !hex(span_id, 16) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

fn format_traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> String {
    format!("00-{trace_id:032x}-{span_id:016x}-{:02x}", flags.to_u8())
}

fn new_span_id() -> SpanId {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    loop {
        let id: u64 = rng.r#gen();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_events::Event;
    use choreo_events::payloads::OrderCompleted;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn envelope() -> Envelope {
        Envelope::root(
            "orders",
            &Event::OrderCompleted(OrderCompleted {
                order_id: "o-1".into(),
            }),
        )
    }

    #[test]
    fn a_well_formed_traceparent_is_read_and_anything_else_is_not() {
        let context = parse_traceparent(PARENT).expect("valid");
        assert_eq!(
            format!("{:032x}", context.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", context.span_id()), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
        // A later version may add fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    #[test]
    fn off_an_envelope_is_left_as_made() {
        let made = envelope();
        let unit = Traces::off().request("POST", "/orders", None);
        assert_eq!(unit.stamp(made.clone()), made);
        unit.end(&Outcome::Handled(Vec::new()));
    }

    #[test]
    fn off_a_requests_trace_id_still_reaches_its_events() {
        let unit = Traces::off().request("POST", "/orders", Some(PARENT));
        let stamped = unit.stamp(envelope());
        let traceparent = stamped.traceparent.expect("traceparent");
        assert!(
            traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{traceparent}"
        );
        assert!(traceparent.ends_with("-01"));
        assert!(!traceparent.contains("00f067aa0ba902b7"), "a new span id");
        assert!(parse_traceparent(&traceparent).is_some());
    }
}
