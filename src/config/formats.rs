//! Checks of the string formats the config uses: Kubernetes quantities and names, JSONPaths,
//! event globs, repository paths, label keys and values.

/// Checks `value` against a named format from the schema; the error is the user's message.
pub fn check_format(format: &str, value: &str) -> Result<(), String> {
    match format {
        "quantity" => check_quantity(value),
        "jsonpath" => config_jsonpath(value).map(drop),
        "event-glob" => check_event_glob(value),
        "dns-label" => check_dns_label(value),
        "dns-subdomain" => check_dns_subdomain(value),
        "relative-path" => check_relative_path(value),
        "job-duration" => parse_duration(value).map(drop),
        "output-name" => check_output_name(value),
        "group-template" => parse_group_template(value).map(drop),
        "notify-target" => check_notify_target(value),
        _ => Ok(()),
    }
}

/// A notification target: a key of the notifications Secret (letters, digits, `-`, `_`, `.`),
/// which is the file of its URL where the Secret is mounted.
pub fn check_notify_target(name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a notification target: the name of a key in the notifications \
             Secret (letters, digits, `-`, `_` and `.`, at most 253), e.g. \"team-carts\""
        ))
    }
}

/// The longest a concurrency group's name may be, filled in.
pub const MAX_GROUP_BYTES: usize = 256;

/// A piece of a concurrency group's template: text as written, or a JSONPath into the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPart<'a> {
    Text(&'a str),
    Path(String),
}

/// Parses a concurrency group's template: text with `{$.path}` placeholders (a JSONPath into
/// the event), `{project}`, `{stage}` and `{service}` being short for `{$.data.project}` and
/// so on. A placeholder ends at the first `}`.
pub fn parse_group_template(text: &str) -> Result<Vec<GroupPart<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let before = &rest[..open];
        if before.contains('}') {
            return Err(format!("in {text:?}, a `}}` has no `{{`"));
        }
        if !before.is_empty() {
            parts.push(GroupPart::Text(before));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("in {text:?}, a `{{` is not closed"));
        };
        let inner = after[..close].trim();
        let path = match inner {
            "project" | "stage" | "service" => format!("$.data.{inner}"),
            _ if inner.starts_with('$') => {
                parse_jsonpath(inner)?;
                inner.to_string()
            }
            _ => {
                return Err(format!(
                    "in {text:?}, unknown placeholder {{{inner}}}: use a JSONPath into the \
                     event such as {{$.data.project}}, or {{project}}, {{stage}}, {{service}}"
                ));
            }
        };
        parts.push(GroupPart::Path(path));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("in {text:?}, a `}}` has no `{{`"));
    }
    if !rest.is_empty() {
        parts.push(GroupPart::Text(rest));
    }
    Ok(parts)
}

/// The longest name of a task's output.
pub const MAX_OUTPUT_NAME: usize = 63;

/// A task output's name: a letter, then letters, digits, `_` or `-`, at most 63 in all (so a
/// `name=value` line and a `task.name` reference read one way only).
pub fn check_output_name(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && value.len() <= MAX_OUTPUT_NAME;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid output name {value:?}: a letter, then letters, digits, '_' or '-', at most \
             {MAX_OUTPUT_NAME} characters"
        ))
    }
}

/// The longest duration accepted (an action's timeout): a week.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A duration written like `90s`, `30m` or `1h30m` (or ISO 8601's `PT30M`): whole seconds, at
/// least one, at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let how = "write it like 90s, 30m or 1h30m";
    let parsed: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: {how}"))?;
    let duration = std::time::Duration::try_from(parsed)
        .map_err(|_| format!("{text:?} is negative: {how}"))?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?} is not a whole number of seconds"));
    }
    if duration.is_zero() {
        return Err(format!("{text:?} is zero: a timeout is at least 1s"));
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than a week (the longest timeout, 168h)"
        ));
    }
    Ok(duration)
}

