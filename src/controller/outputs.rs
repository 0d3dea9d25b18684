//! A task's outputs: the `name=value` lines it writes to its termination message
//! (`/dev/termination-log`), read against the names it declares.

use std::collections::BTreeMap;

pub use crate::config::TERMINATION_MESSAGE_BYTES;

/// Why a task's outputs cannot be read; the task fails with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error(
        "its termination message is {0} bytes, as much as Kubernetes keeps ({TERMINATION_MESSAGE_BYTES}): \
         its outputs may have been cut; keep them shorter"
    )]
    TooLong(usize),
    #[error("line {line} of its termination message is not `name=value`: {text:?}")]
    NotAnOutput { line: usize, text: String },
    #[error("it wrote the output \"{name}\", which it does not declare (its outputs: {declared})")]
    Undeclared { name: String, declared: String },
    #[error("it wrote the output \"{0}\" twice")]
    Twice(String),
    #[error("it did not write its output \"{0}\" to /dev/termination-log")]
    Missing(String),
}

/// The outputs in a task's termination message: one `name=value` line for each name it
/// declares (blank lines are ignored; the value is everything after the first `=`). A task that
/// declares none has none, whatever its message says.
pub fn parse_outputs(
    message: &str,
    declared: &[String],
) -> Result<BTreeMap<String, String>, OutputError> {
    let mut outputs = BTreeMap::new();
    if declared.is_empty() {
        return Ok(outputs);
    }
    if message.len() >= TERMINATION_MESSAGE_BYTES {
        return Err(OutputError::TooLong(message.len()));
    }
    for (number, line) in message.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        // A name is letters, digits, '_' and '-' (as a config declares them): a line whose
        // text before `=` is not one (`version = 1`, JSON) is not an output line at all.
        let output = line.split_once('=').filter(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        let Some((name, value)) = output else {
            return Err(OutputError::NotAnOutput {
                line: number + 1,
                text: line.to_string(),
            });
        };
        if !declared.iter().any(|d| d == name) {
            return Err(OutputError::Undeclared {
                name: name.to_string(),
                declared: declared.join(", "),
            });
        }
        if outputs
            .insert(name.to_string(), value.to_string())
            .is_some()
        {
            return Err(OutputError::Twice(name.to_string()));
        }
    }
    match declared.iter().find(|d| !outputs.contains_key(*d)) {
        Some(missing) => Err(OutputError::Missing(missing.clone())),
        None => Ok(outputs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(names: &[&str]) -> Vec<String> {
        names.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_declared_output_is_a_line() {
        let outputs = parse_outputs(
            "version=1.2.3\r\n\nurl=http://x/?a=b\n",
            &declared(&["url", "version"]),
        )
        .unwrap();
        assert_eq!(
            outputs.into_iter().collect::<Vec<_>>(),
            [
                ("url".to_string(), "http://x/?a=b".to_string()),
                ("version".to_string(), "1.2.3".to_string())
            ]
        );
        assert_eq!(
            parse_outputs("empty=", &declared(&["empty"])).unwrap()["empty"],
            ""
        );
    }

    #[test]
    fn a_task_without_outputs_ignores_its_message() {
        assert_eq!(parse_outputs("anything at all", &[]), Ok(BTreeMap::new()));
    }

    #[test]
    fn what_does_not_fit_is_refused_saying_why() {
        let version = declared(&["version"]);
        assert_eq!(
            parse_outputs("version=1\nnonsense", &version),
            Err(OutputError::NotAnOutput {
                line: 2,
                text: "nonsense".into()
            })
        );
        assert_eq!(
            parse_outputs("version=1\nother=2", &declared(&["version", "url"]))
                .unwrap_err()
                .to_string(),
            "it wrote the output \"other\", which it does not declare (its outputs: version, url)"
        );
        // Not `name=value` lines, though they hold a `=`: spaces around it, JSON.
        for text in ["version = 1", "{\"version\":\"a=b\"}", "=1"] {
            assert_eq!(
                parse_outputs(text, &version),
                Err(OutputError::NotAnOutput {
                    line: 1,
                    text: text.into()
                })
            );
        }
        assert_eq!(
            parse_outputs("version=1\nversion=2", &version),
            Err(OutputError::Twice("version".into()))
        );
        assert_eq!(
            parse_outputs("", &version).unwrap_err().to_string(),
            "it did not write its output \"version\" to /dev/termination-log"
        );
        let long = format!("version={}", "x".repeat(TERMINATION_MESSAGE_BYTES - 8));
        assert_eq!(long.len(), TERMINATION_MESSAGE_BYTES);
        assert_eq!(
            parse_outputs(&long, &version).unwrap_err().to_string(),
            "its termination message is 4096 bytes, as much as Kubernetes keeps (4096): its \
             outputs may have been cut; keep them shorter"
        );
        assert!(parse_outputs(&long[1..], &declared(&["ersion"])).is_ok());
    }
}
