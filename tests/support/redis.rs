//! A private `redis-server` on a free port (plain or TLS only, extra
//! arguments, kill/freeze/restart for outage tests), or a Redis Cluster of
//! them, killed (only they) when their guard drops. Needs `redis-server` on PATH; `./scripts/test` installs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{eventually, free_port, free_ports};

/// A `redis-server` this test started. Killed on drop; its directory removed.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// TLS only (`--tls-port`), with `tls.crt`/`tls.key` in `dir`.
    tls: bool,
    /// Extra `redis-server` arguments, e.g. `--client-output-buffer-limit`.
    config: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a fresh free port and waits until it answers PING.
    pub async fn start() -> RedisServer {
        RedisServer::start_on(free_port()).await
    }

    /// Starts a server on `port` (e.g. again after [`RedisServer::kill`]).
    pub async fn start_on(port: u16) -> RedisServer {
        RedisServer::launch(port, None, &[]).await
    }

    /// A server on a fresh free port with extra `redis-server` arguments
    /// (`["--client-output-buffer-limit", "pubsub 256kb 128kb 1"]`).
    pub async fn start_with(config: &[&str]) -> RedisServer {
        RedisServer::launch(free_port(), None, config).await
    }

    /// A server that speaks only TLS, with this certificate and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> RedisServer {
        RedisServer::launch(free_port(), Some((cert_pem, key_pem)), &[]).await
    }

    async fn launch(port: u16, tls: Option<(&str, &str)>, config: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-redis-{}-{port}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create redis temp dir");
        if let Some((cert, key)) = tls {
            std::fs::write(dir.join("tls.crt"), cert).expect("write tls.crt");
            std::fs::write(dir.join("tls.key"), key).expect("write tls.key");
        }
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            tls: tls.is_some(),
            config: config.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client connection, as a back end's.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process dies of SIGKILL too; SIGCONT is harmless otherwise.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: its sockets stay
    /// open but nothing answers, as with a dead host or a network partition.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("redis-server is running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the server again on the same port after [`RedisServer::kill`].
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("tls.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("tls.key"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(&self.config)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is the redis-server package installed?)");
        self.child = Some(child);
        let (port, tls) = (self.port, self.tls);
        // A TLS server cannot be PINGed in clear text; listening is enough there.
        let up = eventually(Duration::from_secs(10), || async move {
            let up = if tls {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            } else {
                answers_ping(port).await
            };
            up.then_some(())
        })
        .await;
        assert!(
            up.is_some(),
            "redis-server on port {port} did not answer within 10 s"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await,
        Ok(Ok(_)) if &reply == b"+PONG\r\n"
    )
}

/// A Redis Cluster of `redis-server`s this test started (`--cluster-enabled`,
/// a 1 s node timeout so a replica takes over quickly), created with
/// `redis-cli --cluster create`. Every node is killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, every slot served.
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let count = masters * (1 + replicas);
        // Client and cluster-bus ports at once, so all are distinct.
        let ports = free_ports(2 * count);
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let bus = ports[count + i].to_string();
            let config = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                &bus,
            ];
            nodes.push(RedisServer::launch(ports[i], None, &config).await);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.settled(masters) {
            assert!(Instant::now() < deadline, "the cluster did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    /// Every live node says the cluster is ok and knows `masters` masters,
    /// and every replica's link to its master is up.
    fn settled(&self, masters: usize) -> bool {
        self.nodes.iter().filter(|n| n.child.is_some()).all(|node| {
            let info = node.cli(&["CLUSTER", "INFO"]);
            let replication = node.cli(&["INFO", "replication"]);
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_size:{masters}"))
                && (replication.contains("role:master")
                    || replication.contains("master_link_status:up"))
        })
    }

    /// Seed URLs of every node, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node that serves `slot` now, as one live node sees it.
    pub fn owner(&self, slot: u16) -> &RedisServer {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let nodes = live.cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                match (start.parse::<u16>(), end.parse::<u16>()) {
                    (Ok(start), Ok(end)) => (start..=end).contains(&slot),
                    _ => false,
                }
            });
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("port in CLUSTER NODES");
            if serves {
                return self
                    .nodes
                    .iter()
                    .find(|n| n.port == port)
                    .expect("our node");
            }
        }
        panic!("no master serves slot {slot}: {nodes}");
    }

    /// The replica that follows `master`.
    pub fn replica_of(&self, master: &RedisServer) -> &RedisServer {
        let wanted = format!("master_port:{}", master.port);
        self.nodes
            .iter()
            .find(|node| node.cli(&["INFO", "replication"]).contains(&wanted))
            .expect("a replica of the master")
    }
}

impl RedisServer {
    /// `redis-cli -p PORT args...`'s output (raw).
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// This node's cluster id.
    pub fn node_id(&self) -> String {
        self.cli(&["CLUSTER", "MYID"]).trim().to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}
