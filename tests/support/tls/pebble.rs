//! Let's Encrypt's test CA (Debian's `pebble` package) and its challenge
//! test DNS server, started on free loopback ports and killed on drop.
//! Pebble really validates: HTTP-01 against `http_port`, TLS-ALPN-01
//! against `tls_port`, DNS-01 through the DNS server given.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TestCa, roots, tls_connect};
use crate::support::http::http_on;
use crate::support::{TempDir, free_port, wait_listening};

/// How long pebble, its DNS server and knotd may take to listen.
pub const LISTEN_LIMIT: Duration = Duration::from_secs(20);

/// A child process killed (and reaped) on drop: only what the test started.
pub struct Process(pub Child, pub &'static str);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `program`, logging to `log`; panics with a hint when it is missing.
pub fn spawn(program: &'static str, args: &[String], log: &std::path::Path) -> Process {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(program)
        .args(args)
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .env_remove("PEBBLE_VA_ALWAYS_VALID")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({e}); run ./scripts/install-tls-deps"));
    Process(child, program)
}

/// pebble-challtestsrv as a DNS server answering 127.0.0.1 for every name.
pub struct ChallDns {
    pub addr: SocketAddr,
    _process: Process,
}

impl ChallDns {
    pub async fn start(dir: &TempDir) -> ChallDns {
        let port = free_port();
        let management = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let args = [
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{management}"),
        ]
        .map(String::from);
        let process = spawn("pebble-challtestsrv", &args, &dir.path("challtestsrv.log"));
        wait_listening(
            format!("127.0.0.1:{management}").parse().unwrap(),
            LISTEN_LIMIT,
            "pebble-challtestsrv",
        )
        .await;
        ChallDns {
            addr,
            _process: process,
        }
    }
}

pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// PEM file of the CA that signed pebble's own HTTPS certificate
    /// (for `--acme-ca-root`).
    pub api_root: String,
    /// PEM of the root pebble issues under (for the test's TLS client).
    pub issuer_root: String,
    _process: Process,
}

impl Pebble {
    /// The flags that point roomcast at this CA for `domain`, caching in `cache`.
    pub fn acme_args<'a>(&'a self, domain: &'a str, cache: &'a str) -> [&'a str; 8] {
        [
            "--acme-domain",
            domain,
            "--acme-directory",
            &self.directory,
            "--acme-ca-root",
            &self.api_root,
            "--acme-cache-dir",
            cache,
        ]
    }

    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of 127.0.0.1, resolving names through `dns`.
    pub async fn start(dir: &TempDir, http_port: u16, tls_port: u16, dns: SocketAddr) -> Pebble {
        let ca = TestCa::new();
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.path("pebble-cert.pem"), cert).unwrap();
        std::fs::write(dir.path("pebble-key.pem"), key).unwrap();
        std::fs::write(dir.path("pebble-api-root.pem"), &ca.root_pem).unwrap();
        let (listen, management) = (free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.str("pebble-cert.pem"),
                "privateKey": dir.str("pebble-key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.path("pebble.json"), config.to_string()).unwrap();
        let args = [
            "-config".to_string(),
            dir.str("pebble.json"),
            "-dnsserver".to_string(),
            dns.to_string(),
        ];
        let process = spawn("pebble", &args, &dir.path("pebble.log"));
        let management: SocketAddr = format!("127.0.0.1:{management}").parse().unwrap();
        wait_listening(
            format!("127.0.0.1:{listen}").parse().unwrap(),
            LISTEN_LIMIT,
            "pebble",
        )
        .await;
        wait_listening(management, LISTEN_LIMIT, "pebble management").await;
        // The root pebble issues under, from its management endpoint.
        let api_roots = roots(&ca.root_pem);
        let stream = tls_connect(management, "127.0.0.1", &api_roots)
            .await
            .expect("pebble management TLS");
        let response = http_on(stream, "127.0.0.1", "GET", "/roots/0", &[], b"").await;
        let issuer_root = response.text();
        assert_eq!(response.status, 200, "pebble /roots/0: {issuer_root}");
        Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            api_root: dir.str("pebble-api-root.pem"),
            issuer_root,
            _process: process,
        }
    }
}
