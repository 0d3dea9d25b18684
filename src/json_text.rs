//! JSON text written by hand into an answer's buffer. Strings are escaped exactly as serde_json
//! escapes them, so what is written here is, byte for byte, what serde_json would write; and
//! text composed once (a config's action names, a condition's words) is escaped once, when the
//! config is compiled, instead of for every event it refuses.

use std::fmt;

/// How serde_json writes the control characters U+0000 to U+001F in a string.
const CONTROL: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012",
    "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a",
    "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// Hands `text` to `emit` as a JSON string's contents, in pieces: runs of it as they are, and
/// the escape of each quote, backslash and control character (nothing else is escaped).
fn escape_pieces(text: &str, mut emit: impl FnMut(&str)) {
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x00..=0x1f => CONTROL[usize::from(byte)],
            _ => continue,
        };
        // `at` is the place of an ASCII byte, so both slices end on character boundaries.
        emit(&text[start..at]);
        emit(escape);
        start = at + 1;
    }
    emit(&text[start..]);
}

/// Appends `text` as a JSON string's contents (without the quotes).
pub fn write_escaped(out: &mut Vec<u8>, text: &str) {
    escape_pieces(text, |piece| out.extend_from_slice(piece.as_bytes()));
}

/// Appends `text` as a JSON string, quoted.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    write_escaped(out, text);
    out.push(b'"');
}

/// `text` as a JSON string's contents, to be written as it is later.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_pieces(text, |piece| out.push_str(piece));
    out
}

/// Formatted text (`write!`) appended as a JSON string's contents.
pub struct Escaping<'a>(pub &'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text);
        Ok(())
    }
}

/// At most how many bytes of memory reading `json` into a `serde_json::Value` takes (the
/// text itself not counted twice): every string its bytes and an allocation's rounding, every
/// object a B-tree node (632 bytes, whatever it holds) and a node's share per entry (a node holds
/// 5 to 11), every array its slots doubled as it grows. A sender's 1 MiB body of `{"":0}` items
/// reads into about 100 MiB: the limits on bodies in flight count this, not the body's length.
/// Computed by one pass over the bytes, without reading the JSON (it need not be valid: text
/// that is not JSON is refused before anything is built, and bounded all the same).
pub fn value_bytes_bound(json: &[u8]) -> usize {
    let mut tally = Tally::default();
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        at += 1;
        match byte {
            b'"' => {
                tally.quotes += 1;
                // A string's text, most of an event's bytes, is passed over to its end (the
                // next quote not escaped) with memchr's vector search.
                while let Some(found) = json
                    .get(at..)
                    .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                {
                    let stop = at + found;
                    at = stop + 1;
                    if json[stop] == b'"' {
                        break;
                    }
                    // An escape: the byte after it is the escape's, whatever it is.
                    at += 1;
                }
                if at > json.len() {
                    break;
                }
            }
            _ => tally.count(byte),
        }
    }
    tally.bytes(json.len())
}

/// The JSON punctuation outside strings that [`value_bytes_bound`] weighs.
#[derive(Default)]
struct Tally {
    quotes: usize,
    objects: usize,
    colons: usize,
    arrays: usize,
    commas: usize,
}

impl Tally {
    const STRING: usize = 16;
    const OBJECT: usize = 640;
    const ENTRY: usize = 160;
    const ARRAY: usize = 128;
    const ELEMENT: usize = 64;

    /// Counts a byte outside strings (a quote, which starts one, is counted by the caller).
    fn count(&mut self, byte: u8) {
        match byte {
            b'{' => self.objects += 1,
            b':' => self.colons += 1,
            b'[' => self.arrays += 1,
            b',' => self.commas += 1,
            _ => {}
        }
    }

