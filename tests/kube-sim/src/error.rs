//! API errors rendered as `metav1.Status` objects with the real reasons and codes.

use serde_json::{Value, json};

/// An API error: HTTP code, `metav1.StatusReason`, message and optional details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for the `Retry-After` header (429/503).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `resource.group` as the API server prints it in messages (`jobs.batch`, `configmaps`).
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, plural: &str, name: &str) -> Value {
    let mut d = json!({ "kind": plural });
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(details(group, plural, name))
    }

    /// The 404 for a path the server does not serve at all.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(details(group, plural, name))
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        )
        .with_details(details(group, plural, name))
    }

    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with one field cause.
    pub fn invalid(group: &str, kind: &str, name: &str, field: &str, why: &str) -> Self {
        let mut d = json!({
            "name": name,
            "kind": kind,
            "causes": [{ "reason": "FieldValueInvalid", "message": why, "field": field }],
        });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        let q = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self::new(
            422,
            "Invalid",
            format!("{q} \"{name}\" is invalid: {field}: {why}"),
        )
        .with_details(d)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {ct:?}"
            ),
        )
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// The error an injected fault answers with, shaped as the real server's for that code.
    pub fn for_code(code: u16, retry_after: Option<u64>) -> Self {
        let (reason, message) = match code {
            400 => ("BadRequest", "injected fault: bad request".to_string()),
            401 => ("Unauthorized", "Unauthorized".to_string()),
            403 => ("Forbidden", "injected fault: forbidden".to_string()),
            404 => (
                "NotFound",
                "the server could not find the requested resource".to_string(),
            ),
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: injected conflict".to_string(),
            ),
            410 => ("Expired", "injected fault: expired".to_string()),
            422 => ("Invalid", "injected fault: invalid".to_string()),
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later.".to_string(),
            ),
            500 => (
                "InternalError",
                "Internal error occurred: injected fault".to_string(),
            ),
            503 => (
                "ServiceUnavailable",
                "The server is currently unable to handle the request (injected fault)".to_string(),
            ),
            504 => ("Timeout", "injected fault: timeout".to_string()),
            _ => ("", format!("injected fault {code}")),
        };
        let mut e = Self::new(code, reason, message);
        e.retry_after = retry_after;
        let mut d = json!({});
        if let Some(s) = retry_after {
            d["retryAfterSeconds"] = json!(s);
        }
        e.with_details(d)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        // A storage error the real server passes on as it is has no reason.
        if self.reason.is_empty()
            && let Some(m) = s.as_object_mut()
        {
            m.remove("reason");
        }
        s
    }
}

/// A `Status` with `status: Success` (answer to a delete that removed the object).
pub fn success_status(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    let mut d = details(group, plural, name);
    d["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_real_server() {
        assert_eq!(
            ApiError::not_found("batch", "jobs", "x").message,
            "jobs.batch \"x\" not found"
        );
        assert_eq!(
            ApiError::not_found("", "configmaps", "x").message,
            "configmaps \"x\" not found"
        );
        assert_eq!(
            ApiError::invalid("", "ConfigMap", "x", "metadata.name", "bad").message,
            "ConfigMap \"x\" is invalid: metadata.name: bad"
        );
        assert_eq!(
            ApiError::invalid("batch", "Job", "x", "spec", "bad").message,
            "Job.batch \"x\" is invalid: spec: bad"
        );
    }
}
