//! `kube-sim`: runs the simulator until killed, for use with kubectl or a spawned operator.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A simulated Kubernetes API server with a Job controller and kubelet.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", env = "KUBE_SIM_LISTEN")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the simulator to this path.
    #[arg(long, env = "KUBE_SIM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let sim = kube_sim::Sim::builder()
        .listen(args.listen)
        .time_scale(args.time_scale)
        .start()
        .await?;
    if let Some(path) = &args.kubeconfig {
        sim.write_kubeconfig(path)?;
    }
    // The address is the first line of stdout, for scripts and tests that spawn the binary.
    println!("{}", sim.url());
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}