    /// The bound for a text of `len` bytes with this punctuation. A comma separates either two
    /// entries or two elements: counted as both, a bound.
    fn bytes(&self, len: usize) -> usize {
        len.saturating_add(self.quotes.saturating_mul(Self::STRING))
            .saturating_add(self.objects.saturating_mul(Self::OBJECT))
            .saturating_add(self.colons.saturating_mul(Self::ENTRY))
            .saturating_add(self.arrays.saturating_mul(Self::ARRAY))
            .saturating_add((self.commas.saturating_add(self.arrays)).saturating_mul(Self::ELEMENT))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;

    fn serde(text: &str) -> String {
        serde_json::to_string(text).unwrap()
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut every_ascii: String = (0u8..0x80).map(char::from).collect();
        every_ascii.push_str("é ü \u{2028} \u{10FFFF} \u{7f} \\u0041");
        for text in [
            "",
            "plain",
            "\"",
            "\\",
            "a\"b\\c\nd",
            "$.data.test.teststrategy is \"none\", not \"strategy-0\"",
            &every_ascii,
        ] {
            let mut out = Vec::new();
            write_string(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), serde(text), "{text:?}");
            assert_eq!(format!("\"{}\"", escaped(text)), serde(text), "{text:?}");
            let mut formatted = Vec::new();
            write!(Escaping(&mut formatted), "{text}").unwrap();
            assert_eq!(
                format!("\"{}\"", String::from_utf8(formatted).unwrap()),
                serde(text)
            );
        }
    }

    /// The bound covers what `serde_json` allocates at the least (a B-tree leaf per object that
    /// holds an entry, 32 bytes per array slot), and a typical event is a few times its text.
    #[test]
    fn the_bound_of_a_value_covers_its_nodes() {
        let items = 10_000;
        let tiny = format!("[{}]", vec![r#"{"":0}"#; items].join(","));
        let bound = value_bytes_bound(tiny.as_bytes());
        assert!(bound >= items * 632 + items * 32, "{bound}");
        assert!(bound >= 90 * tiny.len(), "{bound} for {} bytes", tiny.len());
        let zeros = format!("[{}]", vec!["0"; items].join(","));
        assert!(value_bytes_bound(zeros.as_bytes()) >= items * 32);
        // Quotes, braces and commas inside strings are text, escaped quotes too.
        let text = r#"{"a":"{[,:\"{{{{"}"#;
        assert_eq!(
            value_bytes_bound(text.as_bytes()),
            text.len() + 2 * 16 + 640 + 160
        );
        let event = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("test-events/test.triggered.json"),
        )
        .unwrap();
        let bound = value_bytes_bound(&event);
        assert!(
            bound < 12 * event.len(),
            "{bound} for {} bytes",
            event.len()
        );
    }

    /// The bound byte by byte, as plainly as it reads: what the vector search must agree with.
    fn bound_byte_by_byte(json: &[u8]) -> usize {
        // Counted here by a loop of its own, and weighed by its own sum: only the weights are
        // shared.
        let (mut quotes, mut objects, mut colons, mut arrays, mut commas) = (0, 0, 0, 0, 0);
        let (mut in_string, mut escaped) = (false, false);
        for &byte in json {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => {
                    in_string = true;
                    quotes += 1;
                }
                b'{' => objects += 1,
                b':' => colons += 1,
                b'[' => arrays += 1,
                b',' => commas += 1,
                _ => {}
            }
        }
        json.len()
            + quotes * Tally::STRING
            + objects * Tally::OBJECT
            + colons * Tally::ENTRY
            + arrays * Tally::ARRAY
            + (commas + arrays) * Tally::ELEMENT
    }

    #[test]
    fn the_bound_passes_over_strings_as_read_byte_by_byte() {
        let mut texts: Vec<String> = vec![
            r#"{"a\"b":"c\\","d":[1,{"e":"\u0022{[,:"}],"f":"\\\""}"#.into(),
            r#"["\\",":",",","{"]"#.into(),
            "{}".into(),
        ];
        let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-events");
        for entry in std::fs::read_dir(events).unwrap() {
            texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        for text in &texts {
            assert_eq!(
                value_bytes_bound(text.as_bytes()),
                bound_byte_by_byte(text.as_bytes()),
                "{text}"
            );
        }
    }

    proptest::proptest! {
        /// Any JSON serde_json writes is bounded alike either way.
        #[test]
        fn any_json_text_is_bounded_as_byte_by_byte(
            text in "[a-c\"\\\\{}\\[\\]:, ]{0,40}"
        ) {
            let json = serde_json::to_string(&serde_json::json!({"k": text, "l": [text.clone()]})).unwrap();
            proptest::prop_assert_eq!(value_bytes_bound(json.as_bytes()), bound_byte_by_byte(json.as_bytes()));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(text in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = Vec::new();
            write_string(&mut out, &text);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde(&text));
        }
    }
}
