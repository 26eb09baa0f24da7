//! Knot DNS as a local authoritative server for `example.com` that accepts
//! RFC 2136 updates signed with a TSIG key; every name under the zone
//! resolves to 127.0.0.1 (for pebble's lookups).

use std::net::SocketAddr;

use base64::Engine;

use super::pebble::{LISTEN_LIMIT, Process, spawn};
use crate::support::{TempDir, free_port, wait_listening};

pub const ZONE: &str = "example.com";
pub const TSIG_KEY: &str = "roomcast-test";

pub struct Knot {
    pub addr: SocketAddr,
    pub tsig_secret: String,
    _process: Process,
}

impl Knot {
    pub async fn start(dir: &TempDir) -> Knot {
        let port = free_port();
        let tsig_secret =
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let root = dir.path("knot");
        std::fs::create_dir_all(root.join("db")).unwrap();
        std::fs::write(
            root.join(format!("{ZONE}.zone")),
            format!(
                "$ORIGIN {ZONE}.\n$TTL 60\n\
                 @ SOA ns.{ZONE}. admin.{ZONE}. 1 3600 600 86400 60\n\
                 @ NS ns\nns A 127.0.0.1\n@ A 127.0.0.1\n* A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let root_str = root.display();
        let config = format!(
            "server:\n    rundir: \"{root_str}\"\n    listen: 127.0.0.1@{port}\n\
             database:\n    storage: \"{root_str}/db\"\n\
             log:\n  - target: stderr\n    any: info\n\
             key:\n  - id: {TSIG_KEY}\n    algorithm: hmac-sha256\n    secret: {tsig_secret}\n\
             acl:\n  - id: update\n    key: {TSIG_KEY}\n    action: update\n\
             template:\n  - id: default\n    storage: \"{root_str}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    journal-content: changes\n\
             zone:\n  - domain: {ZONE}\n    acl: update\n"
        );
        std::fs::write(root.join("knot.conf"), config).unwrap();
        let args = [
            "-c".to_string(),
            root.join("knot.conf").display().to_string(),
        ];
        let knotd = if std::path::Path::new("/usr/sbin/knotd").exists() {
            "/usr/sbin/knotd"
        } else {
            "knotd"
        };
        let process = spawn(knotd, &args, &dir.path("knot.log"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, LISTEN_LIMIT, "knotd").await;
        Knot {
            addr,
            tsig_secret,
            _process: process,
        }
    }
}
