//! A private `nats-server` on a free port, alone or one of a routed
//! cluster, killed (only it) on drop. Needs `nats-server` on PATH.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, free_ports};

/// A `nats-server` this test started (alone, or one of a cluster with
/// routes). Killed (only it) on drop.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
    /// JetStream's store, when on (removed after the server is killed).
    store: Option<super::TempDir>,
}

impl NatsServer {
    /// One server on a free port, waiting until it accepts connections.
    pub async fn start() -> NatsServer {
        Self::spawn(free_port(), &[]).await
    }

    /// One server with more `nats-server` flags (`--user`, `--auth`, `--tls`…).
    pub async fn start_with(extra: &[&str]) -> NatsServer {
        Self::spawn(free_port(), extra).await
    }

    /// One server with JetStream on (`-js`), storing in its own scratch
    /// directory (never the shared default under /tmp).
    pub async fn jetstream() -> NatsServer {
        let store = super::TempDir::new("nats-js");
        let dir = store.str("js");
        let mut server = Self::spawn(free_port(), &["-js", "-sd", &dir]).await;
        server.store = Some(store);
        server
    }

    /// `n` servers routed into one cluster.
    pub async fn cluster(n: usize) -> Vec<NatsServer> {
        // All ports at once, so they are distinct.
        let ports = free_ports(2 * n);
        let (client_ports, cluster_ports) = ports.split_at(n);
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (port, cluster_port) in client_ports.iter().zip(cluster_ports) {
            let cluster = format!("nats://127.0.0.1:{cluster_port}");
            let args = [
                "--cluster_name",
                "roomcast-test",
                "--cluster",
                &cluster,
                "--routes",
                &routes,
            ];
            servers.push(Self::spawn(*port, &args).await);
        }
        servers
    }

    async fn spawn(port: u16, extra: &[&str]) -> NatsServer {
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nats-server (package nats-server)");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let listening = eventually(Duration::from_secs(10), || async move {
            greets(addr).await.then_some(())
        })
        .await;
        if listening.is_none() {
            let exited = child.try_wait();
            panic!("nats-server did not listen on {addr} (exited: {exited:?}; port taken?)");
        }
        NatsServer {
            port,
            child: Some(child),
            store: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        drop(self.store.take());
    }
}

/// Whether a NATS server answers on `addr`: it greets each connection with
/// `INFO`. A bare connect is not enough: while nothing listens yet, a
/// connect to a loopback port in the ephemeral range can be given that same
/// port as its source and connect to itself (a CI run's `connection refused`
/// right after "listening").
async fn greets(addr: std::net::SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let mut greeting = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut greeting)).await,
        Ok(Ok(_)) if &greeting == b"INFO"
    )
}