/// A duration for people: `1h30m`, `45s`, `2m5s`.
pub fn format_duration(duration: std::time::Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    let mut text = String::new();
    for (amount, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s")] {
        if amount > 0 {
            text.push_str(&format!("{amount}{unit}"));
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

/// The longest JSONPath accepted: paths in job configs name a field or two (`$.data.x.y`),
/// and a filter's cost grows with its length on every node it is tried on.
pub const MAX_JSONPATH_BYTES: usize = 1024;

/// The most descendant segments (`..`) one JSONPath may have. Each one inside a filter
/// multiplies the cost by the event's depth: `$..[?@..[?@..x]]` takes 2 s on a 180 KB event
/// nested 120 deep, where `$..x` takes under a millisecond.
pub const MAX_DESCENDANT_SEGMENTS: usize = 1;

/// The deepest brackets and parentheses may nest in a JSONPath: its parser goes one call
/// deeper for each, and a path of 260 (530 bytes) overflowed a worker thread's stack, which
/// ends the process, on every replica that read the config. Real paths nest two or three.
pub const MAX_JSONPATH_NESTING: usize = 32;

/// How deep `(` and `[` nest in a path, outside its string literals.
fn brackets_nesting(path: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in unquoted(path).into_iter().flatten() {
        match c {
            '(' | '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Parses a JSONPath (RFC 9535), with a message for the person who wrote it. Paths whose cost
/// on a large event could be far beyond their reading's are refused (see the limits above).
pub fn parse_jsonpath(path: &str) -> Result<serde_json_path::JsonPath, String> {
    if path.len() > MAX_JSONPATH_BYTES {
        return Err(format!(
            "the JSONPath is {} bytes long, over the limit of {MAX_JSONPATH_BYTES}",
            path.len()
        ));
    }
    let nesting = brackets_nesting(path);
    if nesting > MAX_JSONPATH_NESTING {
        return Err(format!(
            "invalid JSONPath {path:?}: brackets and parentheses nested {nesting} deep, over the \
             limit of {MAX_JSONPATH_NESTING}"
        ));
    }
    let descendants = descendant_segments(path);
    if descendants > MAX_DESCENDANT_SEGMENTS {
        return Err(format!(
            "invalid JSONPath {path:?}: {descendants} descendant segments (`..`), over the \
             limit of {MAX_DESCENDANT_SEGMENTS} (each one more multiplies the cost of reading \
             a large event by its depth)"
        ));
    }
    serde_json_path::JsonPath::parse(path).map_err(|error| {
        if path.trim_start().starts_with('$') {
            // The parser's position is a byte offset; people count characters, from 1.
            let at = path
                .get(..error.position())
                .map_or(error.position(), |before| before.chars().count());
            format!(
                "invalid JSONPath {path:?}: {} at character {}",
                error.message(),
                at + 1
            )
        } else {
            format!("invalid JSONPath {path:?}: a JSONPath starts with `$`, e.g. `$.data.project`")
        }
    })
}

/// Reads a config's JSONPath as the old service's JSONPath library read it: blanks around the
/// path skipped (`" $.data.project"`), and a path without `$` (`data.project`) read from the
/// event's top (the library took such a path as a variable of the event). The path it reads
/// as: `$.data.project` for both of those.
pub fn config_jsonpath(path: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    use std::borrow::Cow;
    match parse_jsonpath(path) {
        Ok(_) => Ok(Cow::Borrowed(path)),
        // The message stays the one about the path as written.
        Err(message) => {
            let trimmed = path.trim();
            if trimmed != path && parse_jsonpath(trimmed).is_ok() {
                return Ok(Cow::Borrowed(trimmed));
            }
            match trimmed.chars().next() {
                Some(first) if first.is_alphabetic() || first == '_' => {
                    let rooted = format!("$.{trimmed}");
                    match parse_jsonpath(&rooted) {
                        Ok(_) => Ok(Cow::Owned(rooted)),
                        Err(_) => Err(message),
                    }
                }
                _ => Err(message),
            }
        }
    }
}

/// The `..` of a JSONPath outside its string literals (a member name in dot notation cannot
/// hold a dot, so every other `..` is a descendant segment).
fn descendant_segments(path: &str) -> usize {
    let chars = unquoted(path);
    let (mut count, mut at) = (0, 0);
    while at + 1 < chars.len() {
        if chars[at] == Some('.') && chars[at + 1] == Some('.') {
            count += 1;
            at += 2;
        } else {
            at += 1;
        }
    }
    count
}

/// Whether a (valid) JSONPath is a singular query (RFC 9535 2.3.5.1): names and indexes only,
/// so it selects one value at most. Any other (a wildcard, a slice, a union, a filter, `..`)
/// may select several, and reads as a list of them whatever their number, as the old service
/// read it.
pub fn selects_one_value(path: &str) -> bool {
    let chars = unquoted(path);
    let mut depth = 0usize;
    for (at, c) in chars.iter().enumerate() {
        match c {
            Some('[') => depth += 1,
            Some(']') => depth = depth.saturating_sub(1),
            Some('*' | '?') => return false,
            Some('.') if chars.get(at + 1) == Some(&Some('.')) => return false,
            Some(':' | ',') if depth > 0 => return false,
            _ => {}
        }
    }
    true
}

/// A path's characters, each `None` inside a quoted name (its quotes too): what is syntax.
fn unquoted(path: &str) -> Vec<Option<char>> {
    let (mut quote, mut escaped) = (None, false);
    path.chars()
        .map(|c| match quote {
            Some(open) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == open {
                    quote = None;
                }
                None
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                None
            }
            None => Some(c),
        })
        .collect()
}

/// An event name pattern: an anchored glob over the whole CloudEvent type.
/// The longest event name or pattern: CloudEvents types are short (Keptn's are under 60
/// bytes), and a pattern's automaton grows with its wildcards (700,000 of them could not be
/// built, and failed every event of the config).
pub const MAX_EVENT_NAME_BYTES: usize = 1024;

/// An event name, or a glob of names: at most [`MAX_EVENT_NAME_BYTES`], and one that compiles.
fn check_event_glob(value: &str) -> Result<(), String> {
    if value.len() > MAX_EVENT_NAME_BYTES {
        return Err(format!(
            "the event name pattern is {} bytes long, over the limit of {MAX_EVENT_NAME_BYTES}",
            value.len()
        ));
    }
    // As the config's matcher builds it (a `GlobSet`; `Glob::compile_matcher` would panic).
    event_glob(value)
        .and_then(|glob| globset::GlobSetBuilder::new().add(glob).build())
        .map(drop)
        .map_err(|error| format!("invalid event name pattern {value:?}: {error}"))
}

pub fn event_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
}

/// A name that looks like a regular expression, which the old service matched unanchored.
///
/// `.*` alone is not enough: `sh.keptn.event.*.triggered` is the glob users mean. It counts
/// when it cannot be a glob segment, as in `.*test` or `sh.keptn.*triggered`.
pub fn looks_like_regex(name: &str) -> bool {
    let regex_only = ["^", "$", "+", "\\.", "|", "(", ".?"];
    let odd_star = name
        .split('.')
        .any(|segment| segment.is_empty() || (segment.contains('*') && segment.len() > 1));
    regex_only.iter().any(|marker| name.contains(marker)) || (name.contains(".*") && odd_star)
}

/// Why a name without glob syntax matches less than it did in the old service, which matched
/// names as unanchored regular expressions (a name matched every type containing it): a part
/// of a Keptn task's type (`sh.keptn.event.test`, `test.triggered`). `None` for a whole type,
/// a glob, or a name that looks like a regular expression (warned about as such).
pub fn partial_keptn_name(name: &str) -> Option<String> {
    if name.contains(['*', '?', '[', '{', '\\']) || looks_like_regex(name) {
        return None;
    }
    let whole = |rest: &str| rest.split('.').count() == 2 && !rest.split('.').any(str::is_empty);
    if name.starts_with("sh.keptn") {
        let rest = name.strip_prefix("sh.keptn.event.").unwrap_or_default();
        if whole(rest) {
            return None;
        }
        let example = if !rest.is_empty() && !rest.contains('.') {
            format!("\"{name}.triggered\", or a glob, \"{name}.*\"")
        } else {
            "\"sh.keptn.event.test.triggered\", or a glob, \"sh.keptn.event.*.triggered\"".into()
        };
        return Some(format!(
            "\"{name}\" is not a Keptn task's event type (sh.keptn.event.<task>.<kind>), and matches \
             no event that starts an action (Keptn's service, reading it as an unanchored regular \
             expression, matched every type containing it): write whole types, e.g. {example}"
        ));
    }
    let kinds = [".triggered", ".started", ".finished"];
    (whole(name) && kinds.iter().any(|kind| name.ends_with(kind))).then(|| {
        format!(
            "\"{name}\" matches only events of exactly that type (Keptn's service, reading it as an \
             unanchored regular expression, matched \"sh.keptn.event.{name}\" too): for Keptn's \
             event, write \"sh.keptn.event.{name}\""
        )
    })
}

/// A Kubernetes quantity: `<signed number><suffix>`, where the suffix is a binary SI suffix
/// (`Ki` … `Ei`), a decimal SI suffix (`n`, `u`, `m`, `k`, `M` … `E`) or an exponent (`e3`).
/// Resources cannot be negative, so a sign other than `+` is refused.
pub fn check_quantity(value: &str) -> Result<(), String> {
    let invalid = || format!("invalid quantity \"{value}\" (expected e.g. 500m, 1, 128Mi)");
    let rest = value.strip_prefix('+').unwrap_or(value);
    if rest.starts_with('-') {
        return Err(format!(
            "invalid quantity \"{value}\": must not be negative"
        ));
    }
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let digits = number.replace('.', "");
    if digits.is_empty() || number.matches('.').count() > 1 {
        return Err(invalid());
    }
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e));
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        _ => exponent.is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())),
    };
    if !suffix_ok {
        return Err(invalid());
    }
    // The API server reads any length, but compares such a value (a request with its limit,
    // with a quota) digit by digit: `1e100000000` took it minutes and gigabytes for each Job.
    if digits.len() > MOST_QUANTITY_DIGITS
        || exponent.is_some_and(|e| e.len() > MOST_EXPONENT_DIGITS)
    {
        return Err(format!(
            "invalid quantity \"{value}\": at most {MOST_QUANTITY_DIGITS} digits and an exponent \
             of at most {MOST_EXPONENT_DIGITS} (e.g. 2e9, 500m)"
        ));
    }
    Ok(())
}

