//! The client's side of an order: post it (round-robin over the orders replicas), remember
//! when it was meant to be sent, then see it end at the probe and turn that into latencies and
//! errors. Shared by the closed loop, the open loop and the one-at-a-time measurement.

use crate::probe::Probe;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use choreo_e2e::order_request;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How many times one order is sent again after the service shed it: enough to ride out an
/// overload that admission control holds off for a while (a wait of `Retry-After` each time).
const SHED_RETRIES: usize = 30;
/// The longest `Retry-After` honoured.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Posts orders, each to the next orders replica.
#[derive(Debug)]
pub struct Poster {
    http: reqwest::Client,
    urls: Vec<String>,
    /// A happy-path order (1 x 12.00 EUR to Germany): it completes, through all three hops.
    body: serde_json::Value,
    next: AtomicUsize,
    /// Requests the service shed (503, "overloaded, retry later") since the last
    /// [`Poster::take_shed`].
    shed: AtomicUsize,
    progress: Arc<Progress>,
}

impl Poster {
    pub fn new(http: reqwest::Client, urls: Vec<String>, progress: Arc<Progress>) -> Poster {
        Poster {
            http,
            urls,
            body: order_request(1200, 1, "DE"),
            next: AtomicUsize::new(0),
            shed: AtomicUsize::new(0),
            progress,
        }
    }

    /// How many requests the service shed since the last call.
    pub fn take_shed(&self) -> usize {
        self.shed.swap(0, Ordering::Relaxed)
    }

    /// Places one order; its id on 201, an error otherwise. Shed by an overloaded service (503,
    /// `overloaded, retry later`, refused before it ran), the order is sent again after the
    /// answer's `Retry-After`, as a well-behaved client would, up to [`SHED_RETRIES`] times; the
    /// wait counts in its latency, which runs from its intended send time.
    pub async fn post(&self) -> Result<String> {
        self.post_accepted().await.map(|(id, _)| id)
    }

    /// [`Poster::post`], with the instant the request that was accepted left: the latency of
    /// an accepted order, without the waits of the tries that were shed.
    pub async fn post_accepted(&self) -> Result<(String, Instant)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let url = &self.urls[n % self.urls.len()];
        self.progress.sent();
        let mut tries = 0;
        let (response, sent_at) = loop {
            let sent_at = Instant::now();
            let response = self
                .http
                .post(url)
                .json(&self.body)
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = response.status();
            if status == reqwest::StatusCode::CREATED {
                break (response, sent_at);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response.text().await.unwrap_or_default();
            let shed = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                && serde_json::from_str::<serde_json::Value>(&text)
                    .is_ok_and(|body| body["error"] == choreo_host::http::OVERLOADED);
            match retry_after {
                Some(wait) if shed && tries < SHED_RETRIES => {
                    tries += 1;
                    self.shed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait.min(LONGEST_RETRY_AFTER)).await;
                }
                _ => bail!("POST {url} answered {status}: {text}"),
            }
        };
        let order: serde_json::Value = response.json().await.context("the order's JSON")?;
        order["id"]
            .as_str()
            .map(|id| (id.to_owned(), sent_at))
            .context("the answer to POST /orders has no id")
    }
}

/// The orders of a phase as sent: each with the instant it was meant to leave.
#[derive(Debug, Default)]
pub struct Sent {
    pub ids: Vec<String>,
    pub intended: Vec<Instant>,
    /// Posts that failed, with the first failure.
    pub failed: usize,
    pub first_failure: Option<String>,
}

