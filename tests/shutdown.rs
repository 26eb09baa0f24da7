//! SIGTERM on the real binary: the supervisor thread hears it, the server
//! drains its clients and exits 0 within `--shutdown-timeout-s`. (A task
//! that never yields cannot hold the exit either: `shutdown::tests`.)

mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use support::ServerProcess;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn sigterm_drains_clients_and_exits_zero() {
    let bin = Path::new(env!("CARGO_BIN_EXE_roomcast"));
    let mut server = ServerProcess::start(bin, &["--shutdown-timeout-s", "5"]).await;
    let url = format!("ws://127.0.0.1:{}/ws", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect /ws");
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(10));
        drop(server);
        status
    });
    // The client is told to reconnect elsewhere (1012) before the exit.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the server closed the websocket");
    assert_eq!(close, Some(1012));
    let status = status.await.expect("wait task");
    let status = status.expect("the server exited within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
}
