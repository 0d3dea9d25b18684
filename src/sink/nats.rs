//! Outgoing events on NATS JetStream: each event published as JSON on the subject named by its
//! type (as Keptn does), with `Nats-Msg-Id` set to its id so the stream drops a repeated
//! delivery within its duplicate window.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::OnceCell;

use super::DeliveryError;
use crate::event::CloudEvent;

/// A NATS server's URL as the client is given it, and the credentials it held apart: the
/// client reads credentials only from its options, never from the URL (it would connect
/// without them, and a server that requires them refuses it).
#[derive(Clone, PartialEq, Eq)]
pub struct NatsAddress {
    /// The URL without its credentials: what the client connects to, and what messages show.
    pub url: String,
    auth: Option<NatsAuth>,
}

#[derive(Clone, PartialEq, Eq)]
enum NatsAuth {
    /// `nats://user:password@host`.
    UserAndPassword { user: String, password: String },
    /// `nats://token@host`, as NATS's own clients read a URL with a user but no password.
    Token(String),
}

impl NatsAddress {
    /// Reads the credentials out of `url`, percent-decoded (a password with `@`, `:` or `/`
    /// is written `%40`, `%3A`, `%2F`).
    pub fn parse(url: &str) -> NatsAddress {
        let Some((scheme, credentials, rest)) = crate::source::git::split_credentials(url) else {
            return NatsAddress {
                url: url.to_string(),
                auth: None,
            };
        };
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = match credentials.split_once(':') {
            Some((user, password)) => NatsAuth::UserAndPassword {
                user: decode(user),
                password: decode(password),
            },
            None => NatsAuth::Token(decode(credentials)),
        };
        NatsAddress {
            url: format!("{scheme}://{rest}"),
            auth: Some(auth),
        }
    }

    /// The client's options: its name, and the credentials.
    pub fn options(&self) -> async_nats::ConnectOptions {
        let options = async_nats::ConnectOptions::new().name("job-executor");
        match &self.auth {
            None => options,
            Some(NatsAuth::UserAndPassword { user, password }) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Some(NatsAuth::Token(token)) => options.token(token.clone()),
        }
    }

    /// The servers as messages and logs show them, credentials masked: of a comma-separated
    /// list (which the start refuses, showing it), each server's, the later ones' still being
    /// in `url`.
    pub fn shown(&self) -> String {
        self.url
            .split(',')
            .map(crate::source::git::mask_credentials)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn connect(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        self.options().connect(self.url.as_str()).await
    }
}

impl std::fmt::Debug for NatsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            None => "none",
            Some(NatsAuth::UserAndPassword { .. }) => "user and password",
            Some(NatsAuth::Token(_)) => "token",
        };
        f.debug_struct("NatsAddress")
            .field("url", &self.shown())
            .field("auth", &auth)
            .finish()
    }
}

pub struct NatsSink {
    address: NatsAddress,
    timeout: Duration,
    client: OnceCell<async_nats::Client>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Connects at the first delivery.
    pub fn new(url: &str, timeout: Duration) -> NatsSink {
        NatsSink {
            address: NatsAddress::parse(url),
            timeout,
            client: OnceCell::new(),
        }
    }

    pub fn destination(&self) -> String {
        self.address.shown()
    }