/// The most characters of a quantity's number, and of its exponent's digits: far past any
/// resource (2^63 is 19 digits), short of what makes the API server's comparisons costly.
const MOST_QUANTITY_DIGITS: usize = 40;
const MOST_EXPONENT_DIGITS: usize = 2;

/// A quantity's value in billionths of its base unit (nano-cores, nano-bytes), as the API
/// server compares a request with a limit: exactly, a fraction of a billionth rounded up, a
/// value with a binary suffix capped at 2^63 - 1 units. `None` when it is not a quantity, or
/// past what 128 bits hold (over about 10^29 units: left to the API server).
pub fn quantity_nanos(value: &str) -> Option<u128> {
    check_quantity(value).ok()?;
    let rest = value.strip_prefix('+').unwrap_or(value);
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let fraction = fraction.trim_end_matches('0');
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mantissa: Option<u128> = if digits.is_empty() {
        Some(0)
    } else {
        digits.parse().ok()
    };
    // value = mantissa × 10^-fraction × 2^binary × 10^decimal
    let (binary, decimal): (u32, i64) = match suffix {
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "" => (0, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        // At most two digits ([`check_quantity`]).
        exponent => (0, exponent.get(1..)?.parse::<i64>().ok()?),
    };
    let scaled = mantissa.and_then(|m| m.checked_mul(1u128.checked_shl(binary)?));
    let power = decimal + 9 - fraction.len() as i64;
    let nanos = match scaled {
        Some(scaled) if power >= 0 => u32::try_from(power)
            .ok()
            .and_then(|power| 10u128.checked_pow(power))
            .and_then(|ten| scaled.checked_mul(ten)),
        // A fraction of a billionth is rounded up: whoever asks for some gets some.
        Some(scaled) => match u32::try_from(-power)
            .ok()
            .and_then(|p| 10u128.checked_pow(p))
        {
            Some(ten) => Some(scaled.div_ceil(ten)),
            None => Some(u128::from(scaled > 0)),
        },
        None => None,
    };
    let most_binary = u128::from(i64::MAX as u64) * 1_000_000_000;
    match nanos {
        Some(nanos) if binary > 0 => Some(nanos.min(most_binary)),
        // A whole number past 128 bits with a binary suffix is past the cap; with a fraction
        // it may be small (many digits), and is left to the API server.
        None if binary > 0 && fraction.is_empty() => Some(most_binary),
        nanos => nanos,
    }
}

/// RFC 1123 label: lower-case alphanumerics and `-`, at most 63 characters.
pub fn check_dns_label(value: &str) -> Result<(), String> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid name \"{value}\": must be lower-case letters, digits and '-', \
             start and end with a letter or digit, at most 63 characters"
        ))
    }
}

fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// RFC 1123 subdomain as Kubernetes reads one: dot-separated parts of lower-case letters,
/// digits and `-` that begin and end with a letter or digit, at most 253 characters in all (a
/// part may be longer than 63: Kubernetes bounds only the whole) (Secret and ServiceAccount
/// names).
pub fn check_dns_subdomain(value: &str) -> Result<(), String> {
    let part = |part: &str| {
        let bytes = part.as_bytes();
        bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    if !value.is_empty() && value.len() <= 253 && value.split('.').all(part) {
        Ok(())
    } else {
        Err(format!(
            "invalid name \"{value}\": must be lower-case letters, digits, '-' and '.', \
             at most 253 characters"
        ))
    }
}

/// A path inside the service's directory, without `..`. A leading `/` means the service
/// directory too, as in the old service ("with or without a starting `/`").
pub fn check_relative_path(value: &str) -> Result<(), String> {
    if value.trim_matches('/').is_empty() {
        return Err("a file path must not be empty".to_string());
    }
    let mut parts = value
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".");
    if value.split('/').any(|part| part == "..") {
        return Err(format!(
            "file path \"{value}\" must not leave the service directory (\"..\")"
        ));
    }
    match parts.next() {
        None => Err(format!(
            "file path \"{value}\" names the service directory itself: name a file or a \
             directory in it"
        )),
        // Kubernetes refuses a mounted path that starts with `..`.
        Some(first) if first.starts_with("..") => Err(format!(
            "file path \"{value}\" cannot be staged: Kubernetes refuses a path that starts with \
             \"..\""
        )),
        Some(_) => Ok(()),
    }
}

