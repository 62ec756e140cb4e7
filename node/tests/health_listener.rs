//! `--health-listen`: the node binary serves `grpc.health.v1` alone, in plaintext, on a
//! second address, for probes that cannot present a certificate (Kubernetes' gRPC probes),
//! while its main address stays mutual TLS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Kills the node when the test ends, also when it panics.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port: bound, read back and released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start(dir: &Path, health: &str) -> Node {
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sitesync-node"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--health-listen", health])
        .arg("--address-file")
        .arg(dir.join("address"))
        .env_remove("SITESYNC_INSECURE")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Node(child)
}

async fn plaintext(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_alone_is_served_in_plaintext_on_the_health_address() {
    let dir = tempfile::tempdir().unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let _node = start(dir.path(), &health);
    // The address file appears once both listeners are bound and the node serves.
    let deadline = Instant::now() + Duration::from_secs(120);
    let address = loop {
        if let Ok(address) = std::fs::read_to_string(dir.path().join("address")) {
            break address;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not start: {}",
            std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut client = HealthClient::new(plaintext(&health).await);
    for service in ["", "sitesync.v1.Admin", "sitesync.v1.UpdateServer"] {
        let answer = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }

    // Nothing else is served there: the node's own services answer only on the TLS address.
    let mut admin = sitesync_proto::v1::admin_client::AdminClient::new(plaintext(&health).await);
    let refused = admin
        .get_site_status(sitesync_proto::v1::GetSiteStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");

    // And the main address does not speak plaintext.
    let mut over_plaintext = HealthClient::new(
        Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy(),
    );
    assert!(
        over_plaintext
            .check(HealthCheckRequest::default())
            .await
            .is_err(),
        "the main address answered plaintext"
    );
}