    /// One attempt: published once the stream confirmed it stored the event.
    pub async fn deliver(&self, event: &CloudEvent) -> Result<(), DeliveryError> {
        let transient = |message: String| DeliveryError::Transient {
            message,
            retry_after: None,
        };
        let subject = event.event_type();
        // Sending it again will not make the type a subject.
        if let Err(why) = check_subject(subject, Wildcards::Refused) {
            return Err(DeliveryError::Refused {
                message: format!("the event's type {subject:?} cannot be a NATS subject: {why}"),
            });
        }
        let attempt = async {
            let client = self
                .client
                .get_or_try_init(|| self.address.connect())
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
            let subject = subject.to_string();
            context
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(|e| match e.kind() {
                    // The server's limit, told at connect: sending it again will not fit it.
                    jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                        DeliveryError::Refused {
                            message: format!("the event is larger than NATS takes: {e}"),
                        }
                    }
                    _ => transient(format!("cannot publish on {subject}: {e}")),
                })?
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

/// What a subject may hold besides plain tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wildcards {
    /// A subject an event is published on: no wildcard.
    Refused,
    /// A subject a stream or consumer filters on: `*` for one token, `>` for the rest.
    Allowed,
}

/// Whether `subject` is a NATS subject: tokens separated by dots, none of them empty, no white
/// space or control character; a wildcard, where allowed, a token of its own and `>` last. One
/// published on is none of NATS' own.
pub fn check_subject(subject: &str, wildcards: Wildcards) -> Result<(), &'static str> {
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it holds white space or a control character");
    }
    // An event published there would be a request to the server (`$JS.API.…`, `$SYS.…`) or a
    // reply to someone's request.
    if wildcards == Wildcards::Refused
        && (subject.starts_with('$') || subject.starts_with("_INBOX."))
    {
        return Err("it is one of NATS' own (`$…` for the server's APIs, `_INBOX.…` for replies)");
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        match token {
            "" => return Err("it has an empty token (a leading, trailing or double dot)"),
            "*" | ">" if wildcards == Wildcards::Refused => {
                return Err("it has a wildcard token (`*` or `>`)");
            }
            ">" if tokens.peek().is_some() => {
                return Err("`>` stands for the rest: it comes last");
            }
            "*" | ">" => {}
            _ if wildcards == Wildcards::Allowed && token.contains(['*', '>']) => {
                return Err("a wildcard (`*` or `>`) is a token of its own");
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_given_to_the_client_apart() {
        let address = NatsAddress::parse("nats://alice:p%40ss%3Aw%2Frd@nats.example:4222");
        assert_eq!(address.url, "nats://nats.example:4222");
        assert!(
            address.auth
                == Some(NatsAuth::UserAndPassword {
                    user: "alice".into(),
                    password: "p@ss:w/rd".into()
                })
        );
        // A list of servers: the later ones' credentials stay for the client, never shown.
        let address = NatsAddress::parse("nats://u:pw1@a:4222,nats://u:pw2@b:4222");
        assert_eq!(address.shown(), "nats://a:4222,nats://****@b:4222");
        let address = NatsAddress::parse("tls://s3cr%2Ft@nats.example");
        assert_eq!(address.url, "tls://nats.example");
        assert!(address.auth == Some(NatsAuth::Token("s3cr/t".into())));
        // An empty password is a password.
        let address = NatsAddress::parse("nats://bob:@nats.example");
        assert!(
            address.auth
                == Some(NatsAuth::UserAndPassword {
                    user: "bob".into(),
                    password: String::new()
                })
        );
        let address = NatsAddress::parse("nats://nats.example:4222");
        assert_eq!(address.url, "nats://nats.example:4222");
        assert!(address.auth.is_none());
        // What a listing of settings or a message shows.
        let shown = format!(
            "{:?}",
            NatsAddress::parse("nats://alice:s3cret@nats.example")
        );
        assert!(
            !shown.contains("s3cret") && shown.contains("user and password"),
            "{shown}"
        );
    }

    #[test]
    fn types_that_are_no_subject_are_refused_before_connecting() {
        for (subject, publishable) in [
            ("sh.keptn.event.test.finished", true),
            ("sh.keptn.event.load-test_1.finished", true),
            ("sh.keptn.event.my test.finished", false),
            ("sh.keptn.event.test.finished\n", false),
            ("sh.keptn..test.finished", false),
            (".sh.keptn.event.test.finished", false),
            ("sh.keptn.event.*.finished", false),
            ("sh.keptn.event.>", false),
            ("", false),
            ("$JS.API.STREAM.DELETE.keptn", false),
            ("$SYS.REQ.SERVER.PING", false),
            ("_INBOX.abc", false),
            ("sh.keptn.$event.finished", true),
        ] {
            assert_eq!(
                check_subject(subject, Wildcards::Refused).is_ok(),
                publishable,
                "{subject:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_event_whose_type_is_no_subject_is_refused_not_retried() {
        let event = crate::event::CloudEvent::from_value(serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "test",
            "type": "sh.keptn.event.my test.finished",
        }))
        .unwrap();
        // Nothing listens there: a delivery that tried would fail to connect (transient).
        let sink = NatsSink::new("nats://127.0.0.1:1", Duration::from_secs(2));
        match sink.deliver(&event).await {
            Err(DeliveryError::Refused { message }) => assert_eq!(
                message,
                "the event's type \"sh.keptn.event.my test.finished\" cannot be a NATS subject: \
                 it holds white space or a control character"
            ),
            other => panic!("{other:?}"),
        }
    }
}
