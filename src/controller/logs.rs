//! Bounded log excerpts: the head and the tail of what the task printed, with an explicit marker
//! of what was left out. (The old service lost its `.finished` event when logs were large.)

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use super::cached::CachedPod;

/// The most read from one container: past it the rest of its log is not streamed (a log of
/// gigabytes would hold the task's end for as long as that takes), and the excerpt's tail is
/// the text around this point.
const FETCH_LIMIT_BYTES: i64 = 256 * 1024 * 1024;

/// Room for the marker between head and tail.
const MARKER_ROOM: usize = 48;

/// The bytes a log's byte takes in the run's record, JSON as the API server writes it (Go's
/// encoder): a quote, a backslash, `\n`, `\r` and `\t` two; another control character, and `<`,
/// `>` and `&` (escaped for HTML), six (`\u001b`); any other one. The excerpt's cap counts these:
/// a log of colour codes or NULs took up to six times its length in the record, twice (the
/// task's and the outcome's), past what etcd stores.
fn weight(byte: u8) -> usize {
    match byte {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
        0..=0x1f | b'<' | b'>' | b'&' => 6,
        _ => 1,
    }
}

fn weight_of<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> usize {
    bytes.into_iter().map(|byte| weight(*byte)).sum()
}

/// How many of the bytes, in the order given (a slice's `.iter().rev()` for its last ones), fit
/// in `room`.
fn fitting<'a>(bytes: impl Iterator<Item = &'a u8>, room: usize) -> usize {
    let mut left = room;
    bytes
        .take_while(|byte| match left.checked_sub(weight(**byte)) {
            Some(rest) => {
                left = rest;
                true
            }
            None => false,
        })
        .count()
}

/// The head and the tail of a stream of bytes, at most `cap` bytes as the run's record holds
/// them ([`weight`]) with the marker that says how many were left out, however long the
/// stream: the middle is dropped as it comes.
struct Excerpt {
    cap: usize,
    /// Everything, until it outgrows `cap`; then the head.
    head: Vec<u8>,
    head_weight: usize,
    /// Once the stream outgrew `cap`: its last bytes.
    tail: Option<std::collections::VecDeque<u8>>,
    tail_weight: usize,
    omitted: usize,
}

