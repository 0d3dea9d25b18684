//! Bounded log excerpts: the head and the tail of what the task printed, with an explicit marker
//! of what was left out. (The old service lost its `.finished` event when logs were large.)

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use super::cached::CachedPod;

/// The most read from one container; longer logs are cut before the excerpt is made.
const FETCH_LIMIT_BYTES: i64 = 8 * 1024 * 1024;

/// At most `cap` bytes: the first and last halves of `text` around a marker that says how many
/// bytes were left out. Cuts fall on character boundaries.
pub fn excerpt(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    let marker_room = 48;
    let keep = cap.saturating_sub(marker_room);
    let mut head_end = keep / 2;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - (keep - keep / 2);
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let omitted = tail_start - head_end;
    format!(
        "{}\n[... {omitted} bytes omitted ...]\n{}",
        &text[..head_end],
        &text[tail_start..]
    )
}

/// The logs of every container of the task's pods, init containers first, each headed by
/// `[pod/container]`, cut to `cap` bytes in all.
pub async fn collect(api: &Api<Pod>, pods: &[&CachedPod], cap: usize) -> String {
    let mut text = String::new();
    for pod in pods {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        for container in pod.container_names() {
            let params = LogParams {
                container: Some(container.to_string()),
                limit_bytes: Some(FETCH_LIMIT_BYTES),
                ..Default::default()
            };
            let body = match api.logs(&pod_name, &params).await {
                Ok(body) => body,
                Err(error) => format!("(logs unavailable: {error})\n"),
            };
            if body.is_empty() {
                continue;
            }
            text.push_str(&format!("[{pod_name}/{container}]\n"));
            text.push_str(&body);
            if !body.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    excerpt(text.trim_end(), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_logs_are_kept_whole() {
        assert_eq!(excerpt("hello\nworld", 100), "hello\nworld");
    }

    #[test]
    fn long_logs_keep_head_and_tail_with_a_marker() {
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        let cut = excerpt(&text, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.starts_with("line 0\nline 1\n"));
        assert!(cut.ends_with("line 9999\n"));
        let omitted: usize = cut
            .split("[... ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let marker = format!("\n[... {omitted} bytes omitted ...]\n");
        assert_eq!(cut.len() - marker.len() + omitted, text.len());
    }

    #[test]
    fn cuts_respect_characters() {
        let text = "é".repeat(1000);
        let cut = excerpt(&text, 101);
        assert!(cut.contains("bytes omitted"));
        assert!(cut.len() <= 101);
    }
}
