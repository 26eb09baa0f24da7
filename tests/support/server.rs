//! roomcast in-process ([`Server`], what most tests use), or a server binary
//! as a child process ([`ServerProcess`]: roomcast itself, or the
//! protocol-conformance example).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use roomcast::server::{self, Running, ServeError};
use roomcast::shutdown::Shutdown;

use super::free_port;

/// roomcast started in-process from flags (no environment), with an HTTP
/// client for it. Shut down on drop.
pub struct Server {
    pub running: Running,
    pub shutdown: Shutdown,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Server {
    /// Starts roomcast with `flags`, on `--listen 127.0.0.1:0` unless they
    /// name a listen address themselves.
    pub async fn start(flags: &[&str]) -> Server {
        Self::try_start(flags).await.expect("server starts")
    }

    /// [`Server::start`], or why roomcast refused to start.
    pub async fn try_start(flags: &[&str]) -> Result<Server, ServeError> {
        let mut args = vec!["roomcast"];
        if !flags.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(flags);
        let cli =
            roomcast::config::parse_from(args.into_iter().map(Into::into).collect(), |_| None)
                .expect("valid flags");
        let shutdown = Shutdown::new();
        let running = server::start(&cli.serve, shutdown.clone()).await?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Server {
            running,
            shutdown,
            client,
        })
    }

    /// HTTPS controls (the server was started with TLS flags).
    pub fn tls(&self) -> &roomcast::tls::TlsHandle {
        self.running.tls.as_ref().expect("TLS on")
    }

    /// Stops and waits for every task (the port is free afterwards).
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.shutdown.wait(Duration::from_secs(5)).await;
    }

    pub fn client(&self) -> &Client<HttpConnector, Full<Bytes>> {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.local_addr)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> hyper::Response<Incoming> {
        let mut request = hyper::Request::builder().method(method).uri(self.url(path));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.client.request(request).await.expect("server answers")
    }

    pub async fn json(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let response = self.request(method, path, key, body).await;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    /// The value of one series on `/metrics` (0 while it does not exist
    /// yet). The recorder is process-global: compare deltas.
    pub async fn metric(&self, series: &str) -> f64 {
        let response = self.request("GET", "/metrics", None, "").await;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
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
    pub async fn start(bin: &Path, args: &[&str]) -> ServerProcess {
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
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        super::wait_listening(addr, Duration::from_secs(20), &bin.display().to_string()).await;
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