impl Excerpt {
    fn new(cap: usize) -> Self {
        Excerpt {
            cap,
            head: Vec::new(),
            head_weight: 0,
            tail: None,
            tail_weight: 0,
            omitted: 0,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        let keep = self.cap.saturating_sub(MARKER_ROOM);
        let head_room = keep / 2;
        let tail_room = keep - head_room;
        let tail = match &mut self.tail {
            Some(tail) => tail,
            None => {
                let weight = weight_of(bytes);
                if self.head_weight + weight <= self.cap {
                    self.head.extend_from_slice(bytes);
                    self.head_weight += weight;
                    return;
                }
                // Outgrown: the head keeps its first bytes, the rest goes on to the tail.
                let mut tail = std::collections::VecDeque::new();
                if self.head_weight > head_room {
                    tail.extend(self.head.drain(fitting(self.head.iter(), head_room)..));
                    self.head_weight = weight_of(&self.head);
                    self.tail_weight = weight_of(&tail);
                } else {
                    let fill = fitting(bytes.iter(), head_room - self.head_weight);
                    self.head.extend_from_slice(&bytes[..fill]);
                    self.head_weight += weight_of(&bytes[..fill]);
                    bytes = &bytes[fill..];
                }
                self.tail.insert(tail)
            }
        };
        // Of a long piece, only its end can stay.
        let stays = fitting(bytes.iter().rev(), tail_room);
        let skipped = bytes.len() - stays;
        bytes = &bytes[skipped..];
        if skipped > 0 {
            // What the tail held comes before the bytes skipped: it cannot stay beside the
            // piece's end (the last byte that did not fit may leave room a byte of it would take).
            self.omitted += tail.len();
            tail.clear();
            self.tail_weight = 0;
        }
        tail.extend(bytes);
        self.tail_weight += weight_of(bytes);
        let mut over = 0;
        while self.tail_weight > tail_room {
            let Some(byte) = tail.pop_front() else { break };
            self.tail_weight -= weight(byte);
            over += 1;
        }
        self.omitted += skipped + over;
    }

    /// The excerpt as text: cuts moved to character boundaries, bytes that are not UTF-8
    /// shown as `?` (one byte each, so the excerpt stays within its cap), trailing white space
    /// dropped.
    fn finish(mut self) -> String {
        let Some(tail) = self.tail else {
            return text(&self.head).trim_end().to_string();
        };
        // No room for the marker (a run of many tasks under a small --log-excerpt-bytes, or 0):
        // a log that does not fit shows nothing rather than go past the cap.
        if self.cap < MARKER_ROOM {
            return String::new();
        }
        let continues = |byte: u8| byte & 0xC0 == 0x80;
        // A character the head's end cuts goes whole to the omitted part; so do the bytes of
        // one the tail starts inside of.
        let back = self
            .head
            .iter()
            .rev()
            .take(3)
            .take_while(|byte| continues(**byte))
            .count();
        if let Some(&lead) = self.head.iter().rev().nth(back) {
            let length = match lead {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            if back + 1 < length {
                self.head.truncate(self.head.len() - back - 1);
                self.omitted += back + 1;
            }
        }
        let mut tail: Vec<u8> = tail.into();
        let cut = tail
            .iter()
            .take(3)
            .take_while(|byte| continues(**byte))
            .count();
        tail.drain(..cut);
        self.omitted += cut;
        format!(
            "{}\n[... {} bytes omitted ...]\n{}",
            text(&self.head),
            self.omitted,
            text(&tail).trim_end()
        )
    }
}

/// `bytes` as text, each byte that is not part of a UTF-8 character shown as `?`.
fn text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        text.extend(std::iter::repeat_n('?', chunk.invalid().len()));
    }
    text
}

/// What the kubelet answers, with a 200, for the logs of a container the runtime no longer has
/// (garbage-collected under disk pressure, say): shown as logs that cannot be read, not as the
/// task's own output.
const KUBELET_NO_LOGS: &[u8] = b"unable to retrieve container logs for ";

/// Whether the start of a log may still turn out to be [`KUBELET_NO_LOGS`]'s one line.
fn may_be_kubelet_sentence(start: &[u8]) -> bool {
    start.len() <= 512
        && (KUBELET_NO_LOGS.starts_with(start) || start.starts_with(KUBELET_NO_LOGS))
        && !start.trim_ascii_end().contains(&b'\n')
}

/// Whether a whole log is [`KUBELET_NO_LOGS`]'s one line.
fn is_kubelet_sentence(log: &[u8]) -> bool {
    log.starts_with(KUBELET_NO_LOGS) && may_be_kubelet_sentence(log)
}