/// A label value: at most 63 characters of alphanumerics, `-`, `_`, `.`, starting and ending
/// with an alphanumeric; or empty.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && value
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at most
/// 63 characters.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| check_dns_subdomain(p).is_ok());
    if prefix_ok && !name.is_empty() && is_label_value(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid key \"{key}\": expected an optional DNS prefix and '/', then at most 63 \
             letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Makes any text a valid label value: invalid characters become `-`, it is cut to 63
/// characters, and it starts and ends with an alphanumeric.
pub fn sanitize_label_value(text: &str) -> String {
    let replaced: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    replaced
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singular_paths_are_told_by_their_syntax_not_their_names() {
        for path in [
            "$",
            "$.a.b",
            "$['a'][0]",
            "$.a[-1]",
            "$['*?,:..']",
            "$[\"a'b\"].c",
        ] {
            assert!(selects_one_value(path), "{path}");
        }
        for path in [
            "$.a[*]",
            "$.*",
            "$..a",
            "$.a[?@.b == 1]",
            "$.a[0:2]",
            "$.a[0,1]",
            "$['a','b']",
        ] {
            assert!(!selects_one_value(path), "{path}");
        }
    }

    /// A path nested deep is refused before its parser, which recurses once for each level,
    /// could overflow the stack of the thread reading it (a worker's 2 MiB).
    #[test]
    fn jsonpaths_nested_past_the_limit_are_refused_on_a_small_stack() {
        let nested = |depth: usize| format!("$[?{}@.a==1{}]", "(".repeat(depth), ")".repeat(depth));
        let outcome = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || {
                (
                    parse_jsonpath(&nested(MAX_JSONPATH_NESTING - 1)).map(drop),
                    parse_jsonpath(&nested(400)).map(drop),
                    parse_jsonpath("$['((((((((((((((((((((((((((((((((((']").map(drop),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(outcome.0, Ok(()));
        assert_eq!(
            outcome.1.unwrap_err(),
            format!(
                "invalid JSONPath {:?}: brackets and parentheses nested 401 deep, over the limit of 32",
                nested(400)
            )
        );
        assert_eq!(outcome.2, Ok(()), "brackets in a name are text");
    }

    #[test]
    fn jsonpaths_of_runaway_cost_are_refused() {
        for (path, count) in [
            ("$.data.project", 0),
            ("$..x", 1),
            ("$['a..b']..c", 1),
            ("$.a[?@.b == \"x..y\"]", 0),
            ("$.a[?@.b == 'it\\'s..']", 0),
            ("$..[?@..x]", 2),
            ("$..a..b..c", 3),
        ] {
            assert_eq!(descendant_segments(path), count, "{path}");
        }
        for ok in [
            "$..x",
            "$['a..b']..c",
            "$.a[?@.b == \"x..y\"]",
            "$..[?@.*.*.x]",
        ] {
            assert!(parse_jsonpath(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_jsonpath("$..[?@..x]").unwrap_err(),
            "invalid JSONPath \"$..[?@..x]\": 2 descendant segments (`..`), over the limit of 1 \
             (each one more multiplies the cost of reading a large event by its depth)"
        );
        let long = format!("$.{}", "a".repeat(MAX_JSONPATH_BYTES - 2));
        assert!(parse_jsonpath(&long).is_ok());
        assert_eq!(
            parse_jsonpath(&format!("{long}b")).unwrap_err(),
            "the JSONPath is 1025 bytes long, over the limit of 1024"
        );
    }

    #[test]
    fn quantities() {
        for ok in [
            "1", "500m", "0.5", "128Mi", "1Gi", "2e3", "1E-2", "+1", ".5", "100k",
        ] {
            assert_eq!(check_quantity(ok), Ok(()), "{ok}");
        }
        for bad in ["1x", "", "Mi", "1.2.3", "1MiB", "-1", "1e", "abc"] {
            assert!(check_quantity(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_quantity("1x").unwrap_err(),
            "invalid quantity \"1x\" (expected e.g. 500m, 1, 128Mi)"
        );
        // What costs the API server minutes to compare, or overflows its exponent.
        for costly in [
            "1e100000000",
            "1e-100",
            "1e4294967296",
            "1e9999999999999999999",
            &format!("1{}", "0".repeat(40)),
            &format!("0.{}1", "0".repeat(40)),
        ] {
            assert_eq!(
                check_quantity(costly),
                Err(format!(
                    "invalid quantity \"{costly}\": at most 40 digits and an exponent of at most \
                     2 (e.g. 2e9, 500m)"
                )),
            );
        }
        assert_eq!(check_quantity("1e99"), Ok(()));
        assert_eq!(check_quantity(&"9".repeat(40)), Ok(()));
    }

    #[test]
    fn group_templates_are_text_and_event_paths() {
        let path = |p: &str| GroupPart::Path(p.to_string());
        assert_eq!(
            parse_group_template("deploy/{project}/{ $.data.stage }-{$.data['service']}"),
            Ok(vec![
                GroupPart::Text("deploy/"),
                path("$.data.project"),
                GroupPart::Text("/"),
                path("$.data.stage"),
                GroupPart::Text("-"),
                path("$.data['service']"),
            ])
        );
        assert_eq!(
            parse_group_template("fixed"),
            Ok(vec![GroupPart::Text("fixed")])
        );
        assert_eq!(
            parse_group_template("{service}"),
            Ok(vec![path("$.data.service")])
        );
        assert_eq!(
            parse_group_template("a{project"),
            Err("in \"a{project\", a `{` is not closed".into())
        );
        assert_eq!(
            parse_group_template("a}b"),
            Err("in \"a}b\", a `}` has no `{`".into())
        );
        assert_eq!(
            parse_group_template("{project}}"),
            Err("in \"{project}}\", a `}` has no `{`".into())
        );
        assert_eq!(
            parse_group_template("x}{project}"),
            Err("in \"x}{project}\", a `}` has no `{`".into())
        );
        let unknown = parse_group_template("{team}").unwrap_err();
        assert!(unknown.contains("unknown placeholder {team}"), "{unknown}");
        let invalid = parse_group_template("{$.data[}").unwrap_err();
        assert!(
            invalid.contains("invalid JSONPath \"$.data[\""),
            "{invalid}"
        );
        assert!(check_format("group-template", "{$..a..b}").is_err());
    }

    #[test]
    fn durations_are_whole_seconds_up_to_a_week() {
        let secs = |s: u64| Ok(std::time::Duration::from_secs(s));
        assert_eq!(parse_duration("90s"), secs(90));
        assert_eq!(parse_duration("30m"), secs(1800));
        assert_eq!(parse_duration("1h30m"), secs(5400));
        assert_eq!(parse_duration("1h 30m"), secs(5400));
        assert_eq!(parse_duration("PT2M"), secs(120));
        assert_eq!(parse_duration("168h"), secs(7 * 24 * 3600));
        let how = "write it like 90s, 30m or 1h30m";
        assert_eq!(
            parse_duration("soon"),
            Err(format!("\"soon\" is not a duration: {how}"))
        );
        assert_eq!(
            parse_duration("30"),
            Err(format!("\"30\" is not a duration: {how}"))
        );
        assert_eq!(
            parse_duration("-5m"),
            Err(format!("\"-5m\" is negative: {how}"))
        );
        assert_eq!(
            parse_duration("1.5s"),
            Err("\"1.5s\" is not a whole number of seconds".into())
        );
        assert_eq!(
            parse_duration("0s"),
            Err("\"0s\" is zero: a timeout is at least 1s".into())
        );
        assert_eq!(
            parse_duration("168h1s"),
            Err("\"168h1s\" is longer than a week (the longest timeout, 168h)".into())
        );
        assert_eq!(check_format("job-duration", "2m"), Ok(()));
        assert!(check_format("job-duration", "2 minutes please").is_err());
    }

    #[test]
    fn output_names_are_letters_digits_underscores_and_dashes() {
        for ok in [
            "version",
            "url",
            "image_digest",
            "a-1",
            "V",
            &"a".repeat(63),
        ] {
            assert_eq!(check_output_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1st", "_x", "a.b", "a b", "a=b", "é", &"a".repeat(64)] {
            assert_eq!(
                check_output_name(bad),
                Err(format!(
                    "invalid output name {bad:?}: a letter, then letters, digits, '_' or '-', \
                     at most 63 characters"
                )),
                "{bad}"
            );
        }
        assert!(check_format("output-name", "a.b").is_err());
    }

    #[test]
    fn durations_are_written_for_people() {
        let text = |s: u64| format_duration(std::time::Duration::from_secs(s));
        assert_eq!(text(0), "0s");
        assert_eq!(text(45), "45s");
        assert_eq!(text(125), "2m5s");
        assert_eq!(text(3600), "1h");
        assert_eq!(text(5400), "1h30m");
        assert_eq!(text(90061), "25h1m1s");
    }

    #[test]
    fn quantity_values_are_exact_in_billionths() {
        let nanos = |q: &str| quantity_nanos(q);
        assert_eq!(nanos("500m"), Some(500_000_000));
        assert_eq!(nanos("1"), Some(1_000_000_000));
        assert_eq!(nanos("+1"), Some(1_000_000_000));
        assert_eq!(
            nanos("128Mi"),
            Some(128 << 20).map(|b: u128| b * 1_000_000_000)
        );
        assert_eq!(nanos("1e3"), Some(1_000_000_000_000));
        assert_eq!(nanos("1E-3"), nanos("1m"));
        assert_eq!(nanos("1x"), None);
        // What floating point took for unequal (700 × 10^-3 is 0.7000000000000001 there).
        assert_eq!(nanos("700m"), nanos("0.7"));
        assert_eq!(nanos("2300m"), nanos("2.3"));
        assert_eq!(nanos("0.5Gi"), nanos("512Mi"));
        assert_eq!(nanos("1Gi"), nanos("1073741824"));
        assert_eq!(nanos("1G"), nanos("1000M"));
        assert_eq!(nanos("007.500"), nanos("7.5"));
        assert_eq!(nanos("0"), Some(0));
        assert_eq!(nanos("0.000m"), Some(0));
        // A fraction of a billionth rounds up, as the API server rounds it.
        assert_eq!(nanos("0.1n"), Some(1));
        assert_eq!(nanos("1e-40"), Some(1));
        assert_eq!(nanos("1.0000000001"), Some(1_000_000_001));
        assert!(nanos("1.0000000001") > nanos("1"));
        // Binary values are capped at 2^63 - 1 units; decimal ones past 128 bits are unknown.
        let cap = Some(u128::from(i64::MAX as u64) * 1_000_000_000);
        assert_eq!(nanos("8Ei"), cap);
        assert_eq!(nanos("9999999999999999999999999999999999999999Ei"), cap);
        // Many digits of fraction are not a large value.
        assert_eq!(nanos("1.0000000000000000000000000000000000000001Ki"), None);
        assert_eq!(nanos("1e30"), None);
        assert_eq!(nanos("1e99"), None);
    }

    /// A JSONPath's error says where, in characters counted from 1 (the parser's offset is in
    /// bytes, from 0).
    #[test]
    fn a_jsonpath_error_counts_characters_from_one() {
        let error = |path: &str| check_format("jsonpath", path).unwrap_err();
        let plain = error("$.a.x[");
        let accented = error("$['ééééé'].x[");
        assert!(plain.ends_with(" at character 6"), "{plain}");
        assert!(accented.ends_with(" at character 13"), "{accented}");
    }

    /// An event name pattern is bounded in length, and compiled as the matcher compiles it:
    /// 700,000 wildcards made an automaton too large to build, which failed every event.
    #[test]
    fn event_name_patterns_are_bounded_and_compiled() {
        let wild = format!("s{}", "?*".repeat(511));
        assert_eq!(wild.len(), 1023);
        assert_eq!(check_format("event-glob", &wild), Ok(()));
        assert_eq!(
            check_format("event-glob", &format!("{wild}?*")),
            Err("the event name pattern is 1025 bytes long, over the limit of 1024".into())
        );
        assert!(
            check_format("event-glob", "sh.keptn.event.[test")
                .is_err_and(|e| e.starts_with("invalid event name pattern"))
        );
    }

    #[test]
    fn names() {
        assert!(check_dns_label("keptn-jobs").is_ok());
        assert!(check_dns_label("Keptn").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        assert!(check_dns_subdomain("my.secret-1").is_ok());
        assert!(check_dns_subdomain("my..secret").is_err());
        // Kubernetes bounds the whole, not each part.
        assert!(check_dns_subdomain(&"a".repeat(70)).is_ok());
        assert!(check_dns_subdomain(&"a".repeat(254)).is_err());
        assert!(check_dns_subdomain("a-.b").is_err());
        assert!(check_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(check_qualified_name("team").is_ok());
        assert!(check_qualified_name("bad key").is_err());
        assert!(check_qualified_name("Bad_Prefix/x").is_err());
    }

    #[test]
    fn relative_paths() {
        assert!(check_relative_path("locust/basic.py").is_ok());
        assert!(check_relative_path("helm/").is_ok());
        assert!(check_relative_path("/helm").is_ok(), "as the old service");
        assert!(check_relative_path("./helm").is_ok());
        assert!(check_relative_path(".").is_err());
        assert!(check_relative_path("/").is_err());
        assert!(check_relative_path("..env").is_err());
        assert!(check_relative_path("./..env").is_err());
        assert!(check_relative_path("helm/..env").is_ok());
        assert!(check_relative_path("a/../../b").is_err());
        assert!(check_relative_path("").is_err());
    }

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(
            sanitize_label_value("Run locust tests!"),
            "Run-locust-tests"
        );
        assert_eq!(sanitize_label_value("--x--"), "x");
        assert_eq!(sanitize_label_value(&"a".repeat(80)).len(), 63);
        assert!(is_label_value(&sanitize_label_value("é weird / value_")));
    }

    #[test]
    fn regex_looking_names() {
        assert!(looks_like_regex("sh.keptn.event.*triggered"));
        assert!(looks_like_regex("^sh.keptn"));
        assert!(looks_like_regex("sh\\.keptn"));
        assert!(looks_like_regex(".*test.*"));
        assert!(looks_like_regex(
            "sh.keptn.event.(test|deployment).triggered"
        ));
        assert!(!looks_like_regex("sh.keptn.event.*.triggered"));
        assert!(!looks_like_regex("sh.keptn.event.test.*"));
        assert!(!looks_like_regex("sh.keptn.event.test.triggered"));
    }

    /// Names the old service matched as part of a type: warned, with what to write.
    #[test]
    fn parts_of_keptn_types_are_named() {
        assert_eq!(
            partial_keptn_name("sh.keptn.event.test").as_deref(),
            Some(
                "\"sh.keptn.event.test\" is not a Keptn task's event type \
                 (sh.keptn.event.<task>.<kind>), and matches no event that starts an action \
                 (Keptn's service, reading it as an unanchored regular expression, matched every \
                 type containing it): write whole types, e.g. \"sh.keptn.event.test.triggered\", \
                 or a glob, \"sh.keptn.event.test.*\""
            )
        );
        assert_eq!(
            partial_keptn_name("test.triggered").as_deref(),
            Some(
                "\"test.triggered\" matches only events of exactly that type (Keptn's service, \
                 reading it as an unanchored regular expression, matched \
                 \"sh.keptn.event.test.triggered\" too): for Keptn's event, write \
                 \"sh.keptn.event.test.triggered\""
            )
        );
        for partial in [
            "sh.keptn.event",
            "sh.keptn.event.project.create.finished",
            "sh.keptn.events.test.triggered",
        ] {
            let message = partial_keptn_name(partial).unwrap();
            assert!(
                message.contains("e.g. \"sh.keptn.event.test.triggered\""),
                "{message}"
            );
        }
        for fine in [
            "sh.keptn.event.test.triggered",
            "sh.keptn.event.*.triggered",
            "sh.keptn.event.test.*",
            "com.example.push",
            "dev.knative.apiserver.resource.add",
            "*",
            "^sh.keptn",
        ] {
            assert_eq!(partial_keptn_name(fine), None, "{fine}");
        }
    }
}
