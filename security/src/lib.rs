//! Security for sitesync (SPEC invariant 6): every node-to-node and operator connection is
//! mutual TLS with certificates from the hierarchy's own certificate authority, and every
//! call is authorized by the identity in the peer's certificate.
//!
//! - [`pki`]: the certificate authority: creates it, issues site and operator
//!   certificates, revokes them.
//! - [`identity`]: the identity a certificate carries (`site CEN`, `operator alice`,
//!   `publisher contoso`).
//! - [`publisher`]: publishers of custom updates: vendor namespaces, publisher certificates.
//! - [`signing`]: signatures over catalog versions by the top site and over custom updates
//!   by publishers, checked against the CA.
//! - [`tls`]: loads the material into rustls configurations and reloads it on change.
//! - [`transport`]: TLS channels and listeners for tonic, and the peer identity of a call.

pub mod identity;
pub mod pki;
pub mod publisher;
pub mod signing;
pub mod tls;
pub mod transport;

pub use identity::{Identity, IdentityError};
pub use publisher::{PublisherCertificate, PublisherError, Vendor};
pub use tls::{TlsContext, TlsFiles};
pub use transport::{
    HandshakeFailure, Transport, peer_identity, tls_incoming, tls_incoming_observed,
};