/// Why a container's logs cannot be read, as the API server says it (`container "task" in pod
/// "…" is waiting to start: PodInitializing`), not the client's debug form of its answer.
fn unavailable(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// The logs of every container of the task's pods, init containers first, each headed by
/// `[pod/container]`, cut to `cap` bytes in all: each log is streamed through, its middle
/// dropped as it comes, so the tail is the end of the last log whatever their length.
pub async fn collect(api: &Api<Pod>, pods: &[&CachedPod], cap: usize) -> String {
    use futures::AsyncBufReadExt as _;
    let mut excerpt = Excerpt::new(cap);
    for pod in pods {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        for container in pod.container_names() {
            let params = LogParams {
                container: Some(container.to_string()),
                limit_bytes: Some(FETCH_LIMIT_BYTES),
                ..Default::default()
            };
            let header = format!("[{pod_name}/{container}]\n");
            let mut stream = match api.log_stream(&pod_name, &params).await {
                Ok(stream) => stream,
                Err(error) => {
                    excerpt.push(header.as_bytes());
                    excerpt
                        .push(format!("(logs unavailable: {})\n", unavailable(&error)).as_bytes());
                    continue;
                }
            };
            let mut last = None;
            // The log's start, held back while it may be the kubelet's own answer for a
            // container the runtime no longer has (a 200 whose body is that sentence).
            let mut held: Option<Vec<u8>> = Some(Vec::new());
            let mut cut_short = None;
            loop {
                let chunk = match stream.fill_buf().await {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        cut_short = Some(error);
                        break;
                    }
                };
                let Some(&end) = chunk.last() else {
                    break;
                };
                match held.as_mut() {
                    Some(start) => {
                        start.extend_from_slice(chunk);
                        if !may_be_kubelet_sentence(start) {
                            excerpt.push(header.as_bytes());
                            excerpt.push(start);
                            held = None;
                        }
                    }
                    None => excerpt.push(chunk),
                }
                last = Some(end);
                let read = chunk.len();
                stream.consume_unpin(read);
            }
            if let Some(start) = held.filter(|start| !start.is_empty()) {
                excerpt.push(header.as_bytes());
                if cut_short.is_none() && is_kubelet_sentence(&start) {
                    let sentence = String::from_utf8_lossy(&start);
                    excerpt
                        .push(format!("(logs unavailable: {})\n", sentence.trim_end()).as_bytes());
                    last = Some(b'\n');
                } else {
                    excerpt.push(&start);
                }
            } else if last.is_none() && cut_short.is_some() {
                excerpt.push(header.as_bytes());
            }
            if let Some(error) = cut_short {
                excerpt.push(format!("\n(logs cut short: {error})").as_bytes());
                last = Some(b'\n');
            }
            if last.is_some_and(|end| end != b'\n') {
                excerpt.push(b"\n");
            }
        }
    }
    excerpt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes an excerpt kept plus those its marker says it left out: the length of what
    /// it was made of.
    fn kept_and_omitted(cut: &str) -> usize {
        let omitted: usize = cut
            .split("[... ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let marker = format!("\n[... {omitted} bytes omitted ...]\n");
        cut.len() - marker.len() + omitted
    }

    /// The excerpt of `text` in one piece.
    fn excerpt(text: &str, cap: usize) -> String {
        let mut excerpt = Excerpt::new(cap);
        excerpt.push(text.as_bytes());
        excerpt.finish()
    }

    #[test]
    fn short_logs_are_kept_whole() {
        assert_eq!(excerpt("hello\nworld", 100), "hello\nworld");
    }

    /// Only a whole log of the kubelet's one line is taken for it.
    #[test]
    fn the_kubelet_s_answer_for_a_container_gone_is_told_from_a_log() {
        let sentence = b"unable to retrieve container logs for containerd://4f2a\n";
        assert!(is_kubelet_sentence(sentence));
        assert!(may_be_kubelet_sentence(b"unable to"));
        assert!(!is_kubelet_sentence(b"unable to"));
        assert!(!may_be_kubelet_sentence(b"hello"));
        let more = b"unable to retrieve container logs for containerd://4f2a\nand a second line";
        assert!(!may_be_kubelet_sentence(more) && !is_kubelet_sentence(more));
        assert!(!may_be_kubelet_sentence(&[b'u'; 600]));
    }

    /// Below the marker's room a log that does not fit shows nothing: the cap holds, 0 too.
    #[test]
    fn a_cap_too_small_for_the_marker_is_kept() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        for cap in [0, 1, 20, MARKER_ROOM - 1] {
            assert_eq!(excerpt(&text, cap), "", "{cap}");
        }
        assert_eq!(excerpt("hi", 20), "hi", "what fits is kept");
        assert!(excerpt(&text, MARKER_ROOM + 20).len() <= MARKER_ROOM + 20);
    }

    #[test]
    fn long_logs_keep_head_and_tail_with_a_marker() {
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        let cut = excerpt(&text, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.starts_with("line 0\nline 1\n"));
        assert!(cut.ends_with("line 9999"), "trailing white space dropped");
        assert_eq!(kept_and_omitted(&cut), text.trim_end().len());
    }

    #[test]
    fn a_stream_in_pieces_gives_the_excerpt_of_the_whole() {
        let text: String = (0..5_000).map(|i| format!("line {i} é€😀\n")).collect();
        for piece in [1, 7, 100, 4096, text.len()] {
            let mut streamed = Excerpt::new(1024);
            for chunk in text.as_bytes().chunks(piece) {
                streamed.push(chunk);
            }
            assert_eq!(streamed.finish(), excerpt(&text, 1024), "pieces of {piece}");
        }
    }

    #[test]
    fn cuts_respect_characters() {
        for character in ["é", "€", "😀"] {
            for cap in 100..110 {
                let text = format!("a{}", character.repeat(1000));
                let cut = excerpt(&text, cap);
                assert!(cut.contains("bytes omitted"));
                assert!(cut.len() <= cap, "{cap}: {}", cut.len());
                assert!(!cut.contains('\u{FFFD}'), "{cap}: {cut}");
                assert_eq!(kept_and_omitted(&cut), text.len(), "{cap}");
            }
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_lose_the_log() {
        let mut excerpt = Excerpt::new(1024);
        excerpt.push(b"caf\xe9 ok\n");
        excerpt.push(b"done\n");
        assert_eq!(excerpt.finish(), "caf? ok\ndone");
        // Within the cap whatever the bytes.
        let mut binary = Excerpt::new(1024);
        for _ in 0..1000 {
            binary.push(&[0x80, 0xff, 0xc3, b'a', 0xe2, 0x82]);
        }
        let cut = binary.finish();
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.contains("bytes omitted"));
    }

    /// Streamed in pieces, a log of escapes gives the excerpt of the whole: the tail is the
    /// log's end, never bytes from before a piece's skipped start glued to it.
    #[test]
    fn a_stream_of_escapes_in_pieces_gives_the_excerpt_of_the_whole() {
        let text: String = (0..3_000)
            .map(|i| format!("\x1b[32mINFO\x1b[0m step {i} \"done\"\n"))
            .collect();
        for cap in [68, 200, 333, 1024, 2047] {
            for piece in [1, 7, 100, 8192, text.len()] {
                let mut streamed = Excerpt::new(cap);
                for chunk in text.as_bytes().chunks(piece) {
                    streamed.push(chunk);
                }
                assert_eq!(
                    streamed.finish(),
                    excerpt(&text, cap),
                    "cap {cap}, pieces of {piece}"
                );
            }
        }
        let mut glued = Excerpt::new(68);
        glued.push(&[b'x'; 68]);
        glued.push(b"b");
        glued.push(b"\x1baaaaaaaaa");
        assert!(glued.finish().ends_with("\naaaaaaaaa"));
    }

    /// The cap counts the excerpt as the record holds it, JSON-escaped: a log of NULs and
    /// colour codes keeps fewer bytes, not six times the cap.
    #[test]
    fn the_cap_counts_what_the_record_holds() {
        let colours: String = (0..2_000)
            .map(|i| format!("\x1b[31m<{i}>\x1b[0m & \"q\"\n"))
            .collect();
        for text in [colours, "\0".repeat(10_000), "a\tb\\".repeat(3_000)] {
            let cut = excerpt(&text, 1024);
            let written = serde_json::to_string(&cut).unwrap();
            // serde_json leaves `<`, `>`, `&` as they are; Go's encoder writes six bytes.
            let html = cut.matches(['<', '>', '&']).count();
            assert!(written.len() - 2 + 5 * html <= 1024, "{}", written.len());
            assert!(
                written.len() + 5 * html > 900,
                "the room is used: {}",
                written.len()
            );
            assert_eq!(kept_and_omitted(&cut), text.trim_end().len());
        }
    }
}
