//! Channels to other nodes over the node's transport.

use std::time::Duration;

use sitesync_security::Transport;
use sitesync_security::transport::TransportError;
use tonic::transport::Channel;

/// How long connecting to another node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to the node at `address` (`host:port`) over `transport`, with a connect
/// timeout and HTTP/2 keep-alive so a peer that vanished is noticed; it connects on first
/// use. `call_timeout` bounds each call (streams set none).
pub fn channel(
    transport: &Transport,
    address: &str,
    call_timeout: Option<Duration>,
) -> Result<Channel, TransportError> {
    transport.channel(address, |endpoint| {
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        match call_timeout {
            Some(timeout) => endpoint.timeout(timeout),
            None => endpoint,
        }
    })
}
