//! Scale check: creates N Jobs whose containers hold (stay Running), from C concurrent
//! clients (optionally paced to R creations per second, as an operator creates them), and
//! reports how long until every pod is Running and the CPU time used.
//!
//! ```sh
//! cargo run --release -p kube-sim --example hold_jobs -- 10000 32      # as fast as possible
//! cargo run --release -p kube-sim --example hold_jobs -- 10000 32 300  # 300 Jobs/s
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use kube_sim::{Behavior, ImageRule, Sim};
use serde_json::json;

/// User + system CPU time of this process, from /proc/self/stat (Linux), in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of the full line are 11 and 12 after "pid (comm) ".
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn running_pods(sim: &Sim) -> usize {
    sim.list_objects("", "pods", None)
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.0);
    let sim = Sim::start().await.unwrap();
    sim.runtime()
        .set(ImageRule::image("bench:hold"), Behavior::hold());
    let cpu0 = cpu_seconds().unwrap_or(0.0);
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let jobs: Api<Job> = Api::default_namespaced(sim.client());
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                if rate > 0.0 {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                let job: Job = serde_json::from_value(json!({
                    "metadata": {"name": format!("hold-{i}")},
                    "spec": {"template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "bench:hold"}]}}}
                }))
                .unwrap();
                jobs.create(&PostParams::default(), &job).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let created = start.elapsed();
    let paced = if rate > 0.0 {
        format!(" at {rate}/s")
    } else {
        String::new()
    };
    println!("created {n} jobs from {clients} clients{paced} in {created:.2?}");
    let mut last = Instant::now();
    loop {
        let running = running_pods(&sim);
        if running >= n {
            break;
        }
        if last.elapsed() > Duration::from_secs(10) {
            println!("  {running} running after {:.1?}", start.elapsed());
            last = Instant::now();
        }
        if start.elapsed() > Duration::from_secs(1800) {
            println!("gave up with {running} running");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = start.elapsed();
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu0;
    println!("all {n} pods Running after {all:.2?}; process CPU {cpu:.1} s");
}
