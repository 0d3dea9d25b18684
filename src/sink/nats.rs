//! Outgoing events on NATS JetStream: each event published as JSON on the subject named by its
//! type (as Keptn does), with `Nats-Msg-Id` set to its id so the stream drops a repeated
//! delivery within its duplicate window.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::OnceCell;

use super::DeliveryError;
use crate::event::CloudEvent;

pub struct NatsSink {
    url: String,
    timeout: Duration,
    client: OnceCell<async_nats::Client>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Connects at the first delivery.
    pub fn new(url: &str, timeout: Duration) -> NatsSink {
        NatsSink {
            url: url.to_string(),
            timeout,
            client: OnceCell::new(),
        }
    }

    pub fn destination(&self) -> String {
        crate::source::git::redact(&self.url)
    }

    /// One attempt: published once the stream confirmed it stored the event.
    pub async fn deliver(&self, event: &CloudEvent) -> Result<(), DeliveryError> {
        let transient = |message: String| DeliveryError::Transient {
            message,
            retry_after: None,
        };
        let attempt = async {
            let client = self
                .client
                .get_or_try_init(|| async {
                    async_nats::ConnectOptions::new()
                        .name("job-executor")
                        .connect(self.url.as_str())
                        .await
                })
                .await
                .map_err(|e| transient(format!("cannot connect to {}: {e}", self.destination())))?;
            let payload =
                serde_json::to_vec(event.as_value()).map_err(|e| DeliveryError::Refused {
                    message: format!("cannot encode the event: {e}"),
                })?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id());
            headers.insert("Content-Type", "application/cloudevents+json");
            let context = jetstream::new(client.clone());
            let subject = event.event_type().to_string();
            context
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(|e| transient(format!("cannot publish on {subject}: {e}")))?
                .await
                .map_err(|e| {
                    transient(format!(
                        "no JetStream stream confirmed the event on {subject}: {e}"
                    ))
                })?;
            Ok(())
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(transient(format!(
                "NATS did not confirm the event within {:?}",
                self.timeout
            ))),
        }
    }
}