impl Sent {
    pub fn record(&mut self, intended: Instant, posted: Result<String>) {
        match posted {
            Ok(id) => {
                self.ids.push(id);
                self.intended.push(intended);
            }
            Err(error) => {
                self.failed += 1;
                self.first_failure
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
}

/// How a phase's orders ended, as the probe saw it.
#[derive(Debug)]
pub struct Settled {
    /// Terminal-event arrival minus intended send, per completed order.
    pub latencies: Vec<Duration>,
    /// The last terminal event of the phase, completed or cancelled (the first intended send if
    /// none arrived).
    pub last_arrival: Instant,
    /// Every order-level problem: failed posts, orders without a terminal event by the
    /// deadline, cancelled orders.
    pub errors: Vec<String>,
}

/// Waits until `until` for every sent order's terminal event; an order still without one is
/// reported as not done within `deadline` (the time it was given).
pub async fn settle(
    probe: &Probe,
    sent: &Sent,
    phase: &str,
    until: Instant,
    deadline: Duration,
) -> Result<Settled> {
    let arrivals = probe.wait_all(&sent.ids, until).await?;
    let first = sent
        .intended
        .iter()
        .min()
        .copied()
        .unwrap_or_else(Instant::now);
    let mut settled = Settled {
        latencies: Vec::with_capacity(arrivals.len()),
        last_arrival: first,
        errors: Vec::new(),
    };
    let (mut missing, mut cancelled) = (Vec::new(), Vec::new());
    for ((id, intended), arrival) in sent.ids.iter().zip(&sent.intended).zip(arrivals) {
        match arrival {
            None => missing.push(id.as_str()),
            Some(arrival) => {
                settled.last_arrival = settled.last_arrival.max(arrival.at);
                if arrival.completed {
                    let latency = arrival.at.saturating_duration_since(*intended);
                    settled.latencies.push(latency);
                } else {
                    cancelled.push(id.as_str());
                }
            }
        }
    }
    if sent.failed > 0 {
        settled.errors.push(format!(
            "{phase}: {} of {} orders were not accepted; the first: {}",
            sent.failed,
            sent.failed + sent.ids.len(),
            sent.first_failure.as_deref().unwrap_or("?")
        ));
    }
    if !missing.is_empty() {
        settled.errors.push(format!(
            "{phase}: {} of {} accepted orders reached no terminal event within {} s (e.g. {})",
            missing.len(),
            sent.ids.len(),
            deadline.as_secs(),
            examples(&missing)
        ));
    }
    if !cancelled.is_empty() {
        settled.errors.push(format!(
            "{phase}: {} orders were cancelled, though every order placed should complete (e.g. {})",
            cancelled.len(),
            examples(&cancelled)
        ));
    }
    Ok(settled)
}

fn examples(ids: &[&str]) -> String {
    ids.iter().take(3).copied().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers each connection's requests with the next of `answers` (status line, headers and
    /// JSON body), one per request, closing after each.
    async fn server(answers: Vec<&'static str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/orders", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let (head, body) = answer.split_once("\n\n").unwrap();
                let reply = format!(
                    "{head}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        url
    }

    const SHED: &str = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\n\n{\"error\":\"overloaded, retry later\",\"details\":[\"too many requests in progress\"]}";
    const TIMED_OUT: &str = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\n\n{\"error\":\"timed out, retry later\",\"details\":[]}";
    const CREATED: &str = "HTTP/1.1 201 Created\n\n{\"id\":\"order-1\"}";

    fn poster_to(url: String) -> Poster {
        Poster::new(reqwest::Client::new(), vec![url], Progress::start())
    }

    #[tokio::test]
    async fn a_shed_order_is_sent_again_after_retry_after_and_counted() {
        let poster = poster_to(server(vec![SHED, SHED, CREATED]).await);
        assert_eq!(poster.post().await.expect("accepted"), "order-1");
        assert_eq!(poster.take_shed(), 2);
        assert_eq!(poster.take_shed(), 0);
    }

    #[tokio::test]
    async fn any_other_refusal_and_a_shed_past_the_retries_are_errors() {
        let poster = poster_to(server(vec![TIMED_OUT]).await);
        let error = poster.post().await.unwrap_err();
        assert!(format!("{error:#}").contains("timed out"), "{error:#}");

        let poster = poster_to(server(vec![SHED; SHED_RETRIES + 1]).await);
        let error = poster.post().await.unwrap_err();
        assert!(format!("{error:#}").contains("overloaded"), "{error:#}");
        assert_eq!(poster.take_shed(), SHED_RETRIES);
    }
}
