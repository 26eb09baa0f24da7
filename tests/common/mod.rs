//! Test helpers shared by integration tests: a private `redis-server` on a
//! free port, killed (only it) when its guard drops.
//!
//! Use from a test file with `mod common;`. Needs `redis-server` on PATH
//! (Debian package `redis-server`); `./scripts/test` installs it.

#![allow(dead_code)] // each test file uses a different subset

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port nothing listens on right now (bound to 0 and released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

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
        let deadline = Instant::now() + Duration::from_secs(10);
        // A TLS server cannot be PINGed in clear text; listening is enough there.
        while !(if self.tls {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
        } else {
            answers_ping(self.port).await
        }) {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit`.
/// Returns how long it took.
pub async fn wait_until(limit: Duration, what: &str, condition: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Sends the code's logs to the test's captured output (shown on failure, or
/// with `--nocapture`); `RUST_LOG` filters, default `roomcast=debug`.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("roomcast=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A server binary this test started on a free port (roomcast, or the
/// protocol-conformance example). Killed (only it) on drop.
pub struct ServerProcess {
    pub port: u16,
    child: Child,
}

impl ServerProcess {
    /// Starts `bin` with `args` plus `--listen 127.0.0.1:<port>` and waits
    /// until the port accepts connections.
    pub async fn start(bin: &std::path::Path, args: &[&str]) -> ServerProcess {
        let port = free_port();
        let child = Command::new(bin)
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // SERVER_LOG=debug shows the server's logs in a failing test's output.
            .env(
                "RUST_LOG",
                std::env::var("SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(match std::env::var_os("SERVER_LOG") {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", bin.display()));
        let server = ServerProcess { port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "{} did not listen",
                bin.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line, in clock ticks.
        let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // USER_HZ, the unit of these fields, is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The protocol-conformance example, built by `cargo test` beside the test
/// binaries (or `ROOMCAST_CONFORMANCE_BIN`).
pub fn conformance_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ROOMCAST_CONFORMANCE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/examples/protocol-conformance
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    debug.join("examples").join("protocol-conformance")
}

/// `n` distinct ports nothing listens on right now.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A `nats-server` this test started (alone, or one of a cluster with
/// routes). Killed (only it) on drop.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "nats-server exited (port {port} taken?)"
            );
            assert!(Instant::now() < deadline, "nats-server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        NatsServer {
            port,
            child: Some(child),
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
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), within
/// 10 s: the status and body. Panics when no answer comes (a hung server).
pub async fn http_once(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: &str,
) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.get(9..12)?.parse().ok()?;
        Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Some(answer)) => answer,
        Ok(None) => panic!("{method} {target}: no HTTP answer"),
        Err(_) => panic!("{method} {target}: no answer within 10 s (server hung?)"),
    }
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

/// `GET http://127.0.0.1:PORT/PATH`: the status and the body as text.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = format!("http://127.0.0.1:{port}{path}");
    let response = client.get(uri.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A raw `GET /sse?channel=ROOM` stream and what it has sent so far.
pub struct RawSse {
    stream: tokio::net::TcpStream,
    pub seen: Vec<u8>,
}

impl RawSse {
    pub async fn open(port: u16, room: &str) -> RawSse {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect for /sse");
        let request = format!("GET /sse?channel={room} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        RawSse {
            stream,
            seen: Vec::new(),
        }
    }

    /// Reads until `marker` has arrived (`: connected`: the head and the
    /// stream's first chunk, the join confirmed), within 10 s per read.
    pub async fn until(&mut self, marker: &str) {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&self.seen).contains(marker) {
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{marker:?} within 10 s"))
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&self.seen));
            self.seen.extend_from_slice(&buf[..n]);
        }
    }
}
